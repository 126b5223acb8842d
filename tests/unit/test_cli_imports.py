"""What the command line imports: each command only its own modules, so that a short command (`check`,
the freshness check alone) is not a second of imports. Checked in a fresh interpreter each."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = (
    "python_on_whales",
    "sqlalchemy",
    "httpx",
    "integration.stack",
    "integration.doctor",
    "integration.adopt",
)


def imported_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running `code`."""
    script = f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_importing_the_command_line_and_parsing_imports_no_engine_database_or_http_library() -> None:
    modules = imported_after("from integration import cli\ncli.parser().parse_args(['check'])")
    assert "integration.cli" in modules
    assert not {name for name in modules if name.split(".")[0] in ("python_on_whales", "sqlalchemy", "httpx")}
    assert not modules & {
        "integration.stack",
        "integration.doctor",
        "integration.adopt",
        "integration.images",
    }


def test_the_freshness_check_needs_neither_the_stack_nor_the_database_nor_the_doctor() -> None:
    # What `check` imports: everything it calls before its first engine call (the engine is not asked).
    code = "from integration import baseimages, cli, discovery, images"
    modules = imported_after(code)
    for heavy in ("sqlalchemy", "httpx", "integration.stack", "integration.doctor", "integration.adopt"):
        assert not {name for name in modules if name == heavy or name.startswith(heavy + ".")}, heavy
    assert "python_on_whales" in modules  # the images are inspected through python-on-whales


def test_a_docker_error_is_recognized_only_once_python_on_whales_is_loaded() -> None:
    code = (
        "from integration import cli\n"
        "assert cli._as_docker_exception(ValueError('x')) is None\n"
        "from python_on_whales.exceptions import DockerException\n"
        "error = DockerException(['docker', 'ps'], 1, b'', b'boom')\n"
        "assert cli._as_docker_exception(error) is error\n"
        "assert cli._as_docker_exception(RuntimeError('y')) is None"
    )
    assert "python_on_whales" in imported_after(code)


def test_run_hands_pytest_its_arguments_without_a_second_interpreter(monkeypatch, tmp_path: Path) -> None:
    """`run`'s pytest is pytest.main in this process, from the system's root, with the handoff plugin;
    a signal during it ends the run as interrupted."""
    import pytest

    from integration import cli
    from integration.model import SystemSpec
    from integration.plugin import RunHandoff

    seen: dict[str, object] = {}

    def fake_main(arguments: list[str], plugins: list[object]) -> int:
        seen.update(arguments=arguments, plugins=plugins, cwd=Path.cwd())
        return 0

    monkeypatch.setattr(pytest, "main", fake_main)
    system = SystemSpec(name="tiny", root=tmp_path, services=())
    assert cli._run_tests(["tests", "--integration"], system, {"echo": "sha256:1"}) == 0
    assert seen["arguments"] == ["tests", "--integration"] and seen["cwd"] == tmp_path
    (handoff,) = seen["plugins"]
    assert isinstance(handoff, RunHandoff) and handoff.image_ids == {"echo": "sha256:1"}
    assert handoff.root == tmp_path.resolve() and Path.cwd() != tmp_path

    def interrupted(arguments: list[str], plugins: list[object]) -> int:
        import os
        import signal

        try:
            os.kill(os.getpid(), signal.SIGTERM)  # as a cancelled CI job: pytest sees KeyboardInterrupt
        except KeyboardInterrupt:
            return 2  # what pytest.main returns for an interrupted session
        raise AssertionError("SIGTERM did not interrupt")

    monkeypatch.setattr(pytest, "main", interrupted)
    try:
        cli._run_tests([], system, {})
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("an interrupted run must end as interrupted (exit status 130 in main)")
