"""`python -m integration <command>`: the command line over discovery, images and the stack.

Every user mistake ends as one message on stderr and a non-zero exit status, never a traceback:

    0    done (for `run`: pytest's own status, 0 when every test passed)
    1    a step ran and failed: `docker build` (BuildError), a stack that did not come up (StackError)
    2    the system's files are malformed (ConfigError), an image is stale (StaleImageError), or the
         engine is missing, unreachable or too old (EngineError)
    130  interrupted (Ctrl-C, or SIGTERM), after the stack was torn down
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from python_on_whales import DockerClient
from python_on_whales.client_config import ClientNotFoundError
from python_on_whales.exceptions import DockerException

from . import settings
from .adopt import cmd_init
from .baseimages import build_all_standins, engine_check, locally_available, resolve_base_images
from .discovery import load_system
from .doctor import run_doctor
from .errors import ConfigError, EngineError, IntegrationError
from .images import build_images, require_fresh
from .model import SystemSpec
from .shard import parse_shard
from .stack import Stack, check_compose, default_port_base

BUNDLED_EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "shortener"


def resolve_root(explicit: str | None) -> Path:
    """--root, else $INTEGRATION_ROOT, else the system around the working folder, else the bundled example."""
    return settings.resolve_root(explicit, start=Path.cwd(), fallback=BUNDLED_EXAMPLE)


def _say(message: str) -> None:
    print(message, flush=True)


def _load(args: argparse.Namespace) -> SystemSpec:
    return _load_with_config(args)[0]


def _load_with_config(args: argparse.Namespace) -> tuple[SystemSpec, settings.SystemConfig]:
    """The system and the config it was read with (read once: the commands that open a stack or run
    the tests need both)."""
    root = resolve_root(args.root)
    config = settings.load_config(root)
    system = load_system(root, config=config)
    for warning in system.warnings:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    return system, config


def _engine(compose: bool = False) -> None:
    """The engine answers (and Compose is new enough), or one EngineError before any other docker call."""
    try:
        engine_check()
        if compose:
            check_compose(DockerClient())
    except ClientNotFoundError as exc:
        raise EngineError(
            "the docker command is not on PATH; install the Docker CLI and engine (on Debian: "
            "scripts/install-docker-engine.sh) or put the folder that holds `docker` on PATH"
        ) from exc


def cmd_images(args: argparse.Namespace) -> int:

    for outcome in build_all_standins():
        timing = f" in {outcome.seconds:.1f}s" if outcome.action == "built" else ""
        _say(f"{outcome.image}: {outcome.action}{timing}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:

    system = _load(args)
    _engine()
    _build(system, force=getattr(args, "force", False))
    return 0


def _build(system: SystemSpec, force: bool = False) -> None:
    started = time.monotonic()
    base, _ = resolve_base_images(system.base_images, report=_say)
    build_images(system, base, force=force, report=_say)
    _say(f"build step done in {time.monotonic() - started:.1f}s")


def cmd_check(args: argparse.Namespace) -> int:

    system = _load(args)
    _engine()
    ids = require_fresh(system, locally_available(system.base_images))
    for service, image_id in ids.items():
        _say(f"{service}: fresh ({image_id[:19]})")
    return 0


def cmd_compose(args: argparse.Namespace) -> int:

    system, config = _load_with_config(args)
    _engine()
    system = system.with_base_images(locally_available(system.base_images))
    stack = Stack.open(system, settings.run_settings(system.root, config=config), report=_say)
    _say(str(stack.write()))
    return 0


def cmd_up(args: argparse.Namespace) -> int:

    system, config = _load_with_config(args)
    _engine(compose=True)
    system = system.with_base_images(locally_available(system.base_images))
    ids = require_fresh(system)
    run = settings.run_settings(system.root, config=config, keep=True)
    stack = Stack.open(system, run, expected_images=ids, report=_say)
    with stack:
        assert stack.endpoints is not None
        for endpoint in stack.endpoints.services.values():
            _say(f"{endpoint.name}: {endpoint.url}  database: {endpoint.database_url}")
        if stack.endpoints.broker_management_url:
            _say(f"broker management: {stack.endpoints.broker_management_url}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:

    system, config = _load_with_config(args)
    _engine()
    Stack.open(system, settings.run_settings(system.root, config=config), report=_say).down()
    _say("down")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """The main job: build what is stale, then the use-case tests against the real stack."""
    system, config = _load_with_config(args)
    tests = system.root / config.tests
    if not tests.is_dir():
        raise ConfigError(
            tests,
            None,
            f"no use-case tests folder; `run` runs the pytest tests in <root>/{config.tests} (set `tests` "
            "in [tool.integration] to their folder)",
        )
    if args.shard is not None:
        parse_shard(args.shard)  # a bad --shard K/N: one message and exit status 2, before any build
    # Checked here, not first inside pytest: an old Compose or a malformed $INTEGRATION_PORT_BASE is then
    # one message and exit status 2.
    default_port_base()
    _engine(compose=True)
    _build(system)
    command = [sys.executable, "-m", "pytest", str(tests), config.mode_option, "-p", "no:cacheprovider"]
    if args.shard is not None:
        command += ["--shard", args.shard]
    # `run --root DIR -- -k visit`: argparse keeps the `--`, which would make pytest read `-k` as a path.
    pytest_args = list(args.pytest_args)
    command += pytest_args[1:] if pytest_args[:1] == ["--"] else pytest_args
    _say("$ " + " ".join(command))
    return _run_tests(command, system.root)


def _ignore_sigterm() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _run_tests(command: list[str], cwd: Path) -> int:
    """Run pytest in a child process and never cut its teardown short.

    Ctrl-C at a terminal (SIGINT to the foreground process group) reaches pytest as well as this process:
    pytest turns it into its KeyboardInterrupt and tears the stack down, and this process waits for that.
    SIGTERM (a cancelled job, `timeout`, `docker stop`), whether sent to this process or to the whole
    group, reaches pytest once, as SIGINT from here: pytest starts with SIGTERM ignored, because its
    default action would end it at once, leaving the stack running. (subprocess.call would also kill
    pytest 0.25 s after a KeyboardInterrupt.)
    """
    interrupted = False
    child: subprocess.Popen[bytes] | None = None

    def on_sigint(signum: int, frame: object) -> None:
        nonlocal interrupted
        interrupted = True  # the child got it too: wait for its teardown

    def on_sigterm(signum: int, frame: object) -> None:
        nonlocal interrupted
        interrupted = True
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGINT)

    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, on_sigint),
        signal.SIGTERM: signal.signal(signal.SIGTERM, on_sigterm),
    }
    try:
        # preexec_fn is safe here: the build threads have ended, nothing else runs beside this one.
        child = subprocess.Popen(command, cwd=cwd, preexec_fn=_ignore_sigterm)
        status = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if interrupted:
        raise KeyboardInterrupt
    return status


def cmd_doctor(args: argparse.Namespace) -> int:

    return run_doctor(resolve_root(args.root), live=not args.static, report=_say)


COMMANDS = {
    "images": (cmd_images, "build (or reuse) the offline stand-ins of postgres, rabbitmq and python"),
    "build": (cmd_build, "build every stale service image; skip fresh ones"),
    "check": (cmd_check, "check that every service image is fresh; build nothing"),
    "compose": (cmd_compose, "write the generated compose file and print its path"),
    "up": (cmd_up, "start the stack and leave it running (URLs printed)"),
    "down": (cmd_down, "remove this checkout's stack: containers, network, volumes"),
    "run": (cmd_run, "build, then run the use-case tests against the real stack"),
    "doctor": (cmd_doctor, "look for the known causes of failed integration runs"),
    "init": (cmd_init, "inspect the repository and write its adoption (config and real harness)"),
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m integration", description=__doc__)
    top.add_argument("-v", "--verbose", action="store_true", help="log what happens underneath")
    sub = top.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.add_argument(
            "--root",
            help=f"the system's root folder (default: ${settings.ROOT_ENV}, the working "
            "folder's system, or the bundled example)",
        )
        if name == "build":
            command.add_argument("--force", action="store_true", help="rebuild even fresh images")
        if name == "init":
            command.add_argument(
                "--force", action="store_true", help="replace the existing config and real_harness.py"
            )
        if name == "run":
            command.add_argument(
                "--shard",
                metavar="K/N",
                help="run only shard K of N of the tests, on a stack of its own (1 <= K <= N <= 64)",
            )
            command.add_argument(
                "pytest_args", nargs=argparse.REMAINDER, help="given to pytest, after -- (e.g. -- -k visit)"
            )
        if name == "doctor":
            command.add_argument("--static", action="store_true", help="only the checks that need no engine")
    return top


def _terminate_as_interrupt(signum: int, frame: object) -> None:
    # SIGTERM (a CI job cancelled) takes the same path as Ctrl-C, so that every `finally` tears down.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    handler, _ = COMMANDS[args.command]
    try:
        return handler(args)
    except IntegrationError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_status
    except DockerException as exc:
        # A docker call failed in a way no step turned into its own error: the command and what it said.
        said = (exc.stderr or exc.stdout or "").strip().splitlines()
        command = " ".join(str(part) for part in exc.docker_command)
        print(
            f"error: `{command}` failed (exit {exc.return_code}): {said[-1] if said else 'no output'}",
            file=sys.stderr,
            flush=True,
        )
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        return 130
