"""The benchmark's start-up timeline as an SVG Gantt chart: valid XML, one bar per container, the
critical path marked; written beside the benchmark's JSON."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from integration import bench
from integration import timeline_svg as ts

SVG = "{http://www.w3.org/2000/svg}"

# A cold up of the example as `bench.summarize_timeline` writes it into the JSON: the databases and the
# broker start at once; the services wait for the broker, which is healthy last.
EVENTS = [
    (0.40, "create", "p-broker-1"),
    (0.40, "create", "p-links-db-1"),
    (0.41, "create", "p-analytics-db-1"),
    (0.42, "create", "p-links-1"),
    (0.42, "create", "p-analytics-1"),
    (0.55, "start", "p-links-db-1"),
    (0.56, "start", "p-analytics-db-1"),
    (0.60, "start", "p-broker-1"),
    (2.10, "health_status: healthy", "p-links-db-1"),
    (2.30, "health_status: healthy", "p-analytics-db-1"),
    (6.10, "health_status: healthy", "p-broker-1"),
    (6.15, "start", "p-links-1"),
    (6.16, "start", "p-analytics-1"),
    (8.20, "health_status: healthy", "p-links-1"),
    (8.60, "health_status: healthy", "p-analytics-1"),
]
LINES = bench.summarize_timeline(EVENTS, {"links": 7.9, "analytics": 8.4})


def bars(root: ET.Element) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if "bar" in (g.get("class") or "").split()]


def test_the_json_lines_are_read_back() -> None:
    containers = ts.parse_timeline(LINES)
    assert [c.name for c in containers] == [
        "p-links-db-1",
        "p-analytics-db-1",
        "p-broker-1",
        "p-links-1",
        "p-analytics-1",
    ]
    links = containers[3]
    assert (links.create, links.start, links.healthy, links.answered) == (0.42, 6.15, 8.2, 7.9)
    assert links.ready == 8.2  # the later of healthy and answered
    assert ts.parse_timeline({"a-1": {"start": 1.0}}) == [ts.ContainerTimes("a-1", start=1.0)]
    assert ts.parse_timeline([{"name": "a-1", "create": 0.5, "healthy": None}]) == [
        ts.ContainerTimes("a-1", create=0.5)
    ]
    with pytest.raises(ValueError):
        ts.parse_timeline([42])


def test_the_critical_path_runs_back_through_what_each_step_waited_for() -> None:
    containers = ts.parse_timeline(LINES)
    assert ts.critical_path(containers) == ["p-broker-1", "p-analytics-1"]
    # Told the dependencies, the path keeps to them.
    depends = {"p-analytics-1": ["p-analytics-db-1"]}
    assert ts.critical_path(containers, depends) == ["p-analytics-db-1", "p-analytics-1"]
    assert ts.critical_path([]) == []


def test_the_svg_is_valid_xml_with_one_bar_per_container_and_the_critical_path_marked() -> None:
    text = ts.timeline_svg(LINES, title="cold up timeline, 2 services")
    root = ET.fromstring(text)  # valid XML
    assert root.tag == f"{SVG}svg"
    found = bars(root)
    assert [g.get("data-container") for g in found] == [
        "p-links-db-1",
        "p-analytics-db-1",
        "p-broker-1",
        "p-links-1",
        "p-analytics-1",
    ]
    critical = [g.get("data-container") for g in found if "critical" in (g.get("class") or "").split()]
    assert critical == ["p-broker-1", "p-analytics-1"]
    links = [p for p in root.iter(f"{SVG}path") if p.get("class") == "critical-link"]
    assert len(links) == 1  # broker healthy -> analytics start
    subtitle = next(t for t in root.iter(f"{SVG}text") if t.get("class") == "critical-path")
    assert subtitle.text == "critical path: p-broker-1 \u2192 p-analytics-1 (ready at 8.60 s)"
    # Each bar: waiting (created to started) and starting (started to healthy), the marks on top.
    analytics = found[-1]
    kinds = [e.get("class") for e in analytics if e.tag in (f"{SVG}rect", f"{SVG}g")]
    assert kinds == ["wait", "boot", "mark healthy", "mark answered"]
    tips = [t.text for t in analytics.iter(f"{SVG}title")]
    assert "p-analytics-1: waiting 0.42 s to 6.16 s" in tips
    assert "p-analytics-1: answered at 8.40 s" in tips


def test_names_are_escaped() -> None:
    root = ET.fromstring(ts.timeline_svg(["a<b>&c  start 0.10s  healthy 0.50s"], title='"t" & <u>'))
    assert [g.get("data-container") for g in bars(root)] == ["a<b>&c"]
    title = root.find(f"{SVG}title")
    assert title is not None and title.text == '"t" & <u>'


def test_one_svg_per_timeline_is_written_beside_the_json(tmp_path: Path) -> None:
    results = tmp_path / "20261201-204000.json"
    results.write_text(json.dumps({"samples": {}, "timelines": {"2 services": LINES, "8 services": []}}))
    written = ts.write_timeline_svgs(results)
    assert written == [tmp_path / "20261201-204000.timeline-2-services.svg"]
    assert len(bars(ET.parse(written[0]).getroot())) == 5
    results.write_text(json.dumps({"samples": {}}))
    assert ts.write_timeline_svgs(results) == []
