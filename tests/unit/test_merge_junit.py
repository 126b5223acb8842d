"""scripts/merge_junit.py and scripts/shard_matrix.py, the CI's two standard-library scripts of the
sharded integration jobs: merging the shards' JUnit reports (and refusing overlapping, missing or
incomplete shards), and making the matrix of sessions x shards."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


merge_junit = load("merge_junit")
shard_matrix = load("shard_matrix")


def report(
    path: Path,
    cases: list[str],
    *,
    shard: str | None = None,
    selected: int | None = None,
    suite: int | None = None,
    failed: tuple[str, ...] = (),
    skipped: tuple[str, ...] = (),
) -> Path:
    """A pytest-shaped JUnit file: <testsuites><testsuite> with properties and cases `module::name`."""
    props = {"shard": shard, "shard_tests": selected, "shard_suite_tests": suite}
    properties = "".join(f'<property name="{k}" value="{v}"/>' for k, v in props.items() if v is not None)
    body = ""
    for case in cases:
        classname, name = case.split("::")
        inner = '<failure message="boom"/>' if case in failed else ""
        inner += '<skipped message="no"/>' if case in skipped else ""
        body += f'<testcase classname="{classname}" name="{name}" time="0.5">{inner}</testcase>'
    path.write_text(
        f'<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests">'
        f'<testsuite name="pytest" errors="0" failures="{len(failed)}" skipped="{len(skipped)}" '
        f'tests="{len(cases)}" time="{0.5 * len(cases):.3f}" hostname="runner">'
        f"<properties>{properties}</properties>{body}</testsuite></testsuites>"
    )
    return path


def run(*args: Any, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = merge_junit.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def test_the_shards_of_each_session_merge_into_one_report(tmp_path, capsys):
    for session, cases in (("pg15", ["t.a::x", "t.a::y", "t.b::z"]), ("shop", ["s.a::x", "s.a::y"])):
        half = (len(cases) + 1) // 2
        for k, part in ((1, cases[:half]), (2, cases[half:])):
            report(
                tmp_path / f"{session}-shard-{k}-of-2.xml",
                part,
                shard=f"{k}/2",
                selected=len(part),
                suite=len(cases),
                failed=tuple(c for c in part if c == "t.b::z"),
            )
    out_dir = tmp_path / "merged"
    status, out, err = run("--out-dir", out_dir, *sorted(tmp_path.glob("*.xml")), capsys=capsys)
    assert status == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == ["pg15.xml", "shop.xml"]
    pg15 = ET.parse(out_dir / "pg15.xml").getroot()
    assert pg15.tag == "testsuites"
    assert (pg15.get("tests"), pg15.get("failures"), pg15.get("errors"), pg15.get("skipped")) == (
        "3",
        "1",
        "0",
        "0",
    )
    assert pg15.get("time") == "1.500"
    assert [s.get("name") for s in pg15.iter("testsuite")] == ["pytest (shard 1/2)", "pytest (shard 2/2)"]
    assert {(c.get("classname"), c.get("name")) for c in pg15.iter("testcase")} == {
        ("t.a", "x"),
        ("t.a", "y"),
        ("t.b", "z"),
    }
    assert "pg15: 2 reports, 3 tests, 1 failures, 0 errors, 0 skipped" in out


def test_overlapping_shards_are_an_error(tmp_path, capsys):
    report(tmp_path / "run-shard-1-of-2.xml", ["t.a::x", "t.a::y"], shard="1/2")
    report(tmp_path / "run-shard-2-of-2.xml", ["t.a::y", "t.a::z"], shard="2/2")
    status, _, err = run("--out-dir", tmp_path / "m", *sorted(tmp_path.glob("*.xml")), capsys=capsys)
    assert status == 1
    assert "t.a::y ran in shard 1/2 and in shard 2/2: overlap" in err
    assert (tmp_path / "m" / "run.xml").exists()  # written all the same, for the record


def test_a_missing_shard_is_an_error(tmp_path, capsys):
    report(tmp_path / "run-shard-1-of-3.xml", ["t.a::x"])
    report(tmp_path / "run-shard-3-of-3.xml", ["t.a::z"])
    status, _, err = run("--out-dir", tmp_path / "m", *sorted(tmp_path.glob("*.xml")), capsys=capsys)
    assert status == 1
    assert "no report of shard 2/3: did its job run?" in err


def test_shards_that_do_not_add_up_to_the_suite_are_an_error(tmp_path, capsys):
    report(tmp_path / "run-shard-1-of-2.xml", ["t.a::x"], shard="1/2", selected=2, suite=4)
    report(tmp_path / "run-shard-2-of-2.xml", ["t.a::y", "t.a::z"], shard="2/2", selected=2, suite=4)
    status, _, err = run("--out-dir", tmp_path / "m", *sorted(tmp_path.glob("*.xml")), capsys=capsys)
    assert status == 1
    assert "shard 1/2" in err and "reported 1 of the 2 tests it selected: did it stop early?" in err
    assert "the shards ran 3 different tests, the suite has 4" in err


def test_shards_of_different_suites_or_counts_are_an_error(tmp_path, capsys):
    report(tmp_path / "a.xml", ["t.a::x"], shard="1/2", selected=1, suite=2)
    report(tmp_path / "b.xml", ["t.a::y"], shard="2/3", selected=1, suite=3)
    status, _, err = run("-o", tmp_path / "all.xml", tmp_path / "a.xml", tmp_path / "b.xml", capsys=capsys)
    assert status == 1
    assert "different shard counts: N = [2, 3]" in err
    assert "the shards collected different suites" in err


def test_the_same_shard_twice_is_an_error(tmp_path, capsys):
    report(tmp_path / "a.xml", ["t.a::x"], shard="1/2")
    report(tmp_path / "b.xml", ["t.a::y"], shard="1/2")
    status, _, err = run("-o", tmp_path / "all.xml", tmp_path / "a.xml", tmp_path / "b.xml", capsys=capsys)
    assert status == 1
    assert "shard 1/2 twice" in err


def test_one_output_file_and_plain_reports(tmp_path, capsys):
    report(tmp_path / "a.xml", ["t.a::x"], skipped=("t.a::x",))
    report(tmp_path / "b.xml", ["t.b::x"])
    status, _, err = run(
        "-o", tmp_path / "out" / "all.xml", tmp_path / "a.xml", tmp_path / "b.xml", capsys=capsys
    )
    assert status == 0, err
    root = ET.parse(tmp_path / "out" / "all.xml").getroot()
    assert (root.get("tests"), root.get("skipped")) == ("2", "1")
    assert [s.get("name") for s in root.iter("testsuite")] == ["pytest", "pytest"]  # no shard to name


def test_a_test_that_failed_and_errored_in_teardown_is_one_test(tmp_path, capsys):
    # pytest writes it as two <testcase> of the same name in one report
    path = report(tmp_path / "run-shard-1-of-1.xml", ["t.a::x", "t.a::x"], shard="1/1", selected=1, suite=1)
    status, _, err = run("--out-dir", tmp_path / "m", path, capsys=capsys)
    assert status == 0, err


def test_a_broken_report_is_an_error(tmp_path, capsys):
    (tmp_path / "run-shard-1-of-1.xml").write_text("<testsuites><testsuite")
    status, _, err = run("--out-dir", tmp_path / "m", tmp_path / "run-shard-1-of-1.xml", capsys=capsys)
    assert status == 1 and "not a JUnit XML report" in err
    (tmp_path / "x.xml").write_text("<html/>")
    status, _, err = run("--out-dir", tmp_path / "m", tmp_path / "x.xml", capsys=capsys)
    assert status == 1 and "its root is <html>" in err


def test_no_report_at_all_is_an_error(tmp_path, capsys):
    status, _, err = run("--out-dir", tmp_path / "m", tmp_path / "d.json", capsys=capsys)
    assert status == 1 and "no JUnit XML report among the inputs" in err


def test_the_durations_records_merge(tmp_path, capsys):
    report(tmp_path / "r-shard-1-of-1.xml", ["t.a::x"])
    (tmp_path / "one.json").write_text(json.dumps({"t.py::x": 1.0, "t.py::y": 2.0}))
    (tmp_path / "two.json").write_text(json.dumps({"t.py::y": 3.0}))
    out = tmp_path / "m" / "durations.json"
    files = [tmp_path / "r-shard-1-of-1.xml", tmp_path / "one.json", tmp_path / "two.json"]
    status, said, err = run("--out-dir", tmp_path / "m", "--durations", out, *files, capsys=capsys)
    assert status == 0, err
    assert json.loads(out.read_text()) == {"t.py::x": 1.0, "t.py::y": 3.0}
    assert f"durations of 2 tests -> {out}" in said


def test_the_group_of_a_report_is_its_name_without_the_shard():
    assert merge_junit.group_name(Path("integration-shop-shard-2-of-4.xml")) == "integration-shop"
    assert merge_junit.group_name(Path("x/mock-tests-3.11.xml")) == "mock-tests-3.11"


# --- shard_matrix.py ----------------------------------------------------------------------------------


def test_the_matrix_has_each_session_once_per_shard(monkeypatch, capsys):
    listed = [{"session": "a", "python": "3.11"}, {"session": "b", "python": "3.12", "call_spec": {"x": "1"}}]
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(listed)))
    assert shard_matrix.main(["3"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [(e["session"], e["shard"]) for e in entries] == [
        (s, f"{k}/3") for s in ("a", "b") for k in (1, 2, 3)
    ]
    assert entries[3] == {"session": "b", "python": "3.12", "call_spec": {"x": "1"}, "shard": "1/3"}


@pytest.mark.parametrize(
    ("args", "stdin"), [([], "[]"), (["x"], "[]"), (["0"], "[]"), (["65"], "[]"), (["2"], "{}")]
)
def test_the_matrix_refuses_bad_input(monkeypatch, capsys, args, stdin):
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    assert shard_matrix.main(args) == 2
    assert capsys.readouterr().err
