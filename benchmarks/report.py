"""The output of a benchmark run: the tables (each figure against its target), the cold-up timelines, and
the JSON file of every sample (pure but for writing that file)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

from integration.timeline_svg import parse_timeline

from .samples import Results, median, percentile

# Targets on the reference machine (2 cores): seconds, or the factor by which pytest-docker is slower.
# Issue 14's table: `issue_rows`.
TARGETS = {
    "cold": 9.0,
    "warm": 3.0,
    "freshness": 0.4,
    "reset_p50": 0.006,
    "reset_p50_scaled": 0.010,
    "teardown": 0.8,
    "up": 6.0,
    "up_scaled": 9.0,
    "warm_beyond_tests": 0.5,
    "speedup_nothing": 1.5,
    "speedup_cached": 2.0,
    "speedup_warm": 5.0,
}
# The second example's samples are named as the first's with this prefix (benchmarks/shop.py).
SHOP = "shop: "


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
    single("freshness check, in-process", m("freshness: in-process"))
    single(
        "freshness check, whole process", m("freshness: python -m integration check"), TARGETS["freshness"]
    )
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


def issue_rows(results: Results, scale: int, prefix: str = "") -> list[list[str]]:
    """Issue 14's table for one example (`prefix` "" for the bundled one, SHOP for examples/shop): each
    measure, its target, today's figure, pytest-docker's where it was measured in the same run, their
    ratio (its median over ours) and the verdict. Every figure is a median of this run's samples; a
    measure that did not run shows "-" and no verdict."""
    m = results.median
    rows: list[list[str]] = []

    def row(label: str, target: str, value: float, met: bool | None, theirs: float = math.nan) -> None:
        ratio = speedup(value, theirs)
        rows.append([label, target, fmt_seconds(value), fmt_seconds(theirs), fmt_factor(ratio), verdict(met)])

    def p50(name: str) -> float:
        sample = results.samples.get(prefix + name)
        return percentile(sample.seconds if sample else [], 50)

    ours, theirs = m(prefix + "ours: cold, images cached"), m(prefix + "pytest-docker: images cached")
    fast = within(ours, TARGETS["cold"])
    faster = at_least(speedup(ours, theirs), TARGETS["speedup_cached"])
    # Both halves must be measured for the target to be met; a missed half misses it either way.
    met = None if fast is None else (None if fast else False) if faster is None else fast and faster
    row(
        "tests, cold stack, images cached",
        f"<= {TARGETS['cold']:g} s and >= {TARGETS['speedup_cached']:g}x pytest-docker",
        ours,
        met,
        theirs,
    )
    sizes = [2] if prefix else [2, scale]
    for size in sizes:
        key = "up" if size == 2 else "up_scaled"
        value = m(f"{prefix}up, {size} services")
        row(f"stack up, {size} services", f"<= {TARGETS[key]:g} s", value, within(value, TARGETS[key]))
    value = m(prefix + "ours: warm beyond tests")
    target = TARGETS["warm_beyond_tests"]
    row("warm rerun, whole process, beyond the test phase", f"<= {target:g} s", value, within(value, target))
    value = m(prefix + "freshness: python -m integration check")
    row(
        "freshness check, whole process",
        f"<= {TARGETS['freshness']:g} s",
        value,
        within(value, TARGETS["freshness"]),
    )
    for size in sizes:
        key = "reset_p50" if size == 2 else "reset_p50_scaled"
        value = p50(f"reset, {size} services")
        row(
            f"reset p50, {size} services",
            f"<= {fmt_seconds(TARGETS[key])}",
            value,
            within(value, TARGETS[key]),
        )
    value = m(prefix + "ours: cold phase stack down")
    row("teardown", f"<= {TARGETS['teardown']:g} s", value, within(value, TARGETS["teardown"]))
    return rows


START_SLACK = 0.5  # seconds: a start this soon after another container was ready counts as waiting for it


def critical_path_lines(timeline: Sequence[str]) -> list[str]:
    """The critical path of a cold start, one line per container on it, first to last: when it was
    created, started and ready, and for each after the first, how long it waited (from its creation to
    its start) and for whom: the container that became ready (healthy, and answering when it is a
    service) last before it started. The toolkit starts a service once the services it calls answer,
    which the engine's health events alone do not show."""
    containers = parse_timeline(timeline)
    ready = [c for c in containers if c.ready is not None]
    if not ready:
        return []
    current = max(ready, key=lambda c: (c.ready or 0, c.name))
    path = [current]
    while current.start is not None:
        start = current.start
        before = [
            c
            for c in ready
            if c not in path
            and c.ready is not None
            and c.ready <= start + START_SLACK
            and c.ready > (c.start or 0)
        ]
        if not before:
            break
        current = max(before, key=lambda c: (c.ready or 0, c.name))
        path.append(current)
    path.reverse()
    lines = []
    for index, c in enumerate(path):
        marks = "  ".join(
            f"{key} {value:.2f}s"
            for key, value in (
                ("created", c.create),
                ("started", c.start),
                ("healthy", c.healthy),
                ("answered", c.answered),
            )
            if value is not None
        )
        if index == 0:
            lines.append(f"{c.name}  {marks}")
            continue
        previous = path[index - 1]
        waited = (c.start or 0) - (c.create if c.create is not None else c.start or 0)
        was_ready = previous.ready or 0
        lines.append(
            f"-> {c.name} waited {waited:.2f}s for {previous.name} (ready {was_ready:.2f}s)  {marks}"
        )
    return lines


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


ISSUE_HEADERS = ["measure", "target", "today", "pytest-docker", "ratio", ""]


def render(results: Results, scale: int, *, only_workers: bool = False) -> str:
    """Every table of a run, as printed: issue 14's table for the bundled example and for examples/shop
    (when it was measured), the summary and the scaling table (unless only the workers were measured),
    then the pytest-xdist table when there are worker samples."""
    text = ""
    if not only_workers:
        text = "issue 14, examples/shortener (medians of this run):\n"
        text += render_table(ISSUE_HEADERS, issue_rows(results, scale))
        if any(name.startswith(SHOP) for name in results.samples):
            text += "\n\nissue 14, examples/shop (orders calls inventory; no pytest-docker side):\n"
            text += render_table(ISSUE_HEADERS, issue_rows(results, scale, SHOP))
        rows, scaling = tables(results, scale)
        text += "\n\n" + render_table(["measurement", "ours", "pytest-docker", "speedup", "target", ""], rows)
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
            report(f"critical path of the start, {tag}:")
            for line in critical_path_lines(lines):
                report("  " + line)
    report(f"\nmachine: {results.extra.get('machine')}")
    report(f"results: {out}")
