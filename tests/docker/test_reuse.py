"""Reuse mode against the real engine: a healthy stack is reused, a rebuilt image recreates exactly its
service, and without reuse the stack is torn down.

The system is two services in a dozen lines of the standard library (`web` with a database, `api`
without one), built under tmp_path with unique image tags; each stack runs under a unique `itest-reuse-`
project on a port block away from the default one, and whatever a failing test left is removed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from compose_projects import PROJECT_LABEL, remove_project
from echo_system import free_port_base, remove_images, token, write_echo_system
from opened_stacks import open_stack
from python_on_whales import docker

from integration.baseimages import locally_available
from integration.discovery import load_system
from integration.images import build_images, require_fresh
from integration.model import SystemSpec
from integration.stack import REUSE_ENV, Stack

pytestmark = pytest.mark.docker

SERVICE_LABEL = "com.docker.compose.service"


def write_system(root: Path, system: str) -> None:
    write_echo_system(root, system, {"web": {"port": 8080, "database": "web"}, "api": {"port": 9090}})


def load(root: Path) -> SystemSpec:
    return load_system(root, locally_available())


def build(system: SystemSpec) -> dict[str, str]:
    build_images(system, report=lambda line: None)
    return require_fresh(system)


def container_ids(project: str) -> dict[str, str]:
    """Compose service -> id of its container in `project`."""
    containers = docker.container.list(all=True, filters=[("label", f"{PROJECT_LABEL}={project}")])
    return {c.config.labels[SERVICE_LABEL]: c.id for c in containers}


@pytest.fixture
def system_root(tmp_path: Path) -> Iterator[Path]:
    """A fresh two-service system; its images (every tag built from it) are removed at the end."""
    name = f"itest-reuse-{token()}"
    root = tmp_path / "system"
    write_system(root, name)
    try:
        yield root
    finally:
        remove_images(name)


@pytest.fixture
def project() -> Iterator[str]:
    name = f"itest-reuse-{token()}"
    yield name
    remove_project(name)


def make_stack(system: SystemSpec, project: str, compose_dir: Path, ids: dict[str, str], **kw) -> Stack:
    return open_stack(
        system,
        project=project,
        compose_dir=compose_dir,
        expected_images=ids,
        port_base=kw.pop("port_base"),
        **kw,
    )


def version_of(stack: Stack, service: str) -> str:
    assert stack.endpoints is not None
    return httpx.get(stack.endpoints.services[service].url, timeout=5).json()["version"]


def left_running(
    system_root: Path, project: str, compose_dir: Path
) -> tuple[SystemSpec, dict[str, str], int]:
    """Build the system and leave its stack running in reuse mode; the system, its image ids and the
    stack's port base."""
    system = load(system_root)
    ids = build(system)
    base = free_port_base()
    with make_stack(system, project, compose_dir, ids, reuse=True, port_base=base):
        pass
    return system, ids, base


def test_a_healthy_stack_is_reused_without_recreating_a_container(
    system_root: Path, project: str, tmp_path: Path
) -> None:
    system = load(system_root)
    ids = build(system)
    base = free_port_base()
    with make_stack(system, project, tmp_path, ids, reuse=True, port_base=base) as first:
        assert first.outcome == "created"
        endpoints = first.endpoints
    before = container_ids(project)
    assert set(before) == {"web", "web-db", "api"}, "reuse mode leaves the stack running"
    assert first.state_file.exists()

    with make_stack(system, project, tmp_path, ids, reuse=True, port_base=base) as second:
        assert second.outcome == "reused"
        assert second.endpoints == endpoints
        assert version_of(second, "api") == "1"
        assert "up" not in second.timings, "a reused stack needs no compose call"
    assert container_ids(project) == before


def test_a_rebuilt_image_recreates_its_service_and_nothing_else(
    system_root: Path, project: str, tmp_path: Path
) -> None:
    system, ids, base = left_running(system_root, project, tmp_path)
    before = container_ids(project)

    server = system_root / "services" / "api" / "server.py"
    server.write_text(server.read_text().replace('VERSION = "1"', 'VERSION = "2"'))
    rebuilt = build(system)
    assert rebuilt["api"] != ids["api"] and rebuilt["web"] == ids["web"]

    with make_stack(system, project, tmp_path, rebuilt, reuse=True, port_base=base) as stack:
        assert stack.outcome == "recreated api"
        assert version_of(stack, "api") == "2"
    after = container_ids(project)
    assert after["api"] != before["api"]
    assert after["web"] == before["web"]
    assert after["web-db"] == before["web-db"]


def test_a_recreated_database_recreates_the_service_that_depends_on_it(
    system_root: Path, project: str, tmp_path: Path
) -> None:
    system, ids, base = left_running(system_root, project, tmp_path)
    before = container_ids(project)
    docker.container.remove(before["web-db"], force=True, volumes=True)

    with make_stack(system, project, tmp_path, ids, reuse=True, port_base=base) as stack:
        assert stack.outcome == "recreated web, web-db"
    after = container_ids(project)
    assert after["web-db"] != before["web-db"]
    assert after["web"] != before["web"], "the service lost its database: it starts again with it"
    assert after["api"] == before["api"]


def test_without_reuse_the_stack_is_torn_down_and_a_reused_one_is_replaced(
    system_root: Path, project: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = load(system_root)
    ids = build(system)
    base = free_port_base()
    monkeypatch.setenv(REUSE_ENV, "1")
    with make_stack(system, project, tmp_path, ids, port_base=base) as stack:
        assert stack.reuse, f"${REUSE_ENV}=1 turns reuse mode on"
    before = container_ids(project)
    assert before

    monkeypatch.delenv(REUSE_ENV)
    with make_stack(system, project, tmp_path, ids, port_base=base) as stack:
        assert not stack.reuse
        assert stack.outcome == "created"
        assert set(container_ids(project).values()).isdisjoint(before.values()), (
            "a run without reuse starts clean"
        )
    assert container_ids(project) == {}
    assert not stack.state_file.exists()
