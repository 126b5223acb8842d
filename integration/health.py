"""Health: probing a service's health route, a database and the broker from the host, and saying why a
service never answered.

The probes run on the host against the published port, so no service image needs Python, curl or any
other tool for its health to be seen, and an answer is seen within one poll interval (50 ms) instead of
at the next health-check interval of the engine (1 s). A database is ready once it lets the configured
role into its database (`probe_postgres`), the broker once it opens an AMQP connection
(`probe_amqp`) and its management API answers. `likely_cause` is pure: the last probe and the
container's last log lines → the row of the troubleshooting table that explains them.
"""

from __future__ import annotations

import re
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import psycopg2  # type: ignore[import-untyped]  # no stubs; the driver sqlalchemy uses

from .errors import StackError
from .model import DEFAULT_HEALTH_TIMEOUT

Reporter = Callable[[str], None]
PROGRESS_EVERY = 10.0
BODY_SHOWN = 120


@dataclass(frozen=True)
class Probe:
    """What one health request saw: a status and the start of the body, or the error."""

    status: int | None = None
    body: str = ""
    error: str | None = None

    def __str__(self) -> str:
        if self.status is not None:
            body = " ".join(self.body.split())[:BODY_SHOWN]
            return f"HTTP {self.status}" + (f": {body}" if body else "")
        return self.error or "no answer yet"


class StackMemberExited(StackError):
    """A container of the stack exited while another one was being waited for. Its message names the
    container that died (not the one being waited for), so callers pass it on as it is."""


class HealthTimeout(StackError):
    """A service did not answer 200 on its health route in time; `probe` is the last thing it said."""

    def __init__(self, message: str, *, name: str, url: str, probe: Probe, waited: float) -> None:
        super().__init__(message)
        self.name = name
        self.url = url
        self.probe = probe
        self.waited = waited


def probe_once(client: httpx.Client, url: str) -> Probe:
    try:
        response = client.get(url)
    except httpx.HTTPError as exc:
        return Probe(error=f"{type(exc).__name__}: {exc}")
    return Probe(status=response.status_code, body=response.text[:2000])


def wait_for_service_health(
    url: str,
    *,
    name: str = "",
    timeout: float = DEFAULT_HEALTH_TIMEOUT,
    interval: float = 0.2,
    progress_every: float = PROGRESS_EVERY,
    report: Reporter = print,
    check_alive: Callable[[], str | None] | None = None,
) -> float:
    """Poll `url` until it answers 200; returns the seconds waited.

    A progress line every `progress_every` seconds names the service and what its last probe saw.
    `check_alive` may return a message when the container behind the URL has died, which ends the wait
    at once. On timeout: HealthTimeout with the last probe.
    """
    # A plain-HTTP URL needs no TLS context, and loading the CA bundle for one costs tens of milliseconds.
    with httpx.Client(timeout=max(0.5, min(5.0, timeout)), verify=not url.startswith("http://")) as client:
        return wait_until_ready(
            lambda: probe_once(client, url),
            url=url,
            name=name,
            timeout=timeout,
            interval=interval,
            progress_every=progress_every,
            report=report,
            check_alive=check_alive,
        )


def wait_until_ready(
    probe: Callable[[], Probe],
    *,
    url: str,
    name: str = "",
    timeout: float = DEFAULT_HEALTH_TIMEOUT,
    interval: float = 0.2,
    progress_every: float = PROGRESS_EVERY,
    report: Reporter = print,
    check_alive: Callable[[], str | None] | None = None,
) -> float:
    """Call `probe` every `interval` seconds until it sees HTTP 200 (a protocol probe's "ready"); returns
    the seconds waited. Progress, `check_alive` and the timeout as in `wait_for_service_health`."""
    label = name or url
    started = time.monotonic()
    next_progress = started + progress_every
    last = Probe()
    while True:
        last = probe()
        if last.status == 200:
            return time.monotonic() - started
        now = time.monotonic()
        if check_alive is not None:
            death = check_alive()
            if death:
                raise StackMemberExited(death)
        if now - started >= timeout:
            raise HealthTimeout(
                f"{label} did not become healthy at {url} within {timeout:.0f}s; last error: {last}",
                name=label,
                url=url,
                probe=last,
                waited=now - started,
            )
        if now >= next_progress:
            report(f"waiting for {label} ({now - started:.0f}s of {timeout:.0f}s): last probe {last}")
            next_progress += progress_every
        time.sleep(max(0.0, min(interval, started + timeout - time.monotonic())))


# -- the infrastructure, probed from the host through its published ports ------------------------------
# A probe says "ready" (Probe(status=200)) only once the server speaks its protocol to a client as the
# services and the harness will: a listening socket alone is not enough (PostgreSQL's entrypoint, Docker's
# port proxy and RabbitMQ's boot all accept TCP connections before they can serve one).

READY = Probe(status=200, body="ready")
# AMQP 0-9-1: the client opens with this header; a broker that accepts it answers with a method frame
# (type 1) on channel 0 carrying connection.start (class 10, method 10).
AMQP_HEADER = b"AMQP\x00\x00\x09\x01"
_CONNECTION_START = (1, 0, 10, 10)


def probe_postgres(
    host: str, port: int, *, user: str, password: str, database: str, timeout: float = 1.0
) -> Probe:
    """Log in to `database` and run `SELECT 1`: the server is up, accepts the credentials, and the
    database exists (the entrypoint's temporary server, on its Unix socket only, does not count)."""
    try:
        connection = psycopg2.connect(
            host=host,
            port=port,
            user=user,
            password=password,
            dbname=database,
            connect_timeout=max(1, round(timeout)),
        )
    except psycopg2.Error as exc:
        return Probe(error=f"{type(exc).__name__}: {' '.join(str(exc).split())[:BODY_SHOWN]}")
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except psycopg2.Error as exc:
        return Probe(error=f"{type(exc).__name__}: {' '.join(str(exc).split())[:BODY_SHOWN]}")
    finally:
        connection.close()
    return READY


def _read_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionResetError("the broker closed the connection")
        data += chunk
    return data


def probe_amqp(host: str, port: int, *, timeout: float = 1.0) -> Probe:
    """Open an AMQP connection as far as the broker's connection.start: its AMQP listener is open and
    the node serves clients (Docker's port proxy accepts a TCP connection before the broker listens)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(AMQP_HEADER)
            head = _read_exactly(sock, 7)
            if head.startswith(b"AMQP"):
                return Probe(error="AMQP: the broker refused protocol 0-9-1 (it answered with its header)")
            frame_type, channel, size = struct.unpack(">BHI", head)
            if (frame_type, channel) != _CONNECTION_START[:2] or size < 4:
                return Probe(error=f"AMQP: frame {frame_type} on channel {channel} is not connection.start")
            class_id, method_id = struct.unpack(">HH", _read_exactly(sock, 4))
    except OSError as exc:
        return Probe(error=f"{type(exc).__name__}: {exc}")
    if (class_id, method_id) != _CONNECTION_START[2:]:
        return Probe(error=f"AMQP: method {class_id}.{method_id} is not connection.start")
    return READY


def probe_all(*probes: Callable[[], Probe]) -> Probe:
    """The first probe that is not ready, else READY: each runs only once the one before it passed."""
    for probe in probes:
        seen = probe()
        if seen.status != 200:
            return seen
    return READY


def collapse_repeats(text: str) -> str:
    """Log lines with each run of identical lines shown once, with its count (a probe's own requests
    would otherwise fill the tail)."""
    out: list[str] = []
    previous, count = None, 0
    for line in [*text.splitlines(), None]:
        if line == previous:
            count += 1
            continue
        if previous is not None:
            out.append(previous + (f"  ({count} times)" if count > 1 else ""))
        previous, count = line, 1
    return "\n".join(out) + ("\n" if out else "")


_MISSING_MODULE = re.compile(r"(ModuleNotFoundError|ImportError): (.*)")
_DATABASE_REFUSED = re.compile(
    r"(psycopg2?\.OperationalError|could not connect to server|connection to server at|"
    r"password authentication failed|database \"[^\"]+\" does not exist|asyncpg\.\w+Error)",
    re.IGNORECASE,
)
_BROKER_REFUSED = re.compile(
    r"(AMQPConnectionError|pika\.exceptions|aio_pika|ACCESS_REFUSED|amqp://\S+.*refused)", re.IGNORECASE
)


def likely_cause(probe: Probe | None, logs: str, health_path: str, port: int) -> str | None:
    """The troubleshooting table's row for what a service that never became healthy showed."""
    missing = _MISSING_MODULE.search(logs)
    if missing:
        return (
            f"the service cannot import a module ({missing.group(0).strip()[:160]}): its image lacks it; "
            "check the Dockerfile's COPY lines (architecture/ too) and its requirements, and that a "
            "function-level import does not shadow a module-level one"
        )
    if _DATABASE_REFUSED.search(logs):
        return (
            "the service could not use its database: check the variable it reads the URL (or host, "
            "user, password, name) from against [tool.integration.wiring] and the credentials against "
            "[tool.integration.database]"
        )
    if _BROKER_REFUSED.search(logs):
        return (
            "the service could not reach the broker: check the variable it reads the AMQP URL from "
            "against broker_url in [tool.integration.wiring]"
        )
    if probe is not None and probe.status == 404:
        return (
            f"the service answers 404 on {health_path}: it has no such route, or a catch-all route (such "
            f"as GET /{{code}}) registered before {health_path} takes the request; register the health "
            "route first, or give the service's real health path (services.yml `health:`, or `health` "
            "under [tool.integration.services.<name>])"
        )
    if probe is not None and probe.status is not None and probe.status >= 500:
        return f"the health route fails with {probe.status}: the log lines below say why"
    if probe is not None and probe.status is not None:
        return f"the health route answers {probe.status}, and only 200 counts as healthy"
    if probe is not None and probe.error and ("refused" in probe.error or "reset" in probe.error.lower()):
        return (
            f"nothing answers on port {port} in the container: the service listens on another port "
            "(services.yml `port:` or the Dockerfile's EXPOSE) or on 127.0.0.1 instead of 0.0.0.0, or "
            "it is still starting"
        )
    return None
