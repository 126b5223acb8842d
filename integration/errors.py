"""Exception types of the toolkit.

Every failure a user can fix is one of these, with a message that names the file and the field, or the
container and what it printed, and says what to do. The command line turns them into one line on stderr
and an exit status; tests catch them by type.
"""

from __future__ import annotations


class IntegrationError(Exception):
    """Base of every error the toolkit raises on purpose."""

    exit_status = 1


class ConfigError(IntegrationError):
    """A repository's own files are malformed: services.yml, a contract, a Dockerfile path."""

    exit_status = 2

    def __init__(
        self,
        path: object,
        field: str | None,
        problem: str,
        *,
        line: int | None = None,
        fix: str | None = None,
    ) -> None:
        self.path = str(path)
        self.field = field
        self.problem = problem
        self.line = line
        self.fix = fix
        where = f"{self.path}: {field}" if field else self.path
        at = f" (line {line})" if line is not None and f"line {line}" not in problem else ""
        then = f"; {fix}" if fix else ""
        super().__init__(f"{where}: {problem}{at}{then}")


class EngineError(IntegrationError):
    """The Docker engine or its Compose plugin is missing, unreachable or too old."""

    exit_status = 2


class StaleImageError(IntegrationError):
    """An image was built from inputs that have changed since; testing it would test old code."""

    exit_status = 2


class BuildError(IntegrationError):
    """`docker build` of a service failed."""


class StackError(IntegrationError):
    """The stack did not come up: a container exited, a health check timed out, a port was taken."""


class HarnessError(IntegrationError):
    """A real-mode harness call failed in a way that is neither KeyError nor ValueError."""
