"""What each service logged and which events moved while a test ran, in the report of a failed test.

In integration mode, for every failed or errored test (`--integration-logs=failed`, the default; `all`:
every test; `off`: none) the report gets:

- one section per service: the lines its container wrote while the test ran, read from the engine
  (`docker logs --timestamps --since --until`, the engine's timestamps in UTC), the last
  `integration_log_lines` of them (ini, default 50), titled with the container's name;
- one section of the events the test caused, in time order across the services: the outbox rows written
  during the test with their published-at state, and the processed rows written during it (by the
  processed table's time column; a table without one: the processed ids among the test's outbox rows),
  then what is still pending: an event not sent to the broker, an event a consumer has not processed.

They are in pytest's report sections, shown under the failure like captured output, and in the JUnit XML
as the test case's `<properties>`: pytest's junitxml writes the report sections nowhere (its
`<system-out>` holds only the "Captured stdout" sections, and only with `junit_logging` other than the
default "no"), but it always writes the teardown report's `user_properties`.

The harness resets the databases in the teardown of each test, so the rows are read when the report of
the "call" phase is made (a `pytest_runtest_makereport` wrapper), before the teardown runs. A test's
window starts when its setup starts (or when the stack became healthy, for the test that started it)
and ends when its report is made. Host and containers share this machine's clock; every time is UTC.

Under pytest-xdist each worker reports with its own endpoints: the containers of its service copies and
its own databases, never another worker's.

The pure pieces (parsing, windows, formatting) are unit-tested without Docker; the readers are thin:
python-on-whales for the logs, SQLAlchemy through `integration.database` for the rows.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable, Collection, Generator, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from .model import EventSchema, ServiceEndpoint, StackEndpoints

# Heavy imports (python-on-whales, SQLAlchemy) happen in the readers: `-p` loads this module in mock runs
# too, where nothing is read.

MODES = ("failed", "all", "off")
DEFAULT_MODE = "failed"
LOG_OPTION = "--integration-logs"
LOG_DEST = "integration_logs"
LINES_INI = "integration_log_lines"
DEFAULT_LOG_LINES = 50
MAX_LOG_LINES = 100_000
PLUGIN_NAME = "integration-failure-report"
GROUP = ("integration", "use-case tests against real services")

SECTION_PREFIX = "integration: "
ENDPOINTS_FIXTURE = "docker_compose_services"
# Fixtures whose presence in a test's closure says it uses the stack (besides a harness among its values).
STACK_FIXTURES = frozenset({ENDPOINTS_FIXTURE, "integration_test_harness", "test_harness"})

# The engine stamps a line when it reads it from the container's pipe, a little after the service wrote
# it: the last request's access line may be stamped just after the test's end.
LOG_GRACE = 0.1
# The engine is asked for a window this much wider; the lines are then filtered exactly.
LOG_MARGIN = timedelta(seconds=1)
PAYLOAD_LIMIT = 200
# Preferred names of a processed table's time column; else its first timestamp column.
TIME_COLUMN_NAMES = ("processed_at", "consumed_at", "handled_at", "received_at", "created_at", "at")

_START = pytest.StashKey[datetime]()


# --- options ----------------------------------------------------------------------------------------------


def add_options(parser: pytest.Parser) -> None:
    """`--integration-logs` and ini `integration_log_lines`: called from the plugin's pytest_addoption
    (and from this module's own when it is loaded with `-p`; the second call adds nothing)."""
    group = parser.getgroup(*GROUP)
    try:
        group.addoption(
            LOG_OPTION,
            dest=LOG_DEST,
            choices=MODES,
            default=DEFAULT_MODE,
            help="in integration mode, attach each service's log lines and the events of a test to its "
            "report: failed (default): failed and errored tests; all: every test; off: none",
        )
    except ValueError:  # added already
        return
    parser.addini(
        LINES_INI,
        f"log lines per service in the report of a failed test (default {DEFAULT_LOG_LINES})",
        default=str(DEFAULT_LOG_LINES),
    )


def parse_mode(value: object) -> str:
    """The `--integration-logs` value: failed, all or off (ValueError otherwise)."""
    text = str(value).strip().lower()
    if text not in MODES:
        raise ValueError(f"{LOG_OPTION}={value!r}: choose one of {', '.join(MODES)}")
    return text


def parse_line_limit(value: object) -> int:
    """The `integration_log_lines` value: a whole number from 0 (no lines, the count only) to 100000."""
    text = str(value).strip()
    try:
        number = int(text)
    except ValueError:
        raise ValueError(f"{LINES_INI} = {value!r} is not a whole number of lines") from None
    if not 0 <= number <= MAX_LOG_LINES:
        raise ValueError(f"{LINES_INI} = {number} is out of range (0 to {MAX_LOG_LINES})")
    return number


# --- times --------------------------------------------------------------------------------------------------

_ENGINE_STAMP = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:?\d{2})$")


def parse_engine_time(stamp: str) -> datetime | None:
    """An engine timestamp (RFC 3339 with nanoseconds, `2026-12-01T20:40:20.097075416Z`) in UTC; None for
    text that is not one."""
    match = _ENGINE_STAMP.match(stamp)
    if match is None:
        return None
    base, fraction, zone = match.groups()
    micro = (fraction or "")[:6].ljust(6, "0")
    zone = "+00:00" if zone == "Z" else zone
    try:
        return datetime.fromisoformat(f"{base}.{micro}{zone}").astimezone(UTC)
    except ValueError:
        return None


def as_utc(value: datetime) -> datetime:
    """Aware in UTC; a naive time (`timestamp without time zone`) is read as UTC, as the harness does."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def clock(at: datetime) -> str:
    """Time of day with microseconds: 20:40:20.097075."""
    return as_utc(at).strftime("%H:%M:%S.%f")


def stamp(at: datetime) -> str:
    """Date and time to the millisecond: 2026-12-01 20:40:20.097."""
    return as_utc(at).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _milliseconds(later: datetime, earlier: datetime) -> str:
    return f"{(later - earlier).total_seconds() * 1000:+.0f} ms"


@dataclass(frozen=True)
class Window:
    """The time a test ran, in UTC: from its setup's start to its report."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", as_utc(self.start))
        object.__setattr__(self, "end", as_utc(self.end))

    def __contains__(self, at: datetime) -> bool:
        return self.start <= as_utc(at) <= self.end

    def widened(self, after: float) -> Window:
        return Window(self.start, self.end + timedelta(seconds=after))

    def describe(self) -> str:
        same_day = self.start.date() == self.end.date()
        end = clock(self.end)[:-3] if same_day else stamp(self.end)
        return f"{stamp(self.start)} to {end} UTC"


def window_of_test(setup_started: datetime, ended: datetime, stack_ready: datetime | None = None) -> Window:
    """A test's window: from its setup's start, or from the moment the stack became healthy when that was
    during its setup (the first test's setup starts the stack: its start-up lines are not the test's)."""
    start = setup_started if stack_ready is None else max(setup_started, stack_ready)
    return Window(start, max(start, ended))


# --- log lines ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogLine:
    at: datetime  # the engine's timestamp, UTC
    text: str
    # why: podman's Docker-compatible API gives `docker logs --timestamps` in whole seconds
    # (`2026-12-01T23:45:19Z`), so a line's instant is anywhere in the second after `at`.
    whole_second: bool = False


def parse_log_lines(text: str) -> list[LogLine]:
    """`docker logs --timestamps` output as lines in time order. python-on-whales reads stdout and stderr
    on two threads, so their lines arrive interleaved; the timestamps restore the order. A line without a
    timestamp keeps the time of the line before it."""
    lines: list[LogLine] = []
    last: datetime | None = None
    for raw in text.splitlines():
        head, _, message = raw.partition(" ")
        at = parse_engine_time(head)
        if at is None:
            if last is not None and raw.strip():
                lines.append(LogLine(last, raw.rstrip()))
            continue
        last = at
        lines.append(LogLine(at, message.rstrip(), whole_second="." not in head))
    lines.sort(key=lambda line: line.at)  # stable: lines of one instant keep their order
    return lines


def lines_in_window(lines: Iterable[LogLine], window: Window) -> list[LogLine]:
    return [line for line in lines if line.at in window or _second_overlaps(line, window)]


def _second_overlaps(line: LogLine, window: Window) -> bool:
    # A whole-second stamp (podman) is in the window when some instant of its second is.
    return line.whole_second and window.start < line.at + timedelta(seconds=1) and line.at <= window.end


def _worker_note(worker: str | None) -> str:
    return f" (worker {worker})" if worker else ""


def log_section(
    service: str,
    container: str,
    lines: Sequence[LogLine],
    window: Window,
    limit: int,
    *,
    worker: str | None = None,
    problem: str | None = None,
) -> tuple[str, str]:
    """The report section of one service's log lines in `window`: (title, content), the last `limit`."""
    title = f"{SECTION_PREFIX}{service} log, container {container}"
    if problem is not None:
        return title, f"logs of {container} unavailable{_worker_note(worker)}: {problem}"
    inside = lines_in_window(lines, window)
    shown = inside[-limit:] if limit else []
    count = f"{len(inside)} line" + ("" if len(inside) == 1 else "s")
    head = f"{count} from {window.describe()}{_worker_note(worker)}"
    if len(shown) < len(inside):
        head += f"; the last {len(shown)} shown ({LINES_INI} = {limit})"
    body = [f"{clock(line.at)}  {line.text}" for line in shown]
    return title, "\n".join([head, *body])


# --- event rows ---------------------------------------------------------------------------------------------

PUBLISHED = "published"
CONSUMED = "consumed"


@dataclass(frozen=True)
class EventRow:
    """An outbox row (published) or a processed row (consumed) of one service's database."""

    kind: str  # PUBLISHED or CONSUMED
    service: str
    event_id: str
    event_type: str
    at: datetime | None  # occurred_at of an outbox row, the time column of a processed row (None: none)
    published_at: datetime | None = None  # outbox rows: None until the service sent it to the broker
    payload: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ServiceEvents:
    """What one service's database holds: its outbox rows and its processed rows, as read."""

    service: str
    published: tuple[EventRow, ...] = ()
    consumed: tuple[EventRow, ...] = ()
    processed_table: bool = False  # whether it has a processed table at all
    time_column: str | None = None  # the processed table's time column, None: matched by id
    problem: str | None = None  # why the rows could not be read


def pick_time_column(columns: Sequence[tuple[str, bool]]) -> str | None:
    """A processed table's time column from its (name, is a timestamp) columns: the first of
    TIME_COLUMN_NAMES that is a timestamp, else the first timestamp column, else None."""
    stamps = [name for name, is_time in columns if is_time]
    for preferred in TIME_COLUMN_NAMES:
        if preferred in stamps:
            return preferred
    return stamps[0] if stamps else None


def events_of_test(read: Iterable[ServiceEvents], window: Window) -> list[EventRow]:
    """The rows `window` holds, in time order across the services: outbox rows that occurred in it,
    processed rows stamped in it; a processed table without a time column contributes the rows whose
    ids are among the window's outbox rows (each placed right after the row it consumed)."""
    services = list(read)
    published = [row for s in services for row in s.published if row.at is not None and row.at in window]
    occurred = {row.event_id: row.at for row in published if row.at is not None}
    consumed = []
    for s in services:
        for row in s.consumed:
            if row.at is not None:
                if row.at in window:
                    consumed.append(row)
            elif row.event_id in occurred:
                consumed.append(row)

    def key(row: EventRow) -> tuple[datetime, int, str, str]:
        at = row.at or occurred.get(row.event_id) or window.start
        return as_utc(at), 0 if row.kind == PUBLISHED else 1 + (row.at is None), row.service, row.event_id

    return sorted([*published, *consumed], key=key)


# Payload fields the row's own columns already show.
_SHOWN_FIELDS = frozenset({"event_id", "occurred_at"})


def _payload_text(row: EventRow, limit: int = PAYLOAD_LIMIT) -> str:
    """The payload as compact JSON without the fields the line shows already (its id and time)."""
    payload = {
        key: value
        for key, value in (row.payload or {}).items()
        if not (key in _SHOWN_FIELDS or value == row.event_id)
    }
    if not payload:
        return ""
    text = json.dumps(payload, default=str, separators=(",", ":"), sort_keys=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def event_name(event_type: str, routing_keys: Mapping[str, str]) -> str:
    """The event name of an outbox type column that may hold routing keys (`link.created`)."""
    names = {key: name for name, key in routing_keys.items()}
    return names.get(event_type, event_type)


def events_section(
    read: Sequence[ServiceEvents],
    window: Window,
    *,
    consumers: Mapping[str, Collection[str]] | None = None,
    routing_keys: Mapping[str, str] | None = None,
    worker: str | None = None,
    notes: Sequence[str] = (),
) -> tuple[str, str]:
    """The report section of the events a test caused: (title, content). One line per row in time order,
    then what is pending: an outbox row not yet sent (published_at empty), and an event that a consumer
    (`consumers`: service -> the event names it consumes) holds no processed row of."""
    keys = routing_keys or {}
    rows = events_of_test(read, window)
    title = f"{SECTION_PREFIX}events" + (f", worker {worker}" if worker else "")
    published = [row for row in rows if row.kind == PUBLISHED]
    consumed = [row for row in rows if row.kind == CONSUMED]
    lines = [
        f"{len(published)} published, {len(consumed)} consumed from {window.describe()}{_worker_note(worker)}"
    ]
    occurred = {row.event_id: row for row in published}
    width = max([len(row.service) for row in rows] + [len(s.service) for s in read] + [7])
    type_width = max([len(event_name(row.event_type, keys)) for row in rows] + [10])
    for row in rows:
        when = clock(row.at) if row.at is not None else "?".center(15)
        name = event_name(row.event_type, keys)
        cells = [when, row.kind.ljust(9), row.service.ljust(width), name.ljust(type_width), row.event_id]
        if row.kind == PUBLISHED:
            if row.published_at is None:
                cells.append("NOT SENT (published_at empty)")
            else:
                sent = as_utc(row.published_at)
                after = f" ({_milliseconds(sent, row.at)})" if row.at is not None else ""
                cells.append(f"sent {clock(sent)}{after}")
            payload = _payload_text(row)
            if payload:
                cells.append(payload)
        else:
            source = occurred.get(row.event_id)
            if row.at is None:
                cells.append("(processed; its table has no time column)")
            elif source is not None and source.at is not None:
                cells.append(f"({_milliseconds(row.at, source.at)} after it occurred in {source.service})")
            else:
                cells.append("(no outbox row of this test)")
        lines.append("  ".join(cells).rstrip())
    if not rows:
        lines.append("no outbox or processed rows were written while the test ran")
    lines.extend(_pending(read, published, consumed, consumers or {}, keys))
    for s in read:
        if s.problem:
            lines.append(f"{s.service}: rows unavailable: {s.problem}")
    lines.extend(notes)
    return title, "\n".join(lines)


def _pending(
    read: Sequence[ServiceEvents],
    published: Sequence[EventRow],
    consumed: Sequence[EventRow],
    consumers: Mapping[str, Collection[str]],
    keys: Mapping[str, str],
) -> list[str]:
    tables = {s.service: s for s in read}
    processed = {(row.service, row.event_id) for row in consumed}
    lines = []
    for row in published:
        name = event_name(row.event_type, keys)
        if row.published_at is None:
            lines.append(f"pending when read: {name} {row.event_id} of {row.service}: not sent to the broker")
        for consumer, events in sorted(consumers.items()):
            if name not in {str(e) for e in events}:
                continue
            state = tables.get(consumer)
            if state is None or not state.processed_table or state.problem:
                continue  # no table to look into: nothing can be said
            if (consumer, row.event_id) not in processed:
                lines.append(
                    f"pending when read: {name} {row.event_id} of {row.service}: not processed by {consumer}"
                )
    if published and not lines:
        lines.append("every event was sent and processed by each consumer whose table could be read")
    return lines


# --- the report ---------------------------------------------------------------------------------------------


def property_name(title: str) -> str:
    """The JUnit property of a section: its title without the container (`integration: links log`)."""
    return title.split(", ", 1)[0]


def properties(sections: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """(name, value) for the JUnit <properties>: the value starts with the rest of the section's title."""
    result = []
    for title, content in sections:
        name = property_name(title)
        rest = title[len(name) :].removeprefix(", ")
        result.append((name, f"{rest}\n{content}" if rest else content))
    return result


def wanted(mode: str, when: str, failed: bool, skipped: bool) -> bool:
    """Whether a report of phase `when` gets the sections: in `failed` mode a failed phase (an error in
    setup or teardown, a failure in the call); in `all` every call, and a failed setup or teardown."""
    if mode == "off" or skipped:
        return False
    if when == "call":
        return mode == "all" or failed
    return failed


# --- readers ------------------------------------------------------------------------------------------------


def read_container_log(container: str, window: Window) -> str:
    """The container's lines in `window` (a second wider: the lines are filtered again), as the engine
    gives them with `--timestamps`."""
    from python_on_whales import docker

    text = docker.container.logs(
        container, since=window.start - LOG_MARGIN, until=window.end + LOG_MARGIN, timestamps=True
    )
    return text if isinstance(text, str) else ""


def read_service_events(service: str, database_url: str, schema: EventSchema) -> ServiceEvents:
    """One service database's outbox rows (`integration.database.read_outbox`, the configured table and
    columns) and processed rows (id, type and time columns as the table has them). A table that does not
    exist reads as empty; a failure is kept in `problem`, never raised."""
    from .database import DatabaseError, make_engine, read_outbox, redact

    try:
        engine = make_engine(database_url)
    except DatabaseError as exc:
        return ServiceEvents(service, problem=str(exc))
    try:
        outbox = read_outbox(engine, schema.outbox_table, schema.outbox)
        published = tuple(
            EventRow(
                PUBLISHED,
                service,
                row.event_id,
                str(row.event_type),
                as_utc(row.occurred_at) if row.occurred_at is not None else None,
                row.published_at,
                row.payload,
            )
            for row in outbox
        )
        consumed, exists, time_column = _read_processed(engine, service, schema)
        return ServiceEvents(service, published, consumed, exists, time_column)
    except DatabaseError as exc:
        return ServiceEvents(service, problem=str(exc))
    except Exception as exc:  # a report must not fail the run: say what went wrong instead
        return ServiceEvents(service, problem=f"{redact(database_url)}: {type(exc).__name__}: {exc}")
    finally:
        engine.dispose()


def _read_processed(
    engine: Any, service: str, schema: EventSchema
) -> tuple[tuple[EventRow, ...], bool, str | None]:
    from sqlalchemy import column, inspect, select, table
    from sqlalchemy.types import DateTime

    from .database import DatabaseError, redact

    name = schema.processed_table
    owner, _, bare = name.rpartition(".")
    with engine.connect() as connection:
        inspector = inspect(connection)
        if not inspector.has_table(bare, schema=owner or None):
            return (), False, None
        columns = inspector.get_columns(bare, schema=owner or None)
        names = [str(c["name"]) for c in columns]
        id_column = schema.processed_event_id
        if id_column not in names:
            raise DatabaseError(
                f"{name} of {redact(engine.url)} has no column {id_column!r} (columns: {', '.join(names)}); "
                "name its event id column with processed_event_id in [tool.integration.events]"
            )
        time_column = pick_time_column([(str(c["name"]), isinstance(c["type"], DateTime)) for c in columns])
        type_column = next((c for c in (schema.outbox.event_type, "event_type") if c in names), None)
        wanted_columns = [id_column, type_column, time_column]
        selected: list[Any] = [column(c) for c in wanted_columns if c is not None]
        query = select(*selected).select_from(table(bare, schema=owner or None))
        rows = connection.execute(query).all()
    consumed = []
    for values in rows:
        record = dict(zip([c for c in wanted_columns if c is not None], values, strict=True))
        at = record.get(time_column) if time_column else None
        consumed.append(
            EventRow(
                CONSUMED,
                service,
                str(record[id_column]),
                str(record.get(type_column, "") or "") if type_column else "",
                as_utc(at) if isinstance(at, datetime) else None,
            )
        )
    return tuple(consumed), True, time_column


def _fill_types(read: Sequence[ServiceEvents]) -> list[ServiceEvents]:
    """A processed row without a type column takes the type of the outbox row of its id."""
    types = {row.event_id: row.event_type for s in read for row in s.published}
    return [
        replace(
            s,
            consumed=tuple(
                row if row.event_type else replace(row, event_type=types.get(row.event_id, "?"))
                for row in s.consumed
            ),
        )
        for s in read
    ]


def collect_sections(
    endpoints: StackEndpoints,
    window: Window,
    limit: int,
    *,
    worker: str | None = None,
    after_teardown: bool = False,
    read_log: Callable[[str, Window], str] | None = None,
    read_events: Callable[[str, str, EventSchema], ServiceEvents] | None = None,
    now: Callable[[], datetime] | None = None,
) -> list[tuple[str, str]]:
    """Every section of one test: a log section per service container, then the events section. The
    reads (default: `read_container_log`, `read_service_events`) run in parallel threads, a `docker logs`
    and a database connection each."""
    read_log = read_log or read_container_log
    read_events = read_events or read_service_events
    now = now or _utc_now
    services: list[ServiceEndpoint] = list(endpoints.services.values())
    log_window = window.widened(LOG_GRACE)
    with ThreadPoolExecutor(max_workers=max(2, 2 * len(services)), thread_name_prefix="report") as pool:
        events: dict[str, Future[ServiceEvents]] = {
            s.name: pool.submit(read_events, s.name, s.database_url, endpoints.events)
            for s in services
            if s.database_url
        }

        def logs(container: str) -> str:
            wait = (log_window.end - now()).total_seconds()
            if wait > 0:
                time.sleep(wait)
            return read_log(container, log_window)

        texts = {s.name: pool.submit(logs, s.container) for s in services if s.container}
        sections = []
        for s in services:
            if s.name not in texts:
                continue
            try:
                lines, problem = parse_log_lines(texts[s.name].result()), None
            except Exception as exc:
                lines, problem = [], _short(exc)
            sections.append(
                log_section(s.name, s.container, lines, log_window, limit, worker=worker, problem=problem)
            )
        read = []
        for name, future in events.items():
            try:
                read.append(future.result())
            except Exception as exc:
                read.append(ServiceEvents(name, problem=_short(exc)))
    notes = []
    if after_teardown:
        notes.append("read after the teardown, which resets the databases: rows of this test may be gone")
    consumers = {name: tuple(names) for name, names in endpoints.consumed.items()}
    sections.append(
        events_section(
            _fill_types(read),
            Window(window.start, now()),
            consumers=consumers,
            routing_keys=endpoints.routing_keys,
            worker=worker,
            notes=notes,
        )
    )
    return sections


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "stderr", None) or exc).strip()
    return f"{type(exc).__name__}: {text[-300:]}" if text else type(exc).__name__


# --- the pytest plugin --------------------------------------------------------------------------------------


class FailureReport:
    """The plugin object: times each test, keeps the stack's endpoints when the stack fixture gives them,
    and adds the sections to the reports that `--integration-logs` asks for."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        try:
            self.mode = parse_mode(config.getoption(LOG_DEST, DEFAULT_MODE))
            self.limit = parse_line_limit(_ini(config, LINES_INI, str(DEFAULT_LOG_LINES)))
        except ValueError as exc:
            raise pytest.UsageError(str(exc)) from None
        self.endpoints: StackEndpoints | None = None
        self.stack_ready: datetime | None = None
        workerinput = getattr(config, "workerinput", None) or {}
        self.worker: str | None = workerinput.get("workerid")

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(
        self, fixturedef: Any, request: pytest.FixtureRequest
    ) -> Generator[None, Any, Any]:
        result = yield
        if getattr(fixturedef, "argname", None) == ENDPOINTS_FIXTURE and isinstance(result, StackEndpoints):
            if self.endpoints is None:
                self.stack_ready = datetime.now(UTC)
            self.endpoints = result
        return result

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        item.stash[_START] = datetime.now(UTC)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, Any, Any]:
        report: pytest.TestReport = yield
        if self.mode == "off" or not wanted(self.mode, report.when, report.failed, report.skipped):
            return report
        try:
            endpoints = self._endpoints_of(item)
            if endpoints is not None:
                self._attach(item, report, endpoints)
        except Exception as exc:  # the report is an aid: it must never turn into the failure
            report.sections.append((f"{SECTION_PREFIX}report", f"not made: {_short(exc)}"))
        return report

    def _endpoints_of(self, item: pytest.Item) -> StackEndpoints | None:
        """This test's stack: the endpoints of the harness it got, else the stack fixture's; None for a
        test that uses neither."""
        values = getattr(item, "funcargs", {}) or {}
        for value in values.values():
            if isinstance(value, StackEndpoints):
                return value
            harness_endpoints = getattr(value, "endpoints", None)  # a RealServiceHarness
            if isinstance(harness_endpoints, StackEndpoints):
                return harness_endpoints
        names = set(getattr(item, "fixturenames", ()) or ())
        if self.endpoints is not None and names & (STACK_FIXTURES | {_harness_fixture(self.config)}):
            return self.endpoints
        return None

    def _attach(self, item: pytest.Item, report: pytest.TestReport, endpoints: StackEndpoints) -> None:
        ended = datetime.now(UTC)
        window = window_of_test(item.stash.get(_START, ended), ended, self.stack_ready)
        sections = collect_sections(
            endpoints,
            window,
            self.limit,
            worker=endpoints.worker or self.worker,
            after_teardown=report.when == "teardown",
        )
        report.sections.extend(sections)
        # junitxml writes the teardown report's user_properties, which pytest copies from the item's when
        # it makes that report; the call report gets them too (junitxml's case of a failed call and a
        # failed teardown). Sections made again (a teardown error after them) replace the earlier ones.
        recorded = properties(sections)
        for target in (item.user_properties, report.user_properties):
            target[:] = [p for p in target if not str(p[0]).startswith(SECTION_PREFIX)]
            target.extend(recorded)


def _ini(config: pytest.Config, name: str, default: str) -> object:
    try:
        value = config.getini(name)
    except ValueError:  # not added: add_options was not called
        return default
    return value if value not in (None, "") else default


def _harness_fixture(config: pytest.Config) -> str:
    """The harness fixture the plugin's config names (`harness_fixture`), else `test_harness`."""
    plugin = sys.modules.get(f"{__package__}.plugin")  # loaded: it is what gives the harness fixture
    try:
        return str(plugin._harness_fixture_name(config)) if plugin else "test_harness"
    except Exception:
        return "test_harness"


def register(config: pytest.Config) -> None:
    """Register the plugin object once (the plugin's pytest_configure calls this)."""
    if config.pluginmanager.get_plugin(PLUGIN_NAME) is None:
        config.pluginmanager.register(FailureReport(config), PLUGIN_NAME)


# Module-level hooks: `pytest -p integration.failure_report` loads the module as a plugin of its own.


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    register(config)
