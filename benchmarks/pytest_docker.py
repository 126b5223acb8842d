"""pytest-docker side by side: the same use-case tests in pytest-docker's usual setup, in its own virtual
environment (pytest, pytest-docker, pytest-asyncio and the harness's libraries; never this toolkit's
plugin).

Its conftest is `pytest_docker_side/conftest.py`, copied into the root of a copy of the example. Its
`docker_compose_file` is the toolkit's generated compose file for the same system with a `build:`
section per service (context: the system root, the service's Dockerfile, `PYTHON_IMAGE`) and its own
image tags, so that its default `docker_setup` (`up --build -d`) really builds; it waits with
`docker_services.wait_until_responsive` on each service's health URL and builds the example's
RealServiceHarness from `docker_ip` and `port_for`. pytest-docker has no reuse mode: its warm rerun is
the same `up --build -d` as its cold one.

Processes: its `pytest` (timed whole, like ours; pytest-docker runs `docker compose` itself inside it),
and the making of its virtual environment (`python -m venv`, `pip install`) and the question of its
pytest-docker version, both in that other interpreter. Its images are built once beforehand through
python-on-whales (`prebuild`), so that its first "cached" run is as cached as ours.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException

import integration

from .processes import Run, base_env, run_timed

CONFTEST = Path(__file__).resolve().parent / "pytest_docker_side" / "conftest.py"
TAG = "pytest-docker"
REQUIREMENTS = (
    "pytest>=8",
    "pytest-docker>=3.2,<4",
    "pytest-asyncio>=0.24",
    "httpx>=0.27",
    "sqlalchemy>=2.0",
    "psycopg2-binary>=2.9",
    "pydantic>=2.5",
)


class PytestDocker:
    """The same use-case tests under pytest-docker, in its own virtual environment."""

    def __init__(self, venv: Path, lib_dir: Path) -> None:
        self.venv = venv
        self.lib_dir = lib_dir

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def ensure_venv(self, report: Callable[[str], None]) -> None:
        marker = self.venv / ".bench-requirements"
        wanted = "\n".join(REQUIREMENTS)
        if self.python.exists() and marker.exists() and marker.read_text() == wanted:
            return
        report(f"making pytest-docker's virtual environment in {self.venv}")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(self.venv)], check=True)
        subprocess.run([str(self.python), "-m", "pip", "install", "-q", *REQUIREMENTS], check=True)
        marker.write_text(wanted)

    def version(self) -> str:
        done = subprocess.run(
            [str(self.python), "-c", "import importlib.metadata as m; print(m.version('pytest-docker'))"],
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout.strip() or "unknown"

    def install(self, root: Path) -> None:
        """Its conftest.py in the root of a copy of the system, and a folder holding only a link to this
        toolkit's `integration` package: the harness is importable, while the toolkit's pytest plugin
        (an entry point of its distribution, whose metadata sits in the repository root) stays out."""
        shutil.copyfile(CONFTEST, root / "conftest.py")
        self.lib_dir.mkdir(parents=True, exist_ok=True)
        link = self.lib_dir / "integration"
        if not link.is_symlink():
            if link.exists():
                shutil.rmtree(link)
            link.symlink_to(Path(integration.__file__).resolve().parent, target_is_directory=True)

    def pytest(self, root: Path, compose_file: Path, project: str, services: list[dict[str, Any]]) -> Run:
        env = base_env()
        env.update(
            {
                "PYTHONPATH": str(self.lib_dir),
                "BENCH_COMPOSE_FILE": str(compose_file),
                "BENCH_PROJECT": project,
                "BENCH_SERVICES": json.dumps(services),
            }
        )
        command = [str(self.python), "-m", "pytest", "-p", "no:cacheprovider", "-q"]
        return run_timed(command, cwd=root, env=env)


def compose_file(generated: Path, dest: Path, system: Any, tag: str = TAG) -> Path:
    """pytest-docker's compose file: the toolkit's generated one plus a `build:` per service, so that
    its `up --build -d` builds the images (tagged `<image name>:<tag>`) as it would in a project."""
    data = yaml.safe_load(generated.read_text())
    for spec in system.services:
        entry = data["services"][spec.name]
        entry["image"] = f"{spec.image.rsplit(':', 1)[0]}:{tag}"
        entry["build"] = {
            "context": str(system.root),
            "dockerfile": str(spec.dockerfile.relative_to(system.root)),
            "args": {"PYTHON_IMAGE": system.base_images.python},
        }
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump(data, sort_keys=False, width=10_000))
    return dest


def write_compose_file(system: Any, project: str, compose_dir: Path, port_base: int) -> Path:
    """The toolkit's compose file for `system` (as `Stack.write` generates it), made pytest-docker's."""
    from integration.stack import Stack

    stack = Stack(system, project=project, compose_dir=compose_dir, port_base=port_base, reuse=False)
    return compose_file(stack.write(), compose_dir / f"{project}.pytest-docker.yml", system)


def prebuild(project: str, compose: Path) -> str | None:
    """Build its images (`compose build -q`) through python-on-whales, untimed; None, or why it failed
    (its timed runs then build them themselves)."""
    try:
        DockerClient(compose_files=[compose], compose_project_name=project).compose.build(quiet=True)
    except DockerException as exc:
        lines = (exc.stderr or str(exc)).strip().splitlines()
        return lines[-1] if lines else repr(exc)
    return None


def image_tags(service_tags: list[str], tag: str = TAG) -> list[str]:
    """The tags of its images for the toolkit's `service_tags` of the same system."""
    return [f"{t.rsplit(':', 1)[0]}:{tag}" for t in service_tags]


def service_specs(system: Any) -> list[dict[str, Any]]:
    """BENCH_SERVICES: what its conftest needs to know of each service."""
    return [
        {
            "name": s.name,
            "port": s.port,
            "health": s.health_path,
            "database": s.database,
            "consumed": list(s.events_consumed),
        }
        for s in system.services
    ]
