"""Host-side health probes against a local HTTP server, and the causes named for what they saw."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from integration.errors import StackError
from integration.health import HealthTimeout, Probe, collapse_repeats, likely_cause, wait_for_service_health


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
