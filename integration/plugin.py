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

Under pytest-xdist (`-n 2`) the controlling process owns one shared stack (ini `integration_xdist =
shared`, the default): the serial stack, which the first worker uses, plus for each other worker a copy
of every service with its own database (in the service's PostgreSQL) and its own broker virtual host.
No test starts before every worker's part is healthy. The controller hands each worker its endpoints
through a file named in the worker's `workerinput`.
`integration_xdist = per-worker` gives each worker a whole stack of its own instead.

Before any test runs in integration mode the plugin checks that every service image is fresh, and stops
the session with the names of the changed files when one is not: a stale image is never tested.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from .errors import IntegrationError
from .model import DEFAULT_HEALTH_TIMEOUT, StackEndpoints, SystemSpec

# --shard K/N, --shard-durations PATH, --shard-record PATH: integration/shard_plugin.py, loaded with this one.
pytest_plugins = ["integration.shard_plugin"]

if TYPE_CHECKING:
    from .stack import Stack

# The rest of the toolkit (python-on-whales, SQLAlchemy, httpx, PyYAML) is imported where it is used:
# pytest loads this plugin in every session of an environment that has the toolkit installed, mock runs
# and each xdist worker included, and those imports cost a third of a second per process.

WORKER_PORT_STRIDE = 1000
_VERIFIED_IMAGES = pytest.StashKey[dict[str, str]]()
_SYSTEM = pytest.StashKey[SystemSpec]()
_PHASES = pytest.StashKey[dict[str, float]]()
_RESET_PENDING = pytest.StashKey[bool]()
_HARNESSES = pytest.StashKey[dict[type, Any]]()
_WORKER_PHASES = pytest.StashKey[dict[str, dict[str, float]]]()
_MODE = pytest.StashKey[bool]()
_CONFIG = pytest.StashKey[Any]()
_ROOT = pytest.StashKey[Path]()
_STACK_USED = pytest.StashKey[bool]()
_TIMEOUT = pytest.StashKey[float]()
PHASES_KEY = "integration_phases"


GROUP = ("integration", "use-case tests against real services")
MODE_OPTION = "--integration"


def pytest_addoption(parser: pytest.Parser) -> None:
    # `--integration` itself is added once the repository's own conftest files are loaded
    # (pytest_load_initial_conftests): a conftest that defines it keeps its own.
    group = parser.getgroup(*GROUP)
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
        default=None,
        help=f"seconds to wait for each service to become healthy, 1 to 3600 (default: health_timeout "
        f"in [tool.integration], else {DEFAULT_HEALTH_TIMEOUT:.0f})",
    )
    parser.addini("integration_root", "root folder of the system under test", default="")
    parser.addini(
        "integration_xdist",
        "under pytest-xdist: shared (default): one stack, a copy of each service, a database and a "
        "virtual host per worker; per-worker: a whole stack per worker",
        default="shared",
    )
    parser.addini(
        "integration_harness_scope",
        "session (default): one real harness per session, reset after each test; function: a new one "
        "per test",
        default="session",
    )
    from .failure_report import add_options

    add_options(parser)


@pytest.hookimpl(hookwrapper=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> Any:
    yield
    # ValueError: the repository's conftest defines --integration itself, and its option switches the mode.
    with contextlib.suppress(ValueError):
        parser.getgroup(*GROUP).addoption(
            MODE_OPTION,
            action="store_true",
            default=False,
            help="run use-case tests against the real services in containers (default: the mocks)",
        )


def mode_on(config: pytest.Config) -> bool:
    """Whether this session runs against the real services: `--integration` (the plugin's, or the
    repository's own), or the option that `mode_option` in [tool.integration] names. Public: the shard
    plugin asks it too."""
    cached = config.stash.get(_MODE, None)
    if cached is not None:
        return cached
    names = {MODE_OPTION}
    with contextlib.suppress(IntegrationError):  # reported where the config is needed
        names.add(_config_of(config).mode_option)
    on = False
    for name in names:
        try:
            on = on or bool(config.getoption(name.lstrip("-").replace("-", "_")))
        except ValueError:
            if name != MODE_OPTION:
                raise pytest.UsageError(
                    f"mode_option = {name!r} in [tool.integration] names an option that no conftest.py "
                    f"defines; add it with parser.addoption({name!r}, action='store_true') or remove the key"
                ) from None
    config.stash[_MODE] = on
    return on


def _terminate_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _exit(config: pytest.Config, exc: IntegrationError) -> NoReturn:
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
    if not mode_on(config):
        return
    try:
        config.stash[_TIMEOUT] = _health_timeout(config)
        system = system_for(config)
    except IntegrationError as exc:
        raise pytest.UsageError(str(exc)) from exc
    from .failure_report import register

    register(config)  # in the workers too: that is where the tests run
    if hasattr(config, "workerinput"):
        return
    if not _planned_workers(config):
        config.pluginmanager.register(NothingReal(config), "integration-nothing-real")
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        # A cancelled CI job sends SIGTERM: take the Ctrl-C path, so that the stack fixture tears down.
        # (Under `python -m integration run` pytest starts with SIGTERM ignored and gets one SIGINT.)
        signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    # Checked once, in the controlling process, before collection: a stale image ends the run here.
    for warning in system.warnings:
        _live_reporter(config)(f"warning: {warning}")
    started = time.monotonic()
    handoff = _run_handoff(config)
    if handoff is not None and handoff.system is system:
        # `python -m integration run` built and verified these images a moment ago, in this process.
        config.stash[_VERIFIED_IMAGES] = dict(handoff.image_ids)
    else:
        try:
            from .images import require_fresh

            config.stash[_VERIFIED_IMAGES] = require_fresh(system)
        except IntegrationError as exc:
            raise pytest.UsageError(str(exc)) from exc
    config.stash[_PHASES] = {"freshness check": time.monotonic() - started}
    workers = _planned_workers(config)
    if workers and config.getini("integration_xdist") != "per-worker":
        config.pluginmanager.register(SharedStack(config, system, workers), "integration-shared-stack")


def _planned_workers(config: pytest.Config) -> list[str]:
    """The ids of the xdist workers this run will start (gw0, gw1, ...); empty without distribution."""
    if not config.pluginmanager.hasplugin("xdist") or config.getoption("dist", "no") == "no":
        return []
    if config.getoption("collectonly", False):
        return []
    from xdist.workermanage import parse_tx_spec_config

    try:
        count = len(parse_tx_spec_config(config))
    except pytest.UsageError:
        return []
    return [f"gw{i}" for i in range(count)]


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    phases = config.stash.get(_PHASES, None)
    if phases:
        terminalreporter.section("integration: time per phase")
        for phase, seconds in phases.items():
            terminalreporter.write_line(f"{phase:<18} {seconds:7.2f}s")
    by_worker = config.stash.get(_WORKER_PHASES, {})
    if by_worker:
        # Per-worker stacks: each worker timed its own; xdist brought the figures back.
        terminalreporter.section("integration: time per phase, per worker")
        for worker, timed in sorted(by_worker.items(), key=lambda item: int(item[0][2:] or 0)):
            cells = "  ".join(f"{phase} {seconds:.2f}s" for phase, seconds in timed.items())
            terminalreporter.write_line(f"{worker:<5} {cells}")


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    timed = (getattr(node, "workeroutput", None) or {}).get(PHASES_KEY)
    if timed:
        worker = node.workerinput["workerid"]
        node.config.stash.setdefault(_WORKER_PHASES, {})[worker] = dict(timed)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    integration = mode_on(config)
    for item in items:
        if integration and item.get_closest_marker("mock_only"):
            item.add_marker(pytest.mark.skip(reason="mock_only test; running with --integration"))
        if not integration and item.get_closest_marker("integration_only"):
            item.add_marker(pytest.mark.skip(reason="needs --integration"))


def _root_for(config: pytest.Config) -> Path:
    if _ROOT not in config.stash:
        from .settings import resolve_root

        explicit = config.getoption("--integration-root") or config.getini("integration_root")
        config.stash[_ROOT] = resolve_root(explicit, start=config.rootpath)
    return config.stash[_ROOT]


def _config_of(config: pytest.Config) -> Any:
    """The system's [tool.integration] settings (integration.settings.SystemConfig)."""
    if _CONFIG not in config.stash:
        from .settings import load_config

        config.stash[_CONFIG] = load_config(_root_for(config))
    return config.stash[_CONFIG]


def _health_timeout(config: pytest.Config) -> float:
    from .settings import checked_health_timeout

    option = config.getoption("--health-timeout")
    if option is not None:
        return checked_health_timeout(option, "--health-timeout")
    configured = _config_of(config).health_timeout
    return DEFAULT_HEALTH_TIMEOUT if configured is None else configured


def system_for(config: pytest.Config) -> SystemSpec:
    """The system under test, loaded once per session (kept in the config's stash; the shard plugin
    reads it from here too)."""
    handoff = _run_handoff(config)
    if _SYSTEM not in config.stash and handoff is not None and handoff.root == _root_for(config).resolve():
        config.stash[_SYSTEM] = handoff.system  # discovered by `python -m integration run` already
    if _SYSTEM not in config.stash:
        from .baseimages import locally_available
        from .discovery import load_system

        system = load_system(_root_for(config), config=_config_of(config))
        config.stash[_SYSTEM] = system.with_base_images(locally_available(system.base_images))
    return config.stash[_SYSTEM]


class RunHandoff:
    """What `python -m integration run` hands the plugin when it runs pytest in its own process
    (`pytest.main(..., plugins=[RunHandoff(...)])`): the system it discovered, with the base images its
    build step used, and the image ids that build step verified fresh. The plugin then neither discovers
    nor checks again; a session whose root is another system's ignores it."""

    NAME = "integration-run-handoff"

    def __init__(self, system: SystemSpec, image_ids: dict[str, str]) -> None:
        self.system = system
        self.root = system.root.resolve()
        self.image_ids = dict(image_ids)  # no hooks: the plugin finds it by type (`_run_handoff`)


def _run_handoff(config: pytest.Config) -> RunHandoff | None:
    for plugin in config.pluginmanager.get_plugins():
        if isinstance(plugin, RunHandoff):
            return plugin
    return None


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
        # After xdist's row of progress dots start a line of our own: write_line (ensure_newline) ends
        # only a test file's row, so the writer (Config.get_terminal_writer, pytest's public way to it)
        # is asked whether its current line holds anything.
        writer = terminal.config.get_terminal_writer()
        if writer.width_of_current_line and not terminal.currentfspath:
            writer.line()
        terminal.write_line(f"[integration] {line}")
    else:
        print(f"[integration] {line}", flush=True)


@pytest.fixture(scope="session")
def integration_system(pytestconfig: pytest.Config) -> SystemSpec:
    """The system under test, as discovered from its services.yml and contracts."""
    try:
        return system_for(pytestconfig)
    except IntegrationError as exc:
        _exit(pytestconfig, exc)


@pytest.fixture(scope="session")
def docker_compose_project_name(pytestconfig: pytest.Config, integration_system: SystemSpec) -> str:
    """The compose project: unique per checkout (and per xdist worker with `integration_xdist =
    per-worker`). Override to choose your own."""
    from .stack import project_name

    if _shared_handoff(pytestconfig):
        return project_name(integration_system)
    return project_name(integration_system, _worker(pytestconfig))


@pytest.fixture(scope="session")
def docker_compose_services(
    pytestconfig: pytest.Config, integration_system: SystemSpec, docker_compose_project_name: str
) -> Iterator[StackEndpoints]:
    """The running stack for the whole session: down, up --wait, health, and down again at the end."""
    if not mode_on(pytestconfig):
        pytest.skip("the real stack runs only with --integration")
    pytestconfig.stash[_STACK_USED] = True
    worker = _worker(pytestconfig)
    handoff = _shared_handoff(pytestconfig)
    if worker and handoff:
        endpoints, reused = _await_handoff(handoff, worker)
        pytestconfig.stash[_RESET_PENDING] = reused
        try:
            yield endpoints
        finally:
            _close_harnesses(pytestconfig)
        return
    # Serial, per-worker mode, or a worker the controller did not plan for (xdist restarted a crashed
    # one under a new id): a stack of its own.
    report = _live_reporter(pytestconfig)
    try:
        from .images import require_fresh

        verified = pytestconfig.stash.get(_VERIFIED_IMAGES, None) or require_fresh(integration_system)
    except IntegrationError as exc:
        _exit(pytestconfig, exc)
    run = _run_settings(pytestconfig)
    reuse = run.reuse
    if reuse:
        # A reused stack is up in a second, most of it waiting for the engine; meanwhile another thread
        # imports what the first test's harness and reset need (httpx, SQLAlchemy and its PostgreSQL
        # driver), instead of the first test doing it.
        threading.Thread(target=_import_harness, name="integration-imports", daemon=True).start()
    from .stack import Stack

    stack = Stack.open(
        integration_system,
        run,
        report=report,
        expected_images=verified,
        project=docker_compose_project_name,
        port_offset=WORKER_PORT_STRIDE * (int(worker[2:]) + 1 if worker else 0),
    )
    started = time.monotonic()
    try:
        if reuse:
            _enter_reusing(stack)
        else:
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


def _import_harness() -> None:
    with contextlib.suppress(Exception):  # only a head start: the harness imports them anyway
        import sqlalchemy.dialects.postgresql.psycopg2  # noqa: F401

        from . import harness  # noqa: F401


def _enter_reusing(stack: Stack) -> None:
    """Reuse mode's start: `up` (which reuses what it can) and `down` when it fails, as `Stack.__enter__`
    does, without the reaper. Reuse mode leaves the stack running on purpose, so the stack of a run that
    is killed is the next run's to reuse or recreate (its state file, written only for a healthy stack,
    says which), not the reaper's to remove; and starting the reaper (a container, and the handshake with
    it) was most of a warm run's start."""
    try:
        stack.up()
    except BaseException:
        stack.down()
        raise


def _run_settings(config: pytest.Config) -> Any:
    """This session's integration.settings.RunSettings: the options over the environment and config."""
    from .settings import RunSettings, default_port_base, reuse_from_env

    option = config.getoption("--reuse-stack")
    try:
        port_base = default_port_base()
    except IntegrationError as exc:
        _exit(config, exc)
    return RunSettings(
        root=_root_for(config),
        config=_config_of(config),
        health_timeout=config.stash[_TIMEOUT],
        reuse=reuse_from_env() if option is None else bool(option),
        keep=bool(config.getoption("--keep-stack")),
        port_base=port_base,
    )


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
                harness.forget_session()


def _close_harnesses(config: pytest.Config) -> None:
    for harness in config.stash.get(_HARNESSES, {}).values():
        harness.close()
    config.stash[_HARNESSES] = {}


@pytest.fixture
def test_harness(request: pytest.FixtureRequest) -> Any:
    """The mock harness by default; the real one with --integration. Tests use only this.

    A repository whose conftest defines `test_harness` itself keeps its own (conftest fixtures win over
    a plugin's); with --integration the plugin then checks that it gives the real harness
    (`pytest_fixture_setup` below), so a mock can never pass for the real services.
    """
    if mode_on(request.config):
        return request.getfixturevalue("integration_test_harness")
    mock = _config_of(request.config).mock_fixture
    try:
        return request.getfixturevalue(mock)
    except pytest.FixtureLookupError:
        pytest.skip(
            f"this system has no mock harness (no `{mock}` fixture), so its use-case tests run only "
            f"against the real services: pytest {MODE_OPTION}"
        )


@pytest.fixture(scope="session")
def real_harness_class(pytestconfig: pytest.Config) -> type:
    """The project's RealServiceHarness subclass: `real_harness = "module:Class"` in
    [tool.integration]. A conftest fixture of the same name takes precedence."""
    configured = _config_of(pytestconfig).real_harness
    if not configured:
        pytest.fail(
            'no real harness is configured: add `real_harness = "<module>:<Class>"` (your '
            "RealServiceHarness subclass) to [tool.integration], or a session fixture `real_harness_class` "
            "returning it to your conftest.py",
            pytrace=False,
        )
    import importlib

    module_name, _, class_name = configured.partition(":")
    try:
        loaded = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        where = _config_of(pytestconfig).where(("real_harness",))
        pytest.fail(f"{where}: cannot load {configured!r}: {type(exc).__name__}: {exc}", pytrace=False)
    if not isinstance(loaded, type):
        where = _config_of(pytestconfig).where(("real_harness",))
        pytest.fail(
            f"{where}: {configured!r} is {type(loaded).__name__}, not a class (your RealServiceHarness "
            "subclass)",
            pytrace=False,
        )
    return loaded


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: Any, request: pytest.FixtureRequest) -> Any:
    harness = yield
    config = request.config
    if not mode_on(config) or fixturedef.argname != _harness_fixture_name(config):
        return harness
    from .harness import RealServiceHarness

    if not isinstance(harness, RealServiceHarness):
        _exit(config, _not_real_error(fixturedef, harness))
    config.stash[_STACK_USED] = True
    return harness


def _not_real_error(fixturedef: Any, harness: object) -> IntegrationError:
    """The one message of a run with --integration whose tests got something else than the real
    harness: the fixture, where it is defined, and what to write there."""
    import inspect

    from .errors import ConfigError

    function = getattr(fixturedef, "func", None)
    try:
        path = inspect.getsourcefile(function) or "conftest.py"  # type: ignore[arg-type]
        line = inspect.getsourcelines(function)[1]  # type: ignore[arg-type]
    except (TypeError, OSError):
        path, line = "conftest.py", None
    name = fixturedef.argname
    return ConfigError(
        path,
        name,
        f"with {MODE_OPTION} the fixture `{name}` gave a {type(harness).__name__}, not the real services' "
        "harness: the tests would have passed without touching a service, so the run stops here",
        line=line,
        fix=(
            f'make `{name}` return request.getfixturevalue("integration_test_harness") when '
            f'request.config.getoption("integration") is set (and its mock otherwise), or remove it and '
            f'name the mock fixture with mock_fixture = "..." in [tool.integration]'
        ),
    )


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    # In an xdist worker, after the session fixtures (the stack) were torn down: hand the phase times to
    # the controlling process, which prints them (`pytest_testnodedown`).
    workeroutput = getattr(session.config, "workeroutput", None)
    phases = session.config.stash.get(_PHASES, None)
    if workeroutput is not None and phases:
        workeroutput[PHASES_KEY] = dict(phases)


class NothingReal:
    """A serial run with --integration in which tests passed but no test ever reached the stack ran
    against something else: that is a failed run, never a green one."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.passed = 0

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" and report.passed:
            self.passed += 1

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.passed or self.config.stash.get(_STACK_USED, False):
            return
        if session.exitstatus != pytest.ExitCode.OK:
            return
        message = (
            f"error: {self.passed} tests passed with {MODE_OPTION}, but none of them used the real "
            f"services: no test asked for `{_harness_fixture_name(self.config)}` (or the stack), so "
            "nothing was tested against them; the run fails"
        )
        terminal = self.config.pluginmanager.getplugin("terminalreporter")
        if terminal is not None:
            terminal.write_line(message, red=True)
        else:
            sys.stderr.write(message + "\n")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _harness_fixture_name(config: pytest.Config) -> str:
    try:
        return str(_config_of(config).harness_fixture)
    except IntegrationError:
        return "test_harness"


@pytest.fixture(scope="session")
def wait_for_service_health() -> Callable[..., float]:
    """`wait_for_service_health(url, timeout=90)`: poll until 200, report progress, show the last error."""
    from .health import wait_for_service_health

    return wait_for_service_health


# --- pytest-xdist: one stack shared by the workers ----------------------------------------------------

HANDOFF_KEY = "integration_handoff"
PLANNED_KEY = "integration_workers"
HANDOFF_POLL = 0.05


class SharedStack:
    """The xdist controller's plugin: starts one shared stack while the workers start and collect,
    hands each worker its endpoints through a JSON file, and tears the stack down after the last test.

    The stack starts on a thread at session start, so that starting the workers (a Python process each,
    importing and collecting) overlaps with the stack's own start; no test is scheduled before it is
    healthy. The thread never writes to the terminal: the main thread prints what it reports.
    """

    def __init__(self, config: pytest.Config, system: SystemSpec, workers: list[str]) -> None:
        self.config = config
        self.run = _run_settings(config)
        self.system = system
        self.workers = workers
        self.folder = Path(tempfile.mkdtemp(prefix="integration-xdist-"))
        self.handoff = self.folder / "stack.json"
        self.stack: Stack | None = None
        self.error: BaseException | None = None
        self.endpoints: dict[str, StackEndpoints] = {}
        self.finished = threading.Event()
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._started = 0.0
        self._tests_started = 0.0

    # -- hooks -------------------------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="integration-shared-stack", daemon=True)
        self._thread.start()

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[HANDOFF_KEY] = str(self.handoff)
        node.workerinput[PLANNED_KEY] = list(self.workers)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> None:
        # xdist schedules tests after this hook; the workers start and collect meanwhile.
        while not self.finished.wait(0.1):
            self._flush()
        self._flush()
        if self.error is not None:
            if isinstance(self.error, IntegrationError):
                _exit(self.config, self.error)
            raise self.error
        assert self.stack is not None
        phases = self.config.stash.setdefault(_PHASES, {})
        phases["stack up"] = time.monotonic() - self._started
        first = self.endpoints[self.workers[0]]
        verified = self.config.stash.get(_VERIFIED_IMAGES, {})
        for line in _summary_table(self.system, first, verified, phases["stack up"], self.stack.outcome):
            self._write(line)
        for worker in self.workers[1:]:
            urls = "  ".join(f"{e.name} {e.url}" for e in self.endpoints[worker].services.values())
            self._write(f"  worker {worker}: {urls}  (its databases and virtual host {worker})")
        self._tests_started = time.monotonic()

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        phases = self.config.stash.setdefault(_PHASES, {})
        if self._tests_started:
            phases["tests"] = time.monotonic() - self._tests_started
        if self._thread is not None:
            # Interrupted (Ctrl-C, SIGTERM) while the stack starts: its compose process may not have
            # got the signal, so do not wait out `up --wait`: take the project down under it.
            interrupted = session.exitstatus == pytest.ExitCode.INTERRUPTED
            self._thread.join(timeout=2 if interrupted else self.config.stash[_TIMEOUT] + 30)
            if self._thread.is_alive() and self.stack is not None:
                self.stack.down()
                self._thread.join(timeout=30)
        self._flush()
        if self.stack is not None and self.error is None and not self._thread_alive():
            started = time.monotonic()
            self.stack.__exit__(None, None, None)
            phases["stack down"] = time.monotonic() - started
        self._flush()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _thread_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the stack's thread ------------------------------------------------------------------------

    def _run(self) -> None:
        from .stack import Stack

        try:
            self.stack = Stack.open(
                self.system,
                self.run,
                report=self._report,
                expected_images=self.config.stash.get(_VERIFIED_IMAGES, {}),
                workers=self.workers,
            )
            self.stack.__enter__()
            self.endpoints = dict(self.stack.worker_endpoints)
        except BaseException as exc:  # handed to the main thread, which raises it
            self.error = exc
        finally:
            self._publish()
            self.finished.set()

    def _publish(self) -> None:
        data = {
            "workers": {worker: endpoints.to_dict() for worker, endpoints in self.endpoints.items()},
            # A reused stack holds the last run's data: each worker resets before its first test.
            "reused": bool(self.stack is not None and self.stack.reuse),
            "error": None if self.error is None else str(self.error).splitlines()[0],
        }
        from .compose import write_atomically

        write_atomically(self.handoff, json.dumps(data))

    def _report(self, line: str) -> None:
        with self._lock:
            self._lines.append(line)

    def _flush(self) -> None:
        with self._lock:
            lines, self._lines = self._lines, []
        for line in lines:
            self._write(line)

    def _write(self, line: str) -> None:
        _write(self.config.pluginmanager.getplugin("terminalreporter"), line)


def _shared_handoff(config: pytest.Config) -> Path | None:
    """The controller's handoff file when this process is a worker of a shared stack, else None."""
    workerinput = getattr(config, "workerinput", None) or {}
    handoff = workerinput.get(HANDOFF_KEY)
    if handoff and workerinput.get("workerid") in workerinput.get(PLANNED_KEY, ()):
        return Path(handoff)
    return None


def _await_handoff(path: Path, worker: str) -> tuple[StackEndpoints, bool]:
    """A worker's endpoints from the controller's handoff file (written before any test is scheduled,
    so normally there at once), and whether the stack was reused (reset before the first test)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = None
        if data is not None:
            if data.get("error"):
                pytest.fail(f"the shared stack did not start: {data['error']}", pytrace=False)
            if worker in data["workers"]:
                return StackEndpoints.from_dict(data["workers"][worker]), bool(data.get("reused"))
        if time.monotonic() > deadline:
            pytest.fail(f"the controller's handoff {path} names no endpoints for {worker}", pytrace=False)
        time.sleep(HANDOFF_POLL)
