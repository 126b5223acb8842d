"""A system of services in a dozen lines of the standard library, for the Docker tests that need real
service containers but not the example's (importable: pytest puts tests/docker on sys.path).

Each service answers GET with JSON naming itself, the path and its VERSION (a test edits that line to
make an image stale); with $HEALTH_PATH set only that path answers 200, the others 404.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from python_on_whales import docker

from integration.model import LABEL_SYSTEM
from integration.ports import port_is_free

SERVER = """\
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "1"
HEALTH_PATH = os.environ.get("HEALTH_PATH")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        status = 200 if HEALTH_PATH is None or self.path == HEALTH_PATH else 404
        body = json.dumps({"service": os.environ["SERVICE_NAME"], "path": self.path, "version": VERSION})
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())


ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""

DOCKERFILE = """\
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${{PYTHON_IMAGE}}
COPY services/{name}/server.py /srv/server.py
CMD ["python", "/srv/server.py"]
"""


def token() -> str:
    return uuid.uuid4().hex[:8]


def write_echo_system(root: Path, system: str, services: Mapping[str, dict[str, Any]]) -> None:
    """services.yml with `services` (each given image `<system>-<name>:test`), a contract module and a
    Dockerfile + server per service, under `root`."""
    services = {name: {**settings, "image": f"{system}-{name}:test"} for name, settings in services.items()}
    files = {"architecture/__init__.py": "", "architecture/contracts/__init__.py": ""}
    for name in services:
        files[f"architecture/contracts/{name}.py"] = f'"""Contract of {name}: no events."""\n'
        files[f"services/{name}/Dockerfile"] = DOCKERFILE.format(name=name)
        files[f"services/{name}/server.py"] = SERVER
    files["architecture/services.yml"] = yaml.safe_dump(
        {"version": 1, "system": system, "services": services}, sort_keys=False
    )
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def remove_images(system: str) -> None:
    """Every image built for `system` (they carry its label)."""
    images = docker.image.list(filters=[("label", f"{LABEL_SYSTEM}={system}")], all=True)
    if images:
        docker.image.remove([image.id for image in images], force=True, prune=True)


def free_port_base() -> int:
    """A free port block below Linux's ephemeral range (32768-60999), away from the default 47100 that
    other stacks use: a port that an outgoing connection can take while a container is being recreated
    would turn a reuse into a full restart."""
    for _ in range(100):
        base = random.randrange(20, 32) * 1000 + random.randrange(0, 9) * 100
        if all(port_is_free(base + offset) for offset in (0, 1, 10, 11, 900, 901)):
            return base
    raise RuntimeError("no free port block found")
