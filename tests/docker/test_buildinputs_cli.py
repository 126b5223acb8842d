"""Hostile files in a copy of the bundled example, through `python -m integration check` and the real engine.

`check` hung on a named pipe in a copied folder and on a symlink to /dev/zero (the hash opened them).
Now each case ends within CHECK_TIMEOUT seconds, without a traceback: a file the engine cannot build an
image from faithfully is one `error:` line naming it and exit status 2; a file the engine sends as it is
(a symlink is sent as a link) changes the inputs, so `check` answers with the images' freshness (fresh
with exit 0, or the stale message with exit 2, depending on the images this machine has built).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "shortener"
CHECK_TIMEOUT = 30
APP = "services/links/app"


def copy_example(tmp_path: Path) -> Path:
    return shutil.copytree(
        EXAMPLE, tmp_path / "shortener", ignore=shutil.ignore_patterns("__pycache__", ".integration")
    )


def check(root: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    env.update({"INTEGRATION_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    # subprocess.run kills the command when the timeout passes: a hang fails the test, it never waits.
    return subprocess.run(
        [sys.executable, "-m", "integration", "check", "--root", str(root)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=CHECK_TIMEOUT,
        check=False,
    )


def shown(done: subprocess.CompletedProcess[str]) -> str:
    return f"status {done.returncode}\n--- stderr\n{done.stderr}\n--- stdout\n{done.stdout[-2000:]}"


def errors(done: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in done.stderr + done.stdout, shown(done)
    return [line for line in done.stderr.splitlines() if line.startswith("error: ")]


def make_huge(path: Path) -> None:
    with open(path, "wb") as handle:
        handle.truncate(10 << 30)  # sparse: no disk used


REFUSED: dict[str, tuple[Callable[[Path], None], str, tuple[str, ...]]] = {
    "fifo": (lambda root: os.mkfifo(root / APP / "pipe"), f"{APP}/pipe", ("named pipe",)),
    "huge": (lambda root: make_huge(root / APP / "model.bin"), f"{APP}/model.bin", ("10.0 GiB",)),
    "non-utf8-dockerignore": (
        lambda root: (root / ".dockerignore").write_bytes(b"use_case_tests/\ncaf\xe9/\n"),
        ".dockerignore",
        ("line 2", "not UTF-8"),
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_check_refuses_a_hostile_file_with_one_message(tmp_path, case):
    root = copy_example(tmp_path)
    make, named, says = REFUSED[case]
    make(root)

    done = check(root)

    (message,) = errors(done)
    assert done.returncode == 2, shown(done)
    assert str(root / named) in message, shown(done)
    for text in says:
        assert text in message, shown(done)


def test_check_answers_for_a_symlink_to_dev_zero_without_reading_it(tmp_path):
    # Docker sends the link as a link (measured): an input like any other, never opened.
    root = copy_example(tmp_path)
    os.symlink("/dev/zero", root / APP / "zero")

    done = check(root)

    found = errors(done)
    if done.returncode == 0:
        assert not found, shown(done)
        assert "links: fresh" in done.stdout, shown(done)
    else:
        assert done.returncode == 2, shown(done)
        assert len(found) == 1, shown(done)
        assert "stale" in found[0] or "not built" in done.stderr, shown(done)
        assert f"{APP}/zero" in done.stderr or "not built" in done.stderr, shown(done)
