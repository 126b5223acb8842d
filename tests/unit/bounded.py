"""Run a callable in a forked child under a hard timeout, so that a hang fails a test instead of the suite.

A thread cannot be stopped once it waits in `open()` on a named pipe, and a signal does not reach `re`
in the middle of a match; a child process can always be killed. The child is forked (the callable and its
closure need no pickling) and reports back through a pipe: what the callable returned, the ConfigError it
raised, or the traceback of anything else.
"""

from __future__ import annotations

import multiprocessing
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from integration.errors import ConfigError

CTX = multiprocessing.get_context("fork")


@dataclass(frozen=True)
class Outcome:
    kind: str  # "result", "config-error", "other-error"
    value: Any  # the result; the ConfigError's (message, path, line); the traceback text
    seconds: float

    @property
    def message(self) -> str:
        assert self.kind == "config-error", self
        return str(self.value[0])


class Hang(AssertionError):
    pass


def _child(conn: Connection, function: Callable[[], Any]) -> None:
    started = time.monotonic()
    try:
        value = function()
        outcome = Outcome("result", value, time.monotonic() - started)
    except ConfigError as exc:
        outcome = Outcome("config-error", (str(exc), exc.path, exc.line), time.monotonic() - started)
    except BaseException:
        outcome = Outcome("other-error", traceback.format_exc(), time.monotonic() - started)
    conn.send(outcome)
    conn.close()


def bounded(function: Callable[[], Any], timeout: float = 10.0) -> Outcome:
    """`function()` in a child process; Hang when it has not finished within `timeout` seconds."""
    parent, child = CTX.Pipe(duplex=False)
    process = CTX.Process(target=_child, args=(child, function), daemon=True)
    process.start()
    child.close()
    try:
        if not parent.poll(timeout):
            raise Hang(f"no answer within {timeout:g} s: the call hangs")
        outcome: Outcome = parent.recv()
        return outcome
    finally:
        if process.is_alive():
            process.kill()
        process.join(5)
        parent.close()


def _stream_child(conn: Connection, steps: Callable[[], Iterator[Any]]) -> None:
    try:
        for message in steps():
            conn.send(("step", message))
        conn.send(("done", None))
    except BaseException:
        conn.send(("crash", traceback.format_exc()))
    conn.close()


def bounded_steps(steps: Callable[[], Iterator[Any]], step_timeout: float, total_timeout: float) -> list[Any]:
    """Run the generator `steps()` in a child; every message it yields must come within `step_timeout` s
    of the one before, and all of them within `total_timeout` s. Returns the messages, in order."""
    parent, child = CTX.Pipe(duplex=False)
    process = CTX.Process(target=_stream_child, args=(child, steps), daemon=True)
    process.start()
    child.close()
    messages: list[Any] = []
    deadline = time.monotonic() + total_timeout
    try:
        while True:
            wait = min(step_timeout, deadline - time.monotonic())
            if wait <= 0 or not parent.poll(wait):
                last = messages[-1] if messages else "(before the first step)"
                raise Hang(
                    f"no progress within {step_timeout:g} s (or past {total_timeout:g} s); last: {last}"
                )
            try:
                kind, value = parent.recv()
            except EOFError:
                raise AssertionError("the child died without a word (killed, or a crash in C)") from None
            if kind == "done":
                return messages
            if kind == "crash":
                raise AssertionError(f"the loop itself crashed:\n{value}")
            messages.append(value)
    finally:
        if process.is_alive():
            process.kill()
        process.join(5)
        parent.close()
