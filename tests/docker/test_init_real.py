"""`python -m integration init` for real: the examples with their adoption removed (the shop's
[tool.integration] tables and real harness, the shortener's real harness) are adopted by init alone,
and their use-case tests then pass against the real services, with nothing left on the engine.

The shop runs with the harness init generated; the shortener with its original harness put back
(the config is init's), and with the generated one."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from integration.discovery import load_system
from integration.stack import project_name
from tests.docker.compose_projects import leftovers
from tests.docker.example_copies import SHOP, SHORTENER, build, copy_example, run_pytest

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def built() -> None:
    """Both examples' images, built (or found fresh) once: a copy has the same build inputs, so its own
    build (a copy is another checkout, with tags of its own) comes from the engine's build cache."""
    for root in (SHOP, SHORTENER):
        build(root)


def _init(root: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "integration", "init", "--root", str(root)]
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stderr == ""
    return result


def _pytest(root: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if "--integration" in args:
        build(root)  # a copy is a checkout of its own, with image tags of its own (from the build cache)
    return run_pytest(root, tmp_path / "compose", *args)


def _stripped(example: Path, tmp_path: Path) -> Path:
    root = copy_example(example, tmp_path / example.name)
    if example == SHOP:
        pyproject = root / "pyproject.toml"
        text = pyproject.read_text()
        pyproject.write_text(text[: text.index("# The service-integration toolkit")].rstrip("\n") + "\n")
        (root / "tests" / "use_cases" / "real_harness.py").unlink()
    else:
        (root / "use_case_tests" / "real_harness.py").unlink()
    return root


def test_the_shop_adopted_by_init_passes_against_its_real_services(built: None, tmp_path: Path):
    root = _stripped(SHOP, tmp_path)
    adopted = _init(root)
    assert "7 of 7 methods mapped" in adopted.stdout
    assert "NotImplementedError" not in (root / "tests" / "use_cases" / "real_harness.py").read_text()

    result = _pytest(root, tmp_path, "--integration")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "26 passed" in result.stdout
    assert "/healthz 200" in result.stdout  # orders' own health route
    assert leftovers(project_name(load_system(root))) == []


@pytest.mark.parametrize("harness", ["original", "generated"])
def test_the_shortener_adopted_by_init_passes_against_its_real_services(
    built: None, tmp_path: Path, harness: str
):
    root = _stripped(SHORTENER, tmp_path)
    adopted = _init(root)
    assert "8 of 8 methods mapped" in adopted.stdout
    if harness == "original":
        shutil.copy(
            SHORTENER / "use_case_tests" / "real_harness.py", root / "use_case_tests" / "real_harness.py"
        )

    result = _pytest(root, tmp_path, "--integration")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "43 passed" in result.stdout
    assert leftovers(project_name(load_system(root))) == []
