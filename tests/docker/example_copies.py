"""Copies of the bundled examples for the Docker tests: the copy in a temporary folder, the environment
a run in it gets, and its images built.

A copy has the same build inputs as its example, but it is another checkout: its default image tags are
its own (`shortener-links:<checkout id>`), so a copy is built in its own folder (`build`), which the
engine's build cache makes quick. `remove_images_under` removes what the copies built.
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


def remove_images_under(folder: Path) -> list[str]:
    """Remove the toolkit's service images built from a checkout under `folder` (this session's
    temporary folders), by their checkout-root label: never an image built from anywhere else."""
    from python_on_whales import docker
    from python_on_whales.exceptions import DockerException

    from integration.model import LABEL_ROOT

    removed = []
    folder = folder.resolve()
    for image in docker.image.list(filters=[("label", LABEL_ROOT)]):
        root = ((image.config.labels if image.config else None) or {}).get(LABEL_ROOT, "")
        if root and Path(root).is_relative_to(folder):
            try:
                docker.image.remove(list(image.repo_tags) or image.id)
                removed.append(root)
            except DockerException:
                pass  # still used by a container a failed test left; its own cleanup reports that
    return removed
