"""scripts/install-docker-engine.sh on a machine whose engine already answers: it does nothing, quickly."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install-docker-engine.sh"
PLUGINS = Path("/usr/libexec/docker/cli-plugins")
QUICK = 5.0


def pids(name: str) -> set[int]:
    found = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True, check=False)
    return {int(pid) for pid in found.stdout.split()}


def plugin_state() -> dict[str, tuple[int, int]]:
    """(size, mtime) of each CLI plugin: unchanged when nothing was unpacked over them."""
    if not PLUGINS.is_dir():
        return {}
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(PLUGINS.iterdir())}


def test_with_a_running_engine_the_script_does_nothing_quickly():
    dockerd = pids("dockerd")
    containerd = pids("containerd")
    plugins = plugin_state()
    assert dockerd, "this test needs a running dockerd"

    started = time.monotonic()
    result = subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60, env=os.environ | {"LC_ALL": "C"}
    )
    elapsed = time.monotonic() - started
    print(f"\ninstall-docker-engine.sh with a running engine: exit {result.returncode} in {elapsed:.2f}s")

    assert result.returncode == 0, result.stderr
    assert elapsed < QUICK
    assert "nothing to do" in result.stderr
    assert "installing" not in result.stderr and "starting dockerd" not in result.stderr
    assert pids("dockerd") == dockerd
    assert pids("containerd") == containerd
    assert plugin_state() == plugins
