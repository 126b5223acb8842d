"""The engine's container events of a compose project while a block runs (a cold `up`), through
python-on-whales, as (seconds since the block began, action, container name); `Timeline.lines` summarizes them
into one line per container (`integration.bench.summarize_timeline`), the form the JSON holds and
`integration.timeline_svg` draws.

python-on-whales' `system.events` without an end streams for ever, and its process cannot be stopped
from outside the iterator; so the events are read in windows of `WINDOW` seconds (`--since` the end of
the last one, `--until` a second ahead), each of which ends by itself, until the block is over. A
window's `--since` replays what the engine saw between two windows, so nothing is lost, and the first
one's replays what came before the reader started; events seen twice at a boundary count once.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from python_on_whales import DockerClient, docker
from python_on_whales.exceptions import DockerException

from integration.bench import summarize_timeline

PROJECT_LABEL = "com.docker.compose.project"
WINDOW = 1.0  # seconds: how long one `docker events` call streams; also the most the block's end waits


@dataclass
class Timeline:
    started: float  # time.time() when the timeline began
    events: list[tuple[float, str, str]] = field(default_factory=list)
    error: str | None = None  # why events could not be read, if they could not

    def lines(self, answered: Mapping[str, float] | None = None) -> list[str]:
        """The summary lines; `answered`: service -> time.time() when its health URL first answered."""
        relative = {name: at - self.started for name, at in (answered or {}).items()}
        return summarize_timeline(self.events, relative)


@contextlib.contextmanager
def event_timeline(project: str, client: DockerClient = docker) -> Iterator[Timeline]:
    """Container events of a compose project while the block runs: (seconds since start, action, name),
    in time order once the block is over; exec_* events (health checks running) are left out."""
    timeline = Timeline(time.time())
    seen: set[tuple[int, str, str]] = set()
    stop = threading.Event()
    filters = {"label": f"{PROJECT_LABEL}={project}", "type": "container"}

    def follow() -> None:
        since = datetime.fromtimestamp(timeline.started, UTC)
        while True:
            until = datetime.now(UTC) + timedelta(seconds=WINDOW)
            try:
                for event in client.system.events(since=since, until=until, filters=filters):
                    action = event.action or ""
                    name = str(((event.actor.attributes if event.actor else None) or {}).get("name", ""))
                    key = (event.time_nano or 0, action, name)
                    if event.time_nano is None or action.startswith("exec_") or key in seen:
                        continue
                    seen.add(key)
                    timeline.events.append((event.time_nano / 1e9 - timeline.started, action, name))
            except DockerException as exc:
                timeline.error = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
                return
            since = until
            if stop.is_set():
                return

    reader = threading.Thread(target=follow, name=f"events-{project}", daemon=True)
    reader.start()
    try:
        yield timeline
    finally:
        stop.set()
        reader.join(timeout=WINDOW + 10)
        timeline.events.sort()
