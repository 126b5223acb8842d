"""A shared pytest-xdist stack of a system, built and started for a test module (the isolation tests)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from integration.baseimages import locally_available
from integration.discovery import load_system
from integration.images import build_images, require_fresh
from integration.stack import Stack
from tests.docker.compose_projects import leftovers
from tests.docker.opened_stacks import open_stack

WORKERS = ("gw0", "gw1")


@contextmanager
def shared_stack(root: Path, compose_dir: Path, *, port_base: int, prefix: str) -> Iterator[Stack]:
    """The system at `root` built, and its shared stack for WORKERS up; nothing of it left after."""
    system = load_system(root)
    system = system.with_base_images(locally_available(system.base_images))
    build_images(system)
    project = f"{prefix}-{uuid.uuid4().hex[:8]}"
    stack = open_stack(
        system,
        project=project,
        compose_dir=compose_dir,
        expected_images=require_fresh(system),
        port_base=port_base,
        reuse=False,
        workers=WORKERS,
    )
    with stack:
        yield stack
    assert leftovers(project) == []
