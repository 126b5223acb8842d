"""pytest plugin: run shard K of N of the collected tests (`--shard K/N`), one shard per CI job.

    --shard K/N               run only shard K of N (1 <= K <= N <= 64); every job that collects the
                              same tests computes the same partition (integration.shard), so the N jobs
                              together run each test exactly once
    --shard-durations PATH    balance the shards by the durations recorded in PATH (a JSON object
                              {node id: seconds}); a missing file balances by test count
    --shard-record PATH       write the durations of this run's tests to PATH (entries of other tests
                              already there are kept), for the next run's --shard-durations

The other shards' tests are deselected (pytest reports them as deselected); the header names the shard,
how it was balanced and how many tests it runs. With `--integration`, each shard's stack is its own:
before the session starts, this plugin sets $INTEGRATION_PROJECT to `<project>-shardKofN` and
$INTEGRATION_PORT_BASE to the base + 2000 * (K - 1), which the toolkit's plugin reads when it starts the
stack, so shards running at once on one machine never share a compose project or compete for ports.
A JUnit XML report (`--junitxml`) carries the shard in its properties (`shard`, `shard_tests`,
`shard_suite_tests`), which scripts/merge_junit.py checks when it merges the shards' reports.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from .errors import IntegrationError
from .shard import (
    DURATIONS_OPTION,
    OPTION,
    Plan,
    Shard,
    load_durations,
    parse_shard,
    plan,
    shard_port_base,
    shard_project,
    write_durations,
)

RECORD_OPTION = "--shard-record"
WIDE_ATTRIBUTE = "integration_wide_fixture_seconds"  # on a TestReport; survives xdist's serialization
COUNTS_KEY = "integration_shard_counts"  # in an xdist worker's workeroutput

_SHARD = pytest.StashKey[Shard]()
_DURATIONS = pytest.StashKey["dict[str, float] | None"]()
_DURATIONS_PATH = pytest.StashKey[Path]()
_PLAN = pytest.StashKey[Plan]()
_COUNTS = pytest.StashKey["dict[str, int]"]()
_STACK = pytest.StashKey["dict[str, str]"]()
_SAVED_ENV = pytest.StashKey["dict[str, str | None]"]()
_ANNOUNCED = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("integration", "use-case tests against real services")
    group.addoption(
        OPTION,
        default=None,
        metavar="K/N",
        help="run only shard K of N of the tests (1 <= K <= N <= 64), deterministic and disjoint",
    )
    group.addoption(
        DURATIONS_OPTION,
        default=None,
        metavar="PATH",
        help="balance the shards by the durations in PATH ({node id: seconds}); by count when missing",
    )
    group.addoption(
        RECORD_OPTION,
        default=None,
        metavar="PATH",
        help="write this run's test durations to PATH, keeping other tests' entries there",
    )


def _path(config: pytest.Config, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else config.invocation_params.dir / path


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # tryfirst: before the toolkit's plugin reads $INTEGRATION_PORT_BASE (its shared xdist stack takes its
    # settings in its pytest_configure; the serial stack's fixture reads them at the first test).
    text = config.getoption(OPTION)
    if text is not None:
        try:
            shard = parse_shard(text)
            durations_option = config.getoption(DURATIONS_OPTION)
            if durations_option:
                config.stash[_DURATIONS_PATH] = _path(config, durations_option)
                config.stash[_DURATIONS] = load_durations(config.stash[_DURATIONS_PATH])
        except IntegrationError as exc:
            raise pytest.UsageError(str(exc)) from exc
        config.stash[_SHARD] = shard
        if not _is_worker(config):  # a worker inherits the controller's environment
            _give_the_shard_its_own_stack(config, shard)
    if config.getoption(RECORD_OPTION):
        config.pluginmanager.register(WideFixtureTimer(), "integration-shard-timer")
        if not _is_worker(config):  # under xdist the controller gets every worker's reports
            recorder = DurationRecorder(config, _path(config, config.getoption(RECORD_OPTION)))
            config.pluginmanager.register(recorder, "integration-shard-recorder")


def _give_the_shard_its_own_stack(config: pytest.Config, shard: Shard) -> None:
    """$INTEGRATION_PROJECT and $INTEGRATION_PORT_BASE of this shard's stack, in integration mode."""
    from . import plugin as toolkit

    if not config.pluginmanager.is_registered(toolkit):
        return
    from .settings import PORT_BASE_ENV, PROJECT_ENV, default_port_base, project_name

    try:
        if not toolkit.mode_on(config):
            return
        # The system as the toolkit's plugin loads it (kept in the config's stash: loaded once).
        system = toolkit.system_for(config)
        project = shard_project(os.environ.get(PROJECT_ENV) or project_name(system), shard)
        base = shard_port_base(default_port_base(), shard)
    except (IntegrationError, pytest.UsageError):
        return  # the toolkit's plugin reports it, in its own pytest_configure or where it needs the value
    config.stash[_SAVED_ENV] = {name: os.environ.get(name) for name in (PROJECT_ENV, PORT_BASE_ENV)}
    os.environ[PROJECT_ENV] = project
    os.environ[PORT_BASE_ENV] = str(base)
    config.stash[_STACK] = {"project": project, "port_base": str(base)}


def pytest_unconfigure(config: pytest.Config) -> None:
    for name, value in config.stash.get(_SAVED_ENV, {}).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def pytest_report_header(config: pytest.Config) -> list[str]:
    shard = config.stash.get(_SHARD, None)
    if shard is None:
        return []
    durations = config.stash.get(_DURATIONS, None)
    if durations:
        how = f"by the durations in {config.stash[_DURATIONS_PATH]} ({len(durations)} recorded)"
    elif _DURATIONS_PATH in config.stash:
        how = f"by test count ({config.stash[_DURATIONS_PATH]} does not exist or is empty)"
    else:
        how = "by test count (no --shard-durations)"
    line = f"shard: {shard} of the tests, balanced {how}"
    stack = config.stash.get(_STACK, None)
    if stack:
        line += f"; stack {stack['project']}, host ports from {stack['port_base']}"
    return [line]


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # trylast: the shards partition what the other filters (-k, -m, the markers) left.
    shard = config.stash.get(_SHARD, None)
    if shard is None:
        return
    partition = plan([item.nodeid for item in items], shard.total, config.stash.get(_DURATIONS, None))
    mine = set(partition.of(shard))
    kept = [item for item in items if item.nodeid in mine]
    others = [item for item in items if item.nodeid not in mine]
    config.stash[_PLAN] = partition
    config.stash[_COUNTS] = {"suite": len(items), "selected": len(kept)}
    if others:
        config.hook.pytest_deselected(items=others)
        items[:] = kept


def pytest_report_collectionfinish(config: pytest.Config, items: list[pytest.Item]) -> list[str]:
    shard = config.stash.get(_SHARD, None)
    partition = config.stash.get(_PLAN, None)
    if shard is None or partition is None:
        return []
    return [_running_line(shard, partition, config.stash[_COUNTS])]


def _running_line(shard: Shard, partition: Plan, counts: dict[str, int]) -> str:
    line = f"shard {shard}: runs {counts['selected']} of {counts['suite']} tests"
    load = partition.loads[shard.index - 1]
    if partition.by == "durations":
        line += f", about {load:.1f}s of {sum(partition.loads):.1f}s recorded"
        if partition.estimated:
            line += f" ({partition.estimated} tests without a record counted at the median)"
    sizes = "/".join(str(len(nodes)) for nodes in partition.shards)
    return line + f" (the {shard.total} shards: {sizes})"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    # Under xdist the workers collect and deselect; the controller says once what this shard runs.
    config = node.config
    shard = config.stash.get(_SHARD, None)
    if shard is None or config.stash.get(_ANNOUNCED, False):
        return
    config.stash[_ANNOUNCED] = True
    terminal = config.pluginmanager.getplugin("terminalreporter")
    if terminal is not None:
        terminal.write_line(f"shard {shard}: runs {len(ids)} tests")


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    counts = (getattr(node, "workeroutput", None) or {}).get(COUNTS_KEY)
    if counts and _COUNTS not in node.config.stash:
        node.config.stash[_COUNTS] = dict(counts)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # tryfirst: before the JUnit report is written (junitxml's own sessionfinish).
    config = session.config
    shard = config.stash.get(_SHARD, None)
    counts = config.stash.get(_COUNTS, None)
    if shard is None or counts is None:
        return
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput[COUNTS_KEY] = dict(counts)
        return
    from _pytest.junitxml import xml_key

    xml = config.stash.get(xml_key, None)
    if xml is not None:
        xml.add_global_property("shard", str(shard))
        xml.add_global_property("shard_tests", str(counts["selected"]))
        xml.add_global_property("shard_suite_tests", str(counts["suite"]))
    if (
        counts["suite"]
        and not counts["selected"]
        and session.exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED
    ):
        # More shards than tests: an empty shard is a green job, not "no tests collected".
        session.exitstatus = pytest.ExitCode.OK


# --- recording durations ------------------------------------------------------------------------------


class WideFixtureTimer:
    """In the process that runs the tests: the seconds of each phase spent in fixtures of a wider scope
    than the function (a session's stack starts in the first test's setup and stops in the last test's
    teardown), put on the phase's report so the recorder can leave them out."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._inside = False
        self._teardown: list[tuple[str, float]] | None = None

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: Any, request: pytest.FixtureRequest) -> Any:
        if fixturedef.scope == "function" or self._inside:
            return (yield)
        self._inside = True
        started = time.perf_counter()
        try:
            return (yield)
        finally:
            self._inside = False
            self.seconds += time.perf_counter() - started

    def pytest_fixture_post_finalizer(self, fixturedef: Any, request: pytest.FixtureRequest) -> None:
        if self._teardown is not None:
            self._teardown.append((fixturedef.scope, time.perf_counter()))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item, nextitem: pytest.Item | None) -> Any:
        started = time.perf_counter()
        self._teardown = []
        try:
            return (yield)
        finally:
            ended = time.perf_counter()
            finished, self._teardown = self._teardown, None
            if any(scope != "function" for scope, _ in finished):
                # The item's own (function-scoped) finalizers run first, the wider scopes' after them.
                own = [at for scope, at in finished if scope == "function"]
                self.seconds += ended - (own[-1] if own else started)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        report = yield
        setattr(report, WIDE_ATTRIBUTE, self.seconds)
        self.seconds = 0.0
        return report


class DurationRecorder:
    """Sums each test's phases (without the wider-scoped fixtures) and writes them at the end."""

    def __init__(self, config: pytest.Config, path: Path) -> None:
        self.config = config
        self.path = path
        self.durations: dict[str, float] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        seconds = max(0.0, report.duration - float(getattr(report, WIDE_ATTRIBUTE, 0.0) or 0.0))
        self.durations[report.nodeid] = self.durations.get(report.nodeid, 0.0) + seconds

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.durations:
            return
        try:
            write_durations(self.path, self.durations)
        except (OSError, IntegrationError) as exc:
            message = f"{RECORD_OPTION}: could not write {self.path}: {exc}"
        else:
            message = f"shard: the durations of {len(self.durations)} tests recorded in {self.path}"
        terminal = self.config.pluginmanager.getplugin("terminalreporter")
        if terminal is not None:
            terminal.write_line(message)
