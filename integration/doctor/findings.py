"""What every check shares: the `Finding` it returns, the `Check` that lists it, and the `Project` it reads.

`load_project` reads a system once for all static checks: its services (from services.yml even when it
does not validate), its Python files parsed on demand, its Dockerfiles read on demand. It never raises
for the system's own mistakes: a `ConfigError` is kept on the project for the D110 check to report.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Generic, Literal, TypeVar

import yaml

from ..discovery import SERVICES_FILE, load_system
from ..dockerfile import Dockerfile, DockerfileError
from ..dockerfile import read as read_dockerfile
from ..errors import ConfigError
from ..model import SystemSpec

Severity = Literal["error", "warning", "info"]
Subject = TypeVar("Subject")

HARNESS_FOLDERS = ("use_case_tests", "tests")
# Folders never scanned for Python files: environments, caches, generated files.
SKIPPED_FOLDERS = frozenset(
    {"__pycache__", "node_modules", "site-packages", "compose", "build", "dist", "venv", "env"}
)


@dataclass(frozen=True)
class Finding:
    """One problem: where it is, what it is, and what to do about it."""

    severity: Severity
    path: str  # relative to the system root (POSIX), absolute outside it, or `<place>` for no file
    line: int | None
    code: str
    message: str
    fix: str

    @property
    def location(self) -> str:
        return f"{self.path}:{self.line}" if self.line else self.path

    def render(self) -> str:
        if self.severity == "info":
            return f"info {self.location}: {self.message.rstrip('. ')}. {self.fix.rstrip('. ')}"
        return f"{self.severity} {self.location}: {self.message.rstrip('. ')}. Fix: {self.fix.rstrip('. ')}"


def error(path: str, line: int | None, code: str, message: str, fix: str) -> Finding:
    return Finding("error", path, line, code, message, fix)


def warning(path: str, line: int | None, code: str, message: str, fix: str) -> Finding:
    return Finding("warning", path, line, code, message, fix)


def info(path: str, line: int | None, code: str, message: str, what_to_do: str) -> Finding:
    return Finding("info", path, line, code, message, what_to_do)


@dataclass(frozen=True)
class Check(Generic[Subject]):
    """One check: the codes it can report, what it looks for, and the function that looks (at a
    `Project` for a static check, at a `LiveContext` for a live one)."""

    codes: tuple[str, ...]
    title: str
    run: Callable[[Subject], list[Finding]]


# --- the repository as the static checks see it ----------------------------------------------------------


@dataclass(frozen=True)
class ServiceView:
    """What the static checks need of one service; read from services.yml even when it does not validate."""

    name: str
    build_dir: Path
    dockerfile: Path
    health_path: str = "/health"


@dataclass
class Project:
    """A system's files, parsed once and shared by the static checks."""

    root: Path
    system: SystemSpec | None  # None when services.yml or a contract did not load: see `config_error`
    services: tuple[ServiceView, ...]
    config_error: ConfigError | None = None
    _modules: dict[Path, ast.Module | SyntaxError] = field(default_factory=dict, repr=False)
    _parsed_dockerfiles: dict[Path, Dockerfile | DockerfileError] = field(default_factory=dict, repr=False)

    def rel(self, path: Path | str) -> str:
        """`path` as printed: relative to the root when inside it."""
        path = Path(path)
        try:
            return path.resolve().relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    @cached_property
    def python_files(self) -> tuple[Path, ...]:
        return tuple(_python_files(self.root))

    def python_files_under(self, folder: Path) -> list[Path]:
        folder = folder.resolve()
        return [p for p in self.python_files if p.is_relative_to(folder)]

    @property
    def harness_files(self) -> list[Path]:
        return [p for name in HARNESS_FOLDERS for p in self.python_files_under(self.root / name)]

    def modules(self, paths: Iterable[Path]) -> Iterator[tuple[Path, ast.Module]]:
        """(path, parsed module) of each of `paths` that parses; the others are D100's."""
        for path in paths:
            tree = self.module(path)
            if tree is not None:
                yield path, tree

    def module(self, path: Path) -> ast.Module | None:
        """The parsed module, or None when it does not parse (D100 reports that)."""
        if path not in self._modules:
            try:
                self._modules[path] = ast.parse(path.read_bytes(), filename=str(path))
            except SyntaxError as exc:
                self._modules[path] = exc
            except (OSError, ValueError) as exc:  # unreadable, or NUL bytes
                self._modules[path] = SyntaxError(str(exc))
        parsed = self._modules[path]
        return parsed if isinstance(parsed, ast.Module) else None

    def dockerfile(self, path: Path) -> Dockerfile | DockerfileError:
        """The parsed Dockerfile, or the error the reader gives for it (D111 reports that)."""
        if path not in self._parsed_dockerfiles:
            try:
                self._parsed_dockerfiles[path] = read_dockerfile(path)
            except DockerfileError as exc:
                self._parsed_dockerfiles[path] = exc
        return self._parsed_dockerfiles[path]

    def syntax_error(self, path: Path) -> SyntaxError | None:
        self.module(path)
        parsed = self._modules[path]
        return parsed if isinstance(parsed, SyntaxError) else None


def _python_files(root: Path) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIPPED_FOLDERS)
        for name in sorted(files):
            if name.endswith(".py"):
                yield Path(folder, name).resolve()


def load_project(root: Path) -> Project:
    """Load the system for the static checks; a ConfigError is kept for D110, not raised."""
    root = Path(root).resolve()
    try:
        system = load_system(root)
    except ConfigError as exc:
        return Project(root, None, _services_from_raw(root), config_error=exc)
    services = tuple(ServiceView(s.name, s.build_dir, s.dockerfile, s.health_path) for s in system.services)
    return Project(root, system, services)


def _services_from_raw(root: Path) -> tuple[ServiceView, ...]:
    """Best effort when services.yml does not validate: its services as far as they can be read."""
    try:
        data = yaml.safe_load((root / SERVICES_FILE).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        data = None
    entries = data.get("services") if isinstance(data, dict) else None
    views: list[ServiceView] = []
    if isinstance(entries, dict):
        for name, entry in entries.items():
            entry = entry if isinstance(entry, dict) else {}
            raw_build, raw_dockerfile = entry.get("build"), entry.get("dockerfile")
            raw_health = entry.get("health")
            build = raw_build if isinstance(raw_build, str) else f"services/{name}"
            dockerfile_name = raw_dockerfile if isinstance(raw_dockerfile, str) else None
            health = raw_health if isinstance(raw_health, str) else "/health"
            build_dir = (root / build).resolve()
            views.append(
                ServiceView(
                    str(name),
                    build_dir,
                    (root / dockerfile_name).resolve() if dockerfile_name else build_dir / "Dockerfile",
                    health,
                )
            )
    else:
        for dockerfile in sorted((root / "services").glob("*/Dockerfile")):
            views.append(ServiceView(dockerfile.parent.name, dockerfile.parent, dockerfile))
    return tuple(v for v in views if v.build_dir.is_dir())
