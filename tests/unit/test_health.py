"""Host-side health probes against a local HTTP server, and the causes named for what they saw."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from integration.errors import StackError
from integration.health import (
    AMQP_HEADER,
    READY,
    HealthTimeout,
    Probe,
    collapse_repeats,
    likely_cause,
    probe_all,
    probe_amqp,
    probe_postgres,
    wait_for_service_health,
    wait_until_ready,
)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        server = self.server
        server.seen.append(self.path)  # type: ignore[attr-defined]
        status = server.status  # type: ignore[attr-defined]
        body = b'{"detail":"Not Found"}' if status == 404 else b"ok"
        self.send_response(status)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.seen = []  # type: ignore[attr-defined]
    httpd.status = 200  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def url(server, path: str = "/health") -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def test_a_200_ends_the_wait(server):
    waited = wait_for_service_health(url(server), timeout=30, interval=0.01, report=lambda line: None)
    assert server.seen == ["/health"]
    assert waited < 30


def test_a_404_times_out_with_progress_and_the_last_probe(server):
    server.status = 404
    lines: list[str] = []
    started = time.monotonic()
    with pytest.raises(HealthTimeout) as caught:
        wait_for_service_health(
            url(server), name="links", timeout=1.5, interval=0.05, progress_every=0.5, report=lines.append
        )
    assert time.monotonic() - started < 1.5 + 5  # the timeout given, not the engine's retries
    assert caught.value.probe.status == 404
    assert "HTTP 404" in str(caught.value) and "links" in str(caught.value)
    assert lines and all(line.startswith("waiting for links (") for line in lines)
    assert "last probe HTTP 404" in lines[0]


def test_a_dead_container_ends_the_wait_at_once(server):
    server.status = 503
    with pytest.raises(StackError, match="exited with code 3"):
        wait_for_service_health(
            url(server),
            timeout=60,
            interval=0.01,
            report=lambda line: None,
            check_alive=lambda: "exited with code 3",
        )


def test_a_refused_connection_is_the_last_probe():
    with pytest.raises(HealthTimeout) as caught:
        wait_for_service_health(
            "http://127.0.0.1:9/health", timeout=0.5, interval=0.05, report=lambda line: None
        )
    assert caught.value.probe.status is None and "ConnectError" in str(caught.value.probe)


@pytest.mark.parametrize(
    ("probe", "logs", "fragment"),
    [
        (Probe(status=404, body='{"detail":"Not Found"}'), "", "catch-all route"),
        (
            Probe(error="ConnectError: refused"),
            "ModuleNotFoundError: No module named 'architecture'",
            "cannot import",
        ),
        (
            Probe(error="ConnectError: refused"),
            "psycopg2.OperationalError: could not connect to server",
            "database",
        ),
        (Probe(error="ConnectError: refused"), "pika.exceptions.AMQPConnectionError", "broker"),
        (Probe(status=500, body="boom"), "", "fails with 500"),
        (Probe(status=302, body=""), "", "only 200 counts"),
        (Probe(error="ConnectError: [Errno 111] Connection refused"), "", "nothing answers on port 8000"),
    ],
)
def test_the_likely_cause_follows_the_troubleshooting_table(probe, logs, fragment):
    assert fragment in (likely_cause(probe, logs, "/health", 8000) or "")


def test_no_cause_is_made_up():
    assert likely_cause(Probe(), "", "/health", 8000) is None


def test_repeated_log_lines_are_shown_once_with_their_count():
    assert collapse_repeats("a\nb\nb\nb\nc\n") == "a\nb  (3 times)\nc\n"
    assert collapse_repeats("") == ""


# -- the infrastructure's host-side probes -----------------------------------------------------------


def _serve_once(reply: bytes) -> tuple[int, threading.Thread, list[bytes]]:
    """A TCP server on 127.0.0.1 that reads what a client sends first, answers `reply` and closes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    received: list[bytes] = []

    def serve() -> None:
        connection, _ = listener.accept()
        with connection, listener:
            received.append(connection.recv(8))
            connection.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread, received


def _method_frame(class_id: int, method_id: int, frame_type: int = 1, channel: int = 0) -> bytes:
    payload = struct.pack(">HH", class_id, method_id) + b"\x00\x09"
    return struct.pack(">BHI", frame_type, channel, len(payload)) + payload + b"\xce"


def test_amqp_probe_is_ready_on_connection_start_after_sending_the_protocol_header():
    port, thread, received = _serve_once(_method_frame(10, 10))
    assert probe_amqp("127.0.0.1", port, timeout=5) == READY
    thread.join(5)
    assert received == [AMQP_HEADER]


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (b"", "closed the connection"),  # a port proxy that accepts and drops: the broker is not up
        (_method_frame(10, 50), "method 10.50 is not connection.start"),  # connection.close
        (_method_frame(10, 10, channel=1), "channel 1 is not connection.start"),
        (b"AMQP\x00\x00\x09\x01", "refused protocol 0-9-1"),  # a protocol-header refusal
    ],
    ids=["closed", "close-method", "other-channel", "header-refusal"],
)
def test_amqp_probe_is_not_ready_on_anything_else(reply, error):
    port, thread, _ = _serve_once(reply)
    probe = probe_amqp("127.0.0.1", port, timeout=5)
    thread.join(5)
    assert probe.status is None and error in str(probe)


def test_amqp_probe_names_a_refused_connection():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]  # bound, not listening: refused
        probe = probe_amqp("127.0.0.1", port, timeout=2)
    assert probe.status is None and "refused" in str(probe).lower()


def test_postgres_probe_is_not_ready_without_a_server():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        probe = probe_postgres("127.0.0.1", port, user="u", password="p", database="d", timeout=2)
    assert probe.status is None and "OperationalError" in str(probe)


def test_probe_all_stops_at_the_first_probe_that_is_not_ready():
    calls: list[str] = []

    def probe(name: str, seen: Probe) -> Callable[[], Probe]:
        def run() -> Probe:
            calls.append(name)
            return seen

        return run

    waiting = Probe(error="not yet")
    assert probe_all(probe("a", READY), probe("b", waiting), probe("c", READY)) == waiting
    assert calls == ["a", "b"]
    assert probe_all(probe("d", READY)) == READY


def test_wait_until_ready_polls_a_protocol_probe_until_it_is_ready():
    answers = iter([Probe(error="refused"), Probe(error="starting"), READY])
    waited = wait_until_ready(lambda: next(answers), url="amqp://x", timeout=30, interval=0.01)
    assert waited < 30
    with pytest.raises(HealthTimeout) as caught:
        wait_until_ready(
            lambda: Probe(error="refused"), url="amqp://x", name="broker", timeout=0.2, interval=0.01
        )
    assert caught.value.name == "broker" and "refused" in str(caught.value)
