"""The bundled example on Podman: its Docker-compatible API service (scripts/install-podman.sh), driven by
the docker CLI and compose plugin of this machine through DOCKER_HOST.

On a copy of the example: the stand-ins and service images are built on Podman (the classic builder,
Podman serves no BuildKit), every use-case test passes against the stack on Podman (its start waits from
the host, not on Podman's health checks, which need systemd timers), the stack is on Podman and not on the
Docker engine, `down` leaves nothing of it; and a run killed with SIGKILL has its stack removed by the
reaper on Podman.

Runs when CI is set or podman is installed; there, a Podman that does not answer is a failure (with the
command that starts it), elsewhere a skip.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from example_copies import SHORTENER, clean_env, copy_example
from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException

from integration.discovery import load_system
from integration.model import LABEL_ROOT
from integration.reaper import LABEL_GUARDS, PROJECT_LABEL
from integration.sessions import PODMAN_HOST, podman_answers
from integration.stack import project_name

pytestmark = pytest.mark.docker

# The socket scripts/install-podman.sh starts the service on (integration.sessions.PODMAN_HOST).
START = "bash scripts/install-podman.sh"
RUN_TIMEOUT = 900.0  # a first build makes the stand-ins on Podman too (about 4 min on 2 quiet cores)
REAPED_WITHIN = 60.0  # SIGKILL -> nothing of the project left (the reaper's grace is 5 s)
# The example's services: links, analytics, a PostgreSQL for each, the broker.
EXAMPLE_CONTAINERS = 5


def on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


@pytest.fixture(scope="module")
def podman() -> DockerClient:
    """A client of Podman's API service; a failure on CI or where podman is installed, else a skip."""
    if not podman_answers():
        message = f"Podman does not answer on {PODMAN_HOST}; start it with `{START}`"
        if on_ci() or shutil.which("podman"):
            pytest.fail(message)
        pytest.skip(message)
    return DockerClient(host=PODMAN_HOST)


@pytest.fixture(scope="module")
def example_on_podman(podman: DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of the example with its images built on Podman (the stand-ins first, when missing); the
    copy's service images are removed at the end (their tags name the copy's folder: each run has its
    own)."""
    root = copy_example(SHORTENER, tmp_path_factory.mktemp("podman") / "shortener")
    # Not example_copies.build: on a new machine this also debootstraps and builds every stand-in on
    # Podman, which can outlast its timeout on a busy machine.
    result = subprocess.run(
        [sys.executable, "-m", "integration", "build", "--root", str(root)],
        env=podman_env(root),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    try:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        yield root
    finally:
        with contextlib.suppress(DockerException):
            built = podman.image.list(filters=[("label", f"{LABEL_ROOT}={root.resolve()}")])
            if built:
                podman.image.remove(built, force=True)


def podman_env(root: Path) -> dict[str, str]:
    return clean_env(DOCKER_HOST=PODMAN_HOST, INTEGRATION_COMPOSE_DIR=str(root.parent / "compose"))


def leftovers(client: DockerClient, project: str) -> list[str]:
    """What of `project` is on Podman: containers, networks, volumes, its reapers. One `ls` per kind,
    names only (python-on-whales' lists inspect each object after listing it: one the reaper removes
    in between would fail the listing)."""
    del client  # the fixture's client says Podman answers; these read it through DOCKER_HOST
    env = {**os.environ, "DOCKER_HOST": PODMAN_HOST}
    found: list[str] = []
    for kind, label in (
        ("container", f"{PROJECT_LABEL}={project}"),
        ("container", f"{LABEL_GUARDS}={project}"),
        ("network", f"{PROJECT_LABEL}={project}"),
        ("volume", f"{PROJECT_LABEL}={project}"),
    ):
        if kind == "container":
            listed = ["ls", "-a", "--format", "{{.Names}}"]
        else:
            listed = ["ls", "--format", "{{.Name}}"]
        result = subprocess.run(
            ["docker", kind, *listed, "--filter", f"label={label}"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=True,
        )
        found += [f"{kind} {name}" for name in result.stdout.split()]
    return found


def remove_project(client: DockerClient, project: str) -> None:
    """Whatever a failed test left of its own project (and only that)."""
    for labels in ([("label", f"{PROJECT_LABEL}={project}")], [("label", f"{LABEL_GUARDS}={project}")]):
        try:
            found = client.container.list(all=True, filters=labels)
            if found:
                client.container.remove(found, force=True, volumes=True)
        except DockerException:
            pass
    try:
        networks = client.network.list(filters=[("label", f"{PROJECT_LABEL}={project}")])
        if networks:
            client.network.remove(networks)
    except DockerException:
        pass


def wait_until(condition: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"still not so after {timeout:g} s")
        time.sleep(0.5)
    return time.monotonic() - started


def on_the_docker_engine(project: str) -> str:
    """The ids of `project`'s containers on the CLI's default engine (DOCKER_HOST unset); "" also where
    no Docker engine answers."""
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    result = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={PROJECT_LABEL}={project}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else ""


def collected(root: Path, env: dict[str, str]) -> int:
    """How many use-case tests the example has (collected in mock mode, which needs no engine)."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    found = re.search(r"^(\d+) tests? collected", result.stdout, re.MULTILINE)
    assert found, result.stdout[-2000:] + result.stderr[-2000:]
    return int(found.group(1))


def test_the_example_suite_passes_on_podman_and_down_leaves_nothing(
    podman: DockerClient, example_on_podman: Path
) -> None:
    root = example_on_podman
    env = podman_env(root)
    project = project_name(load_system(root))
    expected = collected(root, env)
    try:
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "--integration", "-q", "-p", "no:cacheprovider", "--keep-stack"],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        elapsed = time.monotonic() - started
        output = result.stdout + result.stderr
        print(f"\nthe example's suite on Podman: exit {result.returncode}, {expected} tests, {elapsed:.1f} s")
        assert result.returncode == 0, output[-4000:]
        assert re.search(rf"\b{expected} passed\b", output), output[-2000:]

        # The stack ran on Podman, not on the Docker engine this machine may have as well.
        running = podman.container.list(filters=[("label", f"{PROJECT_LABEL}={project}")])
        assert len(running) == EXAMPLE_CONTAINERS, [c.name for c in running]
        assert all(c.state.running for c in running)
        assert on_the_docker_engine(project) == ""

        down = subprocess.run(
            [sys.executable, "-m", "integration", "down", "--root", str(root)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert down.returncode == 0, down.stdout + down.stderr
        assert leftovers(podman, project) == []
    finally:
        remove_project(podman, project)


def test_a_run_killed_on_podman_is_reaped(podman: DockerClient, example_on_podman: Path) -> None:
    root = example_on_podman
    project = project_name(load_system(root))
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "--integration", "-q", "-p", "no:cacheprovider", "-s"],
        cwd=root,
        env=podman_env(root),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    healthy = threading.Event()
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip())
            if re.search(rf"stack {re.escape(project)} healthy", line):
                healthy.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert healthy.wait(RUN_TIMEOUT), "\n".join(lines[-40:])
        assert leftovers(podman, project), "the stack of the run is not on Podman"
        killed = time.monotonic()
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        wait_until(lambda: not leftovers(podman, project), REAPED_WITHIN)
        gone = time.monotonic() - killed
        print(f"\nSIGKILL of a run on Podman -> nothing of its stack left after {gone:.1f} s")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        remove_project(podman, project)
