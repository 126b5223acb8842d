"""Faults around a real run of the bundled example, through `python -m integration run` in a subprocess.

A run killed with SIGKILL while the stack starts or while the tests run, Ctrl-C during the tests, every
default host port taken, two checkouts at once, a service that crashes at start, a database that is slow
to become healthy. Each test runs on its own copy of examples/shortener under tmp_path, so its compose
project (`shortener-<hash of the copy's root>`) is its own, and removes whatever of that project is left
at the end. Each copy is another checkout with image tags of its own (`shortener-links:<checkout id>`),
built in the copy; the module builds the example's inputs once first, so that the copies' builds come
from the engine's build cache (the session removes the copies' images). Fault copies build their broken
service under an `itest-faults-` tag and remove it at the end.

Passing runs select three use-case tests that cross both services, both databases and the broker
(SMOKE: `run --root <copy> -- -k ...`). A run that is killed or interrupted during its tests gets one more
test in its copy (`hold_the_tests`), which holds the run inside its tests until released: the signal
is sent once that test is seen running, so it lands during the tests however slow or fast the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from compose_projects import PROJECT_LABEL, containers, leftovers, remove_project
from python_on_whales import docker
from python_on_whales.exceptions import DockerException
from waiting import GENEROUS

from integration.discovery import load_system
from integration.ports import describe_port_owner
from integration.stack import COMPOSE_DIR_ENV, PROJECT_ENV, default_compose_dir, project_name

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "shortener"
SERVICE_LABEL = "com.docker.compose.service"
DEFAULT_PORTS = (47100, 47101, 47110, 47111, 48000, 48001)
SMOKE = (  # pytest arguments of `run`, after its `--`
    "--",
    "-k",
    "publishes_link_created or visit_publishes_link_visited or delete_publishes_link_deleted",
)
SMOKE_PASSED = "3 passed"
HEALTHY = re.compile(r"\[integration\] stack (\S+) healthy in")
RUN_TIMEOUT = 300.0
DOWN_DEADLINE = 15.0  # Ctrl-C or SIGTERM -> nothing of the project left
CRASH_DEADLINE = 15.0  # the service crashed -> the run has failed
HEALTH_TIMEOUT = 90.0  # the default per-service health wait
SLOW_START = 8  # seconds the slow database image sleeps before PostgreSQL starts
# How much earlier than the engine's "healthy" event the host may see a container answer: the compose
# file's health interval (1 s) plus what one check may take on a loaded machine.
ENGINE_CHECK_LAG = 2.0
SLOW_POSTGRES_IMAGE = f"itest-slow-postgres-{uuid.uuid4().hex[:8]}:15"


@pytest.fixture(autouse=True)
def _no_project_override(monkeypatch: pytest.MonkeyPatch) -> None:
    # project_name() below must compute what the subprocess computes: no override in either.
    monkeypatch.delenv(PROJECT_ENV, raising=False)


def env_for_runs(**extra: str) -> dict[str, str]:
    """This environment without the toolkit's settings (reuse mode, a fixed project...), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    env.update({"INTEGRATION_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **extra})
    return env


def copy_example(destination: Path, *, built: bool = True) -> Path:
    """A copy of the example, its images built unless `built=False` (a copy is a checkout of its own)."""
    ignore = shutil.ignore_patterns("__pycache__", ".integration", ".pytest_cache", ".benchmarks")
    shutil.copytree(EXAMPLE, destination, ignore=ignore)
    if built:
        build(destination)
    return destination


def project_of(root: Path) -> str:
    return project_name(load_system(root))


def runs_compose_dir(root: Path) -> Path:
    """Where the runs of these tests, started without $INTEGRATION_COMPOSE_DIR, keep their files."""
    saved = os.environ.pop(COMPOSE_DIR_ENV, None)
    try:
        return default_compose_dir(load_system(root))
    finally:
        if saved is not None:
            os.environ[COMPOSE_DIR_ENV] = saved


# --- the project's resources ------------------------------------------------------------------------------


def remove_image(image: str) -> None:
    with contextlib.suppress(DockerException):
        docker.image.remove(image, force=True)


@dataclass(frozen=True)
class Event:
    seconds: float  # wall clock, as time.time()
    service: str  # compose service
    action: str  # create, start, die, "health_status: healthy", ...


class EventRecorder:
    """The engine's container events of one project, streamed while a run goes on.

    Streamed, not asked for afterwards with --since alone: the engine keeps only its last 256 events, and
    the health checks of every stack on the machine push a project's start out of them within seconds.
    The stream starts with --since the moment the recorder was made, so an event that happens before the
    stream is open is replayed rather than missed. Ask for an event with `wait_for` while recording.
    """

    def __init__(self, project: str) -> None:
        docker_cli = shutil.which("docker")
        assert docker_cli is not None
        self.events: list[Event] = []
        filters = ["--filter", "type=container", "--filter", f"label={PROJECT_LABEL}={project}"]
        since = ["--since", f"{time.time() - 1:.3f}"]  # a second early: the project is new, nothing older
        self.process = subprocess.Popen(
            [docker_cli, "events", "--format", "{{json .}}", *since, *filters],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            event = json.loads(line)
            attributes = (event.get("Actor") or {}).get("Attributes") or {}
            self.events.append(
                Event(event["timeNano"] / 1e9, attributes.get(SERVICE_LABEL, "?"), event.get("Action", ""))
            )

    def __enter__(self) -> EventRecorder:
        return self

    def wait_for(self, service: str, action: str, timeout: float = GENEROUS) -> float:
        """The time of the first `action` event of `service`, waiting for it to arrive (the stream
        delivers events a moment after they happen; in order, so every earlier event is there too)."""
        deadline = time.monotonic() + timeout
        while True:
            for event in list(self.events):
                if event.service == service and event.action.strip() == action:
                    return event.seconds
            if time.monotonic() > deadline:
                seen = [(e.service, e.action) for e in self.events]
                raise AssertionError(f"no {action!r} event of {service} within {timeout:g} s: {seen}")
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.reader.join(10)
        self.events.sort(key=lambda e: e.seconds)


def first(events: list[Event], service: str, action: str) -> float:
    for event in events:
        if event.service == service and event.action.strip() == action:
            return event.seconds
    raise AssertionError(f"no {action!r} event of {service}: {[(e.service, e.action) for e in events]}")


# --- runs -------------------------------------------------------------------------------------------------


class Run:
    """`python -m integration run --root <root> [pytest args]` in its own session, output to a file."""

    def __init__(self, root: Path, *pytest_args: str, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.log = root.parent / f"run-{uuid.uuid4().hex[:6]}.log"
        self._handle = self.log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "integration", "run", "--root", str(root), *pytest_args],
            stdout=self._handle,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env or env_for_runs(),
            start_new_session=True,  # its own process group: a signal to the group reaches pytest too
        )
        self.started = time.time()
        self.ended: float | None = None

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal_group(self, signum: int) -> float:
        os.killpg(self.process.pid, signum)
        return time.time()

    def wait(self, timeout: float = RUN_TIMEOUT) -> int:
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"the run did not end within {timeout:.0f}s:\n{self.output[-4000:]}"
            ) from None
        self.ended = self.ended or time.time()
        self._handle.close()
        return status

    def wait_until(self, condition: Callable[[], bool], what: str, timeout: float = RUN_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if not self.alive():
                raise AssertionError(f"the run ended before {what}:\n{self.output[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout:.0f}s:\n{self.output[-4000:]}")
            time.sleep(0.1)

    def wait_for_exit_time(self, timeout: float = RUN_TIMEOUT) -> None:
        """Record the moment the process ends (polled, so within 50 ms)."""
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"the run did not end within {timeout:.0f}s:\n{self.output[-4000:]}")
            time.sleep(0.05)
        self.ended = time.time()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        self._handle.close()

    def assert_passed(self, passed: str) -> None:
        status = self.wait()
        output = self.output
        assert status == 0, f"the run failed with status {status}:\n{output[-6000:]}"
        summary = re.findall(r"^=+ (.+) in [\d.]+s.* =+$", output, re.MULTILINE)
        assert summary, output[-3000:]
        assert re.fullmatch(rf"{passed}(, \d+ (skipped|deselected))*", summary[-1]), output[-3000:]


@contextlib.contextmanager
def cleanup(*projects: str, runs: list[Run] | None = None, images: tuple[str, ...] = ()) -> Iterator[None]:
    try:
        yield
    finally:
        for run in runs or []:
            if run.alive():
                run.kill()
        for project in projects:
            remove_project(project)
        for image in images:
            remove_image(image)


def build(root: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "integration", "build", "--root", str(root)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env_for_runs(),
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr


HOLD_TEST = """\
\"\"\"Written by tests/docker/test_faults.py into a copy of the example: holds the run inside its tests
(after test_analytics and test_events, before test_links) until the outer test releases it.\"\"\"

import time
from pathlib import Path

GATE = Path({gate!r})


def test_hold_the_run_here():
    (GATE / "holding").touch()
    deadline = time.monotonic() + {timeout!r}
    while not (GATE / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
"""


def hold_the_tests(root: Path) -> Path:
    """Add a use-case test to the copy at `root` that holds its run; the file it touches once it holds."""
    gate = root.parent / f"gate-{uuid.uuid4().hex[:6]}"
    gate.mkdir()
    test = root / "use_case_tests" / "test_hold.py"
    test.write_text(HOLD_TEST.format(gate=str(gate), timeout=RUN_TIMEOUT))
    return gate / "holding"


def release_the_tests(root: Path) -> None:
    """Remove the holding test from the copy, so that the next run on it is the example's own."""
    (root / "use_case_tests" / "test_hold.py").unlink(missing_ok=True)


@pytest.fixture(scope="module")
def example_images(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The example's images built once per module, so that each copy's build is the build cache's."""
    build(copy_example(tmp_path_factory.mktemp("build") / "shortener"))


# --- killed runs ------------------------------------------------------------------------------------------


def test_a_run_killed_during_up_is_cleaned_up_by_the_next_plain_run(
    example_images: None, tmp_path: Path
) -> None:
    root = copy_example(tmp_path / "shortener")
    project = project_of(root)
    killed = Run(root)
    with cleanup(project, runs=[killed]):
        killed.wait_until(lambda: bool(containers(project)), "first container of the project")
        killed.signal_group(signal.SIGKILL)
        killed.wait()
        assert "healthy in" not in killed.output, "the kill came too late: the stack was already up"
        assert containers(project), "the kill left nothing behind, so the next run proves nothing"

        Run(root, *SMOKE).assert_passed(SMOKE_PASSED)  # no `down` or other step first
        assert leftovers(project) == []


def test_a_run_killed_during_the_tests_is_cleaned_up_by_the_next_plain_run(
    example_images: None, tmp_path: Path
) -> None:
    root = copy_example(tmp_path / "shortener")
    project = project_of(root)
    holding = hold_the_tests(root)
    killed = Run(root)
    with cleanup(project, runs=[killed]):
        killed.wait_until(holding.exists, "the holding test running, inside the tests")
        assert HEALTHY.search(killed.output), killed.output[-3000:]
        killed.signal_group(signal.SIGKILL)
        killed.wait()
        running = containers(project, stopped=False)
        assert len(running) == 5, f"the killed run's stack should still be running: {running}"

        release_the_tests(root)
        Run(root, *SMOKE).assert_passed(SMOKE_PASSED)  # no `down` or other step first
        assert leftovers(project) == []


def seconds_until_gone(run: Run, project: str, signum: signal.Signals) -> float:
    """Send `signum` to the run's process group; the seconds until nothing of `project` is left (the
    wait gives up after 60 s: the caller asserts)."""
    signalled = run.signal_group(signum)
    while leftovers(project) and time.time() - signalled < 60:
        time.sleep(0.1)
    return time.time() - signalled


@pytest.mark.parametrize(
    "signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm-as-a-cancelled-ci-job"]
)
def test_a_signal_to_the_run_during_the_tests_takes_the_stack_down_within_15_s(
    signum: signal.Signals,
    example_images: None,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    """Ctrl-C at a terminal and a cancelled CI job both signal the whole process group."""
    root = copy_example(tmp_path / "shortener")
    project = project_of(root)
    holding = hold_the_tests(root)
    run = Run(root)
    with cleanup(project, runs=[run]):
        run.wait_until(holding.exists, "the holding test running, inside the tests")
        assert HEALTHY.search(run.output), run.output[-3000:]
        seconds = seconds_until_gone(run, project, signum)
        record_property(f"{signum.name.lower()}_to_down_seconds", round(seconds, 2))
        print(f"{signum.name} -> nothing of {project} left: {seconds:.1f}s")
        assert leftovers(project) == [], f"still there {seconds:.0f}s after {signum.name}"
        assert seconds < DOWN_DEADLINE, f"the stack took {seconds:.1f}s to go after {signum.name}"
        status = run.wait(30)
        assert status == 130, run.output[-3000:]
        assert run.output.rstrip().endswith("interrupted"), run.output[-3000:]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_under_xdist_a_signal_while_the_shared_stack_starts_takes_it_down(
    signum: signal.Signals,
    example_images: None,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    """`-n 2`: the controller starts the shared stack on a thread while the workers start; a signal then
    must not leave the half-started project behind."""
    root = copy_example(tmp_path / "shortener")
    project = project_of(root)
    run = Run(root, "--", "-n", "2")
    with cleanup(project, runs=[run]):
        # Well into the start: a container of the shared stack is running (not only created).
        run.wait_until(lambda: bool(containers(project, stopped=False)), "a running container of the stack")
        assert not HEALTHY.search(run.output), "the stack was already up: the signal proves nothing"
        seconds = seconds_until_gone(run, project, signum)
        record_property(f"xdist_{signum.name.lower()}_to_down_seconds", round(seconds, 2))
        print(f"-n 2, {signum.name} while starting -> nothing of {project} left: {seconds:.1f}s")
        assert leftovers(project) == [], f"still there {seconds:.0f}s after {signum.name}"
        assert seconds < DOWN_DEADLINE, f"the stack took {seconds:.1f}s to go after {signum.name}"
        assert run.wait(60) != 0, run.output[-3000:]
        assert "INTERNALERROR" not in run.output, run.output[-3000:]


# --- ports and checkouts ----------------------------------------------------------------------------------


def hold_ports(ports: tuple[int, ...], timeout: float = 60.0) -> dict[int, socket.socket]:
    """A listening socket on 127.0.0.1 for each port, as a server holds it (SO_REUSEADDR, so that the
    TIME-WAIT connections an earlier stack left on the port do not stand in the way). A port another
    process listens on is tried again until `timeout`: the test needs every one of them held."""
    held: dict[int, socket.socket] = {}
    deadline = time.monotonic() + timeout
    while True:
        for port in ports:
            if port in held:
                continue
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
                sock.listen()
                held[port] = sock
            except OSError:
                sock.close()
        if len(held) == len(ports):
            return held
        if time.monotonic() > deadline:
            for sock in held.values():
                sock.close()
            owners = {p: describe_port_owner(p) for p in ports if p not in held}
            raise AssertionError(f"ports held by others for {timeout:.0f}s: {owners}")
        time.sleep(0.5)


def test_with_every_default_host_port_taken_the_run_passes_on_other_ports(
    example_images: None, tmp_path: Path
) -> None:
    root = copy_example(tmp_path / "shortener")
    project = project_of(root)
    held = hold_ports(DEFAULT_PORTS)
    run = Run(root, *SMOKE)
    try:
        with cleanup(project, runs=[run]):
            run.assert_passed(SMOKE_PASSED)
            assert leftovers(project) == []
    finally:
        for sock in held.values():
            sock.close()
    compose = (runs_compose_dir(root) / f"{project}.yml").read_text()
    published = {int(p) for p in re.findall(r"127\.0\.0\.1:(\d+):\d+", compose)}
    assert len(published) == 6, compose
    assert not published & set(DEFAULT_PORTS), f"a taken default port was planned: {sorted(published)}"
    urls = re.findall(r"http://127\.0\.0\.1:(\d+)", run.output)
    assert urls and not {int(p) for p in urls} & set(DEFAULT_PORTS), run.output[-3000:]


def test_two_checkouts_run_at_once_on_their_own_projects(example_images: None, tmp_path: Path) -> None:
    roots = [copy_example(tmp_path / name / "shortener") for name in ("one", "two")]
    projects = [project_of(root) for root in roots]
    assert projects[0] != projects[1]
    runs = [Run(root, *SMOKE) for root in roots]
    with cleanup(*projects, runs=runs):
        for run in runs:
            run.assert_passed(SMOKE_PASSED)
        for run, project in zip(runs, projects, strict=True):
            assert HEALTHY.search(run.output).group(1) == project, run.output[-3000:]
            assert leftovers(project) == []


# --- a service that crashes at start ----------------------------------------------------------------------


def crash_in_settings(root: Path) -> str:
    """A function-level `import os` below the first use of `os`: UnboundLocalError at startup."""
    main = root / "services" / "links" / "app" / "main.py"
    text = main.read_text()
    anchor = '            exchange=os.environ.get("EVENT_EXCHANGE", "events"),\n        )\n'
    assert anchor in text, "the example's Settings.from_env changed; update this fault"
    main.write_text(text.replace(anchor, anchor + "        import os  # the careless edit\n", 1))
    return "UnboundLocalError: cannot access local variable 'os' where it is not associated with a value"


def forget_architecture(root: Path) -> str:
    """A Dockerfile that does not copy architecture/: the service's first import fails."""
    dockerfile = root / "services" / "links" / "Dockerfile"
    text = dockerfile.read_text()
    line = "COPY architecture/ /srv/architecture/\n"
    assert line in text, "the example's links Dockerfile changed; update this fault"
    dockerfile.write_text(text.replace(line, ""))
    return "ModuleNotFoundError: No module named 'architecture'"


def faulty_copy(tmp_path: Path, fault: Callable[[Path], str], image: str) -> tuple[Path, str]:
    """A copy of the example whose links service has `fault` and is tagged `image` (so that the
    copy's own links image is left alone); returns the copy and the traceback line to expect."""
    root = copy_example(tmp_path / "shortener", built=False)
    services = root / "architecture" / "services.yml"
    services.write_text(
        services.read_text().replace("    contract: links\n", f"    contract: links\n    image: {image}\n")
    )
    return root, fault(root)


@pytest.mark.parametrize(
    "fault", [crash_in_settings, forget_architecture], ids=["unbound-local", "no-architecture"]
)
def test_a_service_crashing_at_start_fails_the_run_fast_naming_container_code_and_traceback(
    fault: Callable[[Path], str],
    example_images: None,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    image = f"itest-faults-links-{fault.__name__.replace('_', '-')}:test"
    root, traceback_line = faulty_copy(tmp_path, fault, image)
    project = project_of(root)
    with cleanup(project, images=(image,)):
        build(root)
        with EventRecorder(project) as recorder:
            run = Run(root)
            run.wait_for_exit_time()
            died = recorder.wait_for("links", "die")
        status = run.wait()
        events = recorder.events
        output = run.output
        assert status != 0, output[-3000:]

        container = f"{project}-links-1"
        assert re.search(rf"container {re.escape(container)} \(links\) exited with code [1-9]\d*", output), (
            output
        )
        assert traceback_line in output, output[-4000:]
        assert leftovers(project) == []

        # Measured on the engine's clock: `up` creates the containers, the service starts once its
        # database and the broker are healthy, crashes, and the run ends. What the toolkit controls is
        # crash -> failure; up -> failure adds how long the dependencies took, which on a loaded machine
        # alone can pass 15 s, so it is reported and only held under the 90 s health timeout.
        assert run.ended is not None
        up_started = min(e.seconds for e in events if e.action == "create")
        up_seconds, crash_seconds = run.ended - up_started, run.ended - died
        record_property("crash_to_failure_seconds", round(crash_seconds, 2))
        record_property("up_to_failure_seconds", round(up_seconds, 2))
        print(f"{fault.__name__}: up -> failure {up_seconds:.1f}s, crash -> failure {crash_seconds:.1f}s")
        assert crash_seconds < CRASH_DEADLINE, f"the run failed {crash_seconds:.1f}s after the crash"
        assert up_seconds < HEALTH_TIMEOUT, f"the run failed {up_seconds:.1f}s after `up`: it waited it out"

        folder = re.search(r"run folder with every container's logs: (\S+)", output)
        assert folder, output[-3000:]
        saved = Path(folder.group(1))
        assert saved.is_dir() and saved.is_relative_to(runs_compose_dir(root))
        assert not saved.is_relative_to(root), "a run folder inside the build context"
        assert {"compose.yml", "ps.json", "images.json", "links.log", "reason.txt"} <= {
            p.name for p in saved.iterdir()
        }
        assert traceback_line in (saved / "links.log").read_text()
        assert image in json.loads((saved / "images.json").read_text())
        assert any(entry["name"] == container for entry in json.loads((saved / "ps.json").read_text()))


# --- a slow database -------------------------------------------------------------------------------------

SLOW_DOCKERFILE = f"""\
FROM integration-local/postgres:15
RUN printf '#!/bin/sh\\nsleep {SLOW_START}\\nexec docker-entrypoint.sh "$@"\\n' > /usr/local/bin/slow-start \\
    && chmod 755 /usr/local/bin/slow-start
ENTRYPOINT ["slow-start"]
CMD ["postgres"]
"""


def test_under_xdist_a_service_crashing_at_start_ends_the_run_with_its_logs(
    example_images: None, tmp_path: Path
) -> None:
    """`-n 2`: the shared stack fails in the controller; one `error:` message names the container and
    its traceback, no worker runs a test, nothing is left."""
    image = "itest-faults-links-xdist:test"
    root, traceback_line = faulty_copy(tmp_path, forget_architecture, image)
    project = project_of(root)
    with cleanup(project, images=(image,)):
        build(root)
        run = Run(root, "--", "-n", "2")
        status = run.wait()
        output = run.output
        assert status == 1, output[-3000:]
        assert "error: " in output, output[-3000:]
        assert re.search(rf"container {re.escape(project)}-links(-gw1)?-1 \(links(-gw1)?\) exited", output), (
            output[-4000:]
        )
        assert traceback_line in output, output[-4000:]
        assert "INTERNALERROR" not in output and " passed" not in output, output[-3000:]
        assert leftovers(project) == []


@pytest.fixture
def slow_postgres(tmp_path: Path) -> Iterator[str]:
    """The PostgreSQL stand-in behind an entrypoint that sleeps SLOW_START seconds first."""
    context = tmp_path / "slow-postgres"
    context.mkdir()
    (context / "Dockerfile").write_text(SLOW_DOCKERFILE)
    try:
        docker.build(context, tags=[SLOW_POSTGRES_IMAGE], progress=False)
        yield SLOW_POSTGRES_IMAGE
    finally:
        remove_image(SLOW_POSTGRES_IMAGE)


def test_slow_databases_still_start_before_their_services_and_the_run_passes(
    example_images: None, slow_postgres: str, tmp_path: Path
) -> None:
    root = copy_example(tmp_path / "shortener")
    project = project_of(root)
    with EventRecorder(project) as recorder:
        run = Run(root, *SMOKE, env=env_for_runs(INTEGRATION_POSTGRES_IMAGE=slow_postgres))
        with cleanup(project, runs=[run]):
            run.assert_passed(SMOKE_PASSED)
        recorder.wait_for("broker", "health_status: healthy")
        for service in ("links", "analytics"):
            recorder.wait_for(service, "start")
    events = recorder.events
    assert leftovers(project) == []
    for service in ("links", "analytics"):
        db_started = first(events, f"{service}-db", "start")
        db_healthy = first(events, f"{service}-db", "health_status: healthy")
        started = first(events, service, "start")
        assert db_healthy - db_started >= SLOW_START, "the database was not slow: the test proves nothing"
        # The toolkit starts a service when the host sees its database answer `SELECT 1` (and the broker
        # answer AMQP and its API), polled every 50 ms; the engine's own check runs once a second, so its
        # "healthy" event may come up to one interval (plus the check's run) after that.
        assert started - db_started >= SLOW_START, f"{service} started while its database was asleep"
        assert started >= db_healthy - ENGINE_CHECK_LAG, f"{service} started before its database answered"
        broker_healthy = first(events, "broker", "health_status: healthy")
        assert started >= broker_healthy - ENGINE_CHECK_LAG, f"{service} started before the broker answered"
