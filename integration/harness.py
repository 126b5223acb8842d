"""`RealServiceHarness`: the base of a project's real-mode harness, which drives the running services.

A project's harness subclasses it, implements its ITestHarness methods with `call()`, and fills in
what the base cannot know from the endpoints alone:

    class RealHarness(RealServiceHarness):
        event_types = event_map(links.EVENTS_PUBLISHED)            # event name -> contract model
        consumed = {"analytics": {"LinkCreated", "LinkVisited"}}   # consumer -> event names

        async def get_link(self, code: str) -> LinkResponse:
            return self.call("links", "GET", f"/links/{code}", LinkResponse)

What the base does with the running stack:
- HTTP: one httpx.Client for the harness; error statuses become the exceptions the mock harness
  raises (404 -> KeyError, 400/409/422 -> ValueError with the server's message), everything else
  HarnessError. Redirects are not followed, so a test can read a 307's Location.
- Databases (one NullPool engine per service database, made on first use): `reset()` empties every
  table with DELETE in the order of the foreign keys, each database in a session the harness keeps for
  its resets (integration.database.HeldConnection), and purges the broker's queues: all at once, one
  thread per database and one for the broker, so a reset costs its slowest part, not their sum.
- Events (docs/conventions.md, "Event tables"): `get_published_events()` reads the publishers'
  `outbox_events`; `wait_for_events_processed()` waits until every outbox row is published and every
  consumer's `processed_events` holds the events routed to it.

Every setting is a class attribute (documented where it is defined) that a subclass or the plugin
can override.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import json as jsonlib
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from types import TracebackType
from typing import Any, Self, TypeVar, overload

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError
from sqlalchemy import Engine

from integration.broker import STACK_STATS_INTERVAL, STATS_INTERVAL, BrokerAdmin, BrokerError, QueueState
from integration.database import (
    DEFAULT_EXCLUDED_TABLES,
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_RESET_ATTEMPTS,
    EventTables,
    HeldConnection,
    OutboxRow,
    ResetStats,
    make_engine,
    read_event_tables,
    read_outbox,
    reset_database,
)
from integration.errors import HarnessError
from integration.model import OutboxColumns, ServiceEndpoint, StackEndpoints

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

DEFAULT_EXPECTED: tuple[int, ...] = (200, 201, 204)
# Statuses that mean "the service refused the input", raised as ValueError like the mock harness does.
VALUE_ERROR_STATUSES = frozenset({400, 409, 422})
# FastAPI's 422 `loc` starts with where the field was read from; the field name is the rest.
_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})
_LISTED_IDS = 5  # event ids a timeout message lists per pending item


# --- pure pieces: error messages -------------------------------------------------------------------------


def _truncate(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def render_validation_errors(errors: Sequence[Any]) -> str:
    """FastAPI's 422 `detail` list as "field: msg; field: msg" (`loc` without its leading "body")."""
    rendered = []
    for error in errors:
        if not isinstance(error, Mapping):
            rendered.append(str(error))
            continue
        loc = [part for part in error.get("loc") or () if part is not None]
        if len(loc) > 1 and loc[0] in _LOCATIONS:
            loc = loc[1:]
        field = ""
        for part in loc:
            field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else str(part))
        message = str(error.get("msg", "")).strip() or jsonlib.dumps(error, default=str)
        rendered.append(f"{field}: {message}" if field else message)
    return "; ".join(rendered)


def error_detail(body: Any) -> str | None:
    """The server's message in a parsed JSON error body: FastAPI's `detail` (a string, a 422 list, or an
    object), else a `message`, `error` or `title` string; None when the body holds none of them."""
    if not isinstance(body, Mapping):
        return None
    if "detail" in body:
        detail = body["detail"]
        if isinstance(detail, str):
            return detail
        if isinstance(detail, list):
            return render_validation_errors(detail)
        return jsonlib.dumps(detail, default=str, separators=(",", ":"))
    for key in ("message", "error", "title"):
        value = body.get(key)
        if isinstance(value, str):
            return value
    return None


def response_message(response: httpx.Response, limit: int = 500) -> str:
    """What the server said about an error: `error_detail` of a JSON body, else the body's text
    (truncated to `limit` characters), else the reason phrase."""
    try:
        detail = error_detail(response.json())
    except ValueError:
        detail = None
    if detail is not None:
        return _truncate(detail, limit)
    if response.content:
        return _truncate(response.text, limit)
    return response.reason_phrase or f"status {response.status_code}"


def status_error(method: str, url: str, response: httpx.Response, limit: int = 500) -> Exception:
    """The exception an unexpected status becomes: 404 -> KeyError(message), 400/409/422 ->
    ValueError(message), anything else -> HarnessError naming the method, URL, status and body."""
    status = response.status_code
    message = response_message(response, limit)
    if status == 404:
        return KeyError(message)
    if status in VALUE_ERROR_STATUSES:
        return ValueError(message)
    body = _truncate(response.text, limit) if response.content else "(no body)"
    return HarnessError(f"{method} {url} -> {status} {response.reason_phrase}: {body}")


def event_map(*event_lists: Iterable[type[BaseModel]]) -> dict[str, type[BaseModel]]:
    """Event name (the class name, as in the outbox's event_type) -> event model, from lists such as the
    contracts' EVENTS_PUBLISHED."""
    return {event.__name__: event for events in event_lists for event in events}


@functools.lru_cache(maxsize=256)
def _cached_adapter(tp: Any) -> TypeAdapter[Any]:
    return TypeAdapter(tp)


def _adapter(model: Any) -> TypeAdapter[Any]:
    if isinstance(model, TypeAdapter):
        return model
    try:
        return _cached_adapter(model)
    except TypeError:  # an unhashable type expression
        return TypeAdapter(model)


def _name_of(model: Any) -> str:
    if isinstance(model, TypeAdapter):
        return repr(model).removeprefix("TypeAdapter(").removesuffix(")")
    return getattr(model, "__name__", None) or str(model)


def _listed(rows: Sequence[OutboxRow]) -> str:
    shown = ", ".join(f"{row.event_type} {row.event_id}" for row in rows[:_LISTED_IDS])
    return shown + (f", ... ({len(rows) - _LISTED_IDS} more)" if len(rows) > _LISTED_IDS else "")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


class ResetError(HarnessError):
    """A reset left something unemptied. `failures`: the service (or "broker") -> its error; the
    message names each, a database by its URL without the password."""

    def __init__(self, failures: Mapping[str, BaseException]) -> None:
        self.failures = dict(failures)
        parts = [
            f"{name}: {exc}" if name == "broker" else f"service {name}'s database: {exc}"
            for name, exc in sorted(self.failures.items())
        ]
        super().__init__("reset failed: " + "; ".join(parts))


# --- the harness -----------------------------------------------------------------------------------------


class RealServiceHarness:
    """Base class of a project's real-mode harness; see the module's docstring.

    Owns one httpx.Client, one NullPool engine per service database and a BrokerAdmin when the stack
    has a broker; `close()` (or leaving a `with` block) releases all of them, and is safe to call twice.

    The settings below are class attributes with defaults; a subclass overrides them in its body, the
    plugin may set them on an instance.
    """

    # Event name -> contract event model: what get_published_events() turns outbox payloads into.
    # Empty (the default): the events discovery found in the contracts (and their routing keys).
    event_types: Mapping[str, type[BaseModel]] = {}
    # Consumer service -> the event names (or classes) it consumes; empty (the default): what
    # services.yml and the contracts say. wait_for_events_processed() expects each of those events in
    # the consumer's processed table.
    consumed: Mapping[str, Collection[str | type]] = {}
    # The publishers' and consumers' event tables and columns; None (the default): the system's
    # ([tool.integration.events], else docs/conventions.md).
    outbox_table: str | None = None
    processed_table: str | None = None
    outbox_columns: OutboxColumns | None = None
    processed_event_id: str | None = None
    # Tables a reset leaves alone: the migration tools' bookkeeping.
    reset_exclude: frozenset[str] = DEFAULT_EXCLUDED_TABLES
    # Seconds one reset attempt waits for a lock a service holds, and how many attempts it makes.
    reset_lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    reset_attempts: int = DEFAULT_RESET_ATTEMPTS
    # Statuses request() and call() accept unless told otherwise.
    expected_statuses: tuple[int, ...] = DEFAULT_EXPECTED
    # Characters of a response body quoted in an error message.
    error_body_limit: int = 500

    def __init__(self, endpoints: StackEndpoints, *, timeout: float = 10.0) -> None:
        self.endpoints = endpoints
        self.timeout = timeout
        self._client = httpx.Client(timeout=timeout, follow_redirects=False)
        self._engines: dict[str, Engine] = {}
        self._held: dict[str, HeldConnection] = {}  # service -> the session its resets run in
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        self.broker: BrokerAdmin | None = None
        if endpoints.broker_management_url:
            # The broker shares the harness's client; closing the harness closes both.
            self.broker = BrokerAdmin(
                endpoints.broker_management_url,
                endpoints.broker_user,
                endpoints.broker_password,
                client=self._client,
                vhost=endpoints.broker_vhost,
            )
        events = endpoints.events
        self.outbox_table = type(self).outbox_table or events.outbox_table
        self.processed_table = type(self).processed_table or events.processed_table
        self.outbox_columns = type(self).outbox_columns or events.outbox
        self.processed_event_id = type(self).processed_event_id or events.processed_event_id
        # An outbox's type column may hold routing keys ("order.placed"): read as event names.
        self._event_names = {key: name for name, key in endpoints.routing_keys.items()}
        if not type(self).consumed:
            self.consumed = {name: tuple(events) for name, events in endpoints.consumed.items()}
        self._types: Mapping[str, type[BaseModel]] | None = None
        self._settled = 0.0  # the last publish a wait saw acknowledged (time.monotonic())
        # What the last reset did, and the queue counters the last wait saw (for a test's own checks).
        self.last_reset: list[ResetStats] = []
        self.last_queue_states: list[QueueState] = []

    # --- lifecycle ---

    def close(self) -> None:
        """Close the HTTP client, dispose of the engines, stop the worker threads. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.broker is not None:
                self.broker.close()
            self._client.close()
        finally:
            held, self._held = list(self._held.values()), {}
            for connection in held:
                connection.close()
            engines, self._engines = list(self._engines.values()), {}
            for engine in engines:
                engine.dispose()
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    @property
    def closed(self) -> bool:
        return self._closed

    def forget_session(self) -> None:
        """Forget what the HTTP client kept between calls (cookies): what a session-wide harness does
        between two tests, besides the reset of the data."""
        self._client.cookies.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise HarnessError(f"the harness of stack {self.endpoints.project} is closed")

    # --- services and engines ---

    def endpoint(self, service: str) -> ServiceEndpoint:
        """The endpoint of `service`; HarnessError (not KeyError, which means 404) for an unknown name."""
        try:
            return self.endpoints.services[service]
        except KeyError:
            known = ", ".join(sorted(self.endpoints.services)) or "none"
            raise HarnessError(
                f"no service named {service!r} in stack {self.endpoints.project} (services: {known})"
            ) from None

    def database_services(self) -> list[str]:
        """The services that have a database, in a stable order."""
        return sorted(name for name, ep in self.endpoints.services.items() if ep.database_url)

    def engine(self, service: str) -> Engine:
        """The NullPool engine of `service`'s database, made on first use."""
        self._check_open()
        engine = self._engines.get(service)
        if engine is None:
            url = self.endpoint(service).database_url
            if not url:
                raise HarnessError(f"service {service} has no database")
            engine = self._engines[service] = make_engine(url)
        return engine

    def _map(self, function: Callable[[str], T], services: Sequence[str]) -> list[T]:
        """`function` over `services`, in parallel threads when there are several: each call opens its
        own connection, and connecting is most of the time a reset or a read takes."""
        if len(services) < 2:
            return [function(s) for s in services]
        return list(self._pool().map(function, services))

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            # One thread per database, and one more for the broker call a reset makes meanwhile: a reset
            # never queues one database behind another.
            workers = len(self.database_services()) + 1
            self._executor = ThreadPoolExecutor(max_workers=max(2, workers), thread_name_prefix="harness")
        return self._executor

    def describe_service(self, name: str) -> str:
        """More about a service that does not answer, e.g. its container's state and last log lines.

        Returns "" here; a subclass or the plugin (which knows the containers) overrides or replaces it.
        """
        return ""

    # --- HTTP ---

    def url(self, service: str, path: str) -> str:
        return self.endpoint(service).url.rstrip("/") + "/" + path.lstrip("/")

    def request(
        self,
        service: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        expected: Collection[int] | None = None,
    ) -> httpx.Response:
        """Send one request to `service` and return the response if its status is in `expected`
        (default `expected_statuses`). A pydantic model as `json` is sent as its JSON (by alias).

        Otherwise: 404 -> KeyError(server's detail); 400, 409, 422 -> ValueError(server's message, a 422's
        errors as "field: msg"); other statuses -> HarnessError with the method, URL, status and body. A
        service that cannot be reached -> HarnessError saying its container may have exited.
        """
        self._check_open()
        url = self.url(service, path)
        method = method.upper()
        if isinstance(json, BaseModel):
            json = json.model_dump(mode="json", by_alias=True)
        try:
            response = self._client.request(method, url, json=json, params=params, headers=headers)
        except httpx.TimeoutException as exc:
            raise HarnessError(
                f"{method} {url}: service {service} did not answer within {self.timeout:g} s "
                f"({type(exc).__name__}){self._described(service)}"
            ) from None
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
            container = self.endpoint(service).container or service
            raise HarnessError(
                f"{method} {url}: cannot reach service {service} ({type(exc).__name__}: {exc}); its "
                f"container {container} may have exited{self._described(service)}"
            ) from None
        except httpx.HTTPError as exc:
            raise HarnessError(f"{method} {url}: {type(exc).__name__}: {exc}") from None
        if response.status_code in (self.expected_statuses if expected is None else expected):
            return response
        raise status_error(method, url, response, self.error_body_limit)

    def _described(self, service: str) -> str:
        try:
            extra = self.describe_service(service)
        except Exception as exc:  # a broken hook must not hide the error being reported
            extra = f"(describe_service failed: {exc!r})"
        return f"; {extra}" if extra else ""

    @overload
    def call(
        self,
        service: str,
        method: str,
        path: str,
        model: type[M],
        *,
        json: Any = ...,
        params: Mapping[str, Any] | None = ...,
        headers: Mapping[str, str] | None = ...,
        expected: Collection[int] | None = ...,
    ) -> M: ...

    @overload
    def call(
        self,
        service: str,
        method: str,
        path: str,
        model: TypeAdapter[T],
        *,
        json: Any = ...,
        params: Mapping[str, Any] | None = ...,
        headers: Mapping[str, str] | None = ...,
        expected: Collection[int] | None = ...,
    ) -> T: ...

    @overload
    def call(
        self,
        service: str,
        method: str,
        path: str,
        model: Any = None,
        *,
        json: Any = ...,
        params: Mapping[str, Any] | None = ...,
        headers: Mapping[str, str] | None = ...,
        expected: Collection[int] | None = ...,
    ) -> Any: ...

    def call(
        self,
        service: str,
        method: str,
        path: str,
        model: Any = None,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        expected: Collection[int] | None = None,
    ) -> Any:
        """`request()`, then the JSON body parsed into `model`: a pydantic model class
        (`model_validate`), a TypeAdapter, or a type such as `list[LinkResponse]`. Without `model`, the
        decoded JSON (None for an empty body). A body that does not match is a HarnessError, not a
        ValueError: the service broke its contract, the test's input was not refused."""
        response = self.request(
            service, method, path, json=json, params=params, headers=headers, expected=expected
        )
        where = f"{method.upper()} {response.request.url} -> {response.status_code}"
        if not response.content:
            if model is None:
                return None
            raise HarnessError(f"{where}: empty body, expected {_name_of(model)}")
        try:
            data = response.json()
        except ValueError:
            raise HarnessError(
                f"{where}: the body is not JSON: {_truncate(response.text, self.error_body_limit)}"
            ) from None
        if model is None:
            return data
        try:
            if isinstance(model, type) and issubclass(model, BaseModel):
                return model.model_validate(data)
            return _adapter(model).validate_python(data)
        except ValidationError as exc:
            raise HarnessError(f"{where}: the body is not a valid {_name_of(model)}: {exc}") from None

    # --- reset ---

    def _reset_one(self, service: str) -> ResetStats:
        engine = self.engine(service)
        held = self._held.get(service)
        if held is None:
            held = self._held[service] = HeldConnection(engine)
        return reset_database(
            engine,
            exclude=self.reset_exclude,
            lock_timeout=self.reset_lock_timeout,
            attempts=self.reset_attempts,
            connection=held,
        )

    def _purge_queues(self) -> list[str]:
        assert self.broker is not None
        # The consumers' queues are purged at once, beside the listing of the vhost's queues; only the
        # queues the listing adds cost a second round trip (BrokerAdmin.purge_all).
        known = set(self.endpoints.queues.values()) | {self._queue_name(s) for s in self.consumed}
        return self.broker.purge_all(known=sorted(known))

    def reset_sync(self) -> list[ResetStats]:
        """Empty every service database (DELETE, foreign-key order cached per database) and purge the
        broker's queues, all at once. Returns what each database reset did (also kept in `last_reset`).

        Every part runs to its end even when another fails; then ResetError names each part that failed
        (the service and its database, or the broker) and why."""
        self._check_open()
        services = self.database_services()
        pool = self._pool()
        jobs = {service: pool.submit(self._reset_one, service) for service in services}
        purge = pool.submit(self._purge_queues) if self.broker is not None else None
        failures: dict[str, BaseException] = {}
        stats: list[ResetStats] = []
        for service, job in jobs.items():
            try:
                stats.append(job.result())
            except Exception as exc:
                failures[service] = exc
        if purge is not None:
            try:
                purge.result()
            except Exception as exc:
                failures["broker"] = exc
        if failures:
            raise ResetError(failures)
        self.last_reset = stats
        return stats

    async def reset(self) -> None:
        """`reset_sync()` for async tests; it takes milliseconds, so it runs in the event loop's thread."""
        self.reset_sync()

    # --- events ---

    def _named(self, row: OutboxRow) -> OutboxRow:
        name = self._event_names.get(row.event_type)
        return row if name is None else replace(row, event_type=name)

    def event_models(self) -> Mapping[str, type[BaseModel]]:
        """Event name -> contract model: `event_types` when the subclass sets it, else every event class
        of the system's contracts (imported on first use)."""
        if self.event_types:
            return self.event_types
        if self._types is None:
            types: dict[str, type[BaseModel]] = {}
            for name, where in self.endpoints.event_classes.items():
                module_name, _, qualname = where.partition(":")
                try:
                    found: Any = importlib.import_module(module_name)
                    for part in qualname.split("."):
                        found = getattr(found, part)
                except (ImportError, AttributeError) as exc:
                    raise HarnessError(
                        f"cannot import event {name} from {where}: {exc}; put the system root on sys.path "
                        "(pytest's `pythonpath = .`) or set event_types on the harness"
                    ) from None
                types[name] = found
            self._types = types
        return self._types

    def routing_key(self, event: BaseModel | type[BaseModel] | str) -> str:
        """The routing key the system publishes an event under (its class name unless configured)."""
        if isinstance(event, str):
            name = event
        else:
            name = (event if isinstance(event, type) else type(event)).__name__
        return self.endpoints.routing_keys.get(name, name)

    def publish_event(self, event: BaseModel, *, event_id: str | None = None) -> bool:
        """Publish `event` to the system's exchange under its routing key, as its publisher does (message
        id = its `event_id` field), e.g. to redeliver it. True when the broker routed it to a queue."""
        if self.broker is None:
            raise HarnessError(
                f"stack {self.endpoints.project} has no broker to publish {type(event).__name__} to"
            )
        name = type(event).__name__
        message_id = event_id or str(getattr(event, "event_id", "") or "")
        properties: dict[str, Any] = {"type": name, "content_type": "application/json", "delivery_mode": 2}
        if message_id:
            properties["message_id"] = message_id
        return self.broker.publish(
            self.routing_key(event),
            event.model_dump_json(),
            exchange=self.endpoints.exchange,
            properties=properties,
        )

    def _event_settings(self) -> tuple[str, OutboxColumns, str]:
        """The outbox table, its columns and the processed table's event id column: the harness's, and
        where one of them is None (set so on an instance after __init__ resolved it), the system's."""
        events = self.endpoints.events
        return (
            self.outbox_table or events.outbox_table,
            self.outbox_columns or events.outbox,
            self.processed_event_id or events.processed_event_id,
        )

    def _outbox_rows(self) -> list[tuple[str, OutboxRow]]:
        outbox_table, outbox_columns, _ = self._event_settings()

        def read(service: str) -> list[OutboxRow]:
            rows = read_outbox(self.engine(service), outbox_table, outbox_columns)
            return [self._named(row) for row in rows]

        services = self.database_services()
        found = self._map(read, services)
        rows = [(service, row) for service, rows in zip(services, found, strict=True) for row in rows]
        rows.sort(key=lambda item: (item[1].occurred_at, item[1].event_id))
        return rows

    def published_events_sync(
        self, event_types: Mapping[str, type[BaseModel]] | None = None
    ) -> list[BaseModel]:
        """The events in every service's outbox, oldest first, as contract models (see
        `get_published_events`)."""
        self._check_open()
        types = self.event_models() if event_types is None else event_types
        events = []
        for service, row in self._outbox_rows():
            model = types.get(row.event_type)
            if model is None:
                known = ", ".join(sorted(types)) or "none"
                raise HarnessError(
                    f"{service}'s {self.outbox_table} holds event {row.event_id} of type "
                    f"{row.event_type!r}, which no event model is known for (known: {known}); add it to "
                    f"{type(self).__name__}.event_types"
                )
            try:
                events.append(model.model_validate(row.payload))
            except ValidationError as exc:
                raise HarnessError(
                    f"{service}'s {self.outbox_table}: the payload of {row.event_type} {row.event_id} is "
                    f"not a valid {model.__name__}: {exc}"
                ) from None
        return events

    async def get_published_events(
        self, event_types: Mapping[str, type[BaseModel]] | None = None
    ) -> list[BaseModel]:
        """Every event in the outboxes of all service databases, ordered by occurred_at, each parsed into
        the model `event_types` (default: the class attribute) gives for its event_type. An event_type
        without a model is a HarnessError naming it."""
        return self.published_events_sync(event_types)

    def _consumed(self) -> dict[str, frozenset[str]]:
        consumed = {}
        for service, events in self.consumed.items():
            self.endpoint(service)  # an unknown consumer is a mistake in the subclass
            consumed[service] = frozenset(e if isinstance(e, str) else e.__name__ for e in events)
        return consumed

    def _event_state(self, consumers: Collection[str]) -> dict[str, EventTables]:
        outbox_table, outbox_columns, processed_event_id = self._event_settings()

        def read(service: str) -> EventTables:
            tables = read_event_tables(
                self.engine(service),
                outbox_table=outbox_table,
                processed_table=self.processed_table if service in consumers else None,
                outbox_columns=outbox_columns,
                processed_event_id=processed_event_id,
            )
            if tables.outbox is None:
                return tables
            return replace(tables, outbox=tuple(self._named(row) for row in tables.outbox))

        services = self.database_services()
        return dict(zip(services, self._map(read, services), strict=True))

    def _pending(self, consumed: Mapping[str, frozenset[str]]) -> list[str]:
        """What keeps (a) and (b) of wait_for_events_processed from holding, one line per item."""
        state = self._event_state(consumed)
        pending = []
        rows = [row for tables in state.values() for row in tables.outbox or ()]
        for service, tables in state.items():
            unpublished = [row for row in tables.outbox or () if row.published_at is None]
            if unpublished:
                pending.append(
                    f"{service} has {_plural(len(unpublished), 'unpublished event')} in "
                    f"{self.outbox_table}: {_listed(unpublished)}"
                )
        for consumer, event_types in sorted(consumed.items()):
            if consumer not in state:
                continue  # no database to look into: its queue decides (see _queue_pending)
            expected = [row for row in rows if row.event_type in event_types]
            processed = state[consumer].processed
            missing = [row for row in expected if processed is None or row.event_id not in processed]
            if missing:
                absent = (
                    f" (its {self.processed_table} table does not exist yet)" if processed is None else ""
                )
                pending.append(
                    f"{consumer} has not processed {len(missing)} of {_plural(len(expected), 'event')}"
                    f"{absent}: {_listed(missing)}"
                )
        return pending

    def _queue_name(self, service: str) -> str:
        return self.endpoints.queues.get(service, f"{service}.events")

    def _queue_pending(self, consumed: Mapping[str, frozenset[str]]) -> list[str]:
        """(c): the queue counters, read once (a) and (b) hold. They decide only for a consumer without a
        database; for the others a message they show is most likely one the counters have not caught
        up with, and is logged, not waited for."""
        if self.broker is None:
            return []
        blind = {self._queue_name(s) for s in consumed if not self.endpoint(s).database_url}
        try:
            self.last_queue_states = self.broker.queues()
        except BrokerError as exc:
            if blind:
                return [f"cannot read the queues of consumers without a database: {exc}"]
            logger.info("final queue check skipped: %s", exc)
            return []
        pending = []
        for queue in self.last_queue_states:
            if not queue.has_messages:
                continue
            if queue.name in blind:
                pending.append(str(queue))
            else:
                logger.info(
                    "%s after every event was processed; the counters lag up to %g s", queue, STATS_INTERVAL
                )
        return pending

    async def _redeliveries_pending(
        self, consumed: Mapping[str, frozenset[str]], deadline: float
    ) -> list[str]:
        """(d): [] once what the harness published is acknowledged, or nothing was published since."""
        broker = self.broker
        published = broker.last_publish if broker is not None else None
        if broker is None or published is None or published <= self._settled:
            return []
        names = {self._queue_name(s) for s in consumed}
        # Counters taken after the publish: the broker samples them every STACK_STATS_INTERVAL.
        settle = published + 2 * STACK_STATS_INTERVAL
        clear_readings = 0
        last: list[str] = []
        while time.monotonic() < deadline:
            now = time.monotonic()
            if now < settle:
                await asyncio.sleep(min(settle - now, deadline - now))
                continue
            try:
                states = await asyncio.to_thread(broker.queues)
            except BrokerError as exc:
                last = [f"cannot read the queues after a redelivery: {exc}"]
                await asyncio.sleep(STACK_STATS_INTERVAL)
                continue
            busy = [q for q in states if q.name in names and (q.has_messages or q.ready is None)]
            last = [f"after a redelivery: {q}" for q in busy]
            clear_readings = 0 if busy else clear_readings + 1
            if clear_readings >= 2:
                self._settled = published
                return []
            await asyncio.sleep(STACK_STATS_INTERVAL)
        return last or ["the redelivered events were not acknowledged in time"]

    def _queue_report(self, consumed: Mapping[str, frozenset[str]]) -> str:
        if self.broker is None:
            return ""
        try:
            queues = self.broker.queues()
        except BrokerError as exc:
            return f"; queues unknown: {exc}"
        names = {self._queue_name(s) for s in consumed}
        shown = [str(q) for q in queues if q.name in names or q.has_messages]
        if not shown:
            return ""
        return f"; {'; '.join(shown)} (queue counters lag up to {STATS_INTERVAL:g} s)"

    async def wait_for_events_processed(self, timeout: float = 10.0, poll: float = 0.05) -> None:
        """Wait until the events the use case caused have gone all the way through:

        (a) every outbox row of every publisher has `published_at` set;
        (b) every consumer's processed table holds each outbox event whose type it consumes (the
            decisive condition: the broker's counters lag);
        (c) then, once, the broker's queues: they decide only for a consumer without a database (a
            queue whose counters are not reported yet counts as empty); for the others a message they
            still show is logged, not waited for (most likely the counters are behind), and kept in
            `last_queue_states`.

        (d) when something was published through the harness since the last wait (a redelivered event):
            the consumers' queues must show no message ready or unacknowledged in two readings taken
            after the publish: a redelivery leaves no new row, only its acknowledgement tells.

        TimeoutError after `timeout` seconds names everything still pending and the queues' counters.
        """
        self._check_open()
        consumed = self._consumed()
        deadline = time.monotonic() + timeout
        while True:
            pending = await asyncio.to_thread(self._pending, consumed)
            if not pending:
                pending = await asyncio.to_thread(self._queue_pending, consumed)
                if not pending:
                    pending = await self._redeliveries_pending(consumed, deadline)
                if not pending:
                    return
            if time.monotonic() >= deadline:
                report = await asyncio.to_thread(self._queue_report, consumed)
                raise TimeoutError(f"events not processed after {timeout:g} s: {'; '.join(pending)}{report}")
            await asyncio.sleep(poll)
