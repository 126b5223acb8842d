"""RealServiceHarness: HTTP status mapping against a stub server (no Docker), and resets, published
events and waiting for event processing against a real PostgreSQL and RabbitMQ (marker `docker`)."""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from pydantic import BaseModel, TypeAdapter
from sqlalchemy import Engine
from waiting import GENEROUS, Timer, poll_until

from integration.broker import BrokerAdmin
from integration.database import APPLICATION_NAME, DatabaseError, make_engine
from integration.errors import HarnessError
from integration.harness import RealServiceHarness, ResetError, event_map
from integration.model import BROKER_PASSWORD, BROKER_USER, ServiceEndpoint, StackEndpoints

docker = pytest.mark.docker

# --- a contract, as a project's architecture/contracts would define it ------------------------------------


class LinkResponse(BaseModel):
    code: str
    url: str
    created_at: datetime


class CreateLinkRequest(BaseModel):
    url: str
    code: str | None = None


class Event(BaseModel):
    event_id: str
    occurred_at: datetime


class LinkCreated(Event):
    code: str
    url: str


class LinkVisited(Event):
    code: str
    url: str


class ShortenerHarness(RealServiceHarness):
    event_types = event_map([LinkCreated, LinkVisited])
    consumed = {"analytics": {"LinkCreated", LinkVisited}}  # names or classes


# --- a stub HTTP service -----------------------------------------------------------------------------------

LINK = {"code": "abc", "url": "https://example.com/", "created_at": "2024-05-01T12:00:00Z"}
ROUTES: dict[tuple[str, str], tuple[int, dict[str, str], bytes]] = {}
# GET /slow answers only once this is set (or after GENEROUS seconds): a client's timeout fires first
# however loaded the machine, instead of racing a fixed delay of the server.
SLOW_RELEASE = threading.Event()


def route(method: str, path: str, status: int, body: object = None, headers: dict[str, str] | None = None):
    raw = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    content_type = (
        {"content-type": "application/json"} if body is not None and not isinstance(body, bytes) else {}
    )
    ROUTES[(method, path)] = (status, {**content_type, **(headers or {})}, raw)


route("GET", "/links/abc", 200, LINK)
route("GET", "/links", 200, [LINK, {**LINK, "code": "def"}])
route("GET", "/links/missing", 404, {"detail": "Link 'missing' not found"})
route("POST", "/bad", 400, {"detail": "malformed request"})
route("POST", "/links/taken", 409, {"detail": "code 'taken' is used by another url"})
route(
    "POST",
    "/links/invalid",
    422,
    {
        "detail": [
            {"type": "value_error", "loc": ["body", "url"], "msg": "Value error, not a URL", "input": "x"}
        ]
    },
)
route("GET", "/boom", 500, b"Traceback (most recent call last): ... ZeroDivisionError")
route("GET", "/abc", 307, None, {"location": "https://example.com/"})
route("DELETE", "/links/abc", 204)
route("GET", "/links/wrong-shape", 200, {"code": "abc"})
route("GET", "/not-json", 200, b"<html>hello</html>")


class StubHandler(BaseHTTPRequestHandler):
    def log_message(self, format, *args):  # quiet
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path == "/echo":
            status, headers, raw = 201, {"content-type": "application/json"}, body
        elif self.path == "/slow":
            SLOW_RELEASE.wait(GENEROUS)
            status, headers, raw = 200, {}, b""
        else:
            status, headers, raw = ROUTES.get((self.command, self.path), (404, {}, b""))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_POST = do_DELETE = do_PUT = _handle


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def http_stub() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def http_harness(http_stub) -> Iterator[RealServiceHarness]:
    endpoints = StackEndpoints(
        project="itest-http",
        services={
            "links": ServiceEndpoint("links", http_stub, None, "itest-http-links-1"),
            "gone": ServiceEndpoint("gone", f"http://127.0.0.1:{free_port()}", None, "itest-http-gone-1"),
        },
    )
    with RealServiceHarness(endpoints, timeout=GENEROUS) as harness:
        yield harness


# --- HTTP: status mapping -----------------------------------------------------------------------------------


def test_call_parses_a_model_a_list_type_and_a_type_adapter(http_harness):
    link = http_harness.call("links", "GET", "/links/abc", LinkResponse)
    assert link == LinkResponse.model_validate(LINK)
    links = http_harness.call("links", "GET", "/links", list[LinkResponse])
    assert [x.code for x in links] == ["abc", "def"]
    assert http_harness.call("links", "GET", "/links", TypeAdapter(list[LinkResponse])) == links
    assert http_harness.call("links", "GET", "/links/abc") == LINK  # no model: the decoded JSON


def test_a_model_as_json_is_sent_as_its_json(http_harness):
    sent = CreateLinkRequest(url="https://example.com/", code="abc")
    assert http_harness.call("links", "POST", "/echo", json=sent) == {
        "url": "https://example.com/",
        "code": "abc",
    }


def test_204_returns_none(http_harness):
    assert http_harness.call("links", "DELETE", "/links/abc") is None


def test_404_is_a_key_error_with_the_servers_detail(http_harness):
    with pytest.raises(KeyError) as caught:
        http_harness.call("links", "GET", "/links/missing", LinkResponse)
    assert caught.value.args == ("Link 'missing' not found",)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/bad", "malformed request"),
        ("/links/taken", "code 'taken' is used by another url"),
        ("/links/invalid", "url: Value error, not a URL"),
    ],
)
def test_400_409_422_are_value_errors_with_the_servers_message(http_harness, path, message):
    with pytest.raises(ValueError) as caught:
        http_harness.call("links", "POST", path, LinkResponse, json={"url": "x"})
    assert type(caught.value) is ValueError and str(caught.value) == message


def test_500_is_a_harness_error_with_method_url_status_and_body(http_harness, http_stub):
    with pytest.raises(HarnessError) as caught:
        http_harness.call("links", "GET", "/boom")
    message = str(caught.value)
    assert message.startswith(f"GET {http_stub}/boom -> 500 Internal Server Error: Traceback")
    assert "ZeroDivisionError" in message


def test_redirects_are_not_followed(http_harness):
    response = http_harness.request("links", "GET", "/abc", expected=(307,))
    assert response.status_code == 307 and response.headers["location"] == "https://example.com/"
    with pytest.raises(HarnessError, match="-> 307"):
        http_harness.request("links", "GET", "/abc")


def test_a_body_that_breaks_the_contract_is_a_harness_error_not_a_value_error(http_harness):
    with pytest.raises(HarnessError, match="is not a valid LinkResponse") as caught:
        http_harness.call("links", "GET", "/links/wrong-shape", LinkResponse)
    assert not isinstance(caught.value, ValueError)
    with pytest.raises(HarnessError, match="the body is not JSON: <html>hello</html>"):
        http_harness.call("links", "GET", "/not-json", LinkResponse)
    with pytest.raises(HarnessError, match="empty body, expected LinkResponse"):
        http_harness.call("links", "DELETE", "/links/abc", LinkResponse)


def test_an_unknown_service_is_a_harness_error_not_a_key_error(http_harness):
    with pytest.raises(HarnessError, match=r"no service named 'nope' .*services: gone, links"):
        http_harness.call("nope", "GET", "/")


def test_a_refused_connection_names_service_url_and_container(http_harness):
    url = http_harness.endpoints.services["gone"].url
    with pytest.raises(HarnessError) as caught:
        http_harness.call("gone", "GET", "/health")
    message = str(caught.value)
    assert f"GET {url}/health: cannot reach service gone (ConnectError" in message
    assert "container itest-http-gone-1 may have exited" in message

    http_harness.describe_service = lambda name: f"{name}: exited with code 1; last log line: KeyError"
    with pytest.raises(HarnessError, match="may have exited; gone: exited with code 1; last log line"):
        http_harness.call("gone", "GET", "/health")


def test_a_slow_service_times_out(http_stub):
    endpoints = StackEndpoints("itest-slow", {"links": ServiceEndpoint("links", http_stub, None)})
    SLOW_RELEASE.clear()
    try:
        with (
            RealServiceHarness(endpoints, timeout=0.3) as harness,
            Timer() as timer,
            pytest.raises(HarnessError, match=r"service links did not answer within 0.3 s \(ReadTimeout\)"),
        ):
            harness.call("links", "GET", "/slow")
    finally:
        SLOW_RELEASE.set()  # the stub's handler thread answers and ends
    # The timeout fired: not before it was due, and long before the stub would have answered.
    assert 0.3 <= timer.seconds < GENEROUS


def test_close_is_idempotent_and_final(http_stub):
    endpoints = StackEndpoints("itest-x", {"links": ServiceEndpoint("links", http_stub, None)})
    harness = RealServiceHarness(endpoints)
    harness.call("links", "GET", "/links/abc")
    harness.close()
    harness.close()
    assert harness.closed
    with pytest.raises(HarnessError, match="closed"):
        harness.call("links", "GET", "/links/abc")


# --- the stack: two service databases and a broker -------------------------------------------------------

LINKS_DDL = """
CREATE TABLE alembic_version (version_num text PRIMARY KEY);
INSERT INTO alembic_version VALUES ('links-1');
CREATE TABLE links (code text PRIMARY KEY, url text NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE link_tags (code text REFERENCES links(code), tag text, PRIMARY KEY (code, tag));
CREATE TABLE redirects (id serial PRIMARY KEY, code text NOT NULL REFERENCES links(code),
    previous_id int REFERENCES redirects(id));
CREATE TABLE outbox_events (event_id text PRIMARY KEY, event_type text NOT NULL, payload jsonb NOT NULL,
    occurred_at timestamptz NOT NULL, published_at timestamptz);
"""
ANALYTICS_DDL = """
CREATE TABLE alembic_version (version_num text PRIMARY KEY);
INSERT INTO alembic_version VALUES ('analytics-1');
CREATE TABLE link_stats (code text PRIMARY KEY, url text NOT NULL, visits int NOT NULL DEFAULT 0);
CREATE TABLE daily_visits (code text REFERENCES link_stats(code), day date, visits int,
    PRIMARY KEY (code, day));
CREATE TABLE processed_events (event_id text PRIMARY KEY, event_type text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE outbox_events (event_id text PRIMARY KEY, event_type text NOT NULL, payload jsonb NOT NULL,
    occurred_at timestamptz NOT NULL, published_at timestamptz);
"""
SAMPLE_DATA = {
    "links": """
        INSERT INTO links VALUES ('abc', 'https://example.com/', now());
        INSERT INTO links VALUES ('def', 'https://example.org/', now());
        INSERT INTO link_tags VALUES ('abc', 'x');
        INSERT INTO redirects (code) VALUES ('abc');
        INSERT INTO redirects (code, previous_id) SELECT 'abc', max(id) FROM redirects;
    """,
    "analytics": """
        INSERT INTO link_stats VALUES ('abc', 'https://example.com/', 3);
        INSERT INTO daily_visits VALUES ('abc', current_date, 3);
        INSERT INTO processed_events (event_id, event_type) VALUES ('old', 'LinkVisited');
    """,
}


@pytest.fixture(scope="module")
def pg_stack_databases(pg_server) -> Iterator[dict[str, str]]:
    """The links and analytics databases of a shortener-like system, created once for the module."""
    urls = {}
    for service, ddl in (("links", LINKS_DDL), ("analytics", ANALYTICS_DDL)):
        urls[service] = pg_server.create_database(f"itest_{service}")
        engine = make_engine(urls[service])
        with engine.begin() as connection:
            connection.exec_driver_sql(ddl)
        engine.dispose()
    yield urls
    for service in urls:
        pg_server.drop_database(f"itest_{service}")


def stack_endpoints(databases: dict[str, str], broker_url: str | None) -> StackEndpoints:
    return StackEndpoints(
        project="itest-harness",
        services={
            name: ServiceEndpoint(name, f"http://127.0.0.1:{free_port()}", url, f"itest-harness-{name}-1")
            for name, url in databases.items()
        },
        broker_management_url=broker_url,
        broker_user=BROKER_USER,
        broker_password=BROKER_PASSWORD,
        queues={name: f"{name}.events" for name in databases},
    )


@pytest.fixture
def broker_harness(pg_stack_databases, broker_server) -> Iterator[ShortenerHarness]:
    """A harness on the stack, reset before the test; its broker has the queue analytics.events."""
    with ShortenerHarness(stack_endpoints(pg_stack_databases, broker_server.management_url)) as harness:
        harness.broker.declare_queue("analytics.events")
        harness.reset_sync()
        yield harness


def execute(engine: Engine, sql: str, params: dict | None = None) -> None:
    with engine.begin() as connection:
        connection.exec_driver_sql(sql, params)


def count(engine: Engine, table: str) -> int:
    with engine.connect() as connection:
        return connection.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one()


T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def add_event(engine: Engine, event: Event, *, published: bool = True) -> None:
    execute(
        engine,
        "INSERT INTO outbox_events VALUES (%(id)s, %(type)s, %(payload)s, %(at)s, %(published)s)",
        {
            "id": event.event_id,
            "type": type(event).__name__,
            "payload": event.model_dump_json(),
            "at": event.occurred_at,
            "published": datetime.now(UTC) if published else None,
        },
    )


def mark_processed(engine: Engine, *events: Event) -> None:
    for event in events:
        execute(
            engine,
            "INSERT INTO processed_events (event_id, event_type) VALUES (%(id)s, %(type)s)",
            {"id": event.event_id, "type": type(event).__name__},
        )


def visited(n: int, code: str = "abc") -> LinkVisited:
    return LinkVisited(
        event_id=f"visit-{n}-{uuid.uuid4().hex[:6]}",
        occurred_at=T0 + timedelta(seconds=n),
        code=code,
        url="https://example.com/",
    )


def wait_for_queue_counters(harness: RealServiceHarness, queue: str, ready: int) -> None:
    poll_until(
        lambda: any(q.name == queue and q.ready == ready for q in harness.broker.queues()),
        f"the counters of {queue} showing {ready} ready",
        interval=0.1,
    )


@docker
def test_reset_empties_both_databases_keeps_migrations_and_purges_queues(broker_harness):
    links, analytics = broker_harness.engine("links"), broker_harness.engine("analytics")
    execute(links, SAMPLE_DATA["links"])
    execute(analytics, SAMPLE_DATA["analytics"])
    add_event(links, visited(1))
    assert broker_harness.broker.publish("analytics.events", "{}")

    stats = broker_harness.reset_sync()

    assert [s.database.rsplit("/", 1)[1] for s in stats] == ["itest_analytics", "itest_links"]
    assert all(s.order_from_cache for s in stats)  # the fixture's reset read the foreign keys
    for engine, table in [(links, "links"), (links, "redirects"), (links, "outbox_events")]:
        assert count(engine, table) == 0
    for table in ["link_stats", "daily_visits", "processed_events"]:
        assert count(analytics, table) == 0
    assert count(links, "alembic_version") == 1 and count(analytics, "alembic_version") == 1
    queue = f"{broker_harness.broker.base_url}/api/queues/%2F/analytics.events/get"
    peek = httpx.post(
        queue, json={"count": 5, "ackmode": "ack_requeue_true", "encoding": "auto"}, auth=("guest", "guest")
    )
    assert peek.json() == []


@docker
async def test_async_reset(broker_harness):
    execute(broker_harness.engine("links"), SAMPLE_DATA["links"])
    await broker_harness.reset()
    assert count(broker_harness.engine("links"), "links") == 0


@docker
def test_reset_latency(pg_stack_databases, broker_server, capsys):
    """50 resets of the two databases (10 tables, a few rows each), with and without the broker, each
    emptying them; p50, p90 and max are printed (figures: the benchmark judges speed)."""
    timings = {}
    for label, broker_url in (
        ("databases only", None),
        ("databases + broker purge", broker_server.management_url),
    ):
        with ShortenerHarness(stack_endpoints(pg_stack_databases, broker_url)) as harness:
            harness.reset_sync()  # reads the foreign keys once
            samples = []
            for _ in range(50):
                execute(harness.engine("links"), SAMPLE_DATA["links"])
                execute(harness.engine("analytics"), SAMPLE_DATA["analytics"])
                started = time.perf_counter()
                harness.reset_sync()
                samples.append(time.perf_counter() - started)
                # Every reset did its job: the sample rows are gone, the migration rows kept.
                assert count(harness.engine("links"), "links") == 0
                assert count(harness.engine("analytics"), "link_stats") == 0
            assert all(s.order_from_cache for s in harness.last_reset)
            assert count(harness.engine("links"), "alembic_version") == 1
            timings[label] = samples
    # The figures only: how fast a reset must be is the benchmark's (`nox -s bench`, reset_p50).
    with capsys.disabled():
        for label, samples in timings.items():
            ordered = sorted(samples)
            print(
                f"\nreset of 2 databases, {label}: p50 {statistics.median(samples) * 1000:.1f} ms, "
                f"p90 {ordered[int(len(ordered) * 0.9)] * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms"
            )


@docker
def test_harness_sessions_do_not_outlive_their_use(pg_stack_databases, pg_server):
    """The resets' sessions (one per database, kept for the harness's life) are idle outside any
    transaction between resets; reads close theirs at once; close() ends every one."""
    observer = make_engine(pg_server.url(), application_name="itest-observer")
    sql = (
        "SELECT datname, state, xact_start IS NULL FROM pg_stat_activity "
        f"WHERE application_name = '{APPLICATION_NAME}' ORDER BY datname"
    )

    def harness_sessions() -> list[tuple[str, str, bool]]:
        with observer.connect() as connection:
            return [tuple(row) for row in connection.exec_driver_sql(sql).all()]

    held_only = [("itest_analytics", "idle", True), ("itest_links", "idle", True)]
    try:
        harness = ShortenerHarness(stack_endpoints(pg_stack_databases, None))
        harness.reset_sync()
        harness.reset_sync()
        harness.published_events_sync()
        # A backend ends a moment after its client hangs up: poll, with a generous deadline.
        poll_until(lambda: harness_sessions() == held_only, f"only the held sessions: {held_only}")
        harness.close()
        poll_until(lambda: harness_sessions() == [], "no harness session left in pg_stat_activity")
    finally:
        observer.dispose()


@contextmanager
def hold_row_lock(url: str, sql: str) -> Iterator[None]:
    """A service's transaction holding row locks (idle in transaction) until the block ends."""
    engine = make_engine(url, application_name="itest-service")
    connection = engine.connect()
    try:
        connection.exec_driver_sql(sql).all()
        yield
    finally:
        connection.rollback()
        connection.close()
        engine.dispose()


@docker
def test_reset_empties_every_database_and_the_queues_at_once(broker_harness, pg_stack_databases):
    """While one database's reset waits for a lock a service holds, the other database and the queues
    are emptied already: the parts run at the same time, not one after the other."""
    links, analytics = broker_harness.engine("links"), broker_harness.engine("analytics")
    execute(links, SAMPLE_DATA["links"])
    execute(analytics, SAMPLE_DATA["analytics"])
    assert broker_harness.broker.publish("analytics.events", "{}")
    broker_harness.reset_lock_timeout = 2 * GENEROUS  # far longer than the checks below may take
    # analytics comes first in the harness's order of databases: a serial reset would wait here first.
    locked = hold_row_lock(pg_stack_databases["analytics"], "SELECT * FROM link_stats FOR UPDATE")
    # The pool outside the lock: the lock goes first, then the pool waits for the reset it let finish.
    with ThreadPoolExecutor(1) as pool, locked:
        reset = pool.submit(broker_harness.reset_sync)
        poll_until(lambda: count(links, "links") == 0, "links emptied while analytics waits")
        poll_until(lambda: exact_ready(broker_harness, "analytics.events") == 0, "the queue purged")
        assert not reset.done() and count(analytics, "link_stats") == 1
    stats = reset.result(timeout=GENEROUS)
    assert [s.database.rsplit("/", 1)[1] for s in stats] == ["itest_analytics", "itest_links"]
    assert count(analytics, "link_stats") == 0 and count(analytics, "daily_visits") == 0


@docker
def test_a_failed_reset_names_its_database_and_the_rest_is_still_emptied(broker_harness, pg_stack_databases):
    links, analytics = broker_harness.engine("links"), broker_harness.engine("analytics")
    execute(links, SAMPLE_DATA["links"])
    execute(analytics, SAMPLE_DATA["analytics"])
    assert broker_harness.broker.publish("analytics.events", "{}")
    broker_harness.reset_lock_timeout = 0.1
    broker_harness.reset_attempts = 1
    locked = hold_row_lock(pg_stack_databases["links"], "SELECT * FROM links FOR UPDATE")
    with locked, pytest.raises(ResetError) as caught:
        broker_harness.reset_sync()
    error = caught.value
    assert set(error.failures) == {"links"} and isinstance(error.failures["links"], DatabaseError)
    message = str(error)
    assert message.startswith("reset failed: service links's database: cannot reset ")
    assert "itest_links" in message and "postgres:***@" in message and "itest_analytics" not in message
    # The parts that could be emptied were: the other database and the queue.
    assert count(analytics, "link_stats") == 0 and count(analytics, "processed_events") == 0
    assert exact_ready(broker_harness, "analytics.events") == 0
    assert count(links, "links") == 2  # nothing of the failed one: its transaction rolled back
    broker_harness.reset_sync()  # the lock is gone: the next reset empties it
    assert count(links, "links") == 0


@docker
def test_a_broker_that_fails_is_named_beside_the_emptied_databases(pg_stack_databases):
    url = f"http://127.0.0.1:{free_port()}"  # no management API listens there
    with ShortenerHarness(stack_endpoints(pg_stack_databases, url)) as harness:
        execute(harness.engine("links"), SAMPLE_DATA["links"])
        with pytest.raises(ResetError) as caught:
            harness.reset_sync()
        assert set(caught.value.failures) == {"broker"}
        assert f"reset failed: broker: GET {url}/api/queues/%2F" in str(caught.value)
        assert "cannot reach the RabbitMQ management API" in str(caught.value)
        assert count(harness.engine("links"), "links") == 0


def exact_ready(harness: RealServiceHarness, queue: str) -> int:
    """Ready messages of `queue`, fetched and put back (the counters of GET /api/queues lag)."""
    assert harness.broker is not None
    response = httpx.post(
        f"{harness.broker.base_url}/api/queues/%2F/{queue}/get",
        json={"count": 100, "ackmode": "ack_requeue_true", "encoding": "auto"},
        auth=(BROKER_USER, BROKER_PASSWORD),
    )
    response.raise_for_status()
    return len(response.json())


# --- published events --------------------------------------------------------------------------------------


@docker
async def test_published_events_are_merged_ordered_and_parsed(broker_harness):
    links, analytics = broker_harness.engine("links"), broker_harness.engine("analytics")
    created = LinkCreated(event_id="c1", occurred_at=T0, code="abc", url="https://example.com/")
    first, second = visited(2), visited(3)
    add_event(links, second)
    add_event(analytics, first, published=False)  # a second publisher's outbox is read too
    add_event(links, created)

    events = await broker_harness.get_published_events()

    assert events == [created, first, second]
    assert [type(e) for e in events] == [LinkCreated, LinkVisited, LinkVisited]


@docker
async def test_an_unknown_event_type_is_named(broker_harness):
    execute(
        broker_harness.engine("links"),
        "INSERT INTO outbox_events VALUES ('x1', 'LinkRenamed', '{}', now(), NULL)",
    )
    with pytest.raises(HarnessError) as caught:
        await broker_harness.get_published_events()
    message = str(caught.value)
    assert "links's outbox_events holds event x1 of type 'LinkRenamed'" in message
    assert "known: LinkCreated, LinkVisited" in message and "ShortenerHarness.event_types" in message

    # Models passed in replace the class attribute.
    class LinkRenamed(BaseModel):
        pass

    assert await broker_harness.get_published_events({"LinkRenamed": LinkRenamed}) == [LinkRenamed()]


@docker
async def test_a_payload_that_does_not_fit_its_model_is_named(broker_harness):
    execute(
        broker_harness.engine("links"),
        "INSERT INTO outbox_events VALUES ('x2', 'LinkCreated', '{\"code\": \"abc\"}', now(), NULL)",
    )
    with pytest.raises(HarnessError, match="the payload of LinkCreated x2 is not a valid LinkCreated"):
        await broker_harness.get_published_events()


# --- waiting for events ------------------------------------------------------------------------------------


class CountingChecks:
    """Counts the harness's checks of what is pending (one per poll of wait_for_events_processed), so
    that a test can let the wait look a few times instead of sleeping for a while."""

    def __init__(self, harness: RealServiceHarness, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        pending = harness._pending

        def counted(*args, **kwargs):
            self.calls += 1
            return pending(*args, **kwargs)

        monkeypatch.setattr(harness, "_pending", counted)

    async def wait_for_more(self, task: asyncio.Task, polls: int = 3) -> None:
        """Until the wait has checked `polls` more times; fails if it ended meanwhile."""
        target = self.calls + polls
        deadline = time.monotonic() + GENEROUS
        while self.calls < target:
            assert not task.done(), "the wait returned while events were still pending"
            assert time.monotonic() < deadline, f"the wait checked {self.calls} times, not {target}"
            await asyncio.sleep(0.01)
        assert not task.done(), "the wait returned while events were still pending"


@docker
async def test_wait_returns_once_the_consumer_caught_up(broker_harness, monkeypatch):
    links, analytics = broker_harness.engine("links"), broker_harness.engine("analytics")
    events = [visited(n) for n in range(3)]
    for event in events:
        add_event(links, event, published=False)
    checks = CountingChecks(broker_harness, monkeypatch)

    # Stage by stage, the wait is seen still waiting after several checks: unpublished, then published
    # but not processed. Then the consumer catches up, and the wait returns: because the condition
    # held, since its timeout (GENEROUS) would have raised TimeoutError.
    wait = asyncio.create_task(broker_harness.wait_for_events_processed(timeout=GENEROUS))
    await checks.wait_for_more(wait)
    await asyncio.to_thread(execute, links, "UPDATE outbox_events SET published_at = now()")
    await checks.wait_for_more(wait)
    await asyncio.to_thread(mark_processed, analytics, *events)
    await asyncio.wait_for(wait, timeout=2 * GENEROUS)
    assert count(analytics, "processed_events") == 3


@docker
async def test_wait_with_nothing_to_do_returns_at_once(broker_harness, monkeypatch):
    checks = CountingChecks(broker_harness, monkeypatch)
    await broker_harness.wait_for_events_processed(timeout=GENEROUS)
    assert checks.calls == 1  # the first check found nothing pending: no second poll, no waiting


@docker
async def test_wait_times_out_naming_what_is_pending(broker_harness):
    links, analytics = broker_harness.engine("links"), broker_harness.engine("analytics")
    events = [visited(n) for n in range(5)]
    for event in events:
        add_event(links, event)
    mark_processed(analytics, *events[:3])
    unpublished = LinkCreated(
        event_id="c9", occurred_at=T0 + timedelta(seconds=9), code="q", url="https://q/"
    )
    add_event(links, unpublished, published=False)

    with Timer() as timer, pytest.raises(TimeoutError) as caught:
        await broker_harness.wait_for_events_processed(timeout=0.5)
    # The timeout is the behaviour: it fires when due, not before, and the wait then ends (it does not
    # hang on, say, the queue report).
    assert 0.5 <= timer.seconds < GENEROUS
    message = str(caught.value)
    assert "links has 1 unpublished event in outbox_events: LinkCreated c9" in message
    assert (
        f"analytics has not processed 3 of 6 events: LinkVisited {events[3].event_id}, "
        f"LinkVisited {events[4].event_id}, LinkCreated c9" in message
    )
    assert "queue analytics.events:" in message and "unacked" in message


@docker
async def test_lagging_queue_counters_do_not_hold_up_a_consumer_with_a_database(
    broker_harness, broker_server, monkeypatch
):
    # The consumer's table says every event was processed; the queue's counters still show a message.
    # A service put it there (published here through an admin of its own, not the harness's: what the
    # harness publishes itself is a redelivery, which the wait does wait for).
    with BrokerAdmin(broker_server.management_url, BROKER_USER, BROKER_PASSWORD) as service:
        assert service.publish("analytics.events", "{}")
    wait_for_queue_counters(broker_harness, "analytics.events", 1)
    event = visited(1)
    add_event(broker_harness.engine("links"), event)
    mark_processed(broker_harness.engine("analytics"), event)

    # The message stays in the queue for good: a wait that waited for the counters would time out.
    checks = CountingChecks(broker_harness, monkeypatch)
    await broker_harness.wait_for_events_processed(timeout=GENEROUS)
    assert checks.calls == 1  # returned at the first check, without waiting for the queue
    (queue,) = [q for q in broker_harness.last_queue_states if q.name == "analytics.events"]
    assert queue.ready == 1  # seen, reported in the log, not waited for


class NotifierHarness(ShortenerHarness):
    """A consumer without a database (notifier) and one whose processed table does not exist (links)."""

    consumed = {"notifier": {"LinkCreated"}, "links": {"LinkVisited"}}


@docker
async def test_a_consumer_without_a_database_waits_on_its_queue(pg_stack_databases, broker_server):
    endpoints = stack_endpoints(pg_stack_databases, broker_server.management_url)
    services = {**endpoints.services, "notifier": ServiceEndpoint("notifier", "http://127.0.0.1:1", None)}
    endpoints = StackEndpoints(
        endpoints.project, services, endpoints.broker_management_url, queues={"notifier": "notifier.events"}
    )
    with NotifierHarness(endpoints) as harness:
        harness.broker.declare_queue("notifier.events")
        harness.reset_sync()
        harness.consumed = {"notifier": {"LinkCreated"}}
        assert harness.broker.publish("notifier.events", "{}")
        wait_for_queue_counters(harness, "notifier.events", 1)
        with pytest.raises(TimeoutError, match=r"queue notifier\.events: 1 ready, 0 unacked, 0 consumers"):
            await harness.wait_for_events_processed(timeout=0.3)

        harness.broker.purge_all()
        wait_for_queue_counters(harness, "notifier.events", 0)
        await harness.wait_for_events_processed(timeout=GENEROUS)

        # A consumer whose processed table does not exist yet has processed nothing.
        harness.consumed = NotifierHarness.consumed
        add_event(harness.engine("analytics"), visited(1))
        with pytest.raises(
            TimeoutError, match=r"links has not processed 1 of 1 event \(its processed_events"
        ):
            await harness.wait_for_events_processed(timeout=0.2)


@docker
async def test_an_unknown_consumer_is_a_harness_error(pg_stack_databases):
    with ShortenerHarness(stack_endpoints(pg_stack_databases, None)) as harness:
        harness.consumed = {"reporting": {"LinkCreated"}}
        with pytest.raises(HarnessError, match="no service named 'reporting'"):
            await harness.wait_for_events_processed(timeout=1)
