"""The stack against the real engine: healthy start, clean teardown, leftovers, taken ports, crashes, waits.

Every system here is built under tmp_path with unique image tags and a unique system name, and every
stack runs under a unique `itest-` project; a fixture removes whatever a failing test left behind.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import echo_system
import httpx
import psycopg2
import pytest
import yaml
from compose_projects import PROJECT_LABEL, remove_project
from echo_system import free_port_base, remove_images, token
from opened_stacks import open_stack
from python_on_whales import docker
from sqlalchemy.engine import make_url
from waiting import GENEROUS, Timer

from integration.baseimages import locally_available
from integration.discovery import load_system
from integration.errors import StackError
from integration.images import build_images
from integration.model import POSTGRES_PORT, SystemSpec
from integration.ports import ephemeral_port, plan_ports, port_is_free
from integration.stack import PROJECT_ENV, Stack, project_name, wait_for_service_health

pytestmark = pytest.mark.docker

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "systems"
# The crash test's health timeout: a stack that waited it out instead of noticing the crash would take
# this long, twice the generous bound the test holds it to.
CRASH_HEALTH_TIMEOUT = 2 * GENEROUS

ECHO_SERVICES = {
    "web": {"port": 8080, "database": "web", "health": "/health", "environment": {"HEALTH_PATH": "/health"}},
    "api": {"port": 9090, "health": "/ready", "environment": {"HEALTH_PATH": "/ready"}},
}


def write_echo_system(root: Path, system: str) -> None:
    """Two services: `web` (port 8080, a database, /health) and `api` (port 9090, no database, /ready)."""
    echo_system.write_echo_system(root, system, ECHO_SERVICES)


def project_resources(project: str) -> tuple[list, list, list]:
    """Containers, networks and volumes labelled with the compose project."""
    label = [("label", f"{PROJECT_LABEL}={project}")]
    return (
        docker.container.list(all=True, filters=label),
        docker.network.list(filters=label),
        docker.volume.list(filters=label),
    )


@dataclass(frozen=True)
class Built:
    root: Path
    system: SystemSpec


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """The two-service echo system, built once for the module; its images are removed at the end."""
    name = f"itest-echo-{token()}"
    root = tmp_path_factory.mktemp("echo") / "system"
    write_echo_system(root, name)
    system = load_system(root, locally_available())
    try:
        build_images(system, report=lambda line: None)
        yield Built(root, system)
    finally:
        remove_images(name)


@pytest.fixture
def project() -> Iterator[str]:
    """A unique compose project name; whatever a failing test left of it is removed afterwards."""
    name = f"itest-stack-{token()}"
    yield name
    remove_project(name)


def quiet(line: str) -> None:
    pass


def get_json(url: str) -> tuple[int, dict]:
    response = httpx.get(url, timeout=GENEROUS)
    return response.status_code, response.json()


def current_database(database_url: str) -> str:
    url = make_url(database_url)
    connection = psycopg2.connect(
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        dbname=url.database,
        connect_timeout=int(GENEROUS),
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_database()")
            return cursor.fetchone()[0]
    finally:
        connection.close()


def assert_serves(stack: Stack) -> None:
    """Every endpoint reaches the service it names, and the web database answers on its published port."""
    endpoints = stack.endpoints
    assert endpoints is not None
    assert set(endpoints.services) == {"web", "api"}
    answer = {"path": "/health", "service": "web", "version": "1"}
    assert get_json(endpoints.services["web"].url + "/health") == (200, answer)
    answer = {"path": "/ready", "service": "api", "version": "1"}
    assert get_json(endpoints.services["api"].url + "/ready") == (200, answer)
    assert get_json(endpoints.services["api"].url + "/health")[0] == 404
    assert endpoints.services["api"].database_url is None
    assert current_database(endpoints.services["web"].database_url) == "web"


def published_ports(stack: Stack) -> set[int]:
    endpoints = stack.endpoints
    assert endpoints is not None
    ports = {urlsplit(e.url).port for e in endpoints.services.values()}
    ports.add(make_url(endpoints.services["web"].database_url).port)
    return ports


# --- a healthy stack ----------------------------------------------------------------------------------------


def test_a_stack_comes_up_healthy_and_leaves_nothing_behind(echo, project, tmp_path):
    with open_stack(echo.system, project=project, compose_dir=tmp_path, report=quiet) as stack:
        assert_serves(stack)
        containers, networks, _ = project_resources(project)
        assert sorted(c.name for c in containers) == sorted(
            f"{project}-{service}-1" for service in ("web", "web-db", "api")
        )
        assert all(c.state.running for c in containers)
        assert len(networks) == 1

    assert project_resources(project) == ([], [], [])


def test_the_stack_is_removed_when_the_body_of_the_with_fails(echo, project, tmp_path):
    with (
        pytest.raises(RuntimeError, match="the test failed"),
        open_stack(echo.system, project=project, compose_dir=tmp_path, report=quiet),
    ):
        assert project_resources(project)[0]
        raise RuntimeError("the test failed")

    assert project_resources(project) == ([], [], [])


def test_a_leftover_of_a_crashed_run_is_cleared_by_the_next_run(echo, project, tmp_path):
    base = free_port_base()
    settings = {"project": project, "compose_dir": tmp_path, "report": quiet, "port_base": base}
    crashed = open_stack(echo.system, **settings)
    try:
        crashed.up()  # never exited: its containers, network and ports stay, as after a killed run
        left = {c.id for c in project_resources(project)[0]}
        assert len(left) == 3
        held = published_ports(crashed)
        assert held == {base, base + 1, base + 10}

        with open_stack(echo.system, **settings) as rerun:
            assert_serves(rerun)
            running = {c.id for c in project_resources(project)[0]}
            assert len(running) == 3
            assert not running & left
            # The leftover was removed before the ports were planned: the rerun gets the preferred ones.
            assert published_ports(rerun) == held
    finally:
        crashed.down()

    assert project_resources(project) == ([], [], [])


def hold_default_ports(system: SystemSpec, holders: ExitStack) -> tuple[int, set[int]]:
    """Listens on every port a stack would take by default from a free block, and returns the block's
    base and those ports. free_port_base checks a few offsets only, and another test's stack or an
    outgoing connection may take a port of the block meanwhile: such a block is given back and
    another one is tried, so the test always holds all of them itself."""
    for _ in range(20):
        base = free_port_base()
        defaults = plan_ports(system, is_free=lambda port: True, base=base)
        ports = {port for by_container in defaults.ports.values() for port in by_container.values()}
        attempt = ExitStack()
        try:
            for port in ports:
                listener = attempt.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                listener.bind(("127.0.0.1", port))
                listener.listen()
        except OSError:
            attempt.close()
            continue
        holders.enter_context(attempt)
        return base, ports
    raise RuntimeError("no block of default ports could be held")


def test_taken_default_ports_move_the_stack_to_other_ports(echo, project, tmp_path):
    with ExitStack() as holders:
        base, default_ports = hold_default_ports(echo.system, holders)
        assert not any(port_is_free(port) for port in default_ports)

        with open_stack(
            echo.system, project=project, compose_dir=tmp_path, report=quiet, port_base=base
        ) as stack:
            assert stack.ports is not None
            assert not published_ports(stack) & default_ports
            assert_serves(stack)  # the endpoints are the real mappings: each answers as its service
            web_db = stack.ports.host_port("web-db", POSTGRES_PORT)
            assert stack.endpoints.services["web"].database_url.endswith(f"127.0.0.1:{web_db}/web")

    assert project_resources(project) == ([], [], [])


def test_a_port_taken_between_planning_and_up_is_replanned(echo, project, tmp_path):
    base = free_port_base()
    lines: list[str] = []

    def free_until_up_fails(port: int) -> bool:
        # Plans made before the first `up` believe every port free, as if the racer below bound its port
        # only after the planning; once `up` has failed on it, the check tells the truth.
        return port_is_free(port) if lines else True

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as racer:
        racer.bind(("127.0.0.1", base))
        racer.listen()
        # Made directly: `is_port_free` is a seam of the stack's own that no run setting gives.
        stack = Stack(
            echo.system,
            project=project,
            compose_dir=tmp_path,
            report=lines.append,
            port_base=base,
            is_port_free=free_until_up_fails,
        )
        with stack:
            assert base not in published_ports(stack)
            assert_serves(stack)
    assert lines[0] == "a planned host port was taken meanwhile; choosing other ports"
    assert project_resources(project) == ([], [], [])


# --- a service that crashes at start ------------------------------------------------------------------------


@pytest.fixture
def crashing(tmp_path: Path) -> Iterator[Built]:
    """A copy of the `crashing` fixture system with unique image tags, built."""
    name = f"itest-crash-{token()}"
    root = tmp_path / "crashing"
    shutil.copytree(FIXTURES / "crashing", root)
    services_file = root / "architecture" / "services.yml"
    document = yaml.safe_load(services_file.read_text())
    document["system"] = name
    for service, settings in document["services"].items():
        settings["image"] = f"{name}-{service}:test"
    services_file.write_text(yaml.safe_dump(document, sort_keys=False))
    system = load_system(root, locally_available())
    try:
        build_images(system, report=quiet)
        yield Built(root, system)
    finally:
        remove_images(name)


def test_a_service_crashing_at_start_fails_the_stack_fast_with_its_logs(crashing, project, tmp_path):
    compose_dir = tmp_path / "compose"
    stack = open_stack(
        crashing.system,
        project=project,
        compose_dir=compose_dir,
        health_timeout=CRASH_HEALTH_TIMEOUT,
        report=quiet,
    )
    with Timer() as timer, pytest.raises(StackError) as raised, stack:
        pytest.fail("the stack came up although a service crashed")

    message = str(raised.value)
    print(f"\ncrash detected in {timer.seconds:.1f}s:\n{message}")
    # Fast means: at the crash, not when the health timeout ran out (which would say "did not become
    # healthy"); the bound is far below that timeout and far above any start on a loaded machine.
    assert "did not become healthy" not in message
    assert timer.seconds < GENEROUS < CRASH_HEALTH_TIMEOUT
    assert f"{project}-crasher-1" in message
    assert "exited with code 1" in message
    assert "UnboundLocalError: cannot access local variable 'json'" in message
    assert "steady" not in message.split("run folder")[0]  # the healthy neighbour is not blamed
    # The last log lines, stdout and stderr both. Their relative order is the engine's timestamps, which
    # are not always in write order across the two streams, so only their presence is asserted here.
    log_tail = message.split("its last log lines:\n", 1)[1].split("\nrun folder", 1)[0]
    assert "crasher: reading settings" in log_tail
    assert "Traceback" in log_tail
    assert "UnboundLocalError" in log_tail

    (run_folder,) = (compose_dir / "runs").iterdir()
    assert str(run_folder) in message
    assert "UnboundLocalError" in (run_folder / "crasher.log").read_text()
    assert (run_folder / "compose.yml").is_file()
    ps = {entry["service"]: entry for entry in json.loads((run_folder / "ps.json").read_text())}
    assert ps["crasher"]["exit_code"] == 1
    assert project_resources(project) == ([], [], [])


# The engine stamps each line when it reads it from its pipe (one pipe per stream): on a loaded machine
# lines written 10 ms apart can be read out of order; 0.2 s apart they are read in the order written.
WRITER = """\
import sys, time
for i in range(8):
    print(f"out {i}", flush=True)
    time.sleep(0.2)
    print(f"err {i}", file=sys.stderr, flush=True)
    time.sleep(0.2)
"""


def test_log_tails_keep_the_order_the_container_wrote(echo, tmp_path):
    # stdout and stderr reach the toolkit on separate pipes; the tail must still read as the service wrote it.
    name = f"itest-logs-{token()}"
    container = docker.run(echo.system.base_images.python, ["python", "-c", WRITER], name=name, detach=True)
    try:
        docker.container.wait(container)
        stack = open_stack(echo.system, project=f"itest-unused-{token()}", compose_dir=tmp_path, report=quiet)
        expected = "".join(f"out {i}\nerr {i}\n" for i in range(8))
        for _ in range(10):
            assert stack.logs_tail(name) == expected
        assert stack.logs_tail(name, lines=3) == "err 6\nout 7\nerr 7\n"
    finally:
        container.remove(force=True)


# --- waiting for health -------------------------------------------------------------------------------------


@pytest.fixture
def warming_server() -> Iterator[str]:
    """A local HTTP server that answers 503 "warming up" forever; yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"warming up: cache 40% loaded"
            self.send_response(503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/health"
    finally:
        server.shutdown()
        server.server_close()


def test_wait_for_service_health_times_out_with_the_last_error_and_reports_progress(warming_server):
    lines: list[str] = []
    with Timer() as timer, pytest.raises(StackError) as raised:
        wait_for_service_health(
            warming_server, name="web", timeout=1.5, interval=0.05, progress_every=0.4, report=lines.append
        )

    # The timeout is the behaviour: not before it was due, and then at once (generously).
    assert 1.5 <= timer.seconds < GENEROUS
    message = str(raised.value)
    assert "web did not become healthy" in message
    assert warming_server in message
    assert "HTTP 503: warming up: cache 40% loaded" in message
    # Progress while waiting: at least one line (the first is due at 0.4 s, the timeout at 1.5 s), and
    # never more than one per 0.4 s waited.
    assert 1 <= len(lines) <= timer.seconds / 0.4, lines
    assert all(line.startswith("waiting for web (") and "HTTP 503" in line for line in lines)


def test_wait_for_service_health_names_a_refused_connection():
    port = ephemeral_port()  # released at once: nothing listens there
    with pytest.raises(StackError, match=r"last error: ConnectError"):
        wait_for_service_health(
            f"http://127.0.0.1:{port}/health", timeout=0.5, interval=0.05, progress_every=10, report=quiet
        )


def test_wait_for_service_health_stops_at_once_when_the_container_died(warming_server):
    checks: list[str] = []

    def died() -> str:
        checks.append("checked")
        return "container web-1 exited with code 3"

    with pytest.raises(StackError, match="container web-1 exited with code 3"):
        wait_for_service_health(warming_server, timeout=2 * GENEROUS, report=quiet, check_alive=died)
    assert checks == ["checked"]  # the first check that found it dead ended the wait: no second poll


# --- project names ------------------------------------------------------------------------------------------


def test_a_project_name_is_unique_per_root(echo, tmp_path, monkeypatch):
    monkeypatch.delenv(PROJECT_ENV, raising=False)
    copies = [tmp_path / "one" / "system", tmp_path / "two" / "system"]
    for copy in copies:
        shutil.copytree(echo.root, copy)
    names = [project_name(load_system(copy, echo.system.base_images)) for copy in copies]

    assert names[0] != names[1]
    assert all(n.startswith(f"{echo.system.name}-") for n in names)
    assert project_name(load_system(copies[0], echo.system.base_images)) == names[0]  # stable per root
    assert project_name(echo.system, "gw1") == project_name(echo.system) + "-gw1"
    assert open_stack(echo.system, compose_dir=tmp_path, report=quiet).project == project_name(echo.system)


def test_a_project_name_from_the_environment_is_still_unique_per_worker(echo, monkeypatch):
    # Two xdist workers must never share a project: each one's `down` would remove the other's stack.
    monkeypatch.setenv(PROJECT_ENV, "itest-ci-run")

    assert project_name(echo.system) == "itest-ci-run"
    assert project_name(echo.system, "master") == "itest-ci-run"
    assert project_name(echo.system, "gw0") == "itest-ci-run-gw0"
    assert project_name(echo.system, "gw1") == "itest-ci-run-gw1"
