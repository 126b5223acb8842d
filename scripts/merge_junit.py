#!/usr/bin/env python3
"""Merge the JUnit XML reports of the shards of a run into one report, and check that the shards
together ran the whole suite once. Standard library only (the CI job that runs it installs nothing).

    python3 scripts/merge_junit.py --out-dir DIR [--durations FILE] REPORT...
    python3 scripts/merge_junit.py -o MERGED.xml REPORT...

With --out-dir the reports are grouped by name: `<name>-shard-<K>-of-<N>.xml` belongs to `<name>`, whose
shards are merged into DIR/<name>.xml (a report named otherwise is a group of its own). With -o every
report goes into one file. The merged file is a <testsuites> holding each shard's <testsuite> as it was
(its name suffixed with the shard), with the totals summed.

Each group is checked; a problem is printed and makes the exit status 1 (the merged file is written all
the same, for the record):

- a test (classname and name) in the reports of two shards: the shards overlap;
- a shard of 1..N missing (by the file names, or by the `shard` properties that `--shard` writes): its
  job wrote no report;
- with the properties `shard_tests` and `shard_suite_tests` (written by integration.shard_plugin): a
  shard that reported fewer tests than it selected, or shards whose tests do not add up to the suite.

--durations FILE merges the durations records given among the inputs (`*.json`, as `--shard-record`
writes them: {node id: seconds}) into FILE, for a later run's --shard-durations.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

SHARD_NAME = re.compile(r"(?P<name>.+)-shard-(?P<index>\d+)-of-(?P<total>\d+)")
SHARD_VALUE = re.compile(r"(?P<index>\d+)/(?P<total>\d+)")
COUNTERS = ("tests", "failures", "errors", "skipped")


@dataclass
class Report:
    """One shard's JUnit file."""

    path: Path
    suites: list[ET.Element]
    shard: tuple[int, int] | None = None  # (K, N), from the properties or the file name
    properties: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"shard {self.shard[0]}/{self.shard[1]}" if self.shard else self.path.name

    def cases(self) -> set[tuple[str, str]]:
        """(classname, name) of every test case, each once (pytest writes a test that failed and then
        errored in its teardown as two cases of the same name)."""
        return {
            (case.get("classname", ""), case.get("name", ""))
            for suite in self.suites
            for case in suite.iter("testcase")
        }


class ReportError(Exception):
    pass


def read_report(path: Path) -> Report:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise ReportError(f"{path}: not a JUnit XML report: {exc}") from None
    if root.tag == "testsuite":
        suites = [root]
    elif root.tag == "testsuites":
        suites = list(root.iter("testsuite"))
    else:
        raise ReportError(f"{path}: not a JUnit XML report: its root is <{root.tag}>")
    properties = {
        prop.get("name", ""): prop.get("value", "")
        for suite in suites
        for props in suite.findall("properties")
        for prop in props.findall("property")
    }
    report = Report(path, suites, properties=properties)
    by_property = SHARD_VALUE.fullmatch(properties.get("shard", ""))
    by_name = SHARD_NAME.fullmatch(path.stem)
    if by_property:
        report.shard = (int(by_property["index"]), int(by_property["total"]))
    elif by_name:
        report.shard = (int(by_name["index"]), int(by_name["total"]))
    return report


def group_name(path: Path) -> str:
    match = SHARD_NAME.fullmatch(path.stem)
    return match["name"] if match else path.stem


def check(reports: Sequence[Report]) -> list[str]:
    """Every problem of one group of shard reports, as text."""
    problems: list[str] = []
    sharded = [r for r in reports if r.shard is not None]
    totals = {r.shard[1] for r in sharded if r.shard}
    if len(totals) > 1:
        problems.append(f"the reports are of different shard counts: N = {sorted(totals)}")
    elif totals:
        (total,) = totals
        seen: dict[int, Report] = {}
        for report in sharded:
            assert report.shard is not None
            index = report.shard[0]
            if index in seen:
                problems.append(f"shard {index}/{total} twice: {seen[index].path} and {report.path}")
            seen[index] = report
        missing = [f"{k}/{total}" for k in range(1, total + 1) if k not in seen]
        if missing:
            problems.append(f"no report of shard {', '.join(missing)}: did its job run?")
    owner: dict[tuple[str, str], Report] = {}
    for report in reports:
        for case in sorted(report.cases()):
            first = owner.setdefault(case, report)
            if first is not report:
                problems.append(f"{case[0]}::{case[1]} ran in {first.label} and in {report.label}: overlap")
    for report in reports:
        expected = report.properties.get("shard_tests")
        if expected and expected.isdigit() and len(report.cases()) < int(expected):
            problems.append(
                f"{report.label} ({report.path}) reported {len(report.cases())} of the {expected} tests "
                "it selected: did it stop early?"
            )
    suites = {int(value) for r in reports if (value := r.properties.get("shard_suite_tests", "")).isdigit()}
    if len(suites) > 1:
        problems.append(f"the shards collected different suites: {sorted(suites)} tests")
    elif suites and len(owner) != next(iter(suites)):
        problems.append(f"the shards ran {len(owner)} different tests, the suite has {next(iter(suites))}")
    return problems


def _number(text: str | None) -> float:
    try:
        return float(text or 0)
    except ValueError:
        return 0.0


def merge(name: str, reports: Sequence[Report]) -> ET.Element:
    """One <testsuites> of every report's suites (ordered by shard), with the totals."""
    root = ET.Element("testsuites", {"name": name})
    totals = dict.fromkeys((*COUNTERS, "time"), 0.0)
    for report in sorted(reports, key=lambda r: (r.shard or (0, 0), str(r.path))):
        for suite in report.suites:
            copy = ET.fromstring(ET.tostring(suite))
            if report.shard:
                copy.set("name", f"{suite.get('name', 'pytest')} (shard {report.shard[0]}/{report.shard[1]})")
            root.append(copy)
            for key in totals:
                totals[key] += _number(suite.get(key))
    for key in COUNTERS:
        root.set(key, str(int(totals[key])))
    root.set("time", f"{totals['time']:.3f}")
    return root


def write(element: ET.Element, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.indent(element)
    ET.ElementTree(element).write(path, encoding="utf-8", xml_declaration=True)


def merge_durations(paths: Sequence[Path], out: Path) -> int:
    merged: dict[str, float] = {}
    for path in paths:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ReportError(f"{path}: not a durations record (a JSON object of node id: seconds)")
        merged.update({str(k): float(v) for k, v in data.items()})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(sorted(merged.items())), indent=1) + "\n", encoding="utf-8")
    return len(merged)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("-o", "--output", type=Path, help="merge every report into this one file")
    where.add_argument("--out-dir", type=Path, help="one merged report per group, <DIR>/<name>.xml")
    parser.add_argument("--durations", type=Path, help="merge the *.json inputs (durations records) here")
    parser.add_argument("reports", nargs="+", type=Path, help="the shards' JUnit XML files")
    args = parser.parse_args(argv)

    xml_paths = [p for p in args.reports if p.suffix != ".json"]
    json_paths = [p for p in args.reports if p.suffix == ".json"]
    groups: dict[str, list[Path]] = {}
    for path in xml_paths:
        key = args.output.stem if args.output else group_name(path)
        groups.setdefault(key, []).append(path)
    failed = False
    for name, paths in sorted(groups.items()):
        try:
            reports = [read_report(path) for path in paths]
        except ReportError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed = True
            continue
        out = args.output or args.out_dir / f"{name}.xml"
        merged = merge(name, reports)
        write(merged, out)
        counts = ", ".join(f"{merged.get(key)} {key}" for key in COUNTERS)
        print(f"{name}: {len(reports)} reports, {counts} -> {out}")
        for problem in check(reports):
            print(f"error: {name}: {problem}", file=sys.stderr)
            failed = True
    if args.durations and json_paths:
        try:
            count = merge_durations(json_paths, args.durations)
        except (OSError, ValueError, ReportError) as exc:
            print(f"error: --durations: {exc}", file=sys.stderr)
            failed = True
        else:
            print(f"durations of {count} tests -> {args.durations}")
    if not groups:
        print("error: no JUnit XML report among the inputs", file=sys.stderr)
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
