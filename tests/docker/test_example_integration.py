"""The bundled example end to end: its use-case tests pass against the real stack, the process exits at
once after pytest's summary, nothing of the project is left, and stale images are refused."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from compose_projects import leftovers
from example_copies import build

from integration.discovery import load_system
from integration.stack import project_name

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "shortener"
EXIT_GRACE_SECONDS = 5.0


@pytest.fixture(scope="module")
def example_images() -> None:
    """The example's images, built (or found fresh) once for this module: the copies' own builds then
    come from the engine's build cache."""
    build(EXAMPLE)


def _copy_example(tmp_path: Path, *, built: bool = True) -> Path:
    """A copy of the example: another checkout, so with image tags of its own, built unless told not."""
    target = tmp_path / "shortener"
    shutil.copytree(
        EXAMPLE, target, ignore=shutil.ignore_patterns("__pycache__", ".integration", ".pytest_cache")
    )
    if built:
        build(target)
    return target


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["INTEGRATION_COMPOSE_DIR"] = str(tmp_path / "compose")
    env.pop("INTEGRATION_ROOT", None)
    return env


def test_example_passes_in_integration_mode_and_exits_at_once(example_images: None, tmp_path: Path) -> None:
    root = _copy_example(tmp_path)
    project = project_name(load_system(root))
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "--integration", "-p", "no:cacheprovider", "-q"],
        cwd=root,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    summary_seen = threading.Event()
    summary_at: list[float] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip())
            if " passed" in line and " in " in line and not summary_seen.is_set():
                summary_at.append(time.monotonic())
                summary_seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert summary_seen.wait(timeout=240), "no pytest summary within 240 s:\n" + "\n".join(lines[-40:])
        try:
            process.wait(timeout=EXIT_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"pytest was still alive {EXIT_GRACE_SECONDS:.0f} s after its summary: something keeps the "
                "process running (threads, pools, clients)\n" + "\n".join(lines[-20:])
            )
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(timeout=5)
    output = "\n".join(lines)
    assert process.returncode == 0, output[-4000:]
    assert "43 passed" in output
    assert "failed" not in output.split("integration: time per phase")[-1]
    assert leftovers(project) == []


def test_stale_image_is_refused_with_the_changed_file_named(example_images: None, tmp_path: Path) -> None:
    root = _copy_example(tmp_path)
    main = root / "services" / "links" / "app" / "main.py"
    main.write_text(main.read_text() + "\n# an edit made after the image was built\n")
    project = project_name(load_system(root))

    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--integration", "-p", "no:cacheprovider", "-q"],
        cwd=root,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )

    output = result.stdout + result.stderr
    links, analytics = (load_system(root).service(name).image for name in ("links", "analytics"))
    assert result.returncode != 0
    assert "stale" in output
    assert f"{links} (service links)" in output  # the copy's own tag
    assert "services/links/app/main.py" in output
    assert "nox -s build" in output
    assert f"{analytics} (service analytics)" not in output  # only the edited service is stale
    assert leftovers(project) == []


def test_mock_mode_needs_no_docker(tmp_path: Path) -> None:
    root = _copy_example(tmp_path, built=False)
    env = _env(tmp_path)
    env["DOCKER_HOST"] = "unix:///nonexistent/docker.sock"  # any Docker call would fail
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "43 passed" in result.stdout
