"""Reading a repository's Python files for `python -m integration init`, never importing them.

One job: find the .py files (without virtualenvs, caches and hidden folders), parse each once with
`ast` (a file that cannot be read is one ConfigError naming it), and give the small readings the other
modules build on: where a fact was found (`Where`), dotted names, module constants and literal values.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

MAX_FILE_BYTES = 1 << 20
MAX_FILES = 5000
SKIP_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        ".venv",
        "venv",
        "node_modules",
        "__pycache__",
        ".integration",
        ".nox",
        ".tox",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        "site-packages",
        "build",
        "dist",
    }
)


# --- facts and where they come from ---------------------------------------------------------------------


@dataclass(frozen=True)
class Where:
    """A file relative to the root, and a line in it (None: the whole file)."""

    file: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


def relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _error(where: Where | str, problem: str) -> ConfigError:
    if isinstance(where, Where):
        return ConfigError(where.file, None, problem, line=where.line)
    return ConfigError(where, None, problem)


# --- reading Python files -------------------------------------------------------------------------------


class Sources:
    """Python files of the repository, parsed once each; a file ast cannot read is a ConfigError."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._trees: dict[Path, ast.Module] = {}
        self._texts: dict[Path, str] = {}

    def text(self, path: Path) -> str:
        if path not in self._texts:
            rel = relative(path, self.root)
            try:
                size = path.stat().st_size
                if size > MAX_FILE_BYTES:
                    raise _error(rel, f"is {size} bytes; init reads Python files up to {MAX_FILE_BYTES}")
                self._texts[path] = path.read_bytes().decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _error(rel, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
            except OSError as exc:
                raise _error(rel, f"cannot be read: {exc.strerror or exc}") from None
        return self._texts[path]

    def tree(self, path: Path) -> ast.Module:
        if path not in self._trees:
            text = self.text(path)
            rel = relative(path, self.root)
            try:
                self._trees[path] = ast.parse(text, filename=rel)
            except SyntaxError as exc:
                raise ConfigError(
                    rel,
                    None,
                    f"not valid Python: {exc.msg}; init reads the code with ast and cannot read this file",
                    line=exc.lineno,
                ) from None
            except (ValueError, RecursionError, MemoryError) as exc:
                raise _error(rel, f"cannot be parsed as Python: {exc}") from None
        return self._trees[path]


def python_files(folder: Path, limit: int = MAX_FILES) -> list[Path]:
    """The .py files under `folder` (or `folder` itself), without virtualenvs, caches and hidden folders."""
    if folder.is_file():
        return [folder] if folder.suffix == ".py" else []
    found: list[Path] = []
    for current, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(files):
            if name.endswith(".py"):
                found.append(Path(current) / name)
                if len(found) >= limit:
                    return found
    return found


def matching_files(root: Path, wanted: re.Pattern[str], limit: int = 20) -> list[Path]:
    """Files under `root` whose path relative to it matches `wanted`, without virtualenvs, caches and
    hidden folders, at most `limit`."""
    found: list[Path] = []
    for current, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(files):
            path = Path(current) / name
            if wanted.fullmatch(relative(path, root)):
                found.append(path)
                if len(found) >= limit:
                    return found
    return found


def dotted(node: ast.AST) -> str:
    """`a.b.c` of a Name/Attribute chain, else ''."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def last_name(node: ast.AST) -> str:
    return dotted(node).rsplit(".", 1)[-1]


def constant_strings(tree: ast.Module) -> dict[str, str]:
    """Module-level NAME = "literal" assignments."""
    found: dict[str, str] = {}
    for stmt in tree.body:
        if (
            isinstance(stmt, ast.Assign)
            and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Name)
            and isinstance(stmt.value, ast.Constant)
            and isinstance(stmt.value.value, str | int | float)
            and not isinstance(stmt.value.value, bool)
        ):
            found[stmt.targets[0].id] = str(stmt.value.value)
    return found


def literal(node: ast.AST | None, constants: Mapping[str, str]) -> str | None:
    """The text a default evaluates to when it is a literal (or a module constant, or str(...) of one)."""
    if node is None:
        return None
    if isinstance(node, ast.Constant) and not isinstance(node.value, bool):
        if isinstance(node.value, str | int | float):
            return str(node.value)
        return None
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    if isinstance(node, ast.Call) and last_name(node.func) == "str" and len(node.args) == 1:
        return literal(node.args[0], constants)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = literal(node.left, constants), literal(node.right, constants)
        return left + right if left is not None and right is not None else None
    return None


def positional_defaults(args: ast.arguments) -> list[tuple[ast.arg, ast.AST | None]]:
    """The positional parameters of a signature, each with its default (None: it has none)."""
    positional = [*args.posonlyargs, *args.args]
    defaults: list[ast.AST | None] = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    return list(zip(positional, defaults, strict=True))


def parameter_defaults(args: ast.arguments) -> list[tuple[ast.arg, ast.AST | None]]:
    """The named parameters of a signature, positional then keyword-only, each with its default."""
    return [*positional_defaults(args), *zip(args.kwonlyargs, args.kw_defaults, strict=True)]
