"""The toolkit against a remote engine: a second dockerd in a network namespace of its own, reached over TCP.

`scripts/second-engine.sh` starts it at 10.213.0.2 (this machine is 10.213.0.1 on a veth link), with its
own containerd, data and state: nothing it runs is the local engine's. The base images reach it by
`docker save | docker load` (stand-ins are base images, not what is under test); the service images
are built by the toolkit on the remote engine, and the example's whole suite runs against it with
DOCKER_HOST=tcp://10.213.0.2:2375 and INTEGRATION_BIND_ADDRESS=10.213.0.2. The local engine's events
of the run's compose project must be none, and the remote engine must keep nothing of the run. With
openssh-server installed, the script also starts an SSH server in the namespace, and the suite runs once
more with DOCKER_HOST=ssh://root@10.213.0.2.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from example_copies import SHORTENER, copy_example

from integration.engine import resolve_endpoint
from integration.model import (
    LABEL_ROOT,
    OFFLINE_BROKER_IMAGE,
    OFFLINE_POSTGRES_IMAGE,
    OFFLINE_PYTHON_IMAGE,
)

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "second-engine.sh"
NAMESPACE = "itest-remote"
SUBNET = "10.213.0"
ADDRESS = f"{SUBNET}.2"
ENGINE = f"tcp://{ADDRESS}:2375"
RUN_FOLDER = Path(f"/run/{NAMESPACE}-engine")
BASE_IMAGES = (OFFLINE_POSTGRES_IMAGE, OFFLINE_BROKER_IMAGE, OFFLINE_PYTHON_IMAGE)
PROJECT_LABEL = "com.docker.compose.project"
REAPER_LABEL = "io.integration.reaper.project"
TIMEOUT = 900
# A generous start deadline: the second engine's containers share this machine's CPUs with the local
# engine's, and a busy machine starts services slowly (a deadline for a state, not a speed bound).
SUITE_OPTIONS = ("--health-timeout", "300")
SSH_TESTS = ("use_case_tests/test_events.py",)


@dataclass(frozen=True)
class SecondEngine:
    host: str  # DOCKER_HOST of the engine
    address: str  # its address, where its published ports are
    socket: str  # its unix socket, as the reaper must mount it (the namespace shares this filesystem)
    start_seconds: float
    load_seconds: float
    ssh_host: str | None = None  # DOCKER_HOST over SSH, when openssh-server is installed
    ssh_path: str | None = None  # the folder of the `ssh` wrapper that carries the client's config


def _privileged() -> list[str]:
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n", "--preserve-env=SECOND_ENGINE_NS,SECOND_ENGINE_SUBNET"]
    pytest.skip("starting a second engine in a network namespace needs root (or sudo without a password)")


def _script(action: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"SECOND_ENGINE_NS": NAMESPACE, "SECOND_ENGINE_SUBNET": SUBNET}
    return subprocess.run(
        [*_privileged(), "bash", str(SCRIPT), action],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def docker(*args: str, host: str | None = None, check: bool = True) -> str:
    """The docker CLI against the local engine (host None) or `host`; its stdout."""
    env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "DOCKER_CONTEXT")}
    command = ["docker", *(["-H", host] if host else []), *args]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    if check:
        assert result.returncode == 0, f"{' '.join(command)}: {result.stderr[-2000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def second_engine() -> Iterator[SecondEngine]:
    # The base images the run needs, present on the local engine (built there from Debian packages
    # when missing), then copied over: a rebuild on the second engine would only repeat that.
    missing = [image for image in BASE_IMAGES if not docker("images", "-q", image).strip()]
    if missing:
        result = subprocess.run(
            [sys.executable, "-m", "integration", "images"], capture_output=True, text=True, timeout=TIMEOUT
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    started = time.monotonic()
    result = _script("start")
    start_seconds = time.monotonic() - started
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"DOCKER_HOST={ENGINE}" in result.stdout
        started = time.monotonic()
        save = subprocess.Popen(["docker", "save", *BASE_IMAGES], stdout=subprocess.PIPE)
        load = subprocess.run(
            ["docker", "-H", ENGINE, "load", "-q"], stdin=save.stdout, capture_output=True, text=True
        )
        assert save.stdout is not None
        save.stdout.close()
        assert save.wait(timeout=TIMEOUT) == 0 and load.returncode == 0, load.stderr
        engine = SecondEngine(
            host=ENGINE,
            address=ADDRESS,
            socket=str(RUN_FOLDER / "docker.sock"),
            start_seconds=start_seconds,
            load_seconds=time.monotonic() - started,
        )
        ssh = re.search(r"^SSH: DOCKER_HOST=(\S+) with PATH=([^:]+):", result.stdout, flags=re.MULTILINE)
        if ssh:
            engine = replace(engine, ssh_host=ssh.group(1), ssh_path=ssh.group(2))
        yield engine
    finally:
        started = time.monotonic()
        stopped = _script("stop")
        print(f"\nsecond engine: start {start_seconds:.1f}s, stop {time.monotonic() - started:.1f}s")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert NAMESPACE not in namespaces.split(), "the namespace outlived the engine"


def _remote_env(engine: SecondEngine, compose_dir: Path, **extra: str) -> dict[str, str]:
    """This environment for a run against the second engine: no toolkit setting of the outer run's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INTEGRATION_", "PYTEST_", "DOCKER_"))}
    if "INTEGRATION_OFFLINE" in os.environ:
        env["INTEGRATION_OFFLINE"] = os.environ["INTEGRATION_OFFLINE"]
    env.update(
        DOCKER_HOST=engine.host,
        INTEGRATION_BIND_ADDRESS=engine.address,
        INTEGRATION_REAPER_SOCKET=engine.socket,
        INTEGRATION_COMPOSE_DIR=str(compose_dir),
    )
    env.update(extra)
    return env


def _left(host: str | None, project: str) -> dict[str, list[str]]:
    """What an engine holds of compose project `project`: containers, networks, volumes, reapers."""
    return {
        "containers": docker("ps", "-aq", "--filter", f"label={PROJECT_LABEL}={project}", host=host).split(),
        "networks": docker(
            "network", "ls", "-q", "--filter", f"label={PROJECT_LABEL}={project}", host=host
        ).split(),
        "volumes": docker(
            "volume", "ls", "-q", "--filter", f"label={PROJECT_LABEL}={project}", host=host
        ).split(),
        "reapers": docker("ps", "-aq", "--filter", f"label={REAPER_LABEL}={project}", host=host).split(),
    }


class Events:
    """Every event of an engine from now on, streamed: the daemon keeps only its last 256 events, and
    a stack's health checks alone send several a second, so a query afterwards would miss some."""

    def __init__(self, host: str | None, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "DOCKER_CONTEXT")}
        since = f"{time.time() - 1:.3f}"
        command = [
            "docker",
            *(["-H", host] if host else []),
            "events",
            "--since",
            since,
            "--format",
            "{{json .}}",
        ]
        # Into a file, not a pipe: a full pipe would stall the stream, and stopping it would lose the rest.
        self._log = log
        with log.open("w") as out:
            self._process = subprocess.Popen(command, env=env, stdout=out)

    def of(self, *marks: str) -> list[str]:
        """Stop, and return the events (`type action name`) any of whose attributes holds a mark."""
        time.sleep(1.5)  # the stream delivers the last ones
        self._process.terminate()
        self._process.wait(timeout=30)
        found = []
        for line in self._log.read_text().splitlines():
            event = json.loads(line)
            attributes = (event.get("Actor") or {}).get("Attributes") or {}
            if any(mark in str(value) for value in attributes.values() for mark in marks):
                found.append(f"{event.get('Type')} {event.get('Action')} {attributes.get('name', '')}")
        return found


def _run(
    command: list[str], cwd: Path, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    return result, time.monotonic() - started


def _build(root: Path, env: dict[str, str]) -> float:
    built, seconds = _run([sys.executable, "-m", "integration", "build", "--root", str(root)], root, env)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return seconds


NOTHING = {"containers": [], "networks": [], "volumes": [], "reapers": []}


def test_the_example_suite_runs_on_the_remote_engine_and_nothing_of_it_on_the_local_one(
    second_engine: SecondEngine, tmp_path: Path
) -> None:
    root = copy_example(SHORTENER, tmp_path / "shortener")
    project = f"remote-{uuid.uuid4().hex[:8]}"
    env = _remote_env(second_engine, tmp_path / "compose", INTEGRATION_PROJECT=project)
    local_events, remote_events = (
        Events(None, tmp_path / "local.events"),
        Events(ENGINE, tmp_path / "remote.events"),
    )

    build_seconds = _build(root, env)
    # Built there, from the local files: the remote engine has the images, labelled with this copy.
    remote_images = docker("images", "-q", "--filter", f"label={LABEL_ROOT}={root.resolve()}", host=ENGINE)
    assert len(remote_images.split()) == 2, remote_images

    suite, suite_seconds = _run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--integration", *SUITE_OPTIONS], root, env
    )
    output = suite.stdout + suite.stderr
    phases = [
        line
        for line in output.splitlines()
        if re.match(r"(freshness check|stack up|tests|stack down) ", line)
    ]
    print(
        f"\nremote engine: image load {second_engine.load_seconds:.1f}s, build {build_seconds:.1f}s, "
        f"suite {suite_seconds:.1f}s ({'; '.join(' '.join(p.split()) for p in phases)}): "
        f"{output.strip().splitlines()[-1]}"
    )
    assert suite.returncode == 0, output[-5000:]
    passed = re.search(r"(\d+) passed", output)
    assert passed and int(passed.group(1)) > 0 and " failed" not in output, output[-3000:]
    # The harness reached the services at the engine's address, where the ports were published.
    assert f"http://{second_engine.address}:" in output, output[-3000:]

    # Nothing of the run on the local engine: no event that names its project or its copy (not even a
    # container created and removed again, a network, a reaper), no image of the copy, nothing left.
    marks = (project, str(root.resolve()))
    assert local_events.of(*marks) == []
    assert docker("images", "-q", "--filter", f"label={LABEL_ROOT}={root.resolve()}").strip() == ""
    assert _left(None, project) == NOTHING
    # All of it on the remote engine, which kept nothing of it after the teardown.
    there = remote_events.of(*marks)
    for what in ("container create", "container destroy", "network create", "network destroy"):
        assert any(event.startswith(what) for event in there), sorted({e.rsplit(" ", 1)[0] for e in there})
    assert any(event.startswith("container create integration-reaper-") for event in there), there[-40:]
    assert _left(ENGINE, project) == NOTHING


def test_a_remote_engine_without_a_bind_address_is_refused_and_0_0_0_0_is_reached_at_its_host(
    second_engine: SecondEngine, tmp_path: Path
) -> None:
    root = copy_example(SHORTENER, tmp_path / "shortener")
    project = f"remote-{uuid.uuid4().hex[:8]}"
    env = _remote_env(second_engine, tmp_path / "compose", INTEGRATION_PROJECT=project)
    _build(root, env)
    del env["INTEGRATION_BIND_ADDRESS"]
    result, _ = _run([sys.executable, "-m", "integration", "up", "--root", str(root)], root, env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "export INTEGRATION_BIND_ADDRESS=10.213.0.2" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and f"remote ({ENGINE}" in result.stderr, result.stderr
    assert _left(ENGINE, project) == NOTHING

    # 0.0.0.0: every address of the engine's host; the harness reaches it at DOCKER_HOST's host. The
    # copy's config gives `up` the suite's generous start deadline (the copy is the test's own).
    (root / "integration.toml").write_text(f"health_timeout = {SUITE_OPTIONS[1]}\n")
    env["INTEGRATION_BIND_ADDRESS"] = "0.0.0.0"
    up, _ = _run([sys.executable, "-m", "integration", "up", "--root", str(root)], root, env)
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        assert f"links: http://{ADDRESS}:" in up.stdout + up.stderr, up.stdout + up.stderr
        published = docker(
            "ps", "--filter", f"label={PROJECT_LABEL}={project}", "--format", "{{.Ports}}", host=ENGINE
        )
        bindings = re.findall(r"([\d.:\[\]]+):\d+->", published)
        assert bindings and set(bindings) == {"0.0.0.0"}, published
    finally:
        down, _ = _run([sys.executable, "-m", "integration", "down", "--root", str(root)], root, env)
        assert down.returncode == 0, down.stdout[-2000:] + down.stderr[-2000:]
    assert _left(ENGINE, project) == NOTHING


def test_a_docker_context_names_the_remote_engine_for_the_toolkit_and_the_doctor(
    second_engine: SecondEngine, tmp_path: Path
) -> None:
    config = tmp_path / "docker-config"
    config.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "DOCKER_CONTEXT")}
    env["DOCKER_CONFIG"] = str(config)  # a context store of the test's own: the user's stays as it is
    created = subprocess.run(
        ["docker", "context", "create", "itest-remote", "--docker", f"host={ENGINE}"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    by_variable = resolve_endpoint({**env, "DOCKER_CONTEXT": "itest-remote"})
    assert (by_variable.url, by_variable.context, by_variable.local) == (ENGINE, "itest-remote", False)
    assert resolve_endpoint(env).url == "unix:///var/run/docker.sock"

    # A real run through $DOCKER_CONTEXT: the doctor's live checks ask the second engine.
    root = copy_example(SHORTENER, tmp_path / "shortener")
    doctor_env = {
        k: v for k, v in env.items() if not k.startswith("INTEGRATION_") or k == "INTEGRATION_OFFLINE"
    } | {
        "INTEGRATION_BIND_ADDRESS": ADDRESS,
        "INTEGRATION_COMPOSE_DIR": str(tmp_path / "compose"),
        "DOCKER_CONTEXT": "itest-remote",
    }
    doctor, _ = _run([sys.executable, "-m", "integration", "doctor", "--root", str(root)], root, doctor_env)
    report = doctor.stdout + doctor.stderr
    remote_version = docker("version", "--format", "{{.Server.Version}}", host=ENGINE).strip()
    assert f"the engine: Docker {remote_version}" in report, report
    assert f"remote, at {ENGINE} (context itest-remote, from $DOCKER_CONTEXT)" in report, report
    assert f"ports published on {ADDRESS}, reached at {ADDRESS}" in report, report

    # `docker context use` names it for the toolkit as for the CLI; DOCKER_HOST wins over a context.
    used = subprocess.run(
        ["docker", "context", "use", "itest-remote"], env=env, capture_output=True, text=True
    )
    assert used.returncode == 0, used.stderr
    by_use = resolve_endpoint(env)
    assert (by_use.url, by_use.source, by_use.context) == (ENGINE, "docker context use", "itest-remote")
    assert resolve_endpoint({**env, "DOCKER_HOST": "unix:///var/run/docker.sock"}).local


def test_the_example_suite_runs_over_ssh(second_engine: SecondEngine, tmp_path: Path) -> None:
    if second_engine.ssh_host is None or second_engine.ssh_path is None:
        pytest.skip("openssh-server is not installed: scripts/second-engine.sh starts no SSH server")
    root = copy_example(SHORTENER, tmp_path / "shortener")
    project = f"remote-{uuid.uuid4().hex[:8]}"
    env = _remote_env(
        second_engine,
        tmp_path / "compose",
        INTEGRATION_PROJECT=project,
        DOCKER_HOST=second_engine.ssh_host,
        PATH=f"{second_engine.ssh_path}:{os.environ.get('PATH', '')}",
    )
    local_events, remote_events = (
        Events(None, tmp_path / "local.events"),
        Events(ENGINE, tmp_path / "remote.events"),
    )
    build_seconds = _build(root, env)
    suite, suite_seconds = _run(
        # The events tests only: they reach the services over HTTP, the databases and the broker; the
        # whole suite already ran on this engine over TCP, and over SSH the transport is what is new.
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--integration",
            *SUITE_OPTIONS,
            *SSH_TESTS,
        ],
        root,
        env,
    )
    output = suite.stdout + suite.stderr
    print(
        f"\nover SSH: build {build_seconds:.1f}s, suite {suite_seconds:.1f}s: "
        f"{output.strip().splitlines()[-1]}"
    )
    assert suite.returncode == 0, output[-5000:]
    assert re.search(r"(\d+) passed", output) and " failed" not in output, output[-3000:]
    assert f"http://{second_engine.address}:" in output, output[-3000:]
    marks = (project, str(root.resolve()))
    assert local_events.of(*marks) == []
    assert any(event.startswith("container create") for event in remote_events.of(*marks))
    assert _left(ENGINE, project) == NOTHING
