"""A Dockerfile we did not write says `FROM python:3.11-slim`: it builds here without a registry, on the
offline stand-in, from a rewritten copy outside the repository; the image is fresh afterwards and the
system's folder is exactly as it was."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from echo_system import remove_images, token, write_echo_system
from python_on_whales import docker

from integration.baseimages import OFFLINE_ENV, locally_available
from integration.discovery import load_system
from integration.doctor import LIVE_CHECKS, live_findings
from integration.images import build_images, check_images, require_fresh
from integration.model import OFFLINE_PYTHON_IMAGE, SystemSpec
from integration.substitution import Substitution

pytestmark = pytest.mark.docker

HARD_CODED = """\
FROM python:3.11-slim
COPY services/orders/ /srv/
CMD ["python", "/srv/server.py"]
"""


def listing(root: Path) -> list[tuple[str, int, int]]:
    """Every file and folder under `root` with its size and modification time."""
    return sorted(
        (p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
    )


def temporary_copies() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("integration-dockerfile-*"))


@pytest.fixture
def system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SystemSpec]:
    name = f"itest-from-{token()}"
    root = tmp_path / "shop"
    write_echo_system(root, name, {"orders": {"port": 8000}})
    (root / "services/orders/Dockerfile").write_text(HARD_CODED)
    # A Dockerfile-specific ignore file: the rewritten copy must take it along.
    (root / "services/orders/Dockerfile.dockerignore").write_text("services/orders/secret.txt\n")
    (root / "services/orders/secret.txt").write_text("not for the image\n")
    monkeypatch.setenv(OFFLINE_ENV, "1")
    try:
        yield load_system(root, locally_available())
    finally:
        remove_images(name)


def test_a_hard_coded_from_builds_on_the_standin_and_is_fresh_afterwards(system: SystemSpec) -> None:
    service = system.service("orders")
    real_present = docker.image.exists("python:3.11-slim")
    expected = () if real_present else (Substitution(1, 1, "python:3.11-slim", OFFLINE_PYTHON_IMAGE),)
    before, copies_before = listing(system.root), temporary_copies()
    lines: list[str] = []

    started = time.monotonic()
    (state,) = build_images(system, report=lines.append)
    seconds = time.monotonic() - started
    print(f"\n[offline FROM] build with the substitution: {seconds:.2f}s")

    assert state.action == "built" and state.substitutions == expected
    said = "orders: FROM python:3.11-slim (line 1) built on the offline stand-in " + OFFLINE_PYTHON_IMAGE
    assert (said in lines) == bool(expected), lines
    # Fresh: the check computes the build's hash, from the original Dockerfile.
    (checked,) = check_images(system)
    assert checked.fresh and checked.substitutions == expected
    assert require_fresh(system) == {"orders": state.image_id}
    again: list[str] = []
    build_images(system, report=again.append)
    assert again == [f"{service.image}: fresh, not rebuilt", "every image is fresh; nothing to build"]
    # Built on the stand-in's layers, with the Dockerfile-specific .dockerignore applied.
    base = "python:3.11-slim" if real_present else OFFLINE_PYTHON_IMAGE
    base_layers = docker.image.inspect(base).root_fs.layers
    assert docker.image.inspect(service.image).root_fs.layers[: len(base_layers)] == base_layers
    files = docker.run(service.image, ["ls", "/srv"], remove=True)
    assert "server.py" in files and "secret.txt" not in files
    # Nothing written into the system's folder; the temporary copy is gone.
    assert listing(system.root) == before
    assert temporary_copies() <= copies_before
    # The doctor reports the same substitution.
    d207 = [check for check in LIVE_CHECKS if "D207" in check.codes]
    found = live_findings(system, checks=d207)
    assert [(f.severity, f.path, f.line) for f in found] == (
        [("info", "services/orders/Dockerfile", 1)] if expected else []
    )
    if expected:
        assert found[0].message.startswith(said)
