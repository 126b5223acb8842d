"""The reaper against the real engine: a run killed with SIGKILL, or frozen (a machine that lost the
process), leaves nothing of its compose project within 30 s; a released reaper leaves the project alone;
a neighbouring project, whose name starts with the guarded one's, is never touched; the reaper itself is
gone at the end in every case.

Each test starts small compose projects of its own (two `integration-local/debian:bookworm` containers
sleeping, a network, a named volume) under unique names, and its runs as child processes (`python -c`:
start a reaper, print READY, sleep). Whatever a test leaves (projects, reapers, children) is removed at
the end, also when it fails.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from compose_projects import containers, leftovers, remove_project
from python_on_whales import DockerClient, docker
from python_on_whales.exceptions import DockerException

from integration.baseimages import DEBIAN_BASE_IMAGE, ensure_debian_base
from integration.model import LABEL_SYSTEM
from integration.reaper import GRACE, LABEL_GUARDS, Reaper, reaper_image, reapers, start_reaper

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
DEADLINE = 30.0  # SIGKILL (or a frozen process) -> nothing of the project left
LABELS = {LABEL_SYSTEM: "itest-reaper"}
COMPOSE = f"""\
services:
  one:
    image: {DEBIAN_BASE_IMAGE}
    command: ["sleep", "infinity"]
    networks: [net]
    volumes: ["data:/data"]
  two:
    image: {DEBIAN_BASE_IMAGE}
    command: ["sleep", "infinity"]
    networks: [net]
networks:
  net: {{}}
volumes:
  data: {{}}
"""
# Three containers started one after the other, each healthy 4 s after it starts: `up --wait` takes
# about 12 s, and a run killed meanwhile leaves its compose process behind.
SLOW_COMPOSE = f"""\
x-slow: &slow
  image: {DEBIAN_BASE_IMAGE}
  command: ["sh", "-c", "sleep 4; touch /tmp/ok; exec sleep infinity"]
  healthcheck: {{test: ["CMD", "test", "-f", "/tmp/ok"], interval: 1s, retries: 30}}
services:
  a: *slow
  b: {{<<: *slow, depends_on: {{a: {{condition: service_healthy}}}}}}
  c: {{<<: *slow, depends_on: {{b: {{condition: service_healthy}}}}}}
"""
CHILD = textwrap.dedent(
    """
    import sys, time
    from python_on_whales import DockerClient
    from integration.reaper import start_reaper
    labels = {"io.integration.system": "itest-reaper"}
    reaper = start_reaper(sys.argv[1], client=DockerClient(), labels=labels)
    print("READY", reaper.container, f"{reaper.start_seconds:.3f}", flush=True)
    if len(sys.argv) > 2:  # a compose file: bring it up, as a stack's start does
        client = DockerClient(compose_files=[sys.argv[2]], compose_project_name=sys.argv[1])
        client.compose.up(detach=True, wait=True, quiet=True)
    time.sleep(3600)
    """
)


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.2) -> float:
    """Seconds until `condition()` held; AssertionError after `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"still not so after {timeout:g} s")
        time.sleep(interval)
    return time.monotonic() - started


def running(project: str) -> list[str]:
    return sorted(containers(project, stopped=False))


def remove_reapers(project: str) -> None:
    with contextlib.suppress(DockerException):
        found = docker.container.list(all=True, filters=[("label", f"{LABEL_GUARDS}={project}")])
        if found:
            docker.container.remove(found, force=True)


class Run:
    """A child process that starts a reaper for `project` and then sleeps: a run to kill."""

    def __init__(self, project: str, compose_file: Path | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD, project, *([str(compose_file)] if compose_file else [])],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group: the compose process it starts ends with it
        )
        readable, _, _ = select.select([self.process.stdout], [], [], 60)
        line = self.process.stdout.readline() if readable else ""  # type: ignore[union-attr]
        if not line.startswith("READY"):
            self.process.kill()
            raise AssertionError(f"the run did not start its reaper: {line!r} {self.process.stderr.read()!r}")  # type: ignore[union-attr]
        _, self.reaper, seconds = line.split()
        self.start_seconds = float(seconds)

    def signal(self, signum: int) -> float:
        os.kill(self.process.pid, signum)
        return time.monotonic()

    def end(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # the group this test started, by its id
        self.process.wait(timeout=10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


class Projects:
    """Compose projects, runs and reapers of one test; all of them removed at the end."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.names: list[str] = []
        self.runs: list[Run] = []
        self.reapers: list[Reaper] = []

    def name(self, name: str | None = None) -> str:
        project = name or f"itest-reaper-{uuid.uuid4().hex[:8]}"
        self.names.append(project)
        return project

    def new(self, name: str | None = None) -> str:
        project = self.name(name)
        compose_file = self.folder / f"{project}.yml"
        compose_file.write_text(COMPOSE)
        DockerClient(compose_files=[compose_file], compose_project_name=project).compose.up(
            detach=True, quiet=True
        )
        assert len(running(project)) == 2
        return project

    def run(self, project: str, compose_file: Path | None = None) -> Run:
        run = Run(project, compose_file)
        self.runs.append(run)
        return run

    def reaper(self, project: str) -> Reaper:
        reaper = start_reaper(project, client=docker, labels=LABELS)
        self.reapers.append(reaper)
        return reaper

    def cleanup(self) -> None:
        for run in self.runs:
            with contextlib.suppress(Exception):
                run.end()
        for reaper in self.reapers:
            with contextlib.suppress(Exception):
                reaper.release(timeout=2)
        for project in self.names:
            remove_reapers(project)
            remove_project(project)


@pytest.fixture(scope="module", autouse=True)
def images() -> None:
    ensure_debian_base(docker)
    reaper_image(docker)


@pytest.fixture
def projects(tmp_path: Path) -> Iterator[Projects]:
    made = Projects(tmp_path)
    try:
        yield made
    finally:
        made.cleanup()


def test_sigkill_of_the_run_removes_its_project_and_nothing_else(projects: Projects) -> None:
    victim = projects.new()
    # The neighbour's name starts with the victim's: only an exact label match keeps it.
    neighbour = projects.new(f"{victim}-x")
    neighbours_guard = projects.reaper(neighbour)
    run = projects.run(victim)
    assert reapers(docker, victim) == [run.reaper]
    neighbour_had = sorted(leftovers(neighbour))

    killed = run.signal(signal.SIGKILL)
    run.process.wait(timeout=10)
    wait_until(lambda: not leftovers(victim), DEADLINE)
    gone = time.monotonic() - killed
    wait_until(lambda: not reapers(docker, victim), DEADLINE - gone)
    print(f"\nreaper started in {run.start_seconds:.3f} s; SIGKILL -> nothing left: {gone:.1f} s")

    assert sorted(leftovers(neighbour)) == neighbour_had
    assert len(running(neighbour)) == 2
    assert neighbours_guard.state == "guarding"
    assert reapers(docker, neighbour) == [neighbours_guard.container]
    assert neighbours_guard.release()
    wait_until(lambda: not reapers(docker, neighbour), 10)
    assert sorted(leftovers(neighbour)) == neighbour_had


@pytest.mark.slow
def test_a_run_killed_while_its_stack_starts_leaves_nothing(projects: Projects, tmp_path: Path) -> None:
    """The kill lands during `compose up --wait`, its containers created and not all started; the
    compose process outlives the run for a few seconds (here it ends before the grace is over)."""
    project = projects.name()
    compose_file = tmp_path / "slow.yml"
    compose_file.write_text(SLOW_COMPOSE)
    run = projects.run(project, compose_file)
    wait_until(lambda: bool(containers(project)), 20, interval=0.1)
    killed = run.signal(signal.SIGKILL)
    wait_until(lambda: not leftovers(project), DEADLINE, interval=0.5)
    gone = time.monotonic() - killed
    wait_until(lambda: not reapers(docker, project), DEADLINE - gone)
    print(f"\nSIGKILL during up -> nothing left: {gone:.1f} s")
    time.sleep(3)
    assert leftovers(project) == []  # and nothing came back


@pytest.mark.slow
def test_a_frozen_run_is_reaped_after_the_heartbeat_timeout(projects: Projects) -> None:
    """SIGSTOP: the connection stays open and no heartbeat comes, as when a machine loses the process."""
    project = projects.new()
    run = projects.run(project)
    stopped = run.signal(signal.SIGSTOP)
    wait_until(lambda: not leftovers(project), DEADLINE, interval=0.5)
    gone = time.monotonic() - stopped
    wait_until(lambda: not reapers(docker, project), DEADLINE - gone)
    print(f"\nSIGSTOP -> nothing left: {gone:.1f} s")
    assert gone > 5  # not at once: the heartbeat timeout passed first


def test_release_ends_the_reaper_and_leaves_the_project(projects: Projects) -> None:
    project = projects.new()
    times = []
    for _ in range(3):
        reaper = projects.reaper(project)
        times.append(reaper.start_seconds)
        assert reapers(docker, project) == [reaper.container]
        assert reaper.release()
        assert reaper.state == "released"
        wait_until(lambda: not reapers(docker, project), 10)
    print(f"\nstart_reaper: {', '.join(f'{t:.3f}' for t in times)} s")
    assert min(times) < 1.0
    time.sleep(1)
    assert len(running(project)) == 2
    assert len(leftovers(project)) == 4  # two containers, the network, the volume


def test_close_removes_the_project_at_once(projects: Projects) -> None:
    project = projects.new()
    with projects.reaper(project) as reaper:
        assert len(running(project)) == 2
    assert reaper.state == "reaped"
    assert leftovers(project) == []
    wait_until(lambda: not reapers(docker, project), 10)


def test_a_new_run_retires_the_reaper_of_a_killed_earlier_one(projects: Projects) -> None:
    """The next run of the same checkout starts its own stack under the same project name: the killed
    run's reaper must not remove that stack after the fact."""
    project = projects.new()
    earlier = projects.run(project)
    current = projects.reaper(project)
    wait_until(lambda: reapers(docker, project) == [current.container], 10)
    earlier.signal(signal.SIGKILL)
    time.sleep(GRACE + 2)
    assert len(running(project)) == 2
    assert current.state == "guarding"
    assert current.release()
    wait_until(lambda: not reapers(docker, project), 10)
    assert len(running(project)) == 2
