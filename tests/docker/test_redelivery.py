"""The example's redelivery test proves what its name says: against a consumer that applies a
redelivered event twice it fails, because wait_for_events_processed() waits until the redelivered
message is acknowledged (a redelivery leaves no new row that could be waited for)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest
from python_on_whales import docker
from python_on_whales.exceptions import DockerException

from tests.docker.compose_projects import leftovers, remove_project
from tests.docker.example_copies import SHORTENER, copy_example, run_env

pytestmark = [pytest.mark.docker, pytest.mark.slow]

IMAGE = "itest-redelivery-analytics:test"
DEDUPLICATION = "        if inserted is None:\n"


def _run(root: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=root,
        env=run_env(tmp_path / "compose"),
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_a_consumer_that_counts_a_redelivery_twice_fails_the_example(tmp_path: Path):
    root = copy_example(SHORTENER, tmp_path / "shortener")
    # Its own tag, through the toolkit's config (no image copies it): the example's images stay as they are.
    (root / "integration.toml").write_text(f'[services.analytics]\nimage = "{IMAGE}"\n')
    consumer = root / "services" / "analytics" / "app" / "events.py"
    text = consumer.read_text()
    assert DEDUPLICATION in text, "the example's consumer changed; update this fault"
    consumer.write_text(text.replace(DEDUPLICATION, "        if inserted is None and False:  # fault\n"))

    from integration.discovery import load_system
    from integration.stack import project_name

    project = project_name(load_system(root))
    try:
        built = _run(root, tmp_path, "-m", "integration", "build", "--root", str(root))
        assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
        result = _run(
            root, tmp_path, "-m", "pytest", "-p", "no:cacheprovider", "--integration", "-k", "redelivered"
        )
        assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-2000:]
        assert "1 failed" in result.stdout
        assert "assert 2 == 1" in result.stdout  # the stats counted the redelivered visit twice
        assert leftovers(project) == []
    finally:
        remove_project(project)
        with contextlib.suppress(DockerException):
            docker.image.remove(IMAGE, force=True)
