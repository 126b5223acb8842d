"""A service whose health path answers 404 (the catch-all route taking /health's place): the run says
what it is waiting for every 10 s, then ends within the timeout it was given with one message naming the
service, the status, the likely cause and the container's last log lines, and leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from integration.discovery import load_system
from integration.stack import project_name
from tests.docker.compose_projects import leftovers, remove_project
from tests.docker.example_copies import SHORTENER, build, copy_example, run_env

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TIMEOUT = 25


def test_a_health_path_that_answers_404_is_diagnosed_within_the_timeout(tmp_path: Path):
    root = copy_example(SHORTENER, tmp_path / "shortener")
    # links' catch-all GET /{code} answers /ready with 404, as a catch-all before /health would. Told
    # through the toolkit's config, which no image copies: the example's images stay fresh.
    (root / "integration.toml").write_text('[services.links]\nhealth = "/ready"\n')
    project = project_name(load_system(root))
    env = run_env(tmp_path / "compose")
    build(root)
    started = time.monotonic()
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                "--integration",
                "--health-timeout",
                str(TIMEOUT),
            ],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        elapsed = time.monotonic() - started
        output = result.stdout + result.stderr
        assert result.returncode != 0, output[-3000:]
        # Progress while waiting: the service and what its probe saw.
        assert "[integration] waiting for links (10s of" in output, output[-3000:]
        assert "last probe HTTP 404" in output
        # The final message.
        assert "service links did not become healthy" in output
        assert "last answered HTTP 404" in output
        assert "likely cause: the service answers 404 on /ready" in output and "catch-all" in output
        assert "its last log lines:" in output and "GET /ready" in output  # the service's own access log
        assert "Traceback" not in output
        # Within the timeout it set (plus the interpreter's start and the teardown).
        assert elapsed < TIMEOUT + 30, elapsed
        assert leftovers(project) == []
    finally:
        remove_project(project)
