"""Removing what a benchmark run made on the engine: a compose project's containers, networks and
volumes, and the images it built, through python-on-whales.

The project removal is the Docker tests' own helper, `tests/docker/compose_projects.py` (by the label
compose stamps on what it creates), imported rather than written again: it needs python-on-whales and
nothing of pytest, and the benchmark, like the tests, runs only from a checkout (neither is in the
wheel). The dependency goes one way: the tests' helpers never import the benchmark.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from python_on_whales import docker
from python_on_whales.exceptions import DockerException

from tests.docker.compose_projects import remove_project

__all__ = ["remove_images", "remove_project"]


def remove_images(tags: Iterable[str]) -> None:
    """Remove these image tags (forced; tags that do not exist are no error)."""
    for tag in tags:
        with contextlib.suppress(DockerException):
            docker.image.remove(tag, force=True)
