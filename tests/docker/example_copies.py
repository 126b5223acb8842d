"""Copies of the bundled examples for the Docker tests: the copy in a temporary folder, the environment
a run in it gets, and its images built.

A copy has the same build inputs as its example, so its images are the example's and fresh once built.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHORTENER = REPO / "examples" / "shortener"
SHOP = REPO / "examples" / "shop"
# What a run or an editor leaves in an example, never part of a copy.
IGNORED = shutil.ignore_patterns("__pycache__", ".integration", ".pytest_cache")
# Variables of the outer pytest (this suite's) that must not reach an inner run.
OUTER = ("PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_CURRENT_TEST")
BUILD_TIMEOUT = 600


def copy_example(source: Path, destination: Path) -> Path:
    """A copy of the example at `source` in `destination` (which must not exist yet)."""
    shutil.copytree(source, destination, ignore=IGNORED)
    return destination


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the toolkit's settings (but the offline switch) and the outer pytest's
    variables, plus `extra`."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_") or k == "INTEGRATION_OFFLINE"
    }
    for name in OUTER:
        env.pop(name, None)
    env.update(extra)
    return env


def build(root: Path, env: dict[str, str] | None = None) -> None:
    """`python -m integration build --root ROOT`, which must succeed."""
    result = subprocess.run(
        [sys.executable, "-m", "integration", "build", "--root", str(root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def run_env(compose_dir: Path) -> dict[str, str]:
    """This environment for a run in a copy: its compose files in `compose_dir`, its root found from
    the folder it runs in (not an outer $INTEGRATION_ROOT)."""
    env = dict(os.environ, INTEGRATION_COMPOSE_DIR=str(compose_dir))
    env.pop("INTEGRATION_ROOT", None)
    return env


def run_pytest(
    root: Path, compose_dir: Path, *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """pytest in the copy at `root` (its own rootdir and config), output captured."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=root,
        env=run_env(compose_dir),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
