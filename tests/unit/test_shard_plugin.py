"""integration.shard_plugin on a synthetic suite, in pytest processes of their own (no engine needed):
the N shards' selections partition the collection, the header says what each shard runs, durations are
recorded without the session's fixtures, JUnit reports carry the shard and merge, xdist works."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGIN = ("-p", "integration.shard_plugin")
OUTER = ("PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_CURRENT_TEST")

SUITE = {
    "pytest.ini": "[pytest]\n",
    "test_alpha.py": """
        import pytest

        @pytest.mark.parametrize("n", range(5))
        def test_param(n):
            pass

        def test_one():
            pass

        class TestGroup:
            def test_a(self):
                pass

            def test_b(self):
                pass
    """,
    "test_beta.py": """
        import os
        import time

        import pytest

        @pytest.fixture(scope="session")
        def slow_session():
            time.sleep(0.6)   # like a stack starting: in the first test's setup
            yield
            time.sleep(0.6)   # and stopping: in the last test's teardown

        @pytest.fixture(scope="module")
        def slow_module():
            time.sleep(0.4)
            yield

        @pytest.mark.parametrize("i", range(12))
        def test_fast(slow_session, slow_module, i):
            time.sleep(0.01)

        def test_slow(slow_session):
            time.sleep(0.3)

        def test_environment():
            assert "INTEGRATION_PROJECT" not in os.environ  # mock mode: the stack's env is left alone
    """,
}


def write_suite(root: Path, files: dict[str, str] = SUITE) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(textwrap.dedent(text))
    return root


def env() -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_") and k not in OUTER}
    return environ


def pytest_run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *PLUGIN, *args],
        cwd=root,
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def collected(root: Path) -> list[str]:
    result = pytest_run(root, "--collect-only", "-q")
    assert result.returncode == 0, result.stdout + result.stderr
    return [line for line in result.stdout.splitlines() if "::" in line]


def ran(junit: Path) -> list[str]:
    """The node ids a JUnit report lists (classname + name back to `file.py::[Class::]name`)."""
    ids = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        parts = case.get("classname", "").split(".")
        module, rest = parts[0], parts[1:]
        ids.append("::".join([f"{module}.py", *rest, case.get("name", "")]))
    return ids


def properties(junit: Path) -> dict[str, str]:
    root = ET.parse(junit).getroot()
    return {p.get("name", ""): p.get("value", "") for p in root.iter("property")}


@pytest.fixture(scope="module")
def suite_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_suite(tmp_path_factory.mktemp("suite"))


@pytest.mark.parametrize("total", [1, 2, 3])
def test_the_shards_partition_the_collection(suite_root, tmp_path, total):
    everything = collected(suite_root)
    assert len(everything) == 22
    runs = []
    for k in range(1, total + 1):
        junit = tmp_path / f"shard{k}.xml"
        result = pytest_run(suite_root, "--shard", f"{k}/{total}", f"--junitxml={junit}")
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        mine = ran(junit)
        runs.append(mine)
        assert f"shard: {k}/{total} of the tests, balanced by test count (no --shard-durations)" in output
        assert f"shard {k}/{total}: runs {len(mine)} of 22 tests" in output
        if total > 1:
            assert f"{22 - len(mine)} deselected" in output
        assert properties(junit) == {
            "shard": f"{k}/{total}",
            "shard_tests": str(len(mine)),
            "shard_suite_tests": "22",
        }
    union = [node for mine in runs for node in mine]
    assert sorted(union) == sorted(everything)  # every test once: no overlap, nothing missing
    # parametrized variants together
    where = {node: k for k, mine in enumerate(runs) for node in mine}
    assert len({where[n] for n in everything if "test_param[" in n}) == 1


def test_the_reports_merge_and_check_out(suite_root, tmp_path):
    for k in (1, 2):
        result = pytest_run(suite_root, "--shard", f"{k}/2", f"--junitxml={tmp_path}/run-shard-{k}-of-2.xml")
        assert result.returncode == 0, result.stdout + result.stderr
    merged = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "merge_junit.py"), "--out-dir", str(tmp_path / "merged")]
        + [str(p) for p in sorted(tmp_path.glob("run-shard-*.xml"))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert merged.returncode == 0, merged.stdout + merged.stderr
    root = ET.parse(tmp_path / "merged" / "run.xml").getroot()
    assert root.get("tests") == "22"
    assert len(list(root.iter("testcase"))) == 22


def test_a_bad_shard_stops_before_collection_naming_the_option(suite_root):
    for value, says in (("3/2", "the shard K must be 1..2"), ("x", "expected K/N"), ("1/99", "1..64")):
        result = pytest_run(suite_root, "--shard", value)
        assert result.returncode == 4, result.stdout + result.stderr  # pytest's usage error
        assert "--shard: " in result.stderr and says in result.stderr, result.stderr


def test_a_malformed_durations_file_stops_the_run(suite_root, tmp_path):
    bad = tmp_path / "durations.json"
    bad.write_text("[]")
    result = pytest_run(suite_root, "--shard", "1/2", f"--shard-durations={bad}")
    assert result.returncode == 4
    assert f"--shard-durations: {bad}: a JSON list, not an object" in result.stderr


def test_a_missing_durations_file_balances_by_count(suite_root, tmp_path):
    missing = tmp_path / "none.json"
    result = pytest_run(suite_root, "--shard", "1/2", f"--shard-durations={missing}")
    assert result.returncode == 0
    assert f"balanced by test count ({missing} does not exist or is empty)" in result.stdout


def test_recorded_durations_leave_out_wider_fixtures_and_then_balance(suite_root, tmp_path):
    record = tmp_path / "durations.json"
    result = pytest_run(suite_root, f"--shard-record={record}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"shard: the durations of 22 tests recorded in {record}" in result.stdout
    durations = json.loads(record.read_text())
    assert sorted(durations) == sorted(collected(suite_root))
    fast = {n: s for n, s in durations.items() if "test_fast[" in n}
    # the session fixture's 0.6 s start (first test) and stop (last test), and the module fixture's
    # 0.4 s, are nobody's: every fast test stays fast
    assert max(fast.values()) < 0.2, fast
    assert 0.25 < durations["test_beta.py::test_slow"] < 0.5, durations["test_beta.py::test_slow"]

    # the next run balances by them: test_slow alone outweighs a dozen fast ones
    result = pytest_run(suite_root, "--shard", "1/2", f"--shard-durations={record}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"balanced by the durations in {record} (22 recorded)" in result.stdout
    assert re.search(r"shard 1/2: runs \d+ of 22 tests, about \d+\.\ds of \d+\.\ds recorded", result.stdout)

    # a shard's record keeps the other shard's entries
    result = pytest_run(suite_root, "--shard", "2/2", f"--shard-record={record}")
    assert result.returncode == 0
    assert sorted(json.loads(record.read_text())) == sorted(durations)


def test_more_shards_than_tests_is_a_green_empty_shard(tmp_path):
    root = write_suite(
        tmp_path / "tiny", {"pytest.ini": "[pytest]\n", "test_t.py": "def test_a():\n    pass\n"}
    )
    result = pytest_run(root, "--shard", "2/3")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "shard 2/3: runs 0 of 1 tests" in result.stdout


def test_under_xdist_the_workers_share_the_shard(suite_root, tmp_path):
    pytest.importorskip("xdist")
    counts = []
    for k in (1, 2):
        junit = tmp_path / f"x{k}.xml"
        record = tmp_path / f"x{k}.json"
        result = pytest_run(
            suite_root, "-n", "2", "--shard", f"{k}/2", f"--junitxml={junit}", f"--shard-record={record}"
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        mine = ran(junit)
        counts.append(mine)
        assert f"shard {k}/2: runs {len(mine)} tests" in output
        assert properties(junit)["shard_suite_tests"] == "22"
        assert properties(junit)["shard_tests"] == str(len(mine))
        assert sorted(json.loads(record.read_text())) == sorted(mine)
    assert sorted(counts[0] + counts[1]) == sorted(collected(suite_root))
    # the same partition as without xdist
    serial = tmp_path / "serial.xml"
    assert pytest_run(suite_root, "--shard", "1/2", f"--junitxml={serial}").returncode == 0
    assert sorted(ran(serial)) == sorted(counts[0])
