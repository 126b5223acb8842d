"""The output of a benchmark run: the tables (each figure against its target), the cold-up timelines, and
the JSON file of every sample (pure but for writing that file)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

from .samples import Results, median, percentile

# Targets on the reference machine (2 cores): seconds, or the factor by which pytest-docker is slower.
TARGETS = {
    "cold": 10.0,
    "warm": 3.0,
    "freshness": 0.3,
    "reset_p50": 0.015,
    "teardown": 3.0,
    "speedup_nothing": 1.5,
    "speedup_cached": 2.0,
    "speedup_warm": 5.0,
}


def speedup(ours: float, theirs: float) -> float:
    """How many times faster ours is: theirs / ours (NaN when either is missing or ours is 0)."""
    if math.isnan(ours) or math.isnan(theirs) or ours <= 0:
        return math.nan
    return theirs / ours


def fmt_seconds(value: float) -> str:
    """Seconds for a table cell: milliseconds below one second, "-" for a missing value."""
    if value is None or math.isnan(value):
        return "-"
    if value < 1:
        return f"{value * 1000:.1f} ms"
    return f"{value:.2f} s"


def fmt_factor(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}x"


def verdict(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: ""}[met]


def within(value: float, limit: float) -> bool | None:
    return None if math.isnan(value) else value <= limit


def at_least(value: float, limit: float) -> bool | None:
    return None if math.isnan(value) else value >= limit


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: left-aligned first column, the others right-aligned, a rule under the head."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        parts = [str(cells[0]).ljust(widths[0])]
        parts += [str(cell).rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def tables(results: Results, scale: int) -> tuple[list[list[str]], list[list[str]]]:
    """The summary table's rows (measurement, ours, pytest-docker, speedup, target, verdict) and the
    scaling table's rows, from the samples."""
    m = results.median
    rows: list[list[str]] = []

    def compare(label: str, ours: str, theirs: str, target: float | None, factor: float) -> None:
        o, t = m(ours), m(theirs)
        s = speedup(o, t)
        checks = [c for c in (within(o, target) if target else None, at_least(s, factor)) if c is not None]
        goal = f"<= {target:g} s, >= {factor:g}x" if target else f">= {factor:g}x"
        rows.append(
            [
                label,
                fmt_seconds(o),
                fmt_seconds(t),
                fmt_factor(s),
                goal,
                verdict(all(checks) if checks else None),
            ]
        )

    def single(label: str, value: float, target: float | None = None, goal: str = "") -> None:
        met = within(value, target) if target is not None else None
        rows.append(
            [
                label,
                fmt_seconds(value),
                "",
                "",
                goal or (f"<= {fmt_seconds(target)}" if target else ""),
                verdict(met),
            ]
        )

    compare(
        "tests, images built from nothing",
        "ours: images from nothing",
        "pytest-docker: images from nothing",
        None,
        TARGETS["speedup_nothing"],
    )
    compare(
        "tests, cold stack, images cached",
        "ours: cold, images cached",
        "pytest-docker: images cached",
        TARGETS["cold"],
        TARGETS["speedup_cached"],
    )
    compare(
        "tests, warm rerun, no change",
        "ours: warm (reuse)",
        "pytest-docker: images cached",
        TARGETS["warm"],
        TARGETS["speedup_warm"],
    )
    for phase in ("freshness check", "stack up", "reset before tests", "tests", "stack down"):
        for mode in ("cold", "warm"):
            value = m(f"ours: {mode} phase {phase}")
            if not math.isnan(value):
                single(f"  {mode}: {phase}", value)
    single("freshness check, in-process", m("freshness: in-process"), TARGETS["freshness"])
    single("freshness check, whole process", m("freshness: python -m integration check"))
    single("  python start alone (floor)", m("python start (floor)"))
    reset = results.samples.get("reset, 2 services")
    resets = reset.seconds if reset else []
    single(f"reset() p50 ({len(resets)} resets)", percentile(resets, 50), TARGETS["reset_p50"])
    single("reset() p95", percentile(resets, 95))
    connect = results.samples.get("connect, 2 services")
    single("  of which: one database connection p50", percentile(connect.seconds if connect else [], 50))
    purge = results.samples.get("purge, 2 services")
    single("  of which: broker purge p50", percentile(purge.seconds if purge else [], 50))
    single("teardown (stack down, cold runs)", m("ours: cold phase stack down"), TARGETS["teardown"])
    single("image build from nothing (build step)", m("ours: build from nothing"))
    single("image build, cached (nothing stale)", m("ours: build, images cached"))

    scaling: list[list[str]] = []
    for label, key, as_p50 in (
        ("build from nothing", "build from nothing", False),
        ("build, images cached", "build, images cached", False),
        ("up (cold, to healthy)", "up", False),
        ("reset() p50", "reset", True),
        ("down", "down", False),
    ):
        values = []
        for size in (2, scale):
            sample = results.samples.get(f"{key}, {size} services")
            seconds = sample.seconds if sample else []
            values.append(percentile(seconds, 50) if as_p50 else median(seconds))
        growth = speedup(values[0], values[1])
        scaling.append([label, fmt_seconds(values[0]), fmt_seconds(values[1]), fmt_factor(growth)])
    return rows, scaling


def worker_rows(results: Results) -> list[list[str]]:
    """One row per xdist mode: the median whole pytest command, its ratio to the serial run (above 1:
    faster than -n 0), and its phases."""
    serial = results.median("workers: -n 0")
    rows = []
    for name in sorted(n for n in results.samples if n.startswith("workers: ") and " phase " not in n):
        seconds = results.median(name)
        phases = [
            fmt_seconds(results.median(f"{name} phase {phase}"))
            if f"{name} phase {phase}" in results.samples
            else "-"
            for phase in ("stack up", "tests", "stack down")
        ]
        rows.append(
            [
                name.removeprefix("workers: "),
                fmt_seconds(seconds),
                fmt_factor(speedup(seconds, serial)),
                *phases,
            ]
        )
    return rows


def render(results: Results, scale: int, *, only_workers: bool = False) -> str:
    """Every table of a run, as printed: the summary and the scaling table (unless only the workers were
    measured), then the pytest-xdist table when there are worker samples."""
    text = ""
    if not only_workers:
        rows, scaling = tables(results, scale)
        text = render_table(["measurement", "ours", "pytest-docker", "speedup", "target", ""], rows)
        text += "\n\n" + render_table(
            ["grows with services", "2 services", f"{scale} services", "growth"], scaling
        )
    workers = worker_rows(results)
    if workers:
        text += ("\n\n" if text else "") + render_table(
            ["pytest-xdist (whole pytest)", "seconds", "vs -n 0", "stack up", "tests", "stack down"],
            workers,
        )
    return text


def write_json(results: Results, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results.to_json(), indent=2, default=str) + "\n")
    return out


def print_summary(results: Results, out: Path, report: Callable[[str], None]) -> None:
    """The tables, each cold-up timeline, the machine and where the JSON is."""
    report("")
    report(results.extra.get("table", ""))
    for tag, lines in results.extra.get("timelines", {}).items():
        if lines:
            report(f"\ncold up timeline, {tag} (seconds since up began):")
            for line in lines:
                report("  " + line)
    report(f"\nmachine: {results.extra.get('machine')}")
    report(f"results: {out}")
