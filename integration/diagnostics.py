"""Diagnostics of a stack that did not come up: container log tails, run folders for CI, port races.

Everything here reads (through python-on-whales) and writes files; it decides nothing about the
lifecycle. A run folder (`<compose dir>/runs/<project>-<time>/`) holds each container's log, the compose
file, `ps` output and the images' ids and labels: what CI keeps of a failed run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException

from .endpoints import ContainerInfo
from .model import SystemSpec
from .ports import describe_port_owner

LOG_TAIL_LINES = 50


def logs_tail(client: DockerClient, container: str, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines a container wrote, stdout and stderr in the order it wrote them."""
    try:
        logs = client.container.logs(container, tail=lines, timestamps=True)
    except DockerException as exc:
        return f"(logs unavailable: {(exc.stderr or str(exc)).strip()[-200:]})"
    text = logs if isinstance(logs, str) else "".join(chunk.decode(errors="replace") for _, chunk in logs)
    # python-on-whales reads stdout and stderr on two threads, so their lines arrive interleaved at
    # random; the engine's fixed-width timestamps restore the order the container wrote them in.
    stamped = [line.partition(" ") for line in text.split("\n") if line]
    ordered = [rest for _, _, rest in sorted(stamped, key=lambda parts: parts[0])]
    return "\n".join(ordered) + "\n" if ordered else ""


def save_run_folder(
    client: DockerClient,
    system: SystemSpec,
    runs: Path,
    project: str,
    compose_file: Path,
    reason: str,
    infos: Sequence[ContainerInfo],
) -> Path | None:
    """Write a run folder under `runs`; None when it cannot be written (the failure is reported anyway)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = runs / f"{project}-{stamp}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "reason.txt").write_text(reason + "\n")
        if compose_file.exists():
            (folder / "compose.yml").write_text(compose_file.read_text())
        (folder / "ps.json").write_text(json.dumps([vars(i) for i in infos], indent=2, default=str))
        for info in infos:
            (folder / f"{info.service}.log").write_text(logs_tail(client, info.name, lines=2000))
        images: dict[str, object] = {}
        for spec in system.services:
            try:
                image = client.image.inspect(spec.image)
                labels = image.config.labels if image.config else None
                images[spec.image] = {"id": image.id, "labels": labels}
            except DockerException:
                images[spec.image] = None
        (folder / "images.json").write_text(json.dumps(images, indent=2, default=str))
    except (OSError, DockerException):
        return None
    return folder


def port_taken(output: str) -> bool:
    lowered = output.lower()
    return "port is already allocated" in lowered or "address already in use" in lowered


def port_race_headline(output: str, attempts: int, bind_address: str = "127.0.0.1") -> str:
    """What to do when every port plan lost its race: the port, who holds it now, and the fix. The
    owner is looked up on this machine only when the ports are bound here (a local engine)."""
    found = re.findall(r"(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):(\d+)", output)
    port = int(found[-1]) if found else None
    local = bind_address in ("127.0.0.1", "::1")
    owner = describe_port_owner(port) if port and local else None
    shown = f"[{bind_address}]" if ":" in bind_address else bind_address
    where = f"host port {shown}:{port}" if port else "a host port"
    held = f" (now held by {owner})" if owner else ""
    machine = "this machine" if local else "the engine's host"
    return (
        f"{where}{held} was taken between planning and binding, {attempts} times in a row, each time "
        f"on newly planned ports: something on {machine} keeps binding free ports on {shown}; "
        "stop it and run again"
    )
