"""The benchmark's start-up timeline as a picture: an SVG Gantt chart, one bar per container.

`python -m benchmarks` records, for a cold `up`, when each container was created, started and
became healthy (the engine's events) and when each service's health URL first answered the toolkit, and
writes them into its JSON (`timelines`: per system size, the lines of `bench.summarize_timeline`). This
module turns such a timeline into SVG text (`timeline_svg`, a pure function) and writes one picture per
timeline beside the JSON (`write_timeline_svgs`).

Each bar: waiting (created, not started: its dependencies were not healthy yet), then starting (started
to healthy); a mark where its service answered. The critical path is marked: the chain of containers
that decided when the stack was ready, from the one that was ready last back through, at each step, the
container whose becoming healthy let it start (the latest healthy at or before its start; with
`depends_on`, among its dependencies only).
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

MARKS = ("create", "start", "healthy", "answered")
# How much earlier than a container's start its dependency's healthy event may be stamped after it
# (the engine's events and the start are stamped by different parts of the engine).
START_SLACK = 0.05

ROW = 26
BAR = 14
TOP = 58
LEFT_PAD = 12
RIGHT_PAD = 24
CHART_WIDTH = 640
CHAR_WIDTH = 7.2  # of the 12 px monospace labels

COLORS = {
    "wait": "#d0d4da",
    "boot": "#5b8def",
    "critical": "#d62728",
    "healthy": "#2ca02c",
    "answered": "#9467bd",
    "grid": "#e6e8eb",
    "text": "#1f2328",
}


@dataclass(frozen=True)
class ContainerTimes:
    """When one container reached each mark, in seconds since the timeline began (None: never seen)."""

    name: str
    create: float | None = None
    start: float | None = None
    healthy: float | None = None
    answered: float | None = None

    @property
    def ready(self) -> float | None:
        """When it was ready for the stack: the engine saw it healthy and its service answered (the later
        of the two it has), else when it started (a container without a health check)."""
        marks = [v for v in (self.healthy, self.answered) if v is not None]
        return max(marks) if marks else self.start

    @property
    def latest(self) -> float:
        return max(
            (v for v in (self.create, self.start, self.healthy, self.answered) if v is not None), default=0
        )


_PAIR = re.compile(r"(create|start|healthy|answered)\s+(-?\d+(?:\.\d+)?)s\b")


def parse_line(line: str) -> ContainerTimes:
    """One line of `bench.summarize_timeline`: `name  create 0.50s  start 1.00s  healthy 3.00s`."""
    name, _, rest = line.strip().partition(" ")
    if not name:
        raise ValueError(f"not a timeline line: {line!r}")
    marks = {key: float(value) for key, value in _PAIR.findall(rest)}
    return ContainerTimes(name, **marks)


def parse_timeline(data: Any) -> list[ContainerTimes]:
    """A timeline as the benchmark's JSON holds it (its lines), or as records (`{"name": ..., "start":
    ...}`) or a mapping name -> marks."""
    if isinstance(data, Mapping):
        return [ContainerTimes(str(name), **_marks(marks)) for name, marks in data.items()]
    containers = []
    for item in data:
        if isinstance(item, str):
            if item.strip():
                containers.append(parse_line(item))
        elif isinstance(item, Mapping):
            containers.append(ContainerTimes(str(item["name"]), **_marks(item)))
        else:
            raise ValueError(f"not a timeline entry: {item!r}")
    return containers


def _marks(data: Mapping[str, Any]) -> dict[str, float]:
    return {key: float(data[key]) for key in MARKS if data.get(key) is not None}


def critical_path(
    containers: Sequence[ContainerTimes], depends_on: Mapping[str, Iterable[str]] | None = None
) -> list[str]:
    """The names on the critical path, first to last: from the container ready last, back through the
    container whose healthy event came last at or before each one's start (among its `depends_on`
    when given)."""
    by_name = {c.name: c for c in containers}
    ready = [c for c in containers if c.ready is not None]
    if not ready:
        return []
    current = max(ready, key=lambda c: (c.ready or 0, c.name))
    path = [current.name]
    while current.start is not None:
        allowed = None if depends_on is None else set(depends_on.get(current.name, ()))
        start = current.start
        candidates = [
            c
            for c in containers
            if c.name not in path
            and c.healthy is not None
            and c.healthy <= start + START_SLACK
            and (allowed is None or c.name in allowed)
        ]
        if not candidates:
            break
        current = max(candidates, key=lambda c: (c.healthy or 0, c.name))
        path.append(current.name)
    path.reverse()
    return [name for name in path if name in by_name]


def _tick_step(span: float) -> float:
    """A round step giving 4 to 10 ticks over `span` seconds."""
    if span <= 0:
        return 1.0
    raw = span / 8
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * power:
            return float(factor * power)
    return float(10 * power)


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def timeline_svg(
    data: Any,
    *,
    title: str = "cold up timeline",
    depends_on: Mapping[str, Iterable[str]] | None = None,
) -> str:
    """The SVG text of a Gantt chart of `data` (see `parse_timeline`): one `<g class="bar">` per
    container in start order, those on the critical path with class `critical` (and a red outline and
    label), links between the steps of the path, a time axis in seconds and a legend."""
    containers = sorted(
        parse_timeline(data), key=lambda c: (c.start if c.start is not None else math.inf, c.name)
    )
    path = critical_path(containers, depends_on)
    on_path = set(path)
    label_width = min(360.0, max([len(c.name) for c in containers] + [10]) * CHAR_WIDTH + 16)
    x0 = LEFT_PAD + label_width
    end = max([c.latest for c in containers] + [0.0])
    step = _tick_step(end or 1.0)
    span = max(step, math.ceil((end or 1.0) / step) * step)
    scale = CHART_WIDTH / span
    width = x0 + CHART_WIDTH + RIGHT_PAD
    legend = _legend_rows(LEFT_PAD, width - RIGHT_PAD)
    height = TOP + ROW * max(1, len(containers)) + 46 + LEGEND_ROW * len(legend)

    def x(seconds: float) -> float:
        return round(x0 + seconds * scale, 2)

    ready_at = next((c.ready for c in containers if path and c.name == path[-1]), None)
    subtitle = "critical path: " + (" \u2192 ".join(path) if path else "none")
    if ready_at is not None:
        subtitle += f" (ready at {ready_at:.2f} s)"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height}" '
        f'viewBox="0 0 {width:.0f} {height}" font-family="monospace" font-size="12">',
        f"<title>{escape(title)}</title>",
        '<rect width="100%" height="100%" fill="#ffffff"/>',
        f'<text x="{LEFT_PAD}" y="20" font-size="14" font-weight="bold" fill="{COLORS["text"]}">'
        f"{escape(title)} (seconds since up began)</text>",
        f'<text class="critical-path" x="{LEFT_PAD}" y="38" fill="{COLORS["critical"]}">'
        f"{escape(subtitle)}</text>",
    ]
    # The time axis: a grid line and a label per tick.
    bottom = TOP + ROW * max(1, len(containers))
    ticks = round(span / step)
    out.append('<g class="axis">')
    for index in range(ticks + 1):
        seconds = index * step
        out.append(
            f'<line x1="{x(seconds)}" y1="{TOP - 6}" x2="{x(seconds)}" y2="{bottom}" '
            f'stroke="{COLORS["grid"]}"/>'
        )
        out.append(
            f'<text x="{x(seconds)}" y="{bottom + 16}" text-anchor="middle" fill="{COLORS["text"]}">'
            f"{_num(seconds)} s</text>"
        )
    out.append("</g>")
    rows: dict[str, float] = {}
    for index, c in enumerate(containers):
        y = TOP + index * ROW
        rows[c.name] = y
        critical = c.name in on_path
        css = "bar critical" if critical else "bar"
        out.append(f'<g class="{css}" data-container={quoteattr(c.name)}>')
        weight = ' font-weight="bold"' if critical else ""
        color = COLORS["critical"] if critical else COLORS["text"]
        out.append(
            f'<text class="label" x="{LEFT_PAD}" y="{y + BAR - 2}" fill="{color}"{weight}>'
            f"{escape(c.name)}</text>"
        )
        outline = f' stroke="{COLORS["critical"]}" stroke-width="2"' if critical else ""
        if c.create is not None and c.start is not None and c.start > c.create:
            out.append(_segment("wait", c, c.create, c.start, x, y, outline, "waiting"))
        done = c.healthy if c.healthy is not None else c.answered
        if c.start is not None and done is not None and done >= c.start:
            out.append(_segment("boot", c, c.start, done, x, y, outline, "starting"))
        elif c.start is not None:
            out.append(_segment("boot", c, c.start, c.start, x, y, outline, "started"))
        for mark in ("healthy", "answered"):
            value = getattr(c, mark)
            if value is not None:
                out.append(_mark(mark, c.name, value, x(value), y))
        out.append("</g>")
    # The path's links: from a step's healthy mark to the start of the step it let start.
    by_name = {c.name: c for c in containers}
    for before, after in itertools.pairwise(path):
        a, b = by_name[before], by_name[after]
        if a.healthy is None or b.start is None:
            continue
        out.append(
            f'<path class="critical-link" d="M {x(a.healthy)} {rows[before] + BAR / 2} '
            f'L {x(b.start)} {rows[after] + BAR / 2}" fill="none" stroke="{COLORS["critical"]}" '
            f'stroke-width="1.5" stroke-dasharray="4 3"/>'
        )
    out.extend(_legend(legend, bottom + 40))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _segment(
    kind: str,
    c: ContainerTimes,
    start: float,
    end: float,
    x: Callable[[float], float],
    y: float,
    outline: str,
    what: str,
) -> str:
    left, right = x(start), x(end)
    tip = f"{c.name}: {what} {start:.2f} s to {end:.2f} s"
    return (
        f'<rect class="{kind}" x="{left}" y="{y}" width="{max(2.0, round(right - left, 2))}" height="{BAR}" '
        f'fill="{COLORS[kind]}"{outline}><title>{escape(tip)}</title></rect>'
    )


def _mark(kind: str, name: str, seconds: float, at: float, y: float) -> str:
    tip = f"{name}: {kind} at {seconds:.2f} s"
    if kind == "healthy":
        shape = (
            f'<line x1="{at}" y1="{y - 3}" x2="{at}" y2="{y + BAR + 3}" stroke="{COLORS[kind]}" '
            'stroke-width="3"/>'
        )
    else:
        half = BAR / 2
        points = f"{at},{y + half - 6} {at + 6},{y + half} {at},{y + half + 6} {at - 6},{y + half}"
        shape = f'<polygon points="{points}" fill="{COLORS[kind]}"/>'
    return f'<g class="mark {kind}"><title>{escape(tip)}</title>{shape}</g>'


LEGEND = (
    ("wait", "created, waiting for its dependencies"),
    ("boot", "started, until healthy"),
    ("healthy", "healthy (engine)"),
    ("answered", "answered the toolkit"),
    ("critical", "critical path"),
)
LEGEND_ROW = 18


def _legend_rows(left: float, right: float) -> list[list[tuple[float, str, str]]]:
    """The legend's items with their x, wrapped into rows that fit between `left` and `right`."""
    rows: list[list[tuple[float, str, str]]] = [[]]
    at = left
    for kind, text in LEGEND:
        size = 16 + len(text) * CHAR_WIDTH
        if rows[-1] and at + size > right:
            rows.append([])
            at = left
        rows[-1].append((at, kind, text))
        at += size + 18
    return rows


def _legend(rows: list[list[tuple[float, str, str]]], y: float) -> list[str]:
    out = ['<g class="legend">']
    for index, row in enumerate(rows):
        line = y + index * LEGEND_ROW
        for at, kind, text in row:
            out.append(f'<rect x="{at}" y="{line - 10}" width="12" height="12" fill="{COLORS[kind]}"/>')
            out.append(f'<text x="{at + 16}" y="{line}" fill="{COLORS["text"]}">{escape(text)}</text>')
    out.append("</g>")
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "timeline"


def write_timeline_svgs(results: Path) -> list[Path]:
    """One SVG per timeline of the benchmark's JSON `results`, beside it:
    `<stem>.timeline-<size>.svg` (`20261201-204000.timeline-2-services.svg`). Returns the files written."""
    data = json.loads(results.read_text())
    written = []
    for tag, timeline in (data.get("timelines") or {}).items():
        if not timeline:
            continue
        out = results.with_name(f"{results.stem}.timeline-{_slug(str(tag))}.svg")
        out.write_text(timeline_svg(timeline, title=f"cold up timeline, {tag}"))
        written.append(out)
    return written
