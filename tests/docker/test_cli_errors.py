"""Malformed inputs through the command line, end to end: one message, the right exit status, no leftovers.

Each case copies the `tiny` fixture system (tests/fixtures/systems/tiny: one stdlib service with a
database) into tmp_path, breaks one thing, and runs `python -m integration build|up|run --root <copy>` in a
subprocess, under its own compose project ($INTEGRATION_PROJECT). Every case must end with

- exactly one message on stderr, starting `error: `, with no traceback, that names the file (or the
  variable, or the command) and the field or the fix;
- exit status 2 for a mistake in the system's files or in the environment's engine (ConfigError,
  EngineError, StaleImageError), and 1 for a step that ran and failed: a failed `docker build`
  (BuildError) and a stack that did not come up (StackError, e.g. its host ports kept being taken);
- no container, network or volume of its compose project left behind.

Ports: two services on the same container port do not clash (each container has its own network
namespace; the example's two services both listen on 8000) and host ports are planned, never configured,
so the duplicate port here is `port:` given twice in one service; a taken host port is the race case at
the end (every plan's ports bound by another process right after planning).

The discovery errors are also covered at unit level (tests/unit/test_discovery.py); these go through the
command line, so they also check the exit status, the single message and the cleanup.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from compose_projects import leftovers, remove_project
from python_on_whales import docker
from python_on_whales.exceptions import DockerException

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "fixtures" / "systems" / "tiny"
TIMEOUT = 180


def token() -> str:
    return uuid.uuid4().hex[:8]


def copy_tiny(destination: Path) -> Path:
    shutil.copytree(TINY, destination, ignore=shutil.ignore_patterns("__pycache__", ".integration"))
    return destination


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the toolkit's own settings (a developer's may be set), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    env.update({"INTEGRATION_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **extra})
    return env


@dataclass
class Result:
    status: int
    stdout: str
    stderr: str

    @property
    def error(self) -> str:
        return self.stderr.strip()


def cli(*args: str, env: dict[str, str], timeout: float = TIMEOUT) -> Result:
    done = subprocess.run(
        [sys.executable, "-m", "integration", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=timeout,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def assert_one_message(result: Result, status: int, *needles: str) -> None:
    """One `error:` message on stderr, no traceback, the expected status, and every needle in it."""
    shown = f"status {result.status}\n--- stderr\n{result.stderr}\n--- stdout (tail)\n{result.stdout[-2000:]}"
    assert "Traceback" not in result.stderr, shown
    assert "Traceback" not in result.stdout, shown
    assert result.status == status, shown
    assert result.error.startswith("error: "), shown
    assert [line.startswith("error: ") for line in result.error.splitlines()].count(True) == 1, shown
    for needle in needles:
        assert re.search(needle, result.error), f"{needle!r} not in the message\n{shown}"


# --- editing a copy ---------------------------------------------------------------------------------------


def services_yml(root: Path) -> Path:
    return root / "architecture" / "services.yml"


def set_yaml(root: Path, change: Callable[[dict], None]) -> None:
    path = services_yml(root)
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def echo(change: Callable[[dict], None]) -> Callable[[Path], None]:
    """A change of the `echo` service's settings."""
    return lambda root: set_yaml(root, lambda data: change(data["services"]["echo"]))


def write(relative: str, text: str | bytes) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)

    return apply


def replace_in(relative: str, old: str, new: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        path = root / relative
        content = path.read_text()
        assert old in content, f"{old!r} not in {path}"
        path.write_text(content.replace(old, new, 1))

    return apply


def remove(relative: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        path = root / relative
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()

    return apply


def add_service(name: str, settings: dict) -> Callable[[Path], None]:
    """A second service, a copy of echo's folder, with the given settings."""

    def apply(root: Path) -> None:
        shutil.copytree(root / "services" / "echo", root / "services" / name)
        contract = root / "architecture" / "contracts" / f"{name.replace('-', '_')}.py"
        contract.write_text((root / "architecture" / "contracts" / "echo.py").read_text())
        set_yaml(root, lambda data: data["services"].__setitem__(name, settings))

    return apply


SERVICES = "architecture/services.yml"
CONTRACT = "architecture/contracts/echo.py"
DOCKERFILE = "services/echo/Dockerfile"


@dataclass(frozen=True)
class Case:
    id: str
    change: Callable[[Path], None]
    needles: tuple[str, ...]  # regular expressions the message must hold (the file, the field, the fix)
    command: str = "build"
    status: int = 2
    env: dict[str, str] = field(default_factory=dict)


CASES = [
    # services.yml: syntax
    Case("no-services-yml", remove(SERVICES), (r"services\.yml: file not found",)),
    Case(
        "yaml-syntax",
        write(SERVICES, "version: 1\nsystem: tiny\nservices:\n  echo: {port: 8080\n"),
        (r"services\.yml: not valid YAML at line \d+, column \d+", "fix the syntax"),
    ),
    Case(
        "yaml-tab-indent",
        write(SERVICES, "version: 1\nsystem: tiny\nservices:\n\techo:\n\t\tport: 8080\n"),
        (r"services\.yml: not valid YAML",),
    ),
    Case("not-utf8", write(SERVICES, b"version: 1\nsystem: \xff\xfe\n"), (r"services\.yml: not UTF-8",)),
    Case(
        "duplicate-key",
        write(SERVICES, "version: 1\nsystem: tiny\nservices:\n  echo:\n    port: 8080\n    port: 8081\n"),
        (r"services\.yml: services\.echo\.port: key 'port' appears twice \(line 6\)",),
    ),
    # services.yml: schema
    Case("top-level-list", write(SERVICES, "- echo\n"), (r"services\.yml", "mapping")),
    Case(
        "misspelt-top-key",
        lambda root: set_yaml(root, lambda d: d.__setitem__("servics", d.pop("services"))),
        (r"services\.yml", r"did you mean 'services'\?"),
    ),
    Case(
        "bad-system-name",
        lambda root: set_yaml(root, lambda d: d.__setitem__("system", "Tiny System")),
        (r"services\.yml: system",),
    ),
    Case(
        "no-services",
        lambda root: set_yaml(root, lambda d: d.__setitem__("services", {})),
        (r"services\.yml: services: must name at least one service",),
    ),
    Case("missing-port", echo(lambda s: s.pop("port")), (r"services\.yml: services\.echo", "port")),
    Case(
        "port-not-a-number",
        echo(lambda s: s.__setitem__("port", "http")),
        (r"services\.yml: services\.echo\.port: must be an integer port number",),
    ),
    Case(
        "port-out-of-range",
        echo(lambda s: s.__setitem__("port", 70000)),
        (r"services\.yml: services\.echo\.port: 70000 is out of range",),
    ),
    Case(
        # A near-miss key is a warning (services.yml is read by other tools too); strict makes it an error.
        "misspelt-service-key-strict",
        lambda root: (
            echo(lambda s: s.__setitem__("databse", s.pop("database")))(root),
            write("integration.toml", "strict = true\n")(root),
        ),
        (r"services\.yml: services\.echo\.databse: unknown key 'databse' looks like 'database'",),
    ),
    Case(
        "health-not-a-path",
        echo(lambda s: s.__setitem__("health", "health")),
        (r"services\.yml: services\.echo\.health: 'health' is not a URL path",),
    ),
    Case(
        "bad-database-name",
        echo(lambda s: s.__setitem__("database", "Echo-DB")),
        (r"services\.yml: services\.echo\.database:",),
    ),
    Case(
        "bad-image-tag",
        echo(lambda s: s.__setitem__("image", "Echo:Test")),
        (r"services\.yml: services\.echo\.image: 'Echo:Test' is not a Docker image tag",),
    ),
    Case(
        "environment-not-a-string",
        echo(lambda s: s.__setitem__("environment", {"WORKERS": True})),
        (r"services\.yml: services\.echo\.environment\.WORKERS: must be a string", "quote it"),
    ),
    Case(
        "reserved-exchange",
        lambda root: set_yaml(root, lambda d: d.__setitem__("exchange", "amq.topic")),
        (r"services\.yml: exchange: 'amq\.topic'",),
    ),
    # Dockerfile and build folder paths
    Case(
        "dockerfile-missing",
        echo(lambda s: s.__setitem__("dockerfile", "services/echo/Dockerfile.prod")),
        (r"services\.yml: services\.echo\.dockerfile: Dockerfile .*Dockerfile\.prod does not exist",),
    ),
    Case(
        "dockerfile-is-a-folder",
        echo(lambda s: s.__setitem__("dockerfile", "services/echo")),
        (r"services\.yml: services\.echo\.dockerfile: .* is not a file",),
    ),
    Case(
        "dockerfile-outside-root",
        echo(lambda s: s.__setitem__("dockerfile", "../elsewhere/Dockerfile")),
        (r"services\.yml: services\.echo\.dockerfile",),
    ),
    Case(
        "build-folder-missing",
        remove("services/echo"),
        (r"services\.yml: services\.echo\.build: build folder .*services/echo does not exist",),
    ),
    # Dockerfiles: read before any build (one reader for the hash, the build and the doctor)
    Case(
        "dockerfile-unknown-instruction",
        lambda root: (root / DOCKERFILE).write_text((root / DOCKERFILE).read_text() + "RUNN true\n"),
        (r"Dockerfile: line \d+: unknown instruction 'RUNN'",),
    ),
    # contracts
    Case(
        "contract-missing",
        lambda root: (echo(lambda s: s.__setitem__("contract", "echo"))(root), remove(CONTRACT)(root)),
        (
            r"services\.yml: services\.echo\.contract: ",
            r"contract module architecture\.contracts\.echo not found",
        ),
    ),
    Case(
        "contract-syntax-error",
        replace_in(CONTRACT, "class Echo(BaseModel):", "class Echo(BaseModel)"),
        (
            r"contracts/echo\.py: architecture\.contracts\.echo: ",
            r"importing the contract failed at .*echo\.py:8",
        ),
    ),
    Case(
        "contract-import-error",
        replace_in(CONTRACT, "from pydantic import BaseModel", "from pydantic import BaseModel, Modle"),
        (r"contracts/echo\.py: .*ImportError: cannot import name 'Modle'",),
    ),
    Case(
        "contract-raises",
        write(CONTRACT, "import os\n\nPORT = int(os.environ['ECHO_PORT'])\n"),
        (r"contracts/echo\.py: .*KeyError: 'ECHO_PORT'",),
    ),
    Case(
        "consumes-an-unknown-event",
        replace_in(
            CONTRACT,
            "EVENTS_CONSUMED: list[type[BaseModel]] = []",
            "class Pinged(BaseModel):\n    at: str\n\n\nEVENTS_CONSUMED = [Pinged]",
        ),
        (
            r"contracts/echo\.py: architecture\.contracts\.echo\.EVENTS_CONSUMED: ",
            r"consumes event 'Pinged' but no service publishes it",
        ),
    ),
    Case(
        "publishes-a-name-not-a-class",
        replace_in(CONTRACT, "EVENTS_PUBLISHED: list[type[BaseModel]] = []", 'EVENTS_PUBLISHED = ["Pinged"]'),
        (
            r"contracts/echo\.py: architecture\.contracts\.echo\.EVENTS_PUBLISHED\[0\]: ",
            "'Pinged' is not a pydantic",
        ),
    ),
    # clashes between services
    Case(
        "duplicate-database",
        add_service("mirror", {"port": 8080, "database": "echo", "image": "itest-tiny-mirror:test"}),
        (r"services\.yml: services\.mirror\.database: database 'echo' is also used by service 'echo'",),
    ),
    Case(
        "duplicate-image",
        add_service("mirror", {"port": 8081, "image": "itest-tiny-echo:test"}),
        (r"services\.yml: services\.mirror\.image: image tag 'itest-tiny-echo:test' is also the image of",),
    ),
    Case(
        "service-named-like-a-database-container",
        add_service("echo-db", {"port": 8081, "image": "itest-tiny-mirror:test"}),
        (r"services\.yml: services\.echo-db: .*clashes with the database container of 'echo'",),
    ),
    Case(
        "service-named-broker",
        add_service("broker", {"port": 8081, "image": "itest-tiny-broker:test"}),
        (r"services\.yml: services\.broker: service name 'broker' clashes with the message broker",),
    ),
]


Outcome = tuple[Result, list[str]] | BaseException


def run_case(case: Case, folder: Path) -> Outcome:
    """Copy tiny, break it, run the command: the result and what the project left behind (or what went
    wrong on the way, for the case's own test to raise)."""
    project = f"itest-cli-{token()}"
    left = ["(not looked at yet)"]
    try:
        root = copy_tiny(folder / "tiny")
        case.change(root)
        env = clean_env(INTEGRATION_PROJECT=project, **case.env)
        result = cli(case.command, "--root", str(root), env=env)
        left = leftovers(project)
        return result, left
    except Exception as exc:
        return exc
    finally:
        if left:
            remove_project(project)


@pytest.fixture(scope="module")
def case_outcomes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Outcome]:
    """The outcome of every selected case, run four at a time: each is a second of Python start-up and
    of reading files, and none touches another's files or project."""
    selected = {
        item.callspec.params["case"].id
        for item in request.session.items
        if getattr(item, "originalname", "") == "test_a_malformed_system_is_one_message_naming_file_and_field"
    }
    cases = [case for case in CASES if case.id in selected]
    # The folders are made here, in one thread: pytest's tmp_path_factory creates its base folder lazily
    # and is not thread-safe, so concurrent first calls may each make a base of their own.
    folders = [tmp_path_factory.mktemp(case.id) for case in cases]
    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = pool.map(run_case, cases, folders)
        return {case.id: outcome for case, outcome in zip(cases, outcomes, strict=True)}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_malformed_system_is_one_message_naming_file_and_field(
    case: Case, case_outcomes: dict[str, Outcome]
) -> None:
    outcome = case_outcomes[case.id]
    if isinstance(outcome, BaseException):
        raise outcome
    result, left = outcome
    assert_one_message(result, case.status, *case.needles)
    assert left == []


# --- the engine, the build and the stack: a copy of tiny whose image is built once for the module ---------

# A use-case test for `run`: it needs the stack (the plugin's session fixture), then reads one URL.
USE_CASE_TEST = """\
import httpx


def test_echo_answers_with_the_path(docker_compose_services):
    url = docker_compose_services.services["echo"].url
    assert httpx.get(f"{url}/ping", timeout=5).json() == {"path": "/ping"}
"""

# `docker` as a wrapper in front of the real one: `docker compose ... version` answers as below, the rest
# goes through unchanged.
FAKE_DOCKER = """\
#!/bin/sh
if [ "$1" = compose ]; then
    for last in "$@"; do :; done
    if [ "$last" = version ]; then
{answer}
    fi
fi
exec {real} "$@"
"""
OLD_COMPOSE = '        echo "Docker Compose version v2.10.0"\n        exit 0'
NO_COMPOSE = "        echo \"docker: 'compose' is not a docker command.\" >&2\n        exit 1"


@dataclass(frozen=True)
class Built:
    root: Path  # a copy of tiny with a unique image tag, built, with a use_case_tests folder
    image: str


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    image = f"itest-tiny-echo-{token()}:test"
    root = copy_tiny(tmp_path_factory.mktemp("built") / "tiny")
    set_yaml(root, lambda data: data["services"]["echo"].__setitem__("image", image))
    write("use_case_tests/test_echo.py", USE_CASE_TEST)(root)
    try:
        result = cli("build", "--root", str(root), env=clean_env())
        assert result.status == 0, result.stderr + result.stdout
        yield Built(root, image)
    finally:
        with contextlib.suppress(DockerException):
            docker.image.remove(image, force=True)


def copy_built(built: Built, destination: Path) -> Path:
    shutil.copytree(built.root, destination, ignore=shutil.ignore_patterns("__pycache__", ".integration"))
    return destination


def fake_docker(folder: Path, answer: str) -> str:
    """A PATH whose `docker` answers `compose version` with `answer`; returns the new PATH."""
    real = shutil.which("docker")
    assert real is not None
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "docker"
    script.write_text(FAKE_DOCKER.format(answer=answer, real=real))
    script.chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


UNREACHABLE = "unix:///nonexistent.sock"
ENGINE_DOWN = (
    r"the Docker engine does not answer \(Cannot connect to the Docker daemon at " + UNREACHABLE,
    "start it",
)


@pytest.mark.parametrize("command", ["build", "up", "run", "down"])
def test_an_unreachable_engine_is_one_message_for_every_command(
    command: str, built: Built, tmp_path: Path
) -> None:
    root = copy_built(built, tmp_path / "tiny")
    project = f"itest-cli-{token()}"
    result = cli(
        command, "--root", str(root), env=clean_env(INTEGRATION_PROJECT=project, DOCKER_HOST=UNREACHABLE)
    )
    assert_one_message(result, 2, *ENGINE_DOWN)
    assert leftovers(project) == []


@pytest.mark.parametrize("command", ["build", "up"])
def test_no_docker_command_on_path_is_one_message(command: str, built: Built, tmp_path: Path) -> None:
    root = copy_built(built, tmp_path / "tiny")
    empty = tmp_path / "bin"
    empty.mkdir()
    project = f"itest-cli-{token()}"
    result = cli(command, "--root", str(root), env=clean_env(INTEGRATION_PROJECT=project, PATH=str(empty)))
    assert_one_message(result, 2, r"the docker command is not on PATH", "install")
    assert leftovers(project) == []


@pytest.mark.parametrize("command", ["up", "run"])
def test_a_compose_too_old_is_one_message_and_nothing_starts(
    command: str, built: Built, tmp_path: Path
) -> None:
    root = copy_built(built, tmp_path / "tiny")
    project = f"itest-cli-{token()}"
    path = fake_docker(tmp_path / "bin", OLD_COMPOSE)
    try:
        result = cli(command, "--root", str(root), env=clean_env(INTEGRATION_PROJECT=project, PATH=path))
        assert_one_message(result, 2, r"Compose v2\.10\.0 is too old; 2\.20 or newer is needed", "Upgrade")
        assert leftovers(project) == []
    finally:
        remove_project(project)


def test_no_compose_plugin_is_one_message(built: Built, tmp_path: Path) -> None:
    root = copy_built(built, tmp_path / "tiny")
    project = f"itest-cli-{token()}"
    path = fake_docker(tmp_path / "bin", NO_COMPOSE)
    try:
        result = cli("up", "--root", str(root), env=clean_env(INTEGRATION_PROJECT=project, PATH=path))
        assert_one_message(
            result, 2, r"`docker compose` \(Compose v2\) does not answer", "install the compose plugin"
        )
        assert leftovers(project) == []
    finally:
        remove_project(project)


def test_a_malformed_base_image_variable_is_named(built: Built, tmp_path: Path) -> None:
    root = copy_built(built, tmp_path / "tiny")
    result = cli("build", "--root", str(root), env=clean_env(INTEGRATION_POSTGRES_IMAGE="Postgres 15"))
    assert_one_message(result, 2, r"\$INTEGRATION_POSTGRES_IMAGE: 'Postgres 15' is not an image reference")


@pytest.mark.parametrize(
    ("command", "value", "needle"),
    [
        ("up", "70000", r"70000 is out of range: .* choose 1024\.\.64634"),
        ("run", "next to 47100", r"must be a port number, not 'next to 47100'"),
    ],
)
def test_a_malformed_port_base_variable_is_named(
    command: str, value: str, needle: str, built: Built, tmp_path: Path
) -> None:
    root = copy_built(built, tmp_path / "tiny")
    project = f"itest-cli-{token()}"
    try:
        env = clean_env(INTEGRATION_PROJECT=project, INTEGRATION_PORT_BASE=value)
        result = cli(command, "--root", str(root), env=env)
        assert_one_message(result, 2, r"^error: \$INTEGRATION_PORT_BASE: ", needle)
        assert leftovers(project) == []
    finally:
        remove_project(project)


def test_run_without_a_use_case_tests_folder_is_named(built: Built, tmp_path: Path) -> None:
    root = copy_built(built, tmp_path / "tiny")
    remove("use_case_tests")(root)
    result = cli("run", "--root", str(root), env=clean_env())
    assert_one_message(result, 2, r"tiny/use_case_tests: no use-case tests folder")


def test_up_with_an_image_never_built_names_it_and_the_fix(built: Built, tmp_path: Path) -> None:
    root = copy_built(built, tmp_path / "tiny")
    never = f"itest-tiny-never-{token()}:test"
    set_yaml(root, lambda data: data["services"]["echo"].__setitem__("image", never))
    project = f"itest-cli-{token()}"
    try:
        result = cli("up", "--root", str(root), env=clean_env(INTEGRATION_PROJECT=project))
        assert_one_message(
            result, 2, re.escape(never) + r" \(service echo\).*image not built yet", "Rebuild first"
        )
        assert leftovers(project) == []
    finally:
        remove_project(project)


def test_up_with_a_stale_image_names_the_changed_file(built: Built, tmp_path: Path) -> None:
    root = copy_built(built, tmp_path / "tiny")
    replace_in("services/echo/server.py", '{"path": self.path}', '{"path": self.path, "v": 2}')(root)
    project = f"itest-cli-{token()}"
    try:
        result = cli("up", "--root", str(root), env=clean_env(INTEGRATION_PROJECT=project))
        assert_one_message(
            result, 2, r"refusing to test stale images", r"services/echo/server\.py", "Rebuild first"
        )
        assert leftovers(project) == []
    finally:
        remove_project(project)


BUILD_FAILURES = [
    (
        "a-step-fails",
        'RUN python -c "raise SystemExit(3)"',
        r"failed running .*raise SystemExit\(3\).*: exit code: 3",
    ),
    (
        "copy-of-a-missing-file",
        "COPY services/echo/missing.py /srv/",
        r"services/echo/missing\.py.* not found",
    ),
]


@pytest.mark.parametrize(
    ("line", "needle"), [c[1:] for c in BUILD_FAILURES], ids=[c[0] for c in BUILD_FAILURES]
)
def test_a_failing_build_is_status_1_naming_image_dockerfile_and_step(
    line: str, needle: str, tmp_path: Path
) -> None:
    """Status 1, not 2: the inputs were readable and `docker build` ran; the build log says what failed."""
    root = copy_tiny(tmp_path / "tiny")
    image = f"itest-tiny-broken-{token()}:test"
    echo(lambda s: s.__setitem__("image", image))(root)
    dockerfile = root / DOCKERFILE
    dockerfile.write_text(dockerfile.read_text() + line + "\n")
    try:
        result = cli("build", "--root", str(root), env=clean_env())
        assert_one_message(
            result,
            1,
            rf"building {re.escape(image)} from services/echo/Dockerfile \(context {root}\) failed",
            needle,
        )
        assert not docker.image.exists(image)
    finally:
        with contextlib.suppress(DockerException):
            docker.image.remove(image, force=True)


class PortThief:
    """Binds every host port of a compose file the moment the file appears or changes: each port plan
    loses the race between planning and `docker compose up` binding, as when another process is quicker."""

    def __init__(self, compose_file: Path) -> None:
        self.compose_file = compose_file
        self.sockets: dict[int, socket.socket] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        seen = None
        while not self.stop.is_set():
            try:
                text = self.compose_file.read_text()
            except OSError:
                text = None
            if text and text != seen:
                seen = text
                for port in map(int, re.findall(r"127\.0\.0\.1:(\d+):\d+", text)):
                    if port in self.sockets:
                        continue
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    try:
                        sock.bind(("127.0.0.1", port))
                        sock.listen()
                        self.sockets[port] = sock
                    except OSError:
                        sock.close()
            time.sleep(0.005)

    def __enter__(self) -> PortThief:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        for sock in self.sockets.values():
            sock.close()


def test_ports_taken_after_every_plan_are_status_1_naming_port_holder_and_fix(
    built: Built, tmp_path: Path
) -> None:
    """Status 1 like any stack that did not come up: the input was fine, the machine was not."""
    root = copy_built(built, tmp_path / "tiny")
    project = f"itest-cli-{token()}"
    try:
        compose_dir = tmp_path / "compose"
        with PortThief(compose_dir / f"{project}.yml") as thief:
            env = clean_env(INTEGRATION_PROJECT=project, INTEGRATION_COMPOSE_DIR=str(compose_dir))
            result = cli("up", "--root", str(root), env=env)
        assert_one_message(
            result,
            1,
            r"host port 127\.0\.0\.1:\d+ \(now held by python \(pid " + str(os.getpid()) + r"\)",
            r"taken between planning and binding, 3 times in a row",
            "stop it and run again",
        )
        assert result.stdout.count("a planned host port was taken meanwhile") == 2
        assert len(thief.sockets) >= 3  # at least one port of each of the three plans
        assert leftovers(project) == []
    finally:
        remove_project(project)
