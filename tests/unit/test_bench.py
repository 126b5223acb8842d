"""The benchmark's pure parts (benchmarks/): statistics, ratios, the table, what it reads from a pytest
run, the systems it generates, and the files it copies."""

from __future__ import annotations

import ast
import math
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from python_on_whales.components.system.models import DockerEvent

from integration.bench import summarize_timeline
from integration.discovery import load_system

# The benchmark is no package of the distribution: it is imported from the repository root, which
# `python -m pytest` run there puts on sys.path and a bare `pytest` does not.
REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import pytest_docker, report, samples, scaling, systems, timeline  # noqa: E402
from benchmarks.processes import parse_build_seconds, parse_phases  # noqa: E402


def test_median_and_percentiles() -> None:
    assert samples.median([3.0, 1.0, 2.0]) == 2.0
    assert samples.median([1.0, 2.0, 3.0, 4.0]) == 2.5
    assert math.isnan(samples.median([]))
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert samples.percentile(values, 50) == pytest.approx(50.5)
    assert samples.percentile(values, 95) == pytest.approx(95.05)
    assert samples.percentile(values, 0) == 1.0
    assert samples.percentile(values, 100) == 100.0
    assert samples.percentile([7.0], 95) == 7.0
    assert math.isnan(samples.percentile([], 50))
    with pytest.raises(ValueError):
        samples.percentile(values, 101)


def test_speedup_is_their_time_over_ours() -> None:
    assert report.speedup(2.0, 5.0) == 2.5
    assert math.isnan(report.speedup(math.nan, 5.0))
    assert math.isnan(report.speedup(0.0, 5.0))
    assert report.at_least(report.speedup(2.0, 3.0), 1.5) is True
    assert report.at_least(report.speedup(2.0, 2.9), 1.5) is False
    assert report.at_least(math.nan, 1.5) is None
    assert report.within(0.3, 0.3) is True and report.within(0.31, 0.3) is False


def test_cells() -> None:
    assert report.fmt_seconds(0.0123) == "12.3 ms"
    assert report.fmt_seconds(12.345) == "12.35 s"
    assert report.fmt_seconds(math.nan) == "-"
    assert report.fmt_factor(2.0) == "2.00x"
    assert report.verdict(False) == "MISSED" and report.verdict(None) == ""


def test_render_table_aligns_columns() -> None:
    text = report.render_table(
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
    assert parse_phases(output) == {
        "freshness check": 0.21,
        "stack up": 10.58,
        "reset before tests": 0.05,
        "tests": 9.9,
        "stack down": 0.93,
    }
    assert parse_phases("43 passed") == {}
    assert parse_build_seconds("links:test: built in 20.1s\nbuild step done in 31.4s\n") == 31.4
    assert math.isnan(parse_build_seconds("nothing"))


def test_tables_compare_medians_and_judge_targets() -> None:
    results = samples.Results()
    for seconds in (9.0, 8.0, 30.0):
        results.sample("ours: cold, images cached").add(seconds)
    for seconds in (20.0, 19.0, 21.0):
        results.sample("pytest-docker: images cached").add(seconds)
    results.sample("ours: warm (reuse)").add(4.0)
    results.sample("reset, 2 services").seconds.extend([0.010] * 99 + [0.100])
    results.sample("up, 2 services").add(10.0)
    results.sample("up, 8 services").add(25.0)
    rows, scaling = report.tables(results, 8)
    by_label = {row[0]: row for row in rows}
    cold = by_label["tests, cold stack, images cached"]
    assert cold[1:5] == ["9.00 s", "20.00 s", "2.22x", "<= 9 s, >= 2x"]
    assert cold[5] == "met"
    warm = by_label["tests, warm rerun, no change"]
    assert warm[3] == "5.00x" and warm[5] == "MISSED", "4 s is over the 3 s target"
    assert by_label["reset() p50 (100 resets)"][1:] == ["10.0 ms", "", "", "<= 6.0 ms", "MISSED"]
    assert by_label["tests, images built from nothing"][5] == ""
    up = {row[0]: row for row in scaling}["up (cold, to healthy)"]
    assert up == ["up (cold, to healthy)", "10.00 s", "25.00 s", "2.50x"]


def test_a_cache_bust_token_follows_the_first_from(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("ARG PYTHON_IMAGE=python:3.11-slim\nFROM ${PYTHON_IMAGE}\nRUN pip install x\n")
    systems.bust_dockerfile(dockerfile, "abc")
    assert dockerfile.read_text().splitlines()[:3] == [
        "ARG PYTHON_IMAGE=python:3.11-slim",
        "FROM ${PYTHON_IMAGE}",
        "ENV BENCH_CACHE_BUST=abc",
    ]
    (tmp_path / "Empty").write_text("RUN true\n")
    with pytest.raises(ValueError):
        systems.bust_dockerfile(tmp_path / "Empty", "abc")


def test_the_scaled_system_copies_the_example_into_more_services(tmp_path: Path) -> None:
    root = scaling.scale_system(systems.EXAMPLE, tmp_path / "scaled", 5)
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
    lines = summarize_timeline(events, {"links": 4.25})
    assert [line.split()[0] for line in lines] == ["p-links-db-1", "p-links-1"]
    assert lines[0].split()[1:] == ["create", "0.50s", "start", "1.00s", "healthy", "3.00s"]
    assert lines[1].split()[-4:] == ["healthy", "5.00s", "answered", "4.25s"]


def test_worker_rows_give_each_xdist_mode_its_ratio_to_the_serial_run() -> None:
    results = samples.Results()
    for seconds in (12.0, 14.0, 13.0):
        results.sample("workers: -n 0").add(seconds)
    for seconds in (16.0, 17.0):
        results.sample("workers: -n 2 shared").add(seconds)
    results.sample("workers: -n 2 shared phase stack up").add(12.5)
    results.sample("workers: -n 2 shared phase tests").add(2.9)
    rows = {row[0]: row for row in report.worker_rows(results)}
    assert set(rows) == {"-n 0", "-n 2 shared"}
    assert rows["-n 0"][1:3] == [report.fmt_seconds(13.0), report.fmt_factor(1.0)]
    assert rows["-n 2 shared"][1:3] == [report.fmt_seconds(16.5), report.fmt_factor(13.0 / 16.5)]
    assert rows["-n 2 shared"][3:] == [report.fmt_seconds(12.5), report.fmt_seconds(2.9), "-"]
    assert report.worker_rows(samples.Results()) == []


def test_the_scaled_copies_contract_modules_are_the_template_naming_the_original(tmp_path: Path) -> None:
    root = scaling.scale_system(systems.EXAMPLE, tmp_path / "scaled", 3)
    template = scaling.CONTRACT.read_text()
    generated = (root / "architecture" / "contracts" / "links_2.py").read_text()
    assert generated == template.replace(scaling.CONTRACT_PLACEHOLDER, "architecture.contracts.links")
    imported = {node.module for node in ast.walk(ast.parse(generated)) if isinstance(node, ast.ImportFrom)}
    assert imported == {"architecture.contracts.links"}


def test_pytest_docker_gets_the_conftest_file_and_a_link_to_the_toolkit_only(tmp_path: Path) -> None:
    side = pytest_docker.PytestDocker(tmp_path / "venv", tmp_path / "lib")
    root = tmp_path / "system"
    root.mkdir()
    side.install(root)
    side.install(root)  # again: the link stays
    assert (root / "conftest.py").read_bytes() == pytest_docker.CONFTEST.read_bytes()
    assert pytest_docker.CONFTEST.is_relative_to(REPO / "benchmarks")
    ast.parse(pytest_docker.CONFTEST.read_text())
    assert [p.name for p in (tmp_path / "lib").iterdir()] == ["integration"]
    assert (tmp_path / "lib" / "integration").resolve() == REPO / "integration"


def test_pytest_dockers_compose_file_builds_each_service_under_its_own_tag(tmp_path: Path) -> None:
    root = systems.copy_system(systems.EXAMPLE, tmp_path / "copy")
    system = load_system(root)
    generated = tmp_path / "generated.yml"
    services = {s.name: {"image": s.image, "ports": ["127.0.0.1:1:8000"]} for s in system.services}
    generated.write_text(yaml.safe_dump({"services": {**services, "broker": {"image": "rabbitmq"}}}))
    data = yaml.safe_load(pytest_docker.compose_file(generated, tmp_path / "pd.yml", system).read_text())
    assert data["services"]["broker"] == {"image": "rabbitmq"}
    links = data["services"]["links"]
    assert links["image"] == "bench-links:pytest-docker"
    assert links["build"]["context"] == str(root)
    assert links["build"]["dockerfile"] == "services/links/Dockerfile"
    assert pytest_docker.image_tags(["bench-links:test"]) == ["bench-links:pytest-docker"]
    assert [s["name"] for s in pytest_docker.service_specs(system)] == ["links", "analytics"]


class FakeSystem:
    """`client.system` of a python-on-whales client whose `events` replays the same events each window,
    as the engine replays what came since a window's --since."""

    def __init__(self, events: list[DockerEvent]) -> None:
        self.events_seen = events
        self.calls: list[tuple[datetime, datetime, dict[str, str]]] = []

    def events(self, since: datetime, until: datetime, filters: dict[str, str]) -> list[DockerEvent]:
        self.calls.append((since, until, filters))
        time.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()))
        return self.events_seen


def test_the_event_timeline_reads_windows_until_the_block_ends_and_counts_each_event_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(timeline, "WINDOW", 0.05)
    now = time.time_ns()

    def event(action: str, name: str) -> DockerEvent:
        return DockerEvent(Action=action, Actor={"ID": "x", "Attributes": {"name": name}}, timeNano=now)

    fake = FakeSystem([event("create", "p-links-1"), event("exec_start: probe", "p-links-1")])
    client = type("Client", (), {"system": fake})()
    with timeline.event_timeline("p", client=client) as recorded:
        time.sleep(0.2)
    assert [(action, name) for _, action, name in recorded.events] == [("create", "p-links-1")]
    assert len(fake.calls) >= 2, "a window ends by itself; the next one starts where it ended"
    assert fake.calls[1][0] == fake.calls[0][1]
    assert fake.calls[0][2] == {"label": "com.docker.compose.project=p", "type": "container"}
    assert recorded.error is None
    assert recorded.lines()[0].split()[:3] == ["p-links-1", "create", f"{recorded.events[0][0]:.2f}s"]


def issue_results(prefix: str = "") -> samples.Results:
    """Samples of one example as a run records them (`prefix`: report.SHOP for the second one)."""
    results = samples.Results()
    for seconds in (8.0, 7.0, 30.0):
        results.sample(prefix + "ours: cold, images cached").add(seconds)
    for seconds in (20.0, 19.0, 21.0):
        results.sample("pytest-docker: images cached").add(seconds)
    results.sample(prefix + "up, 2 services").add(5.0)
    results.sample("up, 6 services").add(9.5)
    for seconds in (0.3, 0.7, 0.4):
        results.sample(prefix + "ours: warm beyond tests").add(seconds)
    results.sample(prefix + "freshness: python -m integration check").add(0.35)
    results.sample(prefix + "reset, 2 services").seconds.extend([0.004] * 60 + [0.050] * 40)
    results.sample("reset, 6 services").seconds.extend([0.008] * 100)
    results.sample(prefix + "ours: cold phase stack down").add(0.9)
    return results


def test_issue_table_puts_each_median_beside_its_target() -> None:
    rows = {row[0]: row[1:] for row in report.issue_rows(issue_results(), 6)}
    assert rows["tests, cold stack, images cached"] == [
        "<= 9 s and >= 2x pytest-docker",
        "8.00 s",
        "20.00 s",
        "2.50x",
        "met",
    ]
    assert rows["stack up, 2 services"] == ["<= 6 s", "5.00 s", "-", "-", "met"]
    assert rows["stack up, 6 services"][1] == "9.50 s" and rows["stack up, 6 services"][-1] == "MISSED"
    assert rows["warm rerun, whole process, beyond the test phase"][1:2] == ["400.0 ms"]
    assert rows["warm rerun, whole process, beyond the test phase"][-1] == "met"
    assert rows["freshness check, whole process"][-1] == "met"
    assert rows["reset p50, 2 services"][:2] == ["<= 6.0 ms", "4.0 ms"]  # the p50, not the mean
    assert rows["reset p50, 6 services"][:2] == ["<= 10.0 ms", "8.0 ms"]
    assert rows["teardown"] == ["<= 0.8 s", "900.0 ms", "-", "-", "MISSED"]


def test_the_cold_target_needs_both_halves_measured() -> None:
    results = issue_results()
    del results.samples["pytest-docker: images cached"]
    (cold,) = [row for row in report.issue_rows(results, 6) if row[0].startswith("tests, cold")]
    assert cold[3:] == ["-", "-", ""], "fast enough, but without pytest-docker the ratio is unknown"
    results.sample("ours: cold, images cached").seconds[:] = [12.0]
    (cold,) = [row for row in report.issue_rows(results, 6) if row[0].startswith("tests, cold")]
    assert cold[-1] == "MISSED", "too slow is missed whatever pytest-docker took"


def test_the_second_examples_table_reads_its_own_samples_only() -> None:
    results = issue_results(report.SHOP)
    rows = {row[0]: row for row in report.issue_rows(results, 6, report.SHOP)}
    assert "stack up, 6 services" not in rows and "reset p50, 6 services" not in rows
    # Its cold runs have no pytest-docker side: the bundled example's figure is not borrowed.
    assert rows["tests, cold stack, images cached"][3:5] == ["-", "-"]
    assert rows["stack up, 2 services"][2] == "5.00 s"
    text = report.render(results, 6)
    assert "issue 14, examples/shortener" in text and "issue 14, examples/shop" in text


def test_the_critical_path_names_who_waited_for_whom_and_how_long() -> None:
    # orders calls inventory: it starts once inventory answers, which no health event of the engine shows.
    lines = [
        "shop-inventory-db-1                  create  0.10s  start  0.20s  healthy  2.00s",
        "shop-broker-1                        create  0.10s  start  0.20s  healthy  1.00s",
        "shop-inventory-1                     create  0.15s  start  2.05s  answered  3.10s",
        "shop-orders-db-1                     create  0.10s  start  0.20s  healthy  1.50s",
        "shop-orders-1                        create  0.15s  start  3.20s  answered  4.20s",
    ]
    path = report.critical_path_lines(lines)
    assert [line.removeprefix("-> ").split()[0] for line in path] == [
        "shop-inventory-db-1",
        "shop-inventory-1",
        "shop-orders-1",
    ]
    assert path[1].startswith("-> shop-inventory-1 waited 1.90s for shop-inventory-db-1 (ready 2.00s)")
    assert "orders-1 waited 3.05s for shop-inventory-1 (ready 3.10s)" in path[2]
    assert report.critical_path_lines([]) == []
