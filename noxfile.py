"""Sessions of the service integration toolkit; `nox -l` lists them, each calls one function."""

import sys
from pathlib import Path

import nox

sys.path.insert(0, str(Path(__file__).parent))
from integration import sessions

nox.options.sessions = ["lint", "mock-tests", "tests"]
nox.options.reuse_existing_virtualenvs = True
PYTHON = "3.11"
# The Pythons the toolkit supports: `mock-tests-3.11`, ... A Python missing here is skipped (on a CI
# system, where nox sets --error-on-missing-interpreters, it fails); one that pyenv installed without
# activating it is found.
PYTHONS = ["3.11", "3.12", "3.13"]
# The PostgreSQL majors a stack is tested against in the CI matrix: `integration-postgres(postgres='15')`,
# ... Each has an offline stand-in, from the Debian release that packages it.
POSTGRES_MAJORS = ["15", "17"]
sessions.find_interpreters(PYTHONS)


@nox.session(python=PYTHON)
def build(session: nox.Session) -> None:
    """Build every stale service image of the system (fresh ones are skipped by input hash)."""
    sessions.build(session)


@nox.session(python=PYTHON)
def integration(session: nox.Session) -> None:
    """The main job: build, start the real stack, run the use-case tests against it, tear down."""
    sessions.integration(session)


@nox.session(name="integration-postgres", python=PYTHON, tags=["integration"])
@nox.parametrize("postgres", POSTGRES_MAJORS)
def integration_postgres(session: nox.Session, postgres: str) -> None:
    """The main job against one PostgreSQL major (the CI matrix axis)."""
    sessions.integration(session, postgres)


@nox.session(name="integration-shop", python=PYTHON, tags=["integration"])
def integration_shop(session: nox.Session) -> None:
    """The main job on the second example, a system written to its own conventions."""
    sessions.integration(session, example="shop")


# Tagged "podman", not "integration": the workflow's integration jobs have a Docker engine, not Podman.
@nox.session(name="integration-podman", python=PYTHON, tags=["podman"])
def integration_podman(session: nox.Session) -> None:
    """The main job on Podman's Docker-compatible API (scripts/install-podman.sh starts it)."""
    sessions.integration_podman(session)


@nox.session(name="mock-tests", python=PYTHONS, tags=["mock"])
def mock_tests(session: nox.Session) -> None:
    """The same use-case tests against the in-memory mocks: fast, no Docker."""
    sessions.mock_tests(session)


@nox.session(python=PYTHON, tags=["tests"])
def tests(session: nox.Session) -> None:
    """The toolkit's own test suite: unit tests and tests against the real engine."""
    sessions.tests(session)


@nox.session(python=PYTHON, tags=["lint"])
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, and the structure of the CI workflow."""
    sessions.lint(session)


@nox.session(python=PYTHON)
def images(session: nox.Session) -> None:
    """Build (or reuse) the offline stand-ins of postgres, rabbitmq and python."""
    sessions.images(session)


@nox.session(python=PYTHON)
def up(session: nox.Session) -> None:
    """Build, then start the stack and leave it running, URLs printed."""
    sessions.up(session)


@nox.session(python=PYTHON)
def down(session: nox.Session) -> None:
    """Remove this checkout's stack."""
    sessions.down(session)


@nox.session(python=PYTHON)
def doctor(session: nox.Session) -> None:
    """Look for the known causes of failed integration runs."""
    sessions.doctor(session)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmark the example side by side with pytest-docker: a table, and JSON in compose/bench/."""
    sessions.bench(session)
