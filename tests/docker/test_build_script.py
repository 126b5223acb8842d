"""scripts/build_test_images.sh from a fresh clone, with a Python that has nothing of the toolkit.

What a new user does: `git clone`, then `bash scripts/build_test_images.sh`. The clone is of this
repository, with the working tree's uncommitted and new files laid over it (so the test proves the
script as it is now, not as last committed). Its Python is a bare virtual environment: neither the
toolkit nor its dependencies, so the script must make the clone's `.venv`, install the toolkit there and
build the example's images; a second run reuses the venv and finds the images fresh. The example's
services get image tags and a system name of their own (`itest-script-<token>`), so no other
checkout's images are touched; those images are removed afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from echo_system import remove_images, token
from python_on_whales import docker

from integration.model import LABEL_INPUTS_HASH, LABEL_SYSTEM

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path("scripts") / "build_test_images.sh"
TIMEOUT = 900  # the first run installs the toolkit's dependencies with pip, then builds two images


def git(*args: str, cwd: Path = REPO) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


def fresh_clone(destination: Path) -> Path:
    """`git clone` of this repository, then the working tree's changes on top: modified and untracked
    (not ignored) files copied over, files deleted in the working tree deleted."""
    git("clone", "--quiet", "--no-hardlinks", str(REPO), str(destination))
    listed = git("ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    for name in filter(None, listed):
        source, target = REPO / name, destination / name
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        elif not source.exists() and target.is_file():
            target.unlink()
    return destination


def untracked(repository: Path) -> set[str]:
    """Files git shows as untracked (not ignored) in `repository`."""
    return set(
        filter(None, git("ls-files", "-z", "--others", "--exclude-standard", cwd=repository).split("\0"))
    )


def bare_python(destination: Path) -> Path:
    """A Python with nothing installed: no toolkit, no python-on-whales, no pydantic."""
    subprocess.run([sys.executable, "-m", "venv", str(destination)], check=True, capture_output=True)
    python = destination / "bin" / "python"
    probe = subprocess.run([python, "-c", "import python_on_whales"], capture_output=True, check=False)
    assert probe.returncode != 0, "the bare venv sees the toolkit's dependencies: it proves nothing"
    return python


def script_env(python: Path) -> dict[str, str]:
    """This environment without the toolkit's settings, without this venv on PATH, with PYTHON set."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("INTEGRATION_", "PYTEST_")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    here = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != here)
    env.update(PYTHON=str(python), INTEGRATION_OFFLINE="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def own_images(example: Path, system: str) -> dict[str, str]:
    """Give the example's services a system name and image tags of their own; service -> image."""
    services_file = example / "architecture" / "services.yml"
    document = yaml.safe_load(services_file.read_text())
    document["system"] = system
    images = {}
    for service, settings in document["services"].items():
        images[service] = settings["image"] = f"{system}-{service}:test"
    services_file.write_text(yaml.safe_dump(document, sort_keys=False))
    return images


def run_script(clone: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # From the clone's root, no ROOT argument: the bundled example, as the README shows it.
    return subprocess.run(
        ["bash", str(SCRIPT)], cwd=clone, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )


def test_from_a_fresh_clone_with_a_bare_python_the_script_installs_the_toolkit_and_builds(tmp_path):
    clone = fresh_clone(tmp_path / "clone")
    system = f"itest-script-{token()}"
    images = own_images(clone / "examples" / "shortener", system)
    env = script_env(bare_python(tmp_path / "bare"))
    try:
        first = run_script(clone, env)
        output = first.stdout + first.stderr
        assert first.returncode == 0, output[-4000:]
        assert "No module named" not in output, output[-4000:]
        assert f"installing them into {clone / '.venv'}" in first.stderr, output[-4000:]
        for image in images.values():
            assert f"{image}: built" in output, output[-4000:]
            labels = docker.image.inspect(image).config.labels or {}
            assert labels.get(LABEL_SYSTEM) == system and labels.get(LABEL_INPUTS_HASH), labels

        # Again: the venv made by the first run is reused, and the images are found fresh.
        second = run_script(clone, env)
        output = second.stdout + second.stderr
        assert second.returncode == 0, output[-4000:]
        assert "installing" not in second.stderr, output[-4000:]
        for image in images.values():
            assert f"{image}: fresh, not rebuilt" in output, output[-4000:]
        # Nothing the script made shows in the clone's status: the venv (and pip's egg-info) are ignored.
        assert untracked(clone) <= untracked(REPO), untracked(clone) - untracked(REPO)
    finally:
        remove_images(system)
