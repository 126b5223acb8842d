"""The failure report on the real example: a failing use-case test shows what the links service logged
and which events it caused while it ran, in the terminal and in the JUnit XML; nothing of the tests
before it, nor (under `-n 2`) of the other worker's service copies.

On a copy of examples/shortener with two use-case test modules of its own: two passing tests that create
and read links with codes of their own, then a test that creates a link, visits it and fails on purpose.
`pytest --integration -p integration.failure_report --junitxml=...` runs in a subprocess (the `-p` loads
the plugin until integration/plugin.py registers it itself; both at once are fine).
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xdist  # noqa: F401  a dev dependency: missing, this module must fail, not skip
from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException

from integration.discovery import load_system
from integration.stack import project_name
from tests.docker.compose_projects import leftovers
from tests.docker.example_copies import build, clean_env, copy_example

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "shortener"
RUN_TIMEOUT = 600
PORT_BASE = "44100"  # a block of its own: other tests and stacks keep theirs

PASSING_CODES = ("reportpassalpha", "reportpassbravo")
FAILING_CODE = "reportfailzulu"
FAILING_TEST = "test_visit_then_fail_on_purpose"

PASSING = f'''
"""Two passing use cases, each with a code of its own."""

URL = "https://example.com/passing"


async def test_create_and_read_the_first(test_harness):
    await test_harness.create_link(URL, code="{PASSING_CODES[0]}")
    assert (await test_harness.get_link("{PASSING_CODES[0]}")).url == URL


async def test_create_and_read_the_second(test_harness):
    await test_harness.create_link(URL, code="{PASSING_CODES[1]}")
    assert (await test_harness.get_link("{PASSING_CODES[1]}")).url == URL
'''

FAILING = f'''
"""A use case that creates a link, follows it, and then fails on purpose."""

URL = "https://example.com/failing"


async def {FAILING_TEST}(test_harness):
    await test_harness.create_link(URL, code="{FAILING_CODE}")
    assert await test_harness.visit("{FAILING_CODE}") == URL
    assert False, "failing on purpose"
'''


def copy_with_cases(destination: Path) -> Path:
    root = copy_example(EXAMPLE, destination)
    (root / "use_case_tests" / "test_report_a_passing.py").write_text(PASSING)
    (root / "use_case_tests" / "test_report_b_failing.py").write_text(FAILING)
    return root


@pytest.fixture(scope="module")
def system_copy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], str]:
    """The copy, its images built (the same inputs as the example's, so fresh), its environment and its
    compose project."""
    folder = tmp_path_factory.mktemp("failure-report")
    root = copy_with_cases(folder / "shortener")
    env = clean_env(INTEGRATION_COMPOSE_DIR=str(folder / "compose"), INTEGRATION_PORT_BASE=PORT_BASE)
    build(root, env)
    return root, env, project_name(load_system(root))


def run_cases(
    root: Path, env: dict[str, str], project: str, junit: Path, *options: str
) -> tuple[str, ET.Element, list[str]]:
    """The two modules with --integration and the plugin, and what the run left on the engine."""
    assert not leftovers(project)
    command = [
        sys.executable,
        "-m",
        "pytest",
        "--integration",
        "-p",
        "integration.failure_report",
        "-p",
        "no:cacheprovider",
        f"--junitxml={junit}",
        *options,
        "use_case_tests/test_report_a_passing.py",
        "use_case_tests/test_report_b_failing.py",
    ]
    try:
        result = subprocess.run(
            command, cwd=root, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
        )
    finally:
        left = leftovers(project)
        for compose_file in Path(env["INTEGRATION_COMPOSE_DIR"]).glob("*.yml"):  # a failed run's, if any
            client = DockerClient(compose_files=[compose_file], compose_project_name=compose_file.stem)
            with contextlib.suppress(DockerException):
                client.compose.down(volumes=True, remove_orphans=True, timeout=0, quiet=True)
    output = result.stdout + result.stderr
    print(output)  # shown with -s, or when an assertion fails
    assert result.returncode == 1, output[-4000:]
    assert re.search(r"\b1 failed, 2 passed\b", output), output[-2000:]
    return output, ET.parse(junit).getroot(), left


def failure_of(output: str) -> str:
    """The terminal's failure block of the failing test: from its header to the short summary."""
    start = output.index(f"_ {FAILING_TEST} _")
    end = output.index("short test summary info", start)
    return output[start:end]


def properties(root: ET.Element) -> dict[str, dict[str, str]]:
    """Test name -> its <property> elements (name -> value)."""
    return {
        case.get("name", ""): {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
        for case in root.iter("testcase")
    }


def assert_only_the_failing_test(report: str) -> None:
    """The failing test's own request and events are there, nothing of the passing tests."""
    assert '"POST /links HTTP/1.1" 201' in report  # the failing test's create, in the links log
    assert f'"GET /{FAILING_CODE} HTTP/1.1" 307' in report  # and its visit
    assert re.search(rf"published\s+links\s+LinkCreated\s.*\"code\":\"{FAILING_CODE}\"", report), report
    assert re.search(rf"published\s+links\s+LinkVisited\s.*\"code\":\"{FAILING_CODE}\"", report), report
    for code in PASSING_CODES:
        assert code not in report, f"{code} of a passing test is in the failing test's report"


def test_the_failing_test_s_report_holds_its_own_log_lines_and_events(
    system_copy: tuple[Path, dict[str, str], str], tmp_path: Path
) -> None:
    root, env, project = system_copy
    output, junit, left = run_cases(root, env, project, tmp_path / "j.xml")

    block = failure_of(output)
    assert f"integration: links log, container {project}-links-1" in block
    assert f"integration: analytics log, container {project}-analytics-1" in block
    assert "integration: events" in block
    assert_only_the_failing_test(block)
    for code in PASSING_CODES:  # no section anywhere else either: the passing tests get none
        assert code not in output

    props = properties(junit)
    assert set(props[FAILING_TEST]) == {
        "integration: links log",
        "integration: analytics log",
        "integration: events",
    }
    mine = props[FAILING_TEST]
    assert mine["integration: links log"].startswith(f"container {project}-links-1\n")
    assert_only_the_failing_test(mine["integration: links log"] + "\n" + mine["integration: events"])
    assert all(not props[name] for name in props if name != FAILING_TEST), props
    assert left == [], f"left behind after the run: {left}"


def test_under_two_workers_only_the_failing_worker_s_copies_are_read(
    system_copy: tuple[Path, dict[str, str], str], tmp_path: Path
) -> None:
    root, env, project = system_copy
    # One module per worker: the passing tests run on one, the failing test on the other, at once.
    output, junit, left = run_cases(root, env, project, tmp_path / "j.xml", "-n", "2", "--dist", "loadfile")

    block = failure_of(output)
    worker = re.search(r"integration: events, worker (gw\d)", block)
    assert worker, block
    other = "gw1" if worker.group(1) == "gw0" else "gw0"

    def container(service: str, worker: str) -> str:
        return f"{project}-{service}-1" if worker == "gw0" else f"{project}-{service}-{worker}-1"

    assert f"integration: links log, container {container('links', worker.group(1))}" in block
    assert container("links", other) not in output
    assert container("analytics", other) not in output
    assert_only_the_failing_test(block)
    for code in PASSING_CODES:
        assert code not in output

    mine = properties(junit)[FAILING_TEST]
    assert mine["integration: links log"].startswith(f"container {container('links', worker.group(1))}\n")
    assert_only_the_failing_test(mine["integration: links log"] + "\n" + mine["integration: events"])
    assert left == [], f"left behind after the run: {left}"
