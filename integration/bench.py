"""The text form of a cold `up`'s timeline: one line per container, when it was created, started and
became healthy, and when its service first answered the toolkit.

The benchmark itself is not in the package: it is `benchmarks/` in the repository (`nox -s bench`,
`python -m benchmarks`). It records the engine's container events during a cold `up` and writes these
lines into its JSON (`timelines`), which `integration.timeline_svg` draws. Only this function stays
here, beside that reader of its lines, whose tests build their input with it.
"""

from __future__ import annotations

from collections.abc import Mapping


def summarize_timeline(
    events: list[tuple[float, str, str]], answered: Mapping[str, float] | None = None
) -> list[str]:
    """One line per container: created, started, healthy (the engine's health check), and for a service
    when its health URL first answered the toolkit (seconds since the timeline began)."""
    by_name: dict[str, dict[str, float]] = {}
    for seconds, action, name in events:
        key = "healthy" if action == "health_status: healthy" else action
        if key in {"create", "start", "healthy"}:
            by_name.setdefault(name, {}).setdefault(key, seconds)
    for name, seconds in (answered or {}).items():
        container = next((c for c in by_name if c.rsplit("-", 1)[0].endswith(f"-{name}")), None)
        if container is not None:
            by_name[container]["answered"] = seconds
    lines = []
    for name, marks in sorted(by_name.items(), key=lambda item: item[1].get("start", 1e9)):
        keys = ("create", "start", "healthy", "answered")
        cells = [f"{key} {marks[key]:5.2f}s" for key in keys if key in marks]
        lines.append(f"{name:<36} " + "  ".join(cells))
    return lines
