"""What a compose project has on the engine, for the Docker tests: its leftovers and their removal
(importable: pytest puts tests/docker on sys.path)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from python_on_whales import docker
from python_on_whales.exceptions import DockerException

PROJECT_LABEL = "com.docker.compose.project"


def _filters(project: str) -> list[tuple[str, str]]:
    return [("label", f"{PROJECT_LABEL}={project}")]


def _listed(list_them: Callable[[], list[Any]]) -> list[str]:
    # python-on-whales lists, then inspects each: something removed in between (a stack going down
    # while we look) is "no such container"; look again.
    for attempt in range(5):
        try:
            return [item.name for item in list_them()]
        except DockerException:
            if attempt == 4:
                raise
            time.sleep(0.2)
    raise AssertionError("unreachable")


def containers(project: str, *, stopped: bool = True) -> list[str]:
    """Names of the project's containers, the stopped ones too unless `stopped=False`."""
    return _listed(lambda: docker.container.list(all=stopped, filters=_filters(project)))


def leftovers(project: str) -> list[str]:
    """Containers, networks and volumes of a compose project, by the label compose stamps on them."""
    found = [f"container {name}" for name in containers(project)]
    found += [f"network {name}" for name in _listed(lambda: docker.network.list(filters=_filters(project)))]
    found += [f"volume {name}" for name in _listed(lambda: docker.volume.list(filters=_filters(project)))]
    return found


def remove_project(project: str) -> None:
    """Whatever containers, networks and volumes a failing test left of compose project `project`."""
    with contextlib.suppress(DockerException):
        found = docker.container.list(all=True, filters=_filters(project))
        if found:
            docker.container.remove(found, force=True, volumes=True)
    with contextlib.suppress(DockerException):
        networks = docker.network.list(filters=_filters(project))
        if networks:
            docker.network.remove(networks)
    with contextlib.suppress(DockerException):
        volumes = docker.volume.list(filters=_filters(project))
        if volumes:
            docker.volume.remove(volumes)
