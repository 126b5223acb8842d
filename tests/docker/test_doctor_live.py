"""The doctor's live checks against the real engine: a stale image, a taken port, a leftover container.

Everything these tests create is named or tagged `doctor-test-*` and removed when the test ends.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from python_on_whales import docker

from integration.baseimages import locally_available
from integration.discovery import load_system
from integration.doctor import COMPOSE_PROJECT_LABEL, Finding, live_findings
from integration.images import build_images
from integration.model import LABEL_SYSTEM, OFFLINE_PYTHON_IMAGE, BaseImages, SystemSpec
from integration.stack import project_name

pytestmark = pytest.mark.docker

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "systems"
PREFIX = "doctor-test"


def with_code(findings: list[Finding], code: str) -> list[Finding]:
    return [f for f in findings if f.code == code]


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def probe_system(tmp_path: Path) -> Iterator[SystemSpec]:
    """A one-service system whose image copies one file; its image is removed afterwards."""
    if not docker.image.exists(OFFLINE_PYTHON_IMAGE):
        pytest.fail(f"{OFFLINE_PYTHON_IMAGE} is missing; build it with: python -m integration images")
    tag = f"{PREFIX}-probe:{uuid.uuid4().hex[:10]}"
    root = tmp_path / "probe"
    _write(root / "architecture" / "__init__.py", "")
    _write(root / "architecture" / "contracts" / "__init__.py", "")
    _write(root / "architecture" / "contracts" / "probe.py", '"""No events."""\n')
    _write(
        root / "architecture" / "services.yml",
        f"version: 1\nsystem: {PREFIX}\nservices:\n  probe:\n    port: 8000\n    image: {tag}\n",
    )
    _write(
        root / "services" / "probe" / "Dockerfile",
        "ARG PYTHON_IMAGE=python:3.11-slim\nFROM ${PYTHON_IMAGE}\n"
        "COPY services/probe/hello.txt /srv/hello.txt\n"
        'CMD ["python", "-m", "http.server", "8000"]\n',
    )
    _write(root / "services" / "probe" / "hello.txt", "hello\n")
    system = load_system(root)
    system = system.with_base_images(locally_available(BaseImages()))
    try:
        yield system
    finally:
        if docker.image.exists(tag):  # not built when the test failed before building
            docker.image.remove(tag, force=True)


def test_stale_image_is_an_error_naming_the_changed_file(probe_system: SystemSpec) -> None:
    build_images(probe_system, report=lambda _line: None)
    assert with_code(live_findings(probe_system), "D203") == []

    (probe_system.root / "services" / "probe" / "hello.txt").write_text("hello again\n")
    stale = with_code(live_findings(probe_system), "D203")

    assert [(f.severity, f.path) for f in stale] == [("error", "services/probe/Dockerfile")]
    assert "services/probe/hello.txt" in stale[0].message
    assert probe_system.services[0].image in stale[0].message
    assert stale[0].fix.startswith("nox -s build")


def test_missing_image_is_a_warning(probe_system: SystemSpec) -> None:
    found = with_code(live_findings(probe_system), "D203")

    assert [(f.severity, f.path) for f in found] == [("warning", "services/probe/Dockerfile")]
    assert "not built yet" in found[0].message


def test_taken_port_names_the_process_that_holds_it(tmp_path: Path) -> None:
    root = tmp_path / "minimal"
    shutil.copytree(FIXTURES / "minimal", root, ignore=shutil.ignore_patterns("__pycache__"))
    system = load_system(root)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        # The first service's HTTP port is the plan's base: make the held port that base.
        findings = live_findings(system, port_base=port)

    taken = [f for f in with_code(findings, "D204") if f.path == f"<port {port}>"]
    assert len(taken) == 1, [f.render() for f in findings]
    assert taken[0].severity == "warning"
    assert f"(pid {os.getpid()})" in taken[0].message
    assert "orders:8000" in taken[0].message and "fall back" in taken[0].message


def test_port_published_by_a_container_names_the_container_and_its_project(probe_system: SystemSpec) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    name = f"{PREFIX}-publisher-{uuid.uuid4().hex[:8]}"
    other_project = f"{PREFIX}-other-{uuid.uuid4().hex[:6]}"
    container = docker.run(
        OFFLINE_PYTHON_IMAGE,
        ["sleep", "120"],
        detach=True,
        name=name,
        publish=[(f"127.0.0.1:{port}", 8000)],
        labels={COMPOSE_PROJECT_LABEL: other_project},
    )
    try:
        found = with_code(live_findings(probe_system, port_base=port), "D204")
    finally:
        docker.container.remove(container, force=True)

    assert [f.path for f in found] == [f"<port {port}>"], [f.render() for f in found]
    assert f"container {name} of compose project {other_project}" in found[0].message
    assert found[0].fix.startswith(f"docker compose -p {other_project} down")


def test_leftover_container_of_the_project_is_a_warning(probe_system: SystemSpec) -> None:
    project = project_name(probe_system)
    name = f"{PREFIX}-leftover-{uuid.uuid4().hex[:8]}"
    container = docker.run(
        OFFLINE_PYTHON_IMAGE,
        ["sleep", "120"],
        detach=True,
        name=name,
        labels={COMPOSE_PROJECT_LABEL: project, LABEL_SYSTEM: PREFIX},
    )
    try:
        found = with_code(live_findings(probe_system), "D205")
    finally:
        docker.container.remove(container, force=True)

    assert [(f.severity, f.path) for f in found] == [("warning", "<docker>")]
    assert name in found[0].message and project in found[0].message
    assert found[0].fix == f"python -m integration down --root {probe_system.root}"
    assert with_code(live_findings(probe_system), "D205") == []
