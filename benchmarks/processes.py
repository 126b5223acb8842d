"""Whole commands as timed processes, and what is read from what they print.

The benchmark's figures are the wall time of the commands a person or CI types (`pytest --integration`,
`python -m integration check`, pytest-docker's `pytest`): those run here as processes, from start to
exit, with the caller's `INTEGRATION_*` settings removed so that only the benchmark's own apply. Docker
itself is never called from here: pytest-docker calls `docker compose` inside its own timed process, the
toolkit through python-on-whales inside its own.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Run:
    seconds: float
    returncode: int
    output: str


def run_timed(command: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float = 1800) -> Run:
    """The command's wall time from start to exit, its exit status and its output (stderr included)."""
    started = time.perf_counter()
    try:
        done = subprocess.run(
            list(command),
            cwd=cwd,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
        output, code = done.stdout, done.returncode
    except subprocess.TimeoutExpired as exc:
        # On POSIX the output so far comes as bytes even with text=True.
        so_far = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        output, code = f"{so_far}\n(timed out after {timeout:.0f}s)", -1
    return Run(time.perf_counter() - started, code, output)


def tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def base_env() -> dict[str, str]:
    """This process's environment without the toolkit's settings (but the offline switch and the image
    overrides, which say what this machine can pull)."""
    env = dict(os.environ)
    for key in list(env):
        if (
            key.startswith("INTEGRATION_")
            and key not in {"INTEGRATION_OFFLINE"}
            and not key.endswith("_IMAGE")
        ):
            env.pop(key)
    return env


def parse_phases(output: str) -> dict[str, float]:
    """The plugin's "integration: time per phase" section of a pytest run, as phase -> seconds."""
    phases: dict[str, float] = {}
    inside = False
    for raw in output.splitlines():
        if "integration: time per phase" in raw:
            inside = True
            continue
        if inside:
            match = re.match(r"^(\S.*?)\s+(\d+\.\d+)s$", raw.strip())
            if not match:
                break
            phases[match.group(1)] = float(match.group(2))
    return phases


def parse_build_seconds(output: str) -> float:
    """`build step done in 12.3s` of `python -m integration build`/`run`; NaN when absent."""
    match = re.search(r"build step done in (\d+(?:\.\d+)?)s", output)
    return float(match.group(1)) if match else math.nan
