"""Health: probing a service's health route from the host, and saying why it never answered.

The probes run on the host against the published port, so no service image needs Python, curl or any
other tool for its health to be seen, and an answer is seen within one poll interval (50 ms) instead of
at the next health-check interval of the engine. `likely_cause` is pure: the last probe and the
container's last log lines → the row of the troubleshooting table that explains them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

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
    label = name or url
    started = time.monotonic()
    next_progress = started + progress_every
    last = Probe()
    # A plain-HTTP URL needs no TLS context, and loading the CA bundle for one costs tens of milliseconds.
    with httpx.Client(timeout=max(0.5, min(5.0, timeout)), verify=not url.startswith("http://")) as client:
        while True:
            last = probe_once(client, url)
            if last.status == 200:
                return time.monotonic() - started
            now = time.monotonic()
            if check_alive is not None:
                death = check_alive()
                if death:
                    raise StackError(death)
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
