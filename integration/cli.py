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
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

from . import settings
from .errors import ConfigError, EngineError, IntegrationError

if TYPE_CHECKING:
    from python_on_whales.exceptions import DockerException

    from .model import BaseImages, SystemSpec

# Each command imports what it uses, in its own body: a command's whole process is what a person waits
# for, and python-on-whales, SQLAlchemy, the doctor and `init` cost tenths of a second each to import
# (`check`, the freshness check alone, needs none of the stack's or the doctor's modules).

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
    from .discovery import load_system

    root = resolve_root(args.root)
    config = settings.load_config(root)
    system = load_system(root, config=config)
    for warning in system.warnings:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    return system, config


def _engine(compose: bool = False) -> None:
    """The engine answers (and Compose is new enough), or one EngineError before any other docker call."""
    from python_on_whales import DockerClient
    from python_on_whales.client_config import ClientNotFoundError

    from .baseimages import engine_check

    try:
        engine_check()
        if compose:
            from .stack import check_compose

            check_compose(DockerClient())
    except ClientNotFoundError as exc:
        raise EngineError(
            "the docker command is not on PATH; install the Docker CLI and engine (on Debian: "
            "scripts/install-docker-engine.sh) or put the folder that holds `docker` on PATH"
        ) from exc


def cmd_images(args: argparse.Namespace) -> int:
    from .baseimages import build_all_standins

    for outcome in build_all_standins():
        timing = f" in {outcome.seconds:.1f}s" if outcome.action == "built" else ""
        _say(f"{outcome.image}: {outcome.action}{timing}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:

    system = _load(args)
    _engine()
    _build(system, force=getattr(args, "force", False))
    return 0


def _build(system: SystemSpec, force: bool = False) -> tuple[BaseImages, dict[str, str]]:
    """Build what is stale; the base images used and every service's image id, fresh now."""
    from .baseimages import resolve_base_images
    from .images import build_images

    started = time.monotonic()
    base, _ = resolve_base_images(system.base_images, report=_say)
    states = build_images(system, base, force=force, report=_say)
    _say(f"build step done in {time.monotonic() - started:.1f}s")
    return base, {state.service: state.image_id or "" for state in states}


def cmd_check(args: argparse.Namespace) -> int:
    from .baseimages import locally_available
    from .images import catalog_for_check, require_fresh

    system = _load(args)
    _engine()
    # One snapshot of the engine's images answers both the choice of base images and the freshness.
    catalog = catalog_for_check(system)
    ids = require_fresh(system, locally_available(system.base_images, catalog=catalog), catalog=catalog)
    for service, image_id in ids.items():
        _say(f"{service}: fresh ({image_id[:19]})")
    return 0


def cmd_compose(args: argparse.Namespace) -> int:
    from .baseimages import locally_available
    from .stack import Stack

    system, config = _load_with_config(args)
    _engine()
    system = system.with_base_images(locally_available(system.base_images))
    stack = Stack.open(system, settings.run_settings(system.root, config=config), report=_say)
    _say(str(stack.write()))
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from .baseimages import locally_available
    from .images import require_fresh
    from .stack import Stack

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
    from .stack import Stack

    system, config = _load_with_config(args)
    _engine()
    Stack.open(system, settings.run_settings(system.root, config=config), report=_say).down()
    _say("down")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """The main job: build what is stale, then the use-case tests against the real stack, in this process.

    pytest runs here (`pytest.main`), not in a second Python: no second interpreter start and imports,
    and the plugin takes the system and the image ids this build step just verified instead of
    discovering and checking again (`plugin.RunHandoff`). Ctrl-C and SIGTERM reach the tests as
    KeyboardInterrupt (see `main`): pytest tears the stack down, then the run ends with status 130.
    """
    from .shard import parse_shard
    from .stack import default_port_base

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
    base, image_ids = _build(system)
    arguments = [str(tests), config.mode_option, "-p", "no:cacheprovider"]
    if args.shard is not None:
        arguments += ["--shard", args.shard]
    # `run --root DIR -- -k visit`: argparse keeps the `--`, which would make pytest read `-k` as a path.
    pytest_args = list(args.pytest_args)
    arguments += pytest_args[1:] if pytest_args[:1] == ["--"] else pytest_args
    _say("$ pytest " + " ".join(arguments))
    # The toolkit is imported already (this command is it), so pytest cannot rewrite the asserts of its
    # plugin module, and would say so; it has none a test relies on.
    arguments = ["-W", f"ignore:{_NOT_REWRITTEN}:pytest.PytestAssertRewriteWarning", *arguments]
    return _run_tests(arguments, system.with_base_images(base), image_ids)


_NOT_REWRITTEN = "Module already imported so cannot be rewritten; integration"


def _run_tests(arguments: list[str], system: SystemSpec, image_ids: dict[str, str]) -> int:
    """pytest's exit status for `arguments`, run in this process from the system's root (as a person
    runs it there; relative paths in `arguments` are taken from the root)."""
    import pytest

    from .plugin import RunHandoff

    interrupted = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal interrupted
        interrupted = True
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
    cwd = Path.cwd()
    os.chdir(system.root)
    try:
        status = int(pytest.main(arguments, plugins=[RunHandoff(system, image_ids)]))
    finally:
        os.chdir(cwd)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if interrupted:
        # pytest turned the signal into an interrupted session and tore the stack down: say so.
        raise KeyboardInterrupt
    return status


def cmd_clean(args: argparse.Namespace) -> int:
    """Remove the toolkit's service images of checkouts that no longer exist; never another's."""
    from .images import remove_orphaned_images

    _engine()
    orphans = remove_orphaned_images(system=args.system)
    for orphan in orphans:
        shown = ", ".join(orphan.tags) or orphan.image_id[:19]
        if orphan.removed:
            _say(f"{shown}: removed (its checkout {orphan.root} is gone)")
        else:
            _say(f"{shown}: kept, {orphan.reason}")
    _say(f"{sum(o.removed for o in orphans)} image(s) of removed checkouts removed")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import run_doctor

    return run_doctor(resolve_root(args.root), live=not args.static, report=_say)


def cmd_init(args: argparse.Namespace) -> int:
    from .adopt import cmd_init as init

    return init(args)


COMMANDS = {
    "images": (cmd_images, "build (or reuse) the offline stand-ins of postgres, rabbitmq and python"),
    "build": (cmd_build, "build every stale service image; skip fresh ones"),
    "check": (cmd_check, "check that every service image is fresh; build nothing"),
    "compose": (cmd_compose, "write the generated compose file and print its path"),
    "up": (cmd_up, "start the stack and leave it running (URLs printed)"),
    "down": (cmd_down, "remove this checkout's stack: containers, network, volumes"),
    "run": (cmd_run, "build, then run the use-case tests against the real stack"),
    "doctor": (cmd_doctor, "look for the known causes of failed integration runs"),
    "clean": (cmd_clean, "remove the toolkit's service images of checkouts that no longer exist"),
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
        if name == "clean":
            command.add_argument("--system", help="only the images of the system of this name")
    return top


def _terminate_as_interrupt(signum: int, frame: object) -> None:
    # SIGTERM (a CI job cancelled) takes the same path as Ctrl-C, so that every `finally` tears down.
    raise KeyboardInterrupt


def _as_docker_exception(exc: BaseException) -> DockerException | None:
    """`exc` when it is python-on-whales' DockerException, else None. Without importing python-on-whales:
    a command that never imported it cannot have raised one."""
    module = sys.modules.get("python_on_whales.exceptions")
    if module is not None and isinstance(exc, module.DockerException):
        return cast("DockerException", exc)
    return None


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
    except Exception as exc:
        failed = _as_docker_exception(exc)
        if failed is None:
            raise
        # A docker call failed in a way no step turned into its own error: the command and what it said.
        said = (failed.stderr or failed.stdout or "").strip().splitlines()
        command = " ".join(str(part) for part in failed.docker_command)
        print(
            f"error: `{command}` failed (exit {failed.return_code}): {said[-1] if said else 'no output'}",
            file=sys.stderr,
            flush=True,
        )
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        return 130
