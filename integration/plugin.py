"""pytest plugin: the same use-case tests against mocks (default) or the real stack (`--integration`).

A project provides two fixtures in its conftest.py:

    mock_test_harness    a fresh in-memory harness (function scope)
    real_harness_class   its RealServiceHarness subclass (the plugin makes one per session and resets
                         it after each test; ini `integration_harness_scope = function`: one per test)

and its tests ask for `test_harness` only. Every setting is a fixture or an option with a documented
default, so a project overrides what it needs:

    --integration               run against real containers
    --integration-root DIR      the system's root (default: ini `integration_root`, $INTEGRATION_ROOT,
                                or the folder around the rootdir holding architecture/services.yml)
    --keep-stack                leave the stack running after the session, URLs printed
    --reuse-stack               reuse mode (also $INTEGRATION_REUSE=1): leave the healthy stack running
                                and reuse it next time while its images and compose file are unchanged;
                                recreate only what changed; reset the data before the first test
    --health-timeout SECONDS    per-service health wait (default 90)

$INTEGRATION_PORT_BASE moves the block of preferred host ports (default 47100), e.g. for a benchmark or
a second checkout that should not compete with a stack already running on the default block.

Before any test runs in integration mode the plugin checks that every service image is fresh, and stops
the session with the names of the changed files when one is not: a stale image is never tested.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .baseimages import locally_available
from .discovery import find_system_root, load_system
from .errors import IntegrationError
from .images import require_fresh
from .model import StackEndpoints, SystemSpec
from .stack import DEFAULT_HEALTH_TIMEOUT, Stack, default_port_base, project_name, reuse_from_env
from .stack import wait_for_service_health as _wait_for_service_health

WORKER_PORT_STRIDE = 1000
_VERIFIED_IMAGES = pytest.StashKey[dict[str, str]]()
_SYSTEM = pytest.StashKey[SystemSpec]()
_PHASES = pytest.StashKey[dict[str, float]]()
_RESET_PENDING = pytest.StashKey[bool]()
_HARNESSES = pytest.StashKey[dict[type, Any]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("integration", "use-case tests against real services")
    group.addoption(
        "--integration",
        action="store_true",
        default=False,
        help="run use-case tests against the real services in containers (default: the mocks)",
    )
    group.addoption("--integration-root", default=None, help="root folder of the system under test")
    group.addoption(
        "--keep-stack",
        "--keep",
        action="store_true",
        default=False,
        help="leave the stack running after the tests",
    )
    group.addoption(
        "--reuse-stack",
        action="store_true",
        default=None,
        help="leave the healthy stack running and reuse it in the next run while nothing changed "
        "(default: $INTEGRATION_REUSE)",
    )
    group.addoption(
        "--health-timeout",
        type=float,
        default=DEFAULT_HEALTH_TIMEOUT,
        help=f"seconds to wait for each service to become healthy (default {DEFAULT_HEALTH_TIMEOUT:.0f})",
    )
    parser.addini("integration_root", "root folder of the system under test", default="")
    parser.addini(
        "integration_harness_scope",
        "session (default): one real harness per session, reset after each test; function: a new one "
        "per test",
        default="session",
    )


def _terminate_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _exit(config: pytest.Config, exc: IntegrationError) -> None:
    """One `error:` message on stderr and the error's own exit status, as the command line gives."""
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        # Inside a fixture pytest captures stderr; the message must reach the terminal all the same.
        with capture.global_and_fixture_disabled():
            sys.stderr.write(f"error: {exc}\n")
            sys.stderr.flush()
    else:
        sys.stderr.write(f"error: {exc}\n")
        sys.stderr.flush()
    pytest.exit(f"integration: {str(exc).splitlines()[0]}", returncode=exc.exit_status)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration_only: run only with --integration")
    config.addinivalue_line("markers", "mock_only: run only without --integration")
    if not config.getoption("--integration") or hasattr(config, "workerinput"):
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        # A cancelled CI job sends SIGTERM: take the Ctrl-C path, so that the stack fixture tears down.
        # (Under `python -m integration run` pytest starts with SIGTERM ignored and gets one SIGINT.)
        signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    # Checked once, in the controlling process, before collection: a stale image ends the run here.
    started = time.monotonic()
    try:
        system = _system_for(config)
        config.stash[_VERIFIED_IMAGES] = require_fresh(system)
    except IntegrationError as exc:
        raise pytest.UsageError(str(exc)) from exc
    config.stash[_PHASES] = {"freshness check": time.monotonic() - started}


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    phases = config.stash.get(_PHASES, None)
    if not phases:
        return
    terminalreporter.section("integration: time per phase")
    for phase, seconds in phases.items():
        terminalreporter.write_line(f"{phase:<18} {seconds:7.2f}s")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    integration = config.getoption("--integration")
    for item in items:
        if integration and item.get_closest_marker("mock_only"):
            item.add_marker(pytest.mark.skip(reason="mock_only test; running with --integration"))
        if not integration and item.get_closest_marker("integration_only"):
            item.add_marker(pytest.mark.skip(reason="needs --integration"))


def _root_for(config: pytest.Config) -> Path:
    explicit = config.getoption("--integration-root") or config.getini("integration_root")
    if explicit:
        path = Path(explicit)
        return (path if path.is_absolute() else config.rootpath / path).resolve()
    if os.environ.get("INTEGRATION_ROOT"):
        return Path(os.environ["INTEGRATION_ROOT"]).resolve()
    return find_system_root(config.rootpath)


def _system_for(config: pytest.Config) -> SystemSpec:
    if _SYSTEM not in config.stash:
        system = load_system(_root_for(config))
        config.stash[_SYSTEM] = system.with_base_images(locally_available(system.base_images))
    return config.stash[_SYSTEM]


def _worker(config: pytest.Config) -> str | None:
    workerinput = getattr(config, "workerinput", None)
    return workerinput["workerid"] if workerinput else None


def _live_reporter(config: pytest.Config) -> Callable[[str], None]:
    """Lines that reach the terminal even while pytest captures output (progress of a long setup)."""
    capture = config.pluginmanager.getplugin("capturemanager")
    terminal = config.pluginmanager.getplugin("terminalreporter")

    def report(line: str) -> None:
        if capture is not None:
            with capture.global_and_fixture_disabled():
                _write(terminal, line)
        else:
            _write(terminal, line)

    return report


def _write(terminal: Any, line: str) -> None:
    if terminal is not None:
        terminal.write_line(f"[integration] {line}")
    else:
        print(f"[integration] {line}", flush=True)


@pytest.fixture(scope="session")
def integration_system(pytestconfig: pytest.Config) -> SystemSpec:
    """The system under test, as discovered from its services.yml and contracts."""
    try:
        return _system_for(pytestconfig)
    except IntegrationError as exc:
        _exit(pytestconfig, exc)


@pytest.fixture(scope="session")
def docker_compose_project_name(pytestconfig: pytest.Config, integration_system: SystemSpec) -> str:
    """The compose project: unique per checkout and per xdist worker. Override to choose your own."""
    return project_name(integration_system, _worker(pytestconfig))


@pytest.fixture(scope="session")
def docker_compose_services(
    pytestconfig: pytest.Config, integration_system: SystemSpec, docker_compose_project_name: str
) -> Iterator[StackEndpoints]:
    """The running stack for the whole session: down, up --wait, health, and down again at the end."""
    if not pytestconfig.getoption("--integration"):
        pytest.skip("the real stack runs only with --integration")
    report = _live_reporter(pytestconfig)
    try:
        verified = pytestconfig.stash.get(_VERIFIED_IMAGES, None) or require_fresh(integration_system)
    except IntegrationError as exc:
        _exit(pytestconfig, exc)
    worker = _worker(pytestconfig)
    base = _port_base(pytestconfig) + WORKER_PORT_STRIDE * (int(worker[2:]) + 1 if worker else 0)
    reuse = _reuse(pytestconfig)
    stack = Stack(
        integration_system,
        project=docker_compose_project_name,
        expected_images=verified,
        keep=pytestconfig.getoption("--keep-stack"),
        health_timeout=pytestconfig.getoption("--health-timeout"),
        report=report,
        port_base=base,
        reuse=reuse,
    )
    started = time.monotonic()
    try:
        stack.__enter__()
    except IntegrationError as exc:
        _exit(pytestconfig, exc)
    phases = pytestconfig.stash.setdefault(_PHASES, {})
    phases["stack up"] = time.monotonic() - started
    # A stack that ran before (reuse mode) holds the last run's data: reset before the first test.
    pytestconfig.stash[_RESET_PENDING] = reuse
    assert stack.endpoints is not None
    lines = _summary_table(integration_system, stack.endpoints, verified, phases["stack up"], stack.outcome)
    for line in lines:
        report(line)
    tests_started = time.monotonic()
    try:
        yield stack.endpoints
    finally:
        phases["tests"] = time.monotonic() - tests_started
        _close_harnesses(pytestconfig)
        started = time.monotonic()
        stack.__exit__(None, None, None)
        phases["stack down"] = time.monotonic() - started


def _port_base(config: pytest.Config) -> int:
    try:
        return default_port_base()
    except IntegrationError as exc:
        _exit(config, exc)
        raise


def _reuse(config: pytest.Config) -> bool:
    option = config.getoption("--reuse-stack")
    return reuse_from_env() if option is None else bool(option)


def _summary_table(
    system: SystemSpec,
    endpoints: StackEndpoints,
    image_ids: dict[str, str],
    seconds: float,
    outcome: str = "",
) -> list[str]:
    rows = [("service", "image", "image id", "url", "health")]
    for spec in system.services:
        endpoint = endpoints.services[spec.name]
        rows.append(
            (
                spec.name,
                spec.image,
                image_ids.get(spec.name, "")[7:19],
                endpoint.url,
                f"{spec.health_path} 200",
            )
        )
    if endpoints.broker_management_url:
        rows.append(("broker", system.base_images.broker, "", endpoints.broker_management_url, "listening"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    how = f" ({outcome})" if outcome and outcome != "created" else ""
    lines = [f"stack {endpoints.project} healthy in {seconds:.1f}s{how}; images verified fresh"]
    lines += [
        "  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows
    ]
    return lines


@pytest.fixture
def integration_test_harness(
    pytestconfig: pytest.Config, docker_compose_services: StackEndpoints, real_harness_class: type
) -> Iterator[Any]:
    """A project's RealServiceHarness on the running stack, reset after each test (and before the first
    test when the stack is reused).

    By default one harness serves the whole session: making one costs an HTTP client (whose TLS context
    alone takes tens of milliseconds) and engines, per test. What isolates the tests is the reset of the
    databases and queues, and the client's cookies are cleared after each test. A harness that keeps
    state of its own between calls sets ini `integration_harness_scope = function`: a new harness per
    test, closed after it.
    """
    per_test = pytestconfig.getini("integration_harness_scope") == "function"
    harnesses = pytestconfig.stash.setdefault(_HARNESSES, {})
    harness = None if per_test else harnesses.get(real_harness_class)
    if harness is None or harness.closed:
        harness = real_harness_class(docker_compose_services)
        if not per_test:
            harnesses[real_harness_class] = harness
    try:
        if pytestconfig.stash.get(_RESET_PENDING, False):
            started = time.monotonic()
            harness.reset_sync()
            pytestconfig.stash[_RESET_PENDING] = False
            pytestconfig.stash.setdefault(_PHASES, {})["reset before tests"] = time.monotonic() - started
        yield harness
    finally:
        try:
            harness.reset_sync()
        finally:
            if per_test:
                harness.close()
            else:
                cookies = getattr(getattr(harness, "_client", None), "cookies", None)
                if cookies is not None:
                    cookies.clear()


def _close_harnesses(config: pytest.Config) -> None:
    for harness in config.stash.get(_HARNESSES, {}).values():
        harness.close()
    config.stash[_HARNESSES] = {}


@pytest.fixture
def test_harness(request: pytest.FixtureRequest) -> Any:
    """The mock harness by default; the real one with --integration. Tests use only this."""
    if request.config.getoption("--integration"):
        return request.getfixturevalue("integration_test_harness")
    return request.getfixturevalue("mock_test_harness")


@pytest.fixture(scope="session")
def wait_for_service_health() -> Callable[..., float]:
    """`wait_for_service_health(url, timeout=90)`: poll until 200, report progress, show the last error."""
    return _wait_for_service_health
