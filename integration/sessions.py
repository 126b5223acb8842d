"""What each nox session does. The noxfile only names sessions and calls these functions.

This module is imported by nox's own interpreter, so it uses nothing but the standard library and nox;
the toolkit itself runs inside each session's virtual environment (`python -m integration ...`).
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "shortener"
COMPOSE_DIR = REPO / "compose"


def _env(session: nox.Session) -> dict[str, str]:
    """The system under test: $INTEGRATION_ROOT (any repository of the same shape), else the example."""
    root = os.environ.get("INTEGRATION_ROOT") or str(EXAMPLE)
    return {
        "INTEGRATION_ROOT": root,
        "INTEGRATION_COMPOSE_DIR": os.environ.get("INTEGRATION_COMPOSE_DIR", str(COMPOSE_DIR)),
    }


def _install(session: nox.Session) -> None:
    session.install("-e", f"{REPO}[dev]")


def images(session: nox.Session) -> None:
    _install(session)
    session.run("python", "-m", "integration", "images")


def build(session: nox.Session) -> None:
    _install(session)
    session.run("python", "-m", "integration", "build", *session.posargs, env=_env(session))


def integration(session: nox.Session) -> None:
    _install(session)
    env = _env(session)
    session.run("python", "-m", "integration", "build", env=env)
    root = Path(env["INTEGRATION_ROOT"])
    session.chdir(root)
    session.run(
        "python",
        "-m",
        "pytest",
        "use_case_tests",
        "--integration",
        "-p",
        "no:cacheprovider",
        *session.posargs,
        env=env,
    )


def mock_tests(session: nox.Session) -> None:
    _install(session)
    root = Path(_env(session)["INTEGRATION_ROOT"])
    session.chdir(root)
    session.run("python", "-m", "pytest", "use_case_tests", "-p", "no:cacheprovider", *session.posargs)


def tests(session: nox.Session) -> None:
    _install(session)
    session.run("python", "-m", "integration", "images")
    session.run(
        "python",
        "-m",
        "pytest",
        *(session.posargs or ["tests"]),
        env={"INTEGRATION_COMPOSE_DIR": str(COMPOSE_DIR)},
    )


def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


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
