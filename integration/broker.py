"""The harness's view of RabbitMQ, through the management plugin's HTTP API (httpx).

Counters lag: RabbitMQ's queues report their message counts to the management plugin every statistics
interval (5 s by default), so `queues()` can show a message that was consumed seconds ago, or no
counters at all for a queue declared since the last report. Read them as a hint, never as the truth
of the moment; `QueueState` keeps a counter it was not given as None (unknown), not 0.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx

from integration.errors import HarnessError
from integration.model import DEFAULT_VHOST

DEFAULT_HTTP_TIMEOUT = 5.0
STATS_INTERVAL = 5.0  # RabbitMQ's default collect_statistics_interval, in seconds
# What the generated stacks set instead: a harness that redelivers an event waits for the queue counters
# to show it acknowledged, and waits at least two of these for counters taken after the publish (with
# 0.5 s, the example's redelivery test spent 1.5 of its 1.7 s there). A stack has a few dozen queues,
# channels and connections: sampling them ten times a second costs the broker no measurable CPU.
STACK_STATS_INTERVAL = 0.1
_BODY_LIMIT = 300


class BrokerError(HarnessError):
    """The management API could not be reached or answered with an error; the message names the URL."""


@dataclass(frozen=True)
class QueueState:
    """A queue as the management API last reported it. A counter is None when the API did not report it
    (yet): unknown, not zero."""

    name: str
    ready: int | None
    unacked: int | None
    consumers: int | None

    @property
    def has_messages(self) -> bool:
        """Whether a reported counter shows a message (ready or delivered and not acknowledged yet)."""
        return bool(self.ready) or bool(self.unacked)

    def __str__(self) -> str:
        def show(value: int | None) -> str:
            return "?" if value is None else str(value)

        return (
            f"queue {self.name}: {show(self.ready)} ready, {show(self.unacked)} unacked, "
            f"{show(self.consumers)} consumers"
        )


def _counter(item: Mapping[str, Any], key: str) -> int | None:
    value = item.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class BrokerAdmin:
    """The management API of one broker, e.g. `BrokerAdmin("http://127.0.0.1:15672", "guest", "guest")`.

    Pass `client` to share an httpx.Client (the caller then closes it); without one the admin makes and
    closes its own. Use as a context manager or call `close()`.
    """

    def __init__(
        self,
        base_url: str,
        user: str,
        password: str,
        client: httpx.Client | None = None,
        *,
        vhost: str = DEFAULT_VHOST,
        timeout: float = DEFAULT_HTTP_TIMEOUT,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.vhost = vhost
        self._auth = httpx.BasicAuth(user, password)
        self._timeout = timeout
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(timeout=timeout)
        self._closed = False
        self._executor: ThreadPoolExecutor | None = None
        self._executor_size = 0
        self._pool_lock = threading.Lock()
        self.last_publish: float | None = None  # time.monotonic() of the last publish() through this admin

    # --- plumbing ---

    def _url(self, *parts: str) -> str:
        return self.base_url + "/api/" + "/".join(quote(part, safe="") for part in parts)

    def _send(
        self, method: str, url: str, *, json: Any = None, params: Mapping[str, str] | None = None
    ) -> httpx.Response:
        if self._closed:
            raise BrokerError(f"{method} {url}: the broker admin is closed")
        try:
            return self._client.request(
                method, url, json=json, params=params, auth=self._auth, timeout=self._timeout
            )
        except httpx.TransportError as exc:
            raise BrokerError(
                f"{method} {url}: cannot reach the RabbitMQ management API ({type(exc).__name__}: {exc})"
            ) from None

    def _check(self, response: httpx.Response, method: str, url: str) -> httpx.Response:
        if response.is_success:
            return response
        body = " ".join(response.text.split())
        if len(body) > _BODY_LIMIT:
            body = body[:_BODY_LIMIT] + "..."
        hint = " (check the user and password)" if response.status_code == 401 else ""
        raise BrokerError(f"{method} {url} -> {response.status_code}{hint}: {body}")

    def _request(
        self, method: str, *parts: str, json: Any = None, params: Mapping[str, str] | None = None
    ) -> httpx.Response:
        url = self._url(*parts)
        return self._check(self._send(method, url, json=json, params=params), method, url)

    # --- API ---

    def wait_until_ready(self, timeout: float = 30.0, interval: float = 0.25) -> None:
        """Return once GET /api/overview answers 200; BrokerError with the last failure after `timeout`.

        Refused connections and 5xx answers (the plugin starts a few seconds after the broker) are waited
        out; 401 is not: wrong credentials do not fix themselves.
        """
        url = self._url("overview")
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            try:
                response = self._send("GET", url)
            except BrokerError as exc:
                last = str(exc)
            else:
                if response.is_success:
                    return
                if response.status_code in (401, 403):
                    self._check(response, "GET", url)
                last = f"GET {url} -> {response.status_code}"
            if time.monotonic() >= deadline:
                raise BrokerError(
                    f"the RabbitMQ management API at {self.base_url} was not ready after "
                    f"{timeout:g} s; last: {last}"
                )
            time.sleep(interval)

    def _listing(self, params: Mapping[str, str]) -> list[Any]:
        """The vhost's queue listing as JSON, or BrokerError naming the URL and the start of the answer."""
        response = self._request("GET", "queues", self.vhost, params=params)
        try:
            items = response.json()
        except ValueError:
            raise BrokerError(
                f"GET {response.request.url}: the answer is not JSON: {response.text[:100]}"
            ) from None
        return items if isinstance(items, list) else []

    def queues(self) -> list[QueueState]:
        """Every queue of the vhost with its counters as last reported (see the module's note on lag)."""
        columns = "name,messages_ready,messages_unacknowledged,consumers"
        items = self._listing(params={"columns": columns})
        return sorted(
            (
                QueueState(
                    name=str(item.get("name")),
                    ready=_counter(item, "messages_ready"),
                    unacked=_counter(item, "messages_unacknowledged"),
                    consumers=_counter(item, "consumers"),
                )
                for item in items
                if isinstance(item, Mapping)
            ),
            key=lambda q: q.name,
        )

    def purge(self, queue: str) -> bool:
        """Drop the ready messages of one queue; False when the queue does not exist. Messages delivered
        to a consumer and not acknowledged yet stay with that consumer."""
        url = self._url("queues", self.vhost, queue, "contents")
        response = self._send("DELETE", url)
        if response.status_code == 404:
            return False
        self._check(response, "DELETE", url)
        return True

    def queue_names(self) -> list[str]:
        """The names of the vhost's queues (no counters: the cheapest listing)."""
        items = self._listing(params={"columns": "name"})
        return sorted(str(item["name"]) for item in items if isinstance(item, Mapping) and "name" in item)

    def purge_all(self, known: Iterable[str] = ()) -> list[str]:
        """Purge every queue of the vhost, in parallel; returns the names of the queues purged, sorted.

        The listing of the queues and the purges of the `known` names (the queues the caller expects, such
        as the consumers' queues) are sent together; the queues the listing adds are purged as soon as it
        answers. A known name that does not exist answers 404 and counts for nothing. So a purge costs one
        round trip to the API when the queues are the expected ones, two when there are others. Every
        request runs to its end; then the first failure is raised (BrokerError, naming the URL)."""
        expected = sorted(set(known))
        pool = self._pool(len(expected) + 1)
        listing = pool.submit(self.queue_names)
        purges = {name: pool.submit(self.purge, name) for name in expected}
        failure: BaseException | None = None
        try:
            names = listing.result()
        except BrokerError as exc:
            names, failure = [], exc
        purges.update({name: pool.submit(self.purge, name) for name in names if name not in purges})
        purged = []
        for name, job in purges.items():
            try:
                if job.result():
                    purged.append(name)
            except BrokerError as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
        return sorted(purged)

    def _pool(self, wanted: int) -> ThreadPoolExecutor:
        """The admin's threads for parallel requests, made on first use (the HTTP client is shared by
        them: httpx's connection pool is thread-safe), at least `wanted` of them (16 at most)."""
        wanted = max(2, min(16, wanted))
        with self._pool_lock:
            if self._executor is None or self._executor_size < wanted:
                if self._executor is not None:
                    self._executor.shutdown(wait=False)
                self._executor = ThreadPoolExecutor(max_workers=wanted, thread_name_prefix="broker")
                self._executor_size = wanted
            return self._executor

    def ensure_vhost(self, name: str, user: str) -> None:
        """Create virtual host `name` (nothing happens when it exists) and give `user` every permission
        on it: a shared stack's xdist worker gets one, so its exchanges and queues are its own."""
        self._request("PUT", "vhosts", name)
        everything = {"configure": ".*", "write": ".*", "read": ".*"}
        self._request("PUT", "permissions", name, user, json=everything)

    def declare_queue(self, name: str, *, durable: bool = True) -> None:
        """Create a queue (nothing happens when it exists with the same settings)."""
        self._request("PUT", "queues", self.vhost, name, json={"durable": durable, "auto_delete": False})

    def publish(
        self,
        routing_key: str,
        payload: str,
        *,
        exchange: str = "amq.default",
        properties: Mapping[str, Any] | None = None,
    ) -> bool:
        """Publish one message through the API (a test's tool, not a fast path); True when it was routed
        to at least one queue. `amq.default` routes to the queue named `routing_key`."""
        body = {
            "properties": dict(properties or {}),
            "routing_key": routing_key,
            "payload": payload,
            "payload_encoding": "string",
        }
        response = self._request("POST", "exchanges", self.vhost, exchange, "publish", json=body)
        self.last_publish = time.monotonic()
        return bool(response.json().get("routed"))

    def close(self) -> None:
        """Close the HTTP client if this admin made it. Safe to call twice."""
        if not self._closed:
            self._closed = True
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
            if self._owns_client:
                self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
