"""Waiting for a state instead of sleeping for it, for the Docker tests (importable: pytest puts
tests/docker on sys.path).

A test waits for the event it needs, with a generous deadline: on a loaded 2-core machine, where other
suites run at the same time, anything may take many times longer than usual. How fast things are is the
benchmark's business (benchmarks/); a test asserts what happened, and bounds a duration only
where the duration is the behaviour (a timeout fires), generously above and meaningfully below.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# Seconds within which a call that must not hang returns, however loaded the machine.
GENEROUS = 60.0


def poll_until(condition: Callable[[], T], what: str, timeout: float = GENEROUS, interval: float = 0.05) -> T:
    """Call `condition()` until it returns something true, and return that; AssertionError naming `what`
    and the last value seen when `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s (last seen: {value!r})")
        time.sleep(interval)


class Timer:
    """Wall-clock seconds of a block, for the figures a test prints and for bounds that are the behaviour:
    `with Timer() as timer: ...`, then `timer.seconds`."""

    def __enter__(self) -> Timer:
        self.started = time.monotonic()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self.started
