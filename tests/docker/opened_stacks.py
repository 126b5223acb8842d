"""Stacks for the Docker tests, made the one way the command line and the plugin make them:
`Stack.open(system, RunSettings)`, with the run's settings resolved by `settings.run_settings`
(importable: pytest puts tests/docker on sys.path)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from integration.model import SystemSpec
from integration.settings import COMPOSE_DIR_ENV, run_settings
from integration.stack import Stack


@contextmanager
def _compose_dir(folder: Path) -> Iterator[None]:
    """$INTEGRATION_COMPOSE_DIR while the stack is made: how a user puts the compose files elsewhere
    (RunSettings has no field for it; the stack reads it once, when it is made)."""
    saved = os.environ.get(COMPOSE_DIR_ENV)
    os.environ[COMPOSE_DIR_ENV] = str(folder)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(COMPOSE_DIR_ENV, None)
        else:
            os.environ[COMPOSE_DIR_ENV] = saved


def open_stack(
    system: SystemSpec,
    *,
    project: str | None = None,
    compose_dir: Path,
    report: Callable[[str], None] = lambda _line: None,
    port_base: int | None = None,
    health_timeout: float | None = None,
    reuse: bool | None = None,
    expected_images: Mapping[str, str] | None = None,
    workers: Sequence[str] = (),
) -> Stack:
    """`Stack.open` with the settings of a run in `system.root`, its compose files in `compose_dir`;
    `port_base` instead of $INTEGRATION_PORT_BASE's (a test's own free block); `reuse` None: as
    $INTEGRATION_REUSE says."""
    run = run_settings(system.root, health_timeout=health_timeout, reuse=reuse)
    if port_base is not None:
        run = replace(run, port_base=port_base)
    with _compose_dir(compose_dir):
        return Stack.open(
            system, run, project=project, report=report, expected_images=expected_images, workers=workers
        )
