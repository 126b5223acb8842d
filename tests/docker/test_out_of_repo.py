"""The toolkit installed from its wheel into another repository of the same shape, far from this one.

The example is copied to a temporary folder outside this repository, the toolkit is built as a wheel
(from a copy of its sources, so that the build leaves nothing in this checkout) and installed into a new
virtual environment with pytest-asyncio. There, as a user would:

    pytest                                              43 passed against the mocks
    python -m integration build && pytest --integration 43 passed against the real services

and afterwards no container, network or volume of the copy's compose project is left.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from compose_projects import leftovers

from integration.discovery import load_system
from integration.stack import project_name

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "shortener"
SOURCES = ("pyproject.toml", "README.md", "integration")
STANDINS = {
    "integration/standins/postgres/Dockerfile",
    "integration/standins/postgres/entrypoint.sh",
    "integration/standins/rabbitmq/Dockerfile",
    "integration/standins/rabbitmq/entrypoint.sh",
    "integration/standins/rabbitmq/integration_preload.erl",
    "integration/standins/rabbitmq/preload-list.erl",
    "integration/standins/python/Dockerfile",
}
TIMEOUT = 900
# Variables of an outer run that must not reach the inner one.
OUTER = (
    "PYTEST_ADDOPTS",
    "PYTEST_XDIST_WORKER",
    "PYTEST_XDIST_WORKER_COUNT",
    "PYTEST_CURRENT_TEST",
    "VIRTUAL_ENV",
)


def copy_example(destination: Path) -> Path:
    shutil.copytree(
        EXAMPLE, destination, ignore=shutil.ignore_patterns("__pycache__", ".integration", ".pytest_cache")
    )
    return destination


def clean_env() -> dict[str, str]:
    """This process's environment without the toolkit's settings (but the offline switch) and pytest's."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_") or k == "INTEGRATION_OFFLINE"
    }
    for name in OUTER:
        env.pop(name, None)
    return env


def run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"$ {' '.join(command)} (exit {result.returncode})\n{output[-4000:]}"
    return output


def build_wheel(destination: Path, env: dict[str, str]) -> Path:
    sources = destination / "src"
    for name in SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, sources / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            sources.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, sources / name)
    dist = destination / "dist"
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(sources)],
        destination,
        env,
    )
    (wheel,) = dist.glob("service_integration-*.whl")
    return wheel


def test_the_wheel_works_in_a_repository_of_the_same_shape(tmp_path):
    started = time.monotonic()
    assert not tmp_path.resolve().is_relative_to(REPO)
    env = clean_env()

    wheel = build_wheel(tmp_path / "wheel", env)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert names >= STANDINS, sorted(STANDINS - names)
    assert "integration/plugin.py" in names
    assert not any(n.startswith(("examples/", "tests/")) for n in names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "integration = integration.plugin" in zipfile.ZipFile(wheel).read(entry_points).decode()

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], tmp_path, env)
    python = str(venv / "bin" / "python")
    run([python, "-m", "pip", "install", "-q", str(wheel), "pytest-asyncio"], tmp_path, env)
    installed = time.monotonic()

    root = copy_example(tmp_path / "repository")
    # A repository under git, ignoring what Python and pytest write, as most do: the toolkit must add
    # nothing that `git status` shows.
    (root / ".gitignore").write_text("__pycache__/\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(root)]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "the repository"]):
        subprocess.run([*git, *command], check=True, capture_output=True)
    cache = tmp_path / "cache"
    env = dict(
        env,
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(venv),
        XDG_CACHE_HOME=str(cache),
    )
    prefix = project_name(load_system(root))
    assert not leftovers(prefix)

    mock = run([python, "-m", "pytest", "-p", "no:cacheprovider"], root, env)
    assert re.search(r"\b43 passed\b", mock), mock[-2000:]
    mocked = time.monotonic()

    try:
        run([python, "-m", "integration", "build"], root, env)
        real = run([python, "-m", "pytest", "--integration", "-p", "no:cacheprovider"], root, env)
    finally:
        left = leftovers(prefix)
        if left:  # a failed run: down, so that the next one starts clean
            subprocess.run(
                [python, "-m", "integration", "down"], cwd=root, env=env, capture_output=True, check=False
            )
    assert re.search(r"\b43 passed\b", real), real[-2000:]
    assert left == [], f"left behind after the run: {left}"
    # The default compose folder is the user's cache, never the repository (the build context).
    assert (cache / "service-integration" / prefix / f"{prefix}.yml").exists()
    status = subprocess.run([*git, "status", "--porcelain"], check=True, capture_output=True, text=True)
    assert status.stdout == "", f"the run left files in the repository:\n{status.stdout}"
    finished = time.monotonic()
    print(
        f"\n[out-of-repo] wheel + venv + install {installed - started:.1f}s, "
        f"mock tests {mocked - installed:.1f}s, build + integration tests {finished - mocked:.1f}s, "
        f"total {finished - started:.1f}s"
    )
