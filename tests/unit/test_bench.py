"""The benchmark's pure parts: statistics, ratios, the table, and what it reads from a pytest run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from integration import bench
from integration.discovery import load_system


def test_median_and_percentiles() -> None:
    assert bench.median([3.0, 1.0, 2.0]) == 2.0
    assert bench.median([1.0, 2.0, 3.0, 4.0]) == 2.5
    assert math.isnan(bench.median([]))
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert bench.percentile(values, 50) == pytest.approx(50.5)
    assert bench.percentile(values, 95) == pytest.approx(95.05)
    assert bench.percentile(values, 0) == 1.0
    assert bench.percentile(values, 100) == 100.0
    assert bench.percentile([7.0], 95) == 7.0
    assert math.isnan(bench.percentile([], 50))
    with pytest.raises(ValueError):
        bench.percentile(values, 101)


def test_speedup_is_their_time_over_ours() -> None:
    assert bench.speedup(2.0, 5.0) == 2.5
    assert math.isnan(bench.speedup(math.nan, 5.0))
    assert math.isnan(bench.speedup(0.0, 5.0))
    assert bench.at_least(bench.speedup(2.0, 3.0), 1.5) is True
    assert bench.at_least(bench.speedup(2.0, 2.9), 1.5) is False
    assert bench.at_least(math.nan, 1.5) is None
    assert bench.within(0.3, 0.3) is True and bench.within(0.31, 0.3) is False


def test_cells() -> None:
    assert bench.fmt_seconds(0.0123) == "12.3 ms"
    assert bench.fmt_seconds(12.345) == "12.35 s"
    assert bench.fmt_seconds(math.nan) == "-"
    assert bench.fmt_factor(2.0) == "2.00x"
    assert bench.verdict(False) == "MISSED" and bench.verdict(None) == ""


def test_render_table_aligns_columns() -> None:
    text = bench.render_table(
        ["what", "ours", "theirs"], [["cold", "9.1 s", "20.0 s"], ["warm run", "2 s", "-"]]
    )
    lines = text.splitlines()
    assert lines[0].split() == ["what", "ours", "theirs"]
    assert set(lines[1]) == {"-", " "}
    assert lines[2].startswith("cold      ") and lines[2].endswith("20.0 s")
    assert lines[3].startswith("warm run") and lines[3].endswith("-")
    assert len({len(line) for line in lines[:3]}) == 1, "the columns line up"


def test_phases_and_build_time_are_read_from_the_output() -> None:
    output = """\
...........                                                              [100%]
========================= integration: time per phase ==========================
freshness check       0.21s
stack up             10.58s
reset before tests    0.05s
tests                 9.90s
stack down            0.93s
============================== 43 passed in 21.71s ==============================
"""
    assert bench.parse_phases(output) == {
        "freshness check": 0.21,
        "stack up": 10.58,
        "reset before tests": 0.05,
        "tests": 9.9,
        "stack down": 0.93,
    }
    assert bench.parse_phases("43 passed") == {}
    assert bench.parse_build_seconds("links:test: built in 20.1s\nbuild step done in 31.4s\n") == 31.4
    assert math.isnan(bench.parse_build_seconds("nothing"))


def test_tables_compare_medians_and_judge_targets() -> None:
    results = bench.Results()
    for seconds in (9.0, 8.0, 30.0):
        results.sample("ours: cold, images cached").add(seconds)
    for seconds in (20.0, 19.0, 21.0):
        results.sample("pytest-docker: images cached").add(seconds)
    results.sample("ours: warm (reuse)").add(4.0)
    results.sample("reset, 2 services").seconds.extend([0.010] * 99 + [0.100])
    results.sample("up, 2 services").add(10.0)
    results.sample("up, 8 services").add(25.0)
    rows, scaling = bench.tables(results, 8)
    by_label = {row[0]: row for row in rows}
    cold = by_label["tests, cold stack, images cached"]
    assert cold[1:5] == ["9.00 s", "20.00 s", "2.22x", "<= 10 s, >= 2x"]
    assert cold[5] == "met"
    warm = by_label["tests, warm rerun, no change"]
    assert warm[3] == "5.00x" and warm[5] == "MISSED", "4 s is over the 3 s target"
    assert by_label["reset() p50 (100 resets)"][1:] == ["10.0 ms", "", "", "<= 15.0 ms", "met"]
    assert by_label["tests, images built from nothing"][5] == ""
    up = {row[0]: row for row in scaling}["up (cold, to healthy)"]
    assert up == ["up (cold, to healthy)", "10.00 s", "25.00 s", "2.50x"]


def test_a_cache_bust_token_follows_the_first_from(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("ARG PYTHON_IMAGE=python:3.11-slim\nFROM ${PYTHON_IMAGE}\nRUN pip install x\n")
    bench.bust_dockerfile(dockerfile, "abc")
    assert dockerfile.read_text().splitlines()[:3] == [
        "ARG PYTHON_IMAGE=python:3.11-slim",
        "FROM ${PYTHON_IMAGE}",
        "ENV BENCH_CACHE_BUST=abc",
    ]
    (tmp_path / "Empty").write_text("RUN true\n")
    with pytest.raises(ValueError):
        bench.bust_dockerfile(tmp_path / "Empty", "abc")


def test_the_scaled_system_copies_the_example_into_more_services(tmp_path: Path) -> None:
    root = bench.scale_system(bench.EXAMPLE, tmp_path / "scaled", 5)
    system = load_system(root)
    assert [s.name for s in system.services] == ["links", "analytics", "links-2", "analytics-2", "links-3"]
    assert {s.image for s in system.services} == {f"bench-{s.name}:test" for s in system.services}
    assert system.service("analytics-2").events_consumed == system.service("analytics").events_consumed
    assert system.service("links-3").database == "links_3"
    assert "services/links-3/app/" in (root / "services" / "links-3" / "Dockerfile").read_text()


def test_the_timeline_has_a_line_per_container_with_when_its_service_answered() -> None:
    events = [
        (0.5, "create", "p-links-1"),
        (0.5, "create", "p-links-db-1"),
        (1.0, "start", "p-links-db-1"),
        (3.0, "health_status: healthy", "p-links-db-1"),
        (3.5, "start", "p-links-1"),
        (5.0, "health_status: healthy", "p-links-1"),
    ]
    lines = bench.summarize_timeline(events, {"links": 4.25})
    assert [line.split()[0] for line in lines] == ["p-links-db-1", "p-links-1"]
    assert lines[0].split()[1:] == ["create", "0.50s", "start", "1.00s", "healthy", "3.00s"]
    assert lines[1].split()[-4:] == ["healthy", "5.00s", "answered", "4.25s"]


def test_worker_rows_give_each_xdist_mode_its_ratio_to_the_serial_run() -> None:
    results = bench.Results()
    for seconds in (12.0, 14.0, 13.0):
        results.sample("workers: -n 0").add(seconds)
    for seconds in (16.0, 17.0):
        results.sample("workers: -n 2 shared").add(seconds)
    results.sample("workers: -n 2 shared phase stack up").add(12.5)
    results.sample("workers: -n 2 shared phase tests").add(2.9)
    rows = {row[0]: row for row in bench.worker_rows(results)}
    assert set(rows) == {"-n 0", "-n 2 shared"}
    assert rows["-n 0"][1:3] == [bench.fmt_seconds(13.0), bench.fmt_factor(1.0)]
    assert rows["-n 2 shared"][1:3] == [bench.fmt_seconds(16.5), bench.fmt_factor(13.0 / 16.5)]
    assert rows["-n 2 shared"][3:] == [bench.fmt_seconds(12.5), bench.fmt_seconds(2.9), "-"]
    assert bench.worker_rows(bench.Results()) == []
