"""`python -m integration init`: inspect a repository and write its adoption.

One job: read what a repository already holds (architecture/services.yml through discovery, the service
Dockerfiles, the services' Python code, the contracts, the use-case tests' ITestHarness Protocol and
conftest.py) and write the two things that adopt it:

- the toolkit's config, `[tool.integration]` tables appended to `<root>/pyproject.toml` (or
  `<root>/integration.toml` when there is no pyproject.toml), holding only what differs from
  docs/conventions.md, each value with a comment naming the file and line it was inferred from;
- `<tests>/real_harness.py`, a `RealServiceHarness` with one method per Protocol method, mapped to the
  services' FastAPI routes where the names allow it, `raise NotImplementedError` with a `TODO(init)`
  where they do not.

The code is read with `ast`, never imported: environment variables a service reads (and their
defaults), the tables its models declare, its routes. It prints each fact with where it was found, what
it wrote and what is left to do. Nothing existing is overwritten without --force; every mistake in the
input is one `error:` line and exit status 2, with nothing written.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import contextlib
import json
import os
import re
import sys
import tempfile
import textwrap
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from . import dockerfile as dockerfiles
from .discovery import SERVICE_ALIASES, load_system
from .errors import ConfigError, IntegrationError
from .model import DEFAULT_DATABASE_URL_FORMAT, BaseImages, EventSchema, OutboxColumns, SystemSpec
from .settings import IDENTIFIER_RE, SERVICES_FILE, ServiceOverrides, SystemConfig, load_config, resolve_root

OWN_FILE = "integration.toml"
PYPROJECT = "pyproject.toml"
HARNESS_FILE = "real_harness.py"
HARNESS_CLASS = "RealServiceHarness"
BASE_ALIAS = "RealServiceHarnessBase"
DEFAULT_TESTS = "use_case_tests"
DEFAULT_HARNESS_FIXTURE = "test_harness"
DEFAULT_MOCK_FIXTURE = "mock_test_harness"

CONVENTIONAL = ("DATABASE_URL", "BROKER_URL", "SERVICE_NAME", "PORT", "EVENT_EXCHANGE", "EVENT_QUEUE")
# What the base harness provides: the skeleton does not write these.
BASE_PROVIDED = frozenset({"reset", "get_published_events", "wait_for_events_processed"})

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
LINE_LIMIT = 110

_POSTGRES_SCHEMES = re.compile(r"^postgres(?:ql)?(?:\+[A-Za-z0-9_]+)?://", re.IGNORECASE)
_AMQP_SCHEMES = re.compile(r"^amqps?://", re.IGNORECASE)
_HTTP_SCHEMES = re.compile(r"^https?://", re.IGNORECASE)
_DB_PREFIX = r"(?:DB|PG|POSTGRES|POSTGRESQL|DATABASE|SQL)"
_DB_PARTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(rf"^(?:\w+_)?{_DB_PREFIX}_?HOST(?:NAME)?$"), "{db_host}"),
    (re.compile(rf"^(?:\w+_)?{_DB_PREFIX}_?PORT$"), "{db_port}"),
    (re.compile(rf"^(?:\w+_)?{_DB_PREFIX}_?USER(?:NAME)?$"), "{db_user}"),
    (re.compile(rf"^(?:\w+_)?{_DB_PREFIX}_?(?:PASSWORD|PASS|PASSWD|PWD)$"), "{db_password}"),
    (re.compile(rf"^(?:\w+_)?{_DB_PREFIX}_?(?:NAME|DATABASE|DB|DBNAME)$"), "{db_name}"),
    (re.compile(r"^PGDATABASE$"), "{db_name}"),
)
_BROKER_PREFIX = r"(?:RABBIT|RABBITMQ|AMQP|BROKER|MQ)"
_BROKER_PARTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(rf"^(?:\w+_)?{_BROKER_PREFIX}_?HOST(?:NAME)?$"), "{broker_host}"),
    (re.compile(rf"^(?:\w+_)?{_BROKER_PREFIX}_?PORT$"), "{broker_port}"),
    (re.compile(rf"^(?:\w+_)?{_BROKER_PREFIX}_?USER(?:NAME)?$"), "{broker_user}"),
    (re.compile(rf"^(?:\w+_)?{_BROKER_PREFIX}_?(?:PASSWORD|PASS|PASSWD|PWD)$"), "{broker_password}"),
    (re.compile(rf"^(?:\w+_)?{_BROKER_PREFIX}_?(?:VHOST|VIRTUAL_HOST)$"), "{broker_vhost}"),
)
# Variables that hold a whole URL by their name, for reads whose default init cannot see.
_DB_URL_NAME = re.compile(
    r"(?:^|_)(?:DSN|DATABASE_UR[LI]|DB_UR[LI]|POSTGRES(?:QL)?_UR[LI]|PG_UR[LI]|SQLALCHEMY_DATABASE_UR[LI])$"
)
_BROKER_URL_NAME = re.compile(r"(?:^|_)(?:BROKER_UR[LI]|AMQP_UR[LI]|RABBIT(?:MQ)?_UR[LI]|CELERY_BROKER_URL)$")
_SERVICE_PORT = re.compile(r"^(?:(?:HTTP|APP|SERVER|API|WEB|UVICORN)_)?PORT$")
_CALL_SUFFIX = re.compile(r"(?:URL|URI|API|ENDPOINT|BASE|SERVICE|SVC|ADDR|ADDRESS)")
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "0.0.0.0", "::1", ""})

HTTP_METHODS = ("get", "post", "put", "patch", "delete")
_DEPENDENCY_TYPES = frozenset(
    {"Request", "Response", "WebSocket", "BackgroundTasks", "HTTPConnection", "Session", "AsyncSession"}
)
_SIMPLE_TYPES = frozenset(
    {
        "str",
        "int",
        "float",
        "bool",
        "None",
        "Optional",
        "Union",
        "list",
        "List",
        "UUID",
        "uuid",
        "datetime",
        "date",
        "Decimal",
        "Literal",
        "typing",
    }
)
_VERBS_GET = frozenset({"get", "read", "fetch", "find", "show", "lookup", "load", "describe"})
_VERBS_LIST = frozenset({"list", "all", "search", "browse", "query"})
_VERBS_CREATE = frozenset({"create", "place", "add", "make", "new", "submit", "register", "post", "open"})
_VERBS_SET = frozenset({"set", "put", "update", "replace", "change", "edit", "modify", "save", "upsert"})
_VERBS_DELETE = frozenset({"delete", "remove", "drop", "destroy", "erase"})
_PUBLISH_VERBS = ("redeliver", "republish", "publish", "deliver", "emit")

_COLUMN_NAMES: dict[str, tuple[str, ...]] = {
    "event_type": ("event_type", "routing_key", "topic", "type", "kind", "event_name", "name"),
    "payload": ("payload", "body", "data", "message", "content", "json"),
    "occurred_at": ("occurred_at", "created_at", "timestamp", "created", "emitted_at", "happened_at"),
    "published_at": ("published_at", "sent_at", "dispatched_at", "relayed_at", "delivered_at"),
}


# --- facts and where they come from ---------------------------------------------------------------------


@dataclass(frozen=True)
class Where:
    """A file relative to the root, and a line in it (None: the whole file)."""

    file: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _error(where: Where | str, problem: str) -> ConfigError:
    if isinstance(where, Where):
        return ConfigError(where.file, None, problem, line=where.line)
    return ConfigError(where, None, problem)


# --- reading Python files -------------------------------------------------------------------------------


class _Sources:
    """Python files of the repository, parsed once each; a file ast cannot read is a ConfigError."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._trees: dict[Path, ast.Module] = {}
        self._texts: dict[Path, str] = {}

    def text(self, path: Path) -> str:
        if path not in self._texts:
            rel = _rel(path, self.root)
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
            rel = _rel(path, self.root)
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


def _python_files(folder: Path, limit: int = MAX_FILES) -> list[Path]:
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


def _files(root: Path, wanted: re.Pattern[str], limit: int = 20) -> list[Path]:
    """Files under `root` whose path relative to it matches `wanted`, without virtualenvs, caches and
    hidden folders, at most `limit`."""
    found: list[Path] = []
    for current, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(files):
            path = Path(current) / name
            if wanted.fullmatch(_rel(path, root)):
                found.append(path)
                if len(found) >= limit:
                    return found
    return found


def _dotted(node: ast.AST) -> str:
    """`a.b.c` of a Name/Attribute chain, else ''."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _last_name(node: ast.AST) -> str:
    return _dotted(node).rsplit(".", 1)[-1]


def _constant_strings(tree: ast.Module) -> dict[str, str]:
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


def _literal(node: ast.AST | None, constants: Mapping[str, str]) -> str | None:
    """The text a default evaluates to when it is a literal (or a module constant, or str(...) of one)."""
    if node is None:
        return None
    if isinstance(node, ast.Constant) and not isinstance(node.value, bool):
        if isinstance(node.value, str | int | float):
            return str(node.value)
        return None
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    if isinstance(node, ast.Call) and _last_name(node.func) == "str" and len(node.args) == 1:
        return _literal(node.args[0], constants)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _literal(node.left, constants), _literal(node.right, constants)
        return left + right if left is not None and right is not None else None
    return None


# --- environment variables --------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvRead:
    """One read of an environment variable: `os.environ["X"]`, `os.getenv("X", "d")`, a settings field."""

    name: str
    default: str | None  # the default's text when it is a literal
    has_default: bool
    where: Where


def _env_reads(tree: ast.Module, where_file: str) -> list[EnvRead]:
    constants = _constant_strings(tree)
    os_names: set[str] = set()
    environ_names: set[str] = set()
    getenv_names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "os":
                    os_names.add(alias.asname or "os")
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            for alias in node.names:
                if alias.name == "environ":
                    environ_names.add(alias.asname or "environ")
                elif alias.name == "getenv":
                    getenv_names.add(alias.asname or "getenv")

    def is_environ(node: ast.AST) -> bool:
        if isinstance(node, ast.Attribute) and node.attr == "environ":
            return isinstance(node.value, ast.Name) and node.value.id in os_names
        return isinstance(node, ast.Name) and node.id in environ_names

    for node in ast.walk(tree):  # aliases: env = os.environ
        if isinstance(node, ast.Assign) and is_environ(node.value):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    environ_names.add(target.id)

    # `os.environ.get("X") or "default"`: the default is the right-hand side.
    or_defaults: dict[int, ast.AST] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or) and len(node.values) >= 2:
            or_defaults[id(node.values[0])] = node.values[1]

    reads: list[EnvRead] = []

    def record(name_node: ast.AST, default: ast.AST | None, has_default: bool, node: ast.AST) -> None:
        name = _literal(name_node, constants)
        if not name or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            return
        if not has_default and id(node) in or_defaults:
            default, has_default = or_defaults[id(node)], True
        value = _literal(default, constants) if has_default else None
        if has_default and isinstance(default, ast.Constant) and default.value is None:
            value = None
        reads.append(EnvRead(name, value, has_default, Where(where_file, getattr(node, "lineno", None))))

    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and is_environ(node.value):
            record(node.slice, None, False, node)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            getter = (
                isinstance(func, ast.Attribute)
                and func.attr in ("get", "setdefault", "pop")
                and is_environ(func.value)
            )
            getenv = (
                isinstance(func, ast.Attribute)
                and func.attr == "getenv"
                and isinstance(func.value, ast.Name)
                and func.value.id in os_names
            ) or (isinstance(func, ast.Name) and func.id in getenv_names)
            if getter or getenv:
                default = node.args[1] if len(node.args) > 1 else None
                for keyword in node.keywords:
                    if keyword.arg == "default":
                        default = keyword.value
                record(node.args[0], default, default is not None, node)
    reads += _settings_reads(tree, where_file, constants)
    reads.sort(key=lambda r: r.where.line or 0)
    return reads


def _settings_reads(tree: ast.Module, where_file: str, constants: Mapping[str, str]) -> list[EnvRead]:
    """The fields of pydantic-settings classes (`class Settings(BaseSettings)`): one variable each."""
    reads: list[EnvRead] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef) or not any(_last_name(b) == "BaseSettings" for b in node.bases):
            continue
        prefix = ""
        for stmt in node.body:
            value = stmt.value if isinstance(stmt, ast.Assign | ast.AnnAssign) else None
            targets = stmt.targets if isinstance(stmt, ast.Assign) else []
            if isinstance(stmt, ast.AnnAssign):
                targets = [stmt.target]
            if any(isinstance(t, ast.Name) and t.id == "model_config" for t in targets) and isinstance(
                value, ast.Call
            ):
                for keyword in value.keywords:
                    if keyword.arg == "env_prefix":
                        prefix = _literal(keyword.value, constants) or ""
            if isinstance(stmt, ast.ClassDef) and stmt.name == "Config":
                for inner in stmt.body:
                    if isinstance(inner, ast.Assign) and any(
                        isinstance(t, ast.Name) and t.id == "env_prefix" for t in inner.targets
                    ):
                        prefix = _literal(inner.value, constants) or ""
        for stmt in node.body:
            if not isinstance(stmt, ast.AnnAssign) or not isinstance(stmt.target, ast.Name):
                continue
            field_name = stmt.target.id
            if field_name == "model_config" or "ClassVar" in ast.unparse(stmt.annotation):
                continue
            env_name = (prefix + field_name).upper()
            default: ast.AST | None = stmt.value
            if isinstance(default, ast.Call) and _last_name(default.func) == "Field":
                alias = None
                for keyword in default.keywords:
                    if keyword.arg in ("alias", "validation_alias", "env"):
                        alias = _literal(keyword.value, constants)
                if alias:
                    env_name = alias.upper()
                inner = default.args[0] if default.args else None
                for keyword in default.keywords:
                    if keyword.arg == "default":
                        inner = keyword.value
                default = None if isinstance(inner, ast.Constant) and inner.value is Ellipsis else inner
            has_default = default is not None
            reads.append(
                EnvRead(env_name, _literal(default, constants), has_default, Where(where_file, stmt.lineno))
            )
    return reads


# --- tables -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    name: str
    primary_key: bool = False


@dataclass(frozen=True)
class TableDecl:
    name: str
    columns: tuple[Column, ...]
    where: Where


def _is_true(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _column(call: ast.Call, attribute: str | None) -> Column | None:
    """A Column(...) / mapped_column(...) / Field(...) call: its name (first argument or the attribute)."""
    name = attribute
    if call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str):
        name = call.args[0].value
    if not name:
        return None
    pk = any(k.arg == "primary_key" and _is_true(k.value) for k in call.keywords)
    return Column(name, pk)


_CREATE_TABLE = re.compile(
    r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?[\"`]?(?:\w+\.)?(\w+)[\"`]?\s*\((.*)\)", re.I | re.S
)
_CONSTRAINT_WORDS = frozenset({"primary", "foreign", "unique", "check", "constraint", "exclude", "like"})


def _sql_tables(text: str) -> list[tuple[str, list[Column]]]:
    found = []
    for match in _CREATE_TABLE.finditer(text):
        depth, current, items = 0, "", []
        for char in match.group(2):
            if char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
            if char == "," and depth == 0:
                items.append(current)
                current = ""
            else:
                current += char
        items.append(current)
        columns = []
        for item in items:
            words = item.split()
            if not words or words[0].lower() in _CONSTRAINT_WORDS:
                continue
            columns.append(Column(words[0].strip('"`'), "primary key" in item.lower()))
        found.append((match.group(1), columns))
    return found


def _tables(tree: ast.Module, where_file: str) -> list[TableDecl]:
    tables: list[TableDecl] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            table_name = None
            sqlmodel = any(k.arg == "table" and _is_true(k.value) for k in node.keywords)
            for stmt in node.body:
                if (
                    isinstance(stmt, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == "__tablename__" for t in stmt.targets)
                    and isinstance(stmt.value, ast.Constant)
                    and isinstance(stmt.value.value, str)
                ):
                    table_name = stmt.value.value
            if table_name is None and sqlmodel:
                table_name = node.name.lower()
            if table_name is None:
                continue
            columns: list[Column] = []
            for stmt in node.body:
                target = value = None
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    target, value = stmt.target.id, stmt.value
                    if value is None and sqlmodel:
                        columns.append(Column(target))
                        continue
                elif (
                    isinstance(stmt, ast.Assign)
                    and len(stmt.targets) == 1
                    and isinstance(stmt.targets[0], ast.Name)
                ):
                    target, value = stmt.targets[0].id, stmt.value
                if target is None or target.startswith("__") or not isinstance(value, ast.Call):
                    continue
                kind = _last_name(value.func)
                if kind in ("mapped_column", "Column") or (sqlmodel and kind == "Field"):
                    column = _column(value, target)
                    if column is not None:
                        columns.append(column)
                elif sqlmodel and kind != "Relationship":
                    columns.append(Column(target))
            tables.append(TableDecl(table_name, tuple(columns), Where(where_file, node.lineno)))
        elif (
            isinstance(node, ast.Call)
            and _last_name(node.func) in ("Table", "create_table")  # Core, and Alembic migrations
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            columns = []
            for arg in node.args[1:]:
                if isinstance(arg, ast.Call) and _last_name(arg.func) == "Column":
                    column = _column(arg, None)
                    if column is not None:
                        columns.append(column)
            tables.append(TableDecl(node.args[0].value, tuple(columns), Where(where_file, node.lineno)))
        elif (
            isinstance(node, ast.Constant) and isinstance(node.value, str) and "create" in node.value.lower()
        ):
            for name, sql_columns in _sql_tables(node.value):
                tables.append(TableDecl(name, tuple(sql_columns), Where(where_file, node.lineno)))
    return tables


# --- routes -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RouteParam:
    name: str
    kind: str  # path, query, body, header, cookie, form, dependency
    annotation: str
    model: str | None = None  # the body's model class name
    required: bool = True


@dataclass(frozen=True)
class Route:
    method: str  # GET, POST, ...
    path: str
    handler: str
    status: int | None
    params: tuple[RouteParam, ...]
    returns: str | None
    redirect: int | None  # the redirect status the handler answers with, if it redirects
    where: Where
    service: str = ""

    @property
    def path_params(self) -> tuple[str, ...]:
        return tuple(_path_params(self.path))

    @property
    def static(self) -> tuple[str, ...]:
        return tuple(s for s in self.path.strip("/").split("/") if s and not s.startswith("{"))


def _path_params(path: str) -> list[str]:
    return [p.split(":", 1)[0] for p in re.findall(r"\{([^{}]+)\}", path)]


def _status(node: ast.AST | None) -> int | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.Attribute | ast.Name):
        found = re.match(r"HTTP_(\d{3})", _last_name(node))
        return int(found.group(1)) if found else None
    return None


def _annotation_names(text: str) -> set[str]:
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        return set()
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
    }


def _main_class(text: str) -> str | None:
    """`StockUpdate` of `StockUpdate`, `schemas.StockUpdate` or `Annotated[StockUpdate, Body()]`."""
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        return None
    if isinstance(node, ast.Subscript) and _last_name(node.value) == "Annotated":
        inner = node.slice.elts[0] if isinstance(node.slice, ast.Tuple) else node.slice
        node = inner
    name = _last_name(node)
    return name or None


def _routes(tree: ast.Module, where_file: str, models: Mapping[str, Any]) -> list[Route]:
    constants = _constant_strings(tree)
    aliases: dict[str, str] = {}  # DB = Annotated[Session, Depends(session)]
    prefixes: dict[str, str] = {}  # router = APIRouter(prefix="/orders")
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            name, value = stmt.targets[0].id, stmt.value
            if isinstance(value, ast.Call) and _last_name(value.func) in ("APIRouter", "FastAPI"):
                for keyword in value.keywords:
                    if keyword.arg == "prefix":
                        prefixes[name] = _literal(keyword.value, constants) or ""
                prefixes.setdefault(name, "")
            elif isinstance(value, ast.Subscript | ast.Call | ast.Name | ast.Attribute):
                aliases[name] = ast.unparse(value)
    routes: list[Route] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for decorator in node.decorator_list:
            if not isinstance(decorator, ast.Call) or not isinstance(decorator.func, ast.Attribute):
                continue
            verb = decorator.func.attr
            receiver = _dotted(decorator.func.value)
            if verb == "api_route":
                methods = []
                for keyword in decorator.keywords:
                    if keyword.arg == "methods" and isinstance(keyword.value, ast.List | ast.Tuple):
                        methods = [_literal(e, constants) or "" for e in keyword.value.elts]
                verbs = [m.lower() for m in methods if m] or ["get"]
            elif verb in HTTP_METHODS:
                verbs = [verb]
            else:
                continue
            if prefixes and receiver not in prefixes:
                continue  # @cache.get(...) or another object's method, not a route
            path_node = decorator.args[0] if decorator.args else None
            status = response_class = None
            for keyword in decorator.keywords:
                if keyword.arg == "path":
                    path_node = keyword.value
                elif keyword.arg == "status_code":
                    status = _status(keyword.value)
                elif keyword.arg == "response_class":
                    response_class = _last_name(keyword.value)
            path = _literal(path_node, constants)
            if path is None:
                continue
            path = prefixes.get(receiver, "") + path
            returns = ast.unparse(node.returns) if node.returns is not None else None
            redirect = None
            if "Redirect" in (returns or "") or "Redirect" in (response_class or ""):
                redirect = status or 307
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Call) and "Redirect" in _last_name(inner.func):
                        for keyword in inner.keywords:
                            if keyword.arg == "status_code":
                                redirect = _status(keyword.value) or redirect
            params = tuple(_route_params(node, path, aliases, models))
            for each in verbs:
                routes.append(
                    Route(
                        each.upper(),
                        path,
                        node.name,
                        status,
                        params,
                        returns,
                        redirect,
                        Where(where_file, decorator.lineno),
                    )
                )
    return routes


def _route_params(
    node: ast.FunctionDef | ast.AsyncFunctionDef,
    path: str,
    aliases: Mapping[str, str],
    models: Mapping[str, Any],
) -> Iterator[RouteParam]:
    args = node.args
    positional = [*args.posonlyargs, *args.args]
    defaults: list[ast.AST | None] = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    pairs = list(zip(positional, defaults, strict=True)) + list(
        zip(args.kwonlyargs, args.kw_defaults, strict=True)
    )
    in_path = set(_path_params(path))
    for arg, default in pairs:
        if arg.arg in ("self", "cls"):
            continue
        annotation = ast.unparse(arg.annotation) if arg.annotation is not None else ""
        expanded = aliases.get(annotation, annotation)
        text = expanded + " " + (ast.unparse(default) if default is not None else "")
        required = default is None
        names = _annotation_names(expanded)
        main = _main_class(expanded)
        if arg.arg in in_path:
            kind = "path"
        elif "Depends(" in text or "Security(" in text or names & _DEPENDENCY_TYPES:
            kind = "dependency"
        elif "Query(" in text:
            kind = "query"
        elif "Header(" in text:
            kind = "header"
        elif "Cookie(" in text:
            kind = "cookie"
        elif "Form(" in text or "File(" in text or "UploadFile" in names:
            kind = "form"
        elif "Body(" in text or (main is not None and main in models):
            kind = "body"
        elif not names or names <= _SIMPLE_TYPES:
            kind = "query"
        else:
            kind = "body"
        model = main if kind == "body" and main in models else None
        yield RouteParam(arg.arg, kind, annotation, model, required)


# --- pydantic models (fields) ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelFields:
    """The fields of a model class: name -> required."""

    fields: tuple[tuple[str, bool], ...]


def _models(trees: Iterable[ast.Module]) -> dict[str, ModelFields]:
    """Model classes by name (the last definition of a name wins), with the fields of their bases."""
    raw: dict[str, tuple[list[str], list[tuple[str, bool]]]] = {}
    for tree in trees:
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            own: list[tuple[str, bool]] = []
            for stmt in node.body:
                if not isinstance(stmt, ast.AnnAssign) or not isinstance(stmt.target, ast.Name):
                    continue
                name = stmt.target.id
                annotation = ast.unparse(stmt.annotation)
                if name == "model_config" or name.startswith("_") or "ClassVar" in annotation:
                    continue
                own.append((name, _required(stmt.value)))
            raw[node.name] = ([_last_name(b) for b in node.bases], own)

    def resolve(name: str, seen: frozenset[str]) -> list[tuple[str, bool]]:
        bases, own = raw[name]
        merged: dict[str, bool] = {}
        for base in bases:
            if base in raw and base not in seen:
                merged.update(resolve(base, seen | {base}))
        merged.update(own)
        return list(merged.items())

    return {name: ModelFields(tuple(resolve(name, frozenset({name})))) for name in raw}


def _required(value: ast.AST | None) -> bool:
    if value is None:
        return True
    if isinstance(value, ast.Call) and _last_name(value.func) == "Field":
        if value.args:
            first = value.args[0]
            return isinstance(first, ast.Constant) and first.value is Ellipsis
        return not any(k.arg in ("default", "default_factory") for k in value.keywords)
    return False


# --- one service's code -----------------------------------------------------------------------------------


@dataclass
class ServiceCode:
    name: str
    folders: list[str]  # relative to the root
    folders_where: Where | None
    files: list[Path]
    env: list[EnvRead] = field(default_factory=list)
    tables: list[TableDecl] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)


def _code_folders(root: Path, build_dir: Path, dockerfile: Path) -> tuple[list[Path], Where | None]:
    """What the Dockerfile copies from the context (the root) besides the contracts and requirements."""
    parsed = dockerfiles.read(dockerfile)
    found: list[Path] = []
    where: Where | None = None
    contracts = (root / "architecture").resolve()
    for copy in parsed.copies:
        if not copy.reads_context:
            continue
        for source in copy.sources:
            if any(ch in source for ch in "*?[$"):
                continue
            path = (root / source).resolve()
            if not path.is_relative_to(root) or path == root or path.is_relative_to(contracts):
                continue
            if (path.is_dir() and _python_files(path, limit=1)) or (path.is_file() and path.suffix == ".py"):
                found.append(path)
                where = where or Where(_rel(dockerfile, root), copy.line)
    if not found:
        found = [build_dir]
    return found, where


def _scan_service(root: Path, sources: _Sources, name: str, build_dir: Path, dockerfile: Path) -> ServiceCode:
    folders, where = _code_folders(root, build_dir, dockerfile)
    files = []
    for folder in folders:
        for path in _python_files(folder):
            parts = _rel(path, root).split("/")
            if path.name.startswith("test_") or "tests" in parts[:-1] or path.name == "conftest.py":
                continue
            files.append(path)
    code = ServiceCode(name, [_rel(f, root) + ("/" if f.is_dir() else "") for f in folders], where, files)
    for path in files:
        tree = sources.tree(path)
        rel = _rel(path, root)
        code.env += _env_reads(tree, rel)
        code.tables += _tables(tree, rel)
    return code


# --- the ITestHarness Protocol and the conftest files -------------------------------------------------------


@dataclass(frozen=True)
class ProtoMethod:
    name: str
    is_async: bool
    args: ast.arguments
    returns: str | None
    where: Where

    @property
    def params(self) -> list[tuple[str, str, str | None]]:
        """(name, annotation, default source) of every parameter but self."""
        args = self.args
        positional = [*args.posonlyargs, *args.args]
        defaults: list[ast.AST | None] = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
        pairs = list(zip(positional, defaults, strict=True)) + list(
            zip(args.kwonlyargs, args.kw_defaults, strict=True)
        )
        return [
            (
                a.arg,
                ast.unparse(a.annotation) if a.annotation is not None else "",
                ast.unparse(d) if d is not None else None,
            )
            for a, d in pairs
            if a.arg not in ("self", "cls")
        ]


@dataclass(frozen=True)
class Protocol:
    path: Path
    rel: str
    name: str
    line: int
    methods: tuple[ProtoMethod, ...]
    tree: ast.Module


def _is_protocol(node: ast.ClassDef) -> bool:
    return any(
        _dotted(b) in ("Protocol", "typing.Protocol", "typing_extensions.Protocol") for b in node.bases
    ) or any(isinstance(b, ast.Subscript) and _last_name(b.value) == "Protocol" for b in node.bases)


def _find_protocol(root: Path, sources: _Sources, skip: Sequence[Path]) -> tuple[Protocol | None, list[str]]:
    """The ITestHarness Protocol (a class inheriting typing.Protocol named *Harness*), and the others seen."""
    found: list[Protocol] = []
    skipped = [p.resolve() for p in skip]
    for path in _python_files(root):
        resolved = path.resolve()
        if any(resolved.is_relative_to(s) for s in skipped):
            continue
        try:
            raw = path.read_bytes()[:MAX_FILE_BYTES]
        except OSError:
            continue
        if b"Protocol" not in raw or b"Harness" not in raw:
            continue
        tree = sources.tree(path)  # one that may hold it must be readable: an error otherwise
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and "Harness" in node.name and _is_protocol(node):
                methods = tuple(
                    ProtoMethod(
                        stmt.name,
                        isinstance(stmt, ast.AsyncFunctionDef),
                        stmt.args,
                        ast.unparse(stmt.returns) if stmt.returns is not None else None,
                        Where(_rel(path, root), stmt.lineno),
                    )
                    for stmt in node.body
                    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef)
                )
                found.append(Protocol(path, _rel(path, root), node.name, node.lineno, methods, tree))
    if not found:
        return None, []
    found.sort(key=lambda p: (p.name != "ITestHarness", p.rel.count("/"), p.rel))
    return found[0], [f"{p.name} ({p.rel}:{p.line})" for p in found[1:]]


@dataclass(frozen=True)
class Fixture:
    name: str
    node: ast.FunctionDef | ast.AsyncFunctionDef
    rel: str
    source: str  # the function's text
    lines: tuple[str, ...]  # the conftest's lines


def _fixtures(root: Path, sources: _Sources, tests: Path) -> list[Fixture]:
    """The fixtures of the conftest.py files that apply to the tests folder (it and its parents to root)."""
    found: list[Fixture] = []
    folder = tests
    while True:
        conftest = folder / "conftest.py"
        if conftest.is_file():
            tree = sources.tree(conftest)
            text = sources.text(conftest)
            for node in tree.body:
                if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                for decorator in node.decorator_list:
                    target = decorator.func if isinstance(decorator, ast.Call) else decorator
                    if _last_name(target) == "fixture":
                        name = node.name
                        if isinstance(decorator, ast.Call):
                            for keyword in decorator.keywords:
                                if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                                    name = str(keyword.value.value)
                        source = ast.get_source_segment(text, node) or ""
                        found.append(
                            Fixture(name, node, _rel(conftest, root), source, tuple(text.splitlines()))
                        )
        if folder == root or root not in folder.parents:
            break
        folder = folder.parent
    return found


# --- the config being written ------------------------------------------------------------------------------


@dataclass
class _Entry:
    value: str | bool | int | list[str]
    where: str


class _Config:
    """The tables to write, each key with the comment that says where its value came from."""

    def __init__(self) -> None:
        self.tables: dict[tuple[str, ...], dict[str, _Entry]] = {(): {}}

    def set(self, table: tuple[str, ...], key: str, value: str | bool | int | list[str], where: str) -> None:
        self.tables.setdefault(table, {})[key] = _Entry(value, where)

    def get(self, table: tuple[str, ...], key: str) -> _Entry | None:
        return self.tables.get(table, {}).get(key)

    def count(self) -> int:
        return sum(len(entries) for entries in self.tables.values())

    def render(self, prefix: tuple[str, ...], services: Sequence[str]) -> str:
        order = {name: i for i, name in enumerate(services)}

        def rank(table: tuple[str, ...]) -> tuple[Any, ...]:
            head = {"": 0, "database": 1, "wiring": 2, "services": 3, "events": 4}.get(
                table[0] if table else "", 5
            )
            if table[:1] == ("services",) and len(table) > 1:
                return (head, order.get(table[1], len(order)), table[1], len(table), table)
            return (head, 0, "", len(table), table)

        lines = [
            "# The service-integration toolkit's adoption of this repository, written by "
            "`python -m integration init`:",
            "# only what differs from its conventions (docs/conventions.md), each value with where it was "
            "inferred from.",
        ]
        for table in sorted(self.tables, key=rank):
            entries = self.tables[table]
            if not entries and table:
                continue
            path = (*prefix, *table)
            if path:
                lines.append(f"[{'.'.join(_toml_key(p) for p in path)}]")
            for key, entry in entries.items():
                lines.append(f"{_toml_key(key)} = {_toml_value(entry.value)}  # {_one_line(entry.where)}")
            lines.append("")
        return "\n".join(lines).rstrip("\n") + "\n"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_string(key)


def _toml_string(text: str) -> str:
    out = ['"']
    for char in text:
        if char == '"':
            out.append('\\"')
        elif char == "\\":
            out.append("\\\\")
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _toml_value(value: str | bool | int | list[str]) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_string(v) for v in value) + "]"
    return _toml_string(value)


# --- inference ----------------------------------------------------------------------------------------------


@dataclass
class Report:
    facts: list[tuple[str, str]] = field(default_factory=list)
    wrote: list[str] = field(default_factory=list)
    todo: list[str] = field(default_factory=list)

    def fact(self, subject: str, text: str) -> None:
        self.facts.append((subject, text))


def _masked(url: str) -> str:
    """A URL with its password shown as `...`."""
    return re.sub(r"^([^:/]+://[^:/@]*:)[^@]*@", r"\1...@", url)


_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|PASS$|PWD|SECRET|TOKEN|_KEY$")


def _shown(read: EnvRead) -> str:
    """`default <value>` for a message: passwords in URLs and the values of secret-looking names as ..."""
    if read.default is not None:
        if _SECRET_NAME.search(read.name) and read.default:
            return "default ..."
        return f"default {_masked(read.default)}"
    return "a default init cannot read" if read.has_default else "no default"


def _url_format(url: str) -> tuple[str, str | None, str | None, str | None]:
    """`postgresql://shop:secret@localhost:5432/orders?x=1` -> (the form with placeholders, user,
    password, database name)."""
    scheme, _, rest = url.partition("://")
    authority, slash, path_and_query = rest.partition("/")
    path, question, query = path_and_query.partition("?")
    user = password = None
    if "@" in authority:
        userinfo = authority.rsplit("@", 1)[0]
        user, colon, secret = userinfo.partition(":")
        password = secret if colon else None
    form = f"{scheme}://{{db_user}}:{{db_password}}@{{db_host}}:{{db_port}}/{{db_name}}"
    if question:
        form += "?" + query
    return form, user or None, password, (path or None) if slash else None


def _upper(service: str) -> str:
    return service.upper().replace("-", "_")


def _yaml_entry(raw: object, service: str) -> Mapping[str, Any]:
    if isinstance(raw, Mapping):
        services = raw.get("services")
        if isinstance(services, Mapping) and isinstance(services.get(service), Mapping):
            return services[service]
    return {}


def _names(entry: Mapping[str, Any], kind: str) -> bool:
    """Whether a service's services.yml entry gives a value under one of the names discovery reads."""
    for alias in SERVICE_ALIASES[kind]:
        current: object = entry
        for part in alias:
            if not isinstance(current, Mapping) or part not in current:
                break
            current = current[part]
        else:
            return True
    return False


def _yaml_exchange(raw: object) -> bool:
    if not isinstance(raw, Mapping):
        return False
    broker = raw.get("broker")
    return "exchange" in raw or (isinstance(broker, Mapping) and "exchange" in broker)


def _fact_order(fact: tuple[str, str]) -> tuple[int, int]:
    text = fact[1]
    if text.startswith("not wired"):
        return 2, 0
    found = re.search(r"\.py:(\d+)", text)
    return (1, int(found.group(1))) if found else (0, 0)


def _creates_cycle(calls: Mapping[str, set[str]], caller: str, callee: str) -> bool:
    stack, seen = [callee], set()
    while stack:
        node = stack.pop()
        if node == caller:
            return True
        if node not in seen:
            seen.add(node)
            stack.extend(calls.get(node, ()))
    return False


class _Inference:
    """Everything init infers for one repository: the config, the facts and what is left to do."""

    def __init__(self, root: Path, report: Report) -> None:
        self.root = root
        self.report = report
        self.sources = _Sources(root)
        self.config = _Config()
        self.raw_yaml: object = None
        self.overrides: dict[str, dict[str, Any]] = {}  # facts load_system needed from the config
        self.services_file = SERVICES_FILE.as_posix()

    # -- services.yml, tolerantly -------------------------------------------------------------------------

    def load(self) -> SystemSpec:
        failures: list[str] = []
        for _ in range(12):
            config = SystemConfig(
                services_file=self.services_file,
                services={name: ServiceOverrides(**keys) for name, keys in self.overrides.items()},
            )
            try:
                system = load_system(self.root, base_images=BaseImages(), config=config)
            except ConfigError as exc:
                if not self._fix(exc):
                    raise
                failures.append(str(exc))
                continue
            self._read_raw_yaml(system)
            for warning in system.warnings:
                self.report.fact("services.yml", f"warning: {warning}")
            return system
        raise ConfigError(self.services_file, None, "init could not read it: " + "; ".join(failures))

    def _read_raw_yaml(self, system: SystemSpec) -> None:
        path = system.services_file or (self.root / self.services_file)
        try:
            self.raw_yaml = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):  # discovery read it: not expected
            self.raw_yaml = None

    def _fix(self, exc: ConfigError) -> bool:
        """Infer the fact a failed load_system lacked, if the config can give it; False otherwise."""
        problem = exc.problem
        if "file not found" in problem and Path(exc.path).name.startswith("services"):
            found = _files(self.root, re.compile(r"(?:.*/)?services\.ya?ml"))
            if len(found) != 1:
                return False
            rel = _rel(found[0], self.root)
            self.report.fact("system", f"{self.services_file} not found; using {rel}, the only services file")
            self.services_file = rel
            self.config.set((), "services_file", rel, f"{rel}: the only services file found")
            return True
        match = re.match(r"services\.([a-z][a-z0-9-]*)", exc.field or "")
        if not match:
            return False
        name = match.group(1)
        keys = self.overrides.setdefault(name, {})
        table = ("services", name)
        if problem.startswith("no container port") and "port" not in keys:
            found = self._port_of(name)
            if found is None:
                return False
            port, where = found
            keys["port"] = port
            self.config.set(table, "port", port, f"{where} (services.yml and the Dockerfile name none)")
            self.report.fact(
                name, f"port {port} ({where}; services.yml and the Dockerfile's EXPOSE name none)"
            )
            return True
        if "build folder" in problem and "build" not in keys:
            candidates = [
                p.parent for p in _files(self.root, re.compile(rf"(?:.*/)?{re.escape(name)}/Dockerfile"))
            ]
            if len(candidates) != 1:
                return False
            rel = _rel(candidates[0], self.root)
            keys["build"] = rel
            self.config.set(
                table, "build", rel, f"{rel}/Dockerfile (services.yml's build folder does not exist)"
            )
            self.report.fact(name, f"build folder {rel} (its Dockerfile; services.yml's does not exist)")
            return True
        if problem.startswith("Dockerfile") and "dockerfile" not in keys:
            build = self.root / keys.get("build", f"services/{name}")
            candidates = [p for p in sorted(build.glob("*Dockerfile*")) if p.is_file()]
            candidates = candidates or _files(
                self.root, re.compile(rf"(?:.*/)?{re.escape(name)}\.Dockerfile")
            )
            if len(candidates) != 1:
                return False
            rel = _rel(candidates[0], self.root)
            keys["dockerfile"] = rel
            self.config.set(table, "dockerfile", rel, f"{rel} (services.yml's Dockerfile does not exist)")
            self.report.fact(name, f"Dockerfile {rel} (services.yml's does not exist)")
            return True
        if "contract module" in problem and "not found" in problem and "contract" not in keys:
            stem = name.replace("-", "_")
            folder = self.root / "architecture" / "contracts"
            candidates = [p for p in sorted(folder.glob("*.py")) if stem in p.stem or p.stem in stem]
            candidates = [p for p in candidates if not p.stem.startswith("_")]
            if len(candidates) != 1:
                return False
            module = f"architecture.contracts.{candidates[0].stem}"
            keys["contract"] = module
            rel = _rel(candidates[0], self.root)
            self.config.set(
                table, "contract", module, f"{rel} (services.yml's contract module does not exist)"
            )
            self.report.fact(name, f"contract {module} ({rel}; services.yml's does not exist)")
            return True
        return False

    def _port_of(self, name: str) -> tuple[int, str] | None:
        """A service's port from its Dockerfile's CMD (`--port 8000`) or its code (`uvicorn.run(port=)`)."""
        build = self.root / self.overrides.get(name, {}).get("build", f"services/{name}")
        dockerfile = self.root / self.overrides.get(name, {}).get(
            "dockerfile", _rel(build / "Dockerfile", self.root)
        )
        if dockerfile.is_file():
            parsed = dockerfiles.read(dockerfile)
            for instruction in parsed.instructions:
                if instruction.keyword in ("CMD", "ENTRYPOINT"):
                    words = list(instruction.json_args or instruction.args.split())
                    for i, word in enumerate(words):
                        if word in ("--port", "-p") and i + 1 < len(words) and words[i + 1].isdigit():
                            return int(words[i + 1]), f"{_rel(dockerfile, self.root)}:{instruction.line}"
                        if word.startswith("--port=") and word[7:].isdigit():
                            return int(word[7:]), f"{_rel(dockerfile, self.root)}:{instruction.line}"
        for path in _python_files(build):
            tree = self.sources.tree(path)
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and _dotted(node.func) in ("uvicorn.run", "run"):
                    for keyword in node.keywords:
                        value = keyword.value
                        if (
                            keyword.arg == "port"
                            and isinstance(value, ast.Constant)
                            and isinstance(value.value, int)
                        ):
                            return value.value, f"{_rel(path, self.root)}:{node.lineno}"
        return None

    # -- the services' code -------------------------------------------------------------------------------

    def scan(self, system: SystemSpec) -> tuple[dict[str, ServiceCode], dict[str, ModelFields]]:
        codes: dict[str, ServiceCode] = {}
        for spec in system.services:
            codes[spec.name] = _scan_service(
                self.root, self.sources, spec.name, spec.build_dir, spec.dockerfile
            )
        trees = [self.sources.tree(p) for code in codes.values() for p in code.files]
        contracts = self.root / "architecture"
        trees += [self.sources.tree(p) for p in _python_files(contracts)] if contracts.is_dir() else []
        models = _models(trees)
        for code in codes.values():
            for path in code.files:
                rel = _rel(path, self.root)
                found = _routes(self.sources.tree(path), rel, models)
                code.routes += [replace(r, service=code.name) for r in found]
        return codes, models

    # -- the wiring -----------------------------------------------------------------------------------------

    def wiring(self, system: SystemSpec, codes: Mapping[str, ServiceCode]) -> None:
        report = self.report
        per_service: dict[str, dict[str, tuple[Any, str]]] = {}
        environments: dict[str, dict[str, tuple[str, str]]] = {}
        credentials: dict[str, tuple[str, str, str]] = {}  # user/password -> (value, where, service)
        conventional_seen: list[str] = []
        calls: dict[str, set[str]] = {s.name: set(s.calls) for s in system.services}
        new_calls: dict[str, list[tuple[str, str]]] = {}
        queues: dict[str, tuple[str, str]] = {}
        exchange_default: tuple[str, str] | None = None

        for spec in system.services:
            first_fact = len(report.facts)
            code = codes[spec.name]
            entry = _yaml_entry(self.raw_yaml, spec.name)
            where_code = f" ({code.folders_where} COPY)" if code.folders_where else ""
            report.fact(spec.name, f"code in {', '.join(code.folders)}{where_code}")
            keys: dict[str, tuple[Any, str]] = {}
            env: dict[str, tuple[str, str]] = {}
            reads: dict[str, EnvRead] = {}
            for read in code.env:
                known = reads.get(read.name)
                if known is None or (known.default is None and read.default is not None):
                    reads[read.name] = read
            db_url: EnvRead | None = None
            broker_url: EnvRead | None = None
            db_parts: dict[str, EnvRead] = {}
            broker_parts: dict[str, EnvRead] = {}
            unwired: list[EnvRead] = []
            service_pattern: tuple[str, str] | None = None
            for read in reads.values():
                default = read.default or ""
                if read.name in CONVENTIONAL:
                    conventional_seen.append(f"{spec.name}: {read.name} ({read.where})")
                    if read.name == "DATABASE_URL" and _POSTGRES_SCHEMES.match(default):
                        db_url = read
                    continue
                if _POSTGRES_SCHEMES.match(default) or (not read.default and _DB_URL_NAME.search(read.name)):
                    if db_url is None or (
                        not re.search(r"DSN|DATABASE|DB", db_url.name)
                        and re.search(r"DSN|DATABASE|DB", read.name)
                    ):
                        if db_url is not None:
                            unwired.append(db_url)
                        db_url = read
                    else:
                        unwired.append(read)
                    continue
                if _AMQP_SCHEMES.match(default) or (not read.default and _BROKER_URL_NAME.search(read.name)):
                    if broker_url is None:
                        broker_url = read
                    else:
                        unwired.append(read)
                    continue
                callee = self._callee(spec.name, read, system)
                if callee is not None:
                    if callee in (spec.calls or ()) or not _creates_cycle(calls, spec.name, callee):
                        calls[spec.name].add(callee)
                        upper = _upper(callee)
                        path = urlsplit(default).path if _HTTP_SCHEMES.match(default) else ""
                        if read.name.startswith(upper + "_") and path in ("", "/"):
                            pattern = "{SERVICE}" + read.name[len(upper) :]
                            if service_pattern is None or service_pattern[0] == pattern:
                                service_pattern = (pattern, str(read.where))
                            else:
                                env[read.name] = (f"{{url:{callee}}}", str(read.where))
                        else:
                            env[read.name] = (f"{{url:{callee}}}{path.rstrip('/')}", str(read.where))
                        if callee not in spec.calls:
                            new_calls.setdefault(spec.name, []).append((callee, str(read.where)))
                        report.fact(
                            spec.name, f"calls {callee} through {read.name} ({read.where}, {_shown(read)})"
                        )
                    else:
                        report.fact(
                            spec.name,
                            f"{read.name} ({read.where}) names {callee}, which calls {spec.name}: a circle, "
                            "left out",
                        )
                        unwired.append(read)
                    continue
                part = next((p for pattern, p in _DB_PARTS if pattern.match(read.name)), None)
                if part == "{db_port}" and default not in ("", "5432"):
                    part = None
                if part is not None and (spec.database is not None or db_url is None):
                    db_parts.setdefault(part, read)
                    continue
                part = next((p for pattern, p in _BROKER_PARTS if pattern.match(read.name)), None)
                if part is not None:
                    broker_parts.setdefault(part, read)
                    continue
                if (default and default == system.exchange) or (
                    "EXCHANGE" in read.name and default and not _yaml_exchange(self.raw_yaml)
                ):
                    env[read.name] = ("{exchange}", str(read.where))
                    if default != system.exchange and exchange_default is None:
                        exchange_default = (default, str(read.where))
                    report.fact(spec.name, f"the exchange in {read.name} ({read.where}, {_shown(read)})")
                    continue
                if (default and default == spec.queue) or (
                    "QUEUE" in read.name and default and not _names(entry, "queue") and spec.events_consumed
                ):
                    env[read.name] = ("{queue}", str(read.where))
                    if default != spec.queue:
                        queues[spec.name] = (default, str(read.where))
                    report.fact(spec.name, f"its queue in {read.name} ({read.where}, {_shown(read)})")
                    continue
                if _SERVICE_PORT.match(read.name) and default == str(spec.port):
                    env[read.name] = ("{port}", str(read.where))
                    report.fact(spec.name, f"its port in {read.name} ({read.where}, {_shown(read)})")
                    continue
                unwired.append(read)

            # the database
            if db_url is not None:
                form, user, password, database = _url_format(db_url.default or "")
                if db_url.name != "DATABASE_URL":
                    keys["database_url"] = (db_url.name, str(db_url.where))
                if db_url.default and form != DEFAULT_DATABASE_URL_FORMAT:
                    keys["database_url_format"] = (
                        form,
                        f"{db_url.where}: the form of {db_url.name}'s default",
                    )
                report.fact(spec.name, f"database URL in {db_url.name} ({db_url.where}, {_shown(db_url)})")
                if user:
                    credentials.setdefault(
                        "user", (user, f"{db_url.where}: {db_url.name}'s default", spec.name)
                    )
                if password is not None:
                    credentials.setdefault(
                        "password", (password, f"{db_url.where}: {db_url.name}'s default", spec.name)
                    )
                self._database(spec.name, entry, spec.database, database, str(db_url.where))
            if db_parts:
                for part, read in db_parts.items():
                    env[read.name] = (part, str(read.where))
                    report.fact(
                        spec.name, f"database {part[4:-1]} in {read.name} ({read.where}, {_shown(read)})"
                    )
                    if part == "{db_user}" and read.default:
                        credentials.setdefault(
                            "user", (read.default, f"{read.where}: {read.name}'s default", spec.name)
                        )
                    if part == "{db_password}" and read.default is not None:
                        credentials.setdefault(
                            "password", (read.default, f"{read.where}: {read.name}'s default", spec.name)
                        )
                if db_url is None:
                    first = next(iter(db_parts.values()))
                    keys["database_url"] = ("", f"{first.where}: reads the parts, no URL")
                    name_read = db_parts.get("{db_name}")
                    self._database(
                        spec.name,
                        entry,
                        spec.database,
                        name_read.default if name_read else None,
                        str(first.where),
                    )
            if spec.database is not None and db_url is None and not db_parts:
                if "DATABASE_URL" in reads:
                    report.fact(spec.name, f"database URL in DATABASE_URL ({reads['DATABASE_URL'].where})")
                else:
                    report.todo.append(
                        f"{spec.name}: has database {spec.database!r} but init found no variable it reads it "
                        "from; it is given DATABASE_URL (set database_url under "
                        f"[tool.integration.services.{spec.name}.wiring] if it reads another)"
                    )
            # the broker
            if broker_url is not None:
                keys["broker_url"] = (broker_url.name, str(broker_url.where))
                report.fact(
                    spec.name, f"broker URL in {broker_url.name} ({broker_url.where}, {_shown(broker_url)})"
                )
            if broker_parts:
                for part, read in broker_parts.items():
                    env[read.name] = (part, str(read.where))
                    report.fact(
                        spec.name, f"broker {part[8:-1]} in {read.name} ({read.where}, {_shown(read)})"
                    )
                if broker_url is None and "BROKER_URL" not in reads:
                    first = next(iter(broker_parts.values()))
                    keys["broker_url"] = ("", f"{first.where}: reads the parts, no URL")
            elif broker_url is None and "BROKER_URL" in reads:
                report.fact(spec.name, f"broker URL in BROKER_URL ({reads['BROKER_URL'].where})")
            # the services it calls
            if service_pattern is not None and service_pattern[0] != "{SERVICE}_URL":
                keys["service_url"] = (
                    service_pattern[0],
                    f"{service_pattern[1]}: the called service's variable",
                )
            for read in unwired:
                if read.has_default:
                    continue
                if read.name in spec.environment:
                    report.fact(spec.name, f"{read.name} ({read.where}) is set in services.yml's environment")
                    continue
                report.todo.append(
                    f"{spec.name}: {read.where} reads {read.name} with no default and init cannot tell what "
                    f"it holds: give it under `environment:` of {spec.name} in {self.services_file} (or "
                    f"[tool.integration.services.{spec.name}.wiring.environment])"
                )
            defaulted = [r for r in unwired if r.has_default and r.name not in spec.environment]
            if defaulted:
                shown = ", ".join(
                    f"{r.name} ({r.where}, {_shown(r)})" if r.default is not None else r.name
                    for r in defaulted
                )
                report.fact(spec.name, f"not wired, their defaults apply: {shown}")
            # this service's facts in the order of the lines they were read from, "not wired" last
            report.facts[first_fact:] = sorted(report.facts[first_fact:], key=_fact_order)
            per_service[spec.name] = keys
            environments[spec.name] = env

        # a key the same for every service goes to [tool.integration.wiring], the rest per service
        services = [s.name for s in system.services]
        for key in ("database_url", "database_url_format", "broker_url", "service_url"):
            values = [per_service[s].get(key) for s in services]
            if len(services) > 1 and all(v is not None for v in values) and len({v[0] for v in values}) == 1:
                self.config.set(("wiring",), key, values[0][0], values[0][1])
                for s in services:
                    per_service[s].pop(key)
        shared = set.intersection(*(set(environments[s]) for s in services)) if len(services) > 1 else set()
        for name in sorted(shared, key=lambda n: environments[services[0]][n][1]):
            templates = {environments[s][name][0] for s in services}
            if len(templates) == 1:
                wheres = ", ".join(environments[s][name][1] for s in services)
                self.config.set(("wiring", "environment"), name, templates.pop(), wheres)
                for s in services:
                    environments[s].pop(name)
        for s in services:
            for key, (value, where) in per_service[s].items():
                self.config.set(("services", s, "wiring"), key, value, where)
            for name, (value, where) in environments[s].items():
                self.config.set(("services", s, "wiring", "environment"), name, value, where)
        for s, added in new_calls.items():
            spec = system.service(s)
            callees = list(dict.fromkeys([*spec.calls, *(c for c, _ in added)]))
            self.config.set(
                ("services", s),
                "calls",
                callees,
                ", ".join(w for _, w in added) + f" ({self.services_file} names no such call)",
            )
        for s, (queue, where) in queues.items():
            self.config.set(("services", s), "queue", queue, f"{where} (services.yml names no queue)")
        if exchange_default is not None and not _yaml_exchange(self.raw_yaml):
            self.config.set(
                (), "exchange", exchange_default[0], f"{exchange_default[1]} (services.yml names none)"
            )
            report.fact(
                "system", f"exchange {exchange_default[0]} ({exchange_default[1]}; services.yml names none)"
            )
        if conventional_seen:
            report.fact("system", f"conventional variables read: {'; '.join(conventional_seen)}")
        else:
            self.config.set(
                ("wiring",),
                "conventional",
                False,
                f"no service reads {', '.join(CONVENTIONAL)}",
            )
            report.fact("system", f"no service reads any of {', '.join(CONVENTIONAL)}: conventional = false")
        for key in ("user", "password"):
            if key in credentials:
                value, where, service = credentials[key]
                default = "postgres"
                if value != default:
                    self.config.set(("database",), key, value, where)
                shown = "..." if key == "password" else value
                report.fact(service, f"database {key} {shown} ({where})")

    def _database(
        self, service: str, entry: Mapping[str, Any], declared: str | None, found: str | None, where: str
    ) -> None:
        if declared is not None or _names(entry, "database"):
            return
        name = found if found and re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", found) else service.replace("-", "_")
        self.config.set(("services", service), "database", name, f"{where} (services.yml names no database)")
        self.report.fact(service, f"database {name} ({where}; services.yml names none)")

    def _callee(self, caller: str, read: EnvRead, system: SystemSpec) -> str | None:
        others = [s for s in system.services if s.name != caller]
        default = read.default or ""
        by_name = [s.name for s in others if read.name.startswith(_upper(s.name) + "_")]
        if by_name:
            suffix = read.name[len(_upper(by_name[0])) + 1 :]
            if _HTTP_SCHEMES.match(default) or (not default and _CALL_SUFFIX.search(suffix)):
                return max(by_name, key=len)
            return None
        if not _HTTP_SCHEMES.match(default):
            return None
        parts = urlsplit(default)
        by_host = [s.name for s in others if parts.hostname == s.name]
        if by_host:
            return by_host[0]
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.hostname in _LOCAL_HOSTS and port is not None:
            by_port = [s.name for s in others if s.port == port]
            if len(by_port) == 1:
                return by_port[0]
        return None

    # -- health routes ---------------------------------------------------------------------------------------

    def health(self, system: SystemSpec, codes: Mapping[str, ServiceCode]) -> None:
        for spec in system.services:
            gets = {r.path for r in codes[spec.name].routes if r.method == "GET"}
            if not gets or spec.health_path in gets:
                continue
            entry = _yaml_entry(self.raw_yaml, spec.name)
            if _names(entry, "health"):
                continue
            candidates = [
                r
                for r in codes[spec.name].routes
                if r.method == "GET"
                and r.path
                in (
                    "/health",
                    "/healthz",
                    "/livez",
                    "/readyz",
                    "/ready",
                    "/ping",
                    "/status",
                    "/health/ready",
                    "/health/live",
                )
            ]
            if candidates:
                route = candidates[0]
                self.config.set(
                    ("services", spec.name), "health", route.path, f"{route.where} (GET {route.path})"
                )
                self.report.fact(spec.name, f"health route {route.path} ({route.where})")

    # -- the event tables ------------------------------------------------------------------------------------

    def events(self, system: SystemSpec, codes: Mapping[str, ServiceCode]) -> None:
        report = self.report
        defaults = EventSchema()
        publishers = {s.name for s in system.services if s.events_published}
        consumers = {s.name for s in system.services if s.events_consumed}
        outboxes = [(s, t) for s, code in codes.items() for t in code.tables if "outbox" in t.name.lower()]
        processed = [
            (s, t)
            for s, code in codes.items()
            for t in code.tables
            if re.search(r"processed|inbox|consumed", t.name.lower()) and "outbox" not in t.name.lower()
        ]
        outboxes.sort(key=lambda item: item[0] not in publishers)
        processed.sort(
            key=lambda item: (
                item[0] not in consumers,
                "inbox" not in item[1].name.lower() and "event" not in item[1].name.lower(),
            )
        )
        if outboxes:
            service, table = outboxes[0]
            for other, extra in outboxes[1:]:
                if extra.name != table.name:
                    report.todo.append(
                        f"{other}: its outbox {extra.name} ({extra.where}) differs from {service}'s "
                        f"{table.name}; the harness reads one outbox table name for every service"
                    )
            columns = self._outbox_columns(table)
            shown = ", ".join(f"{k}={v}" for k, v in columns.items())
            report.fact(service, f"outbox table {table.name} ({table.where}): {shown}")
            if table.name != defaults.outbox_table:
                self._identifier(("events",), "outbox_table", table.name, str(table.where))
            default_columns = OutboxColumns()
            for key in OutboxColumns.__dataclass_fields__:
                value = columns.get(key)
                if value is None:
                    report.todo.append(
                        f"{service}: no {key} column found in {table.name} ({table.where}); set it under "
                        "[tool.integration.events.outbox_columns]"
                    )
                elif value != getattr(default_columns, key):
                    self._identifier(
                        ("events", "outbox_columns"), key, value, f"{table.where}: column {value}"
                    )
        elif publishers:
            report.todo.append(
                f"{', '.join(sorted(publishers))}: publish events but init found no outbox table (a table "
                "whose name holds 'outbox'); get_published_events() reads outbox_events unless "
                "[tool.integration.events] outbox_table names another"
            )
        if processed:
            service, table = processed[0]
            column = self._id_column(table)
            report.fact(service, f"processed-events table {table.name} ({table.where}): event id {column}")
            if table.name != defaults.processed_table:
                self._identifier(("events",), "processed_table", table.name, str(table.where))
            if column is not None and column != defaults.processed_event_id:
                self._identifier(("events",), "processed_event_id", column, f"{table.where}: column {column}")
        elif consumers:
            report.todo.append(
                f"{', '.join(sorted(consumers))}: consume events but init found no processed-events table (a "
                "name with processed, inbox or consumed); wait_for_events_processed() reads processed_events"
            )

    def _identifier(self, table: tuple[str, ...], key: str, value: str, where: str) -> None:
        if IDENTIFIER_RE.fullmatch(value):
            self.config.set(table, key, value, where)
        else:
            self.report.todo.append(
                f"{where}: {value!r} is not a plain name; the harness cannot use it as {key}"
            )

    @staticmethod
    def _id_column(table: TableDecl) -> str | None:
        names = [c.name for c in table.columns]
        for column in table.columns:
            if column.primary_key:
                return column.name
        for wanted in ("event_id", "message_id", "id", "uuid"):
            if wanted in names:
                return wanted
        return next((n for n in names if n.endswith("_id")), None)

    def _outbox_columns(self, table: TableDecl) -> dict[str, str]:
        names = [c.name for c in table.columns]
        found: dict[str, str] = {}
        event_id = self._id_column(table)
        if event_id is not None:
            found["event_id"] = event_id
        for key, candidates in _COLUMN_NAMES.items():
            for candidate in candidates:
                if candidate in names and candidate not in found.values():
                    found[key] = candidate
                    break
        return {k: found[k] for k in OutboxColumns.__dataclass_fields__ if k in found}


# --- the harness skeleton -----------------------------------------------------------------------------------


def _singular(word: str) -> str:
    if word.endswith("ies") and len(word) > 3:
        return word[:-3] + "y"
    if word.endswith(("ses", "xes", "ches", "shes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _forms(noun: str) -> set[str]:
    base = noun.lower()
    singular = _singular(base)
    plural = (
        singular[:-1] + "ies"
        if singular.endswith("y")
        else singular + ("es" if singular.endswith(("s", "x", "ch", "sh")) else "s")
    )
    forms = {base, singular, plural}
    return forms | {f.replace("_", "-") for f in forms}


@dataclass
class _Plan:
    """How one Protocol method is written: its body lines, or why it could not be mapped."""

    method: ProtoMethod
    lines: list[str] = field(default_factory=list)
    summary: str = ""
    reason: str | None = None


def _expected_method(verb: str) -> str | None:
    if verb in _VERBS_GET or verb in _VERBS_LIST:
        return "GET"
    if verb in _VERBS_CREATE:
        return "POST"
    if verb in _VERBS_SET:
        return "PUT"
    if verb in _VERBS_DELETE:
        return "DELETE"
    return None


def _bind(route: Route, params: list[tuple[str, str, str | None]]) -> dict[str, str] | None:
    """Path parameter -> method parameter (by name, else the next unused parameter), or None."""
    names = [p[0] for p in params]
    binding: dict[str, str] = {}
    for path_param in route.path_params:
        if path_param in names:
            binding[path_param] = path_param
    for path_param in route.path_params:
        if path_param in binding:
            continue
        free = [n for n, _, default in params if n not in binding.values() and default is None]
        if not free:
            return None
        binding[path_param] = free[0]
    return binding


def _score(method: ProtoMethod, route: Route) -> tuple[int, dict[str, str]] | None:
    params = method.params
    binding = _bind(route, params)
    if binding is None:
        return None
    tokens = method.name.lower().split("_")
    verb, noun = tokens[0], "_".join(tokens[1:])
    score = 0
    if route.handler == method.name:
        score += 100
    expected = _expected_method(verb)
    static = [s.lower() for s in route.static]
    noun_match = bool(noun) and any(s in _forms(noun) or s.replace("-", "_") in _forms(noun) for s in static)
    if noun and not noun_match and static:
        # place_order_for_customer: the first noun only
        noun_match = any(s in _forms(tokens[1]) for s in static) if len(tokens) > 1 else False
    action = expected is None and bool(static) and static[-1] in (verb, verb.replace("_", "-"))
    if not score and not (noun_match and (expected or action)):
        return None
    if expected is not None:
        if route.method == expected or (expected == "PUT" and route.method == "PATCH"):
            score += 20
        elif not score:
            return None
    elif action:
        score += 30 if route.method == "POST" else 10
    elif not score:
        return None
    if noun_match:
        score += 20
    ends_with_param = route.path.rstrip("/").endswith("}")
    bound = bool(binding)
    if (
        (verb in _VERBS_LIST and not route.path_params)
        or (verb in _VERBS_CREATE and not ends_with_param)
        or ((verb in _VERBS_GET or verb in _VERBS_SET or verb in _VERBS_DELETE) and bound and ends_with_param)
    ):
        score += 10
    if verb in _VERBS_GET and not params and route.path_params:
        return None
    return score, binding


def _fstring_path(path: str, binding: Mapping[str, str]) -> str:
    if not route_has_params(path):
        return _py_str(path)
    out = ""
    last = 0
    for match in re.finditer(r"\{([^{}]+)\}", path):
        out += path[last : match.start()].replace("{", "{{").replace("}", "}}")
        name = match.group(1).split(":", 1)[0]
        out += "{" + binding[name] + "}"
        last = match.end()
    out += path[last:].replace("{", "{{").replace("}", "}}")
    return "f" + _py_str(out)


def route_has_params(path: str) -> bool:
    return bool(_path_params(path))


def _py_str(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _call(head: str, args: Sequence[str], indent: int) -> list[str]:
    """`head(arg, ...)` the way ruff format writes it at `indent`: on one line, else the arguments on
    one line of their own, else one argument per line."""
    pad = " " * indent
    one = f"{pad}{head}({', '.join(args)})"
    if len(one) <= LINE_LIMIT:
        return [one]
    inner = f"{pad}    {', '.join(args)}"
    if len(inner) <= LINE_LIMIT:
        return [f"{pad}{head}(", inner, f"{pad})"]
    return [f"{pad}{head}(", *(f"{pad}    {a}," for a in args), f"{pad})"]


def _dict(items: Sequence[tuple[str, str]], prefix: str, indent: int) -> list[str]:
    pad = " " * indent
    body = ", ".join(f"{_py_str(k)}: {v}" for k, v in items)
    one = f"{pad}{prefix}{{{body}}}"
    if len(one) <= LINE_LIMIT:
        return [one]
    return [f"{pad}{prefix}{{", *(f"{pad}    {_py_str(k)}: {v}," for k, v in items), f"{pad}}}"]


def _plan_route(
    method: ProtoMethod, route: Route, binding: Mapping[str, str], models: Mapping[str, ModelFields]
) -> _Plan:
    plan = _Plan(method)
    params = method.params
    optional = {name for name, _, default in params if default == "None"}
    used = set(binding.values())
    by_name = {name: annotation for name, annotation, _ in params}
    body_items: list[tuple[str, str]] = []
    body_expr: str | None = None
    query_items: list[tuple[str, str]] = []
    body_params = [p for p in route.params if p.kind == "body"]
    query_params = [p for p in route.params if p.kind == "query"]
    for param in query_params:
        if param.name in by_name and param.name not in used:
            query_items.append((param.name, param.name))
            used.add(param.name)
        elif param.required:
            plan.reason = (
                f"{route.method} {route.path} of {route.service} ({route.where}) needs query parameter "
                f"{param.name!r}, which {method.name} does not take"
            )
            return plan
    if body_params:
        model = body_params[0].model
        fields = models.get(model) if model else None
        whole = [n for n, a, _ in params if model and _main_class(a) == model]
        if whole:
            body_expr = f'{whole[0]}.model_dump(mode="json")'
            used.add(whole[0])
        elif fields is not None and len(body_params) == 1:
            missing = [f for f, required in fields.fields if required and f not in by_name]
            if missing:
                plan.reason = (
                    f"{route.method} {route.path} of {route.service} ({route.where}) takes a {model} "
                    f"whose {', '.join(missing)} {method.name} does not take"
                )
                return plan
            for name, _ in fields.fields:
                if name in by_name:
                    body_items.append((name, name))
                    used.add(name)
        else:
            for name, _, _ in params:
                if name not in used:
                    body_items.append((name, name))
                    used.add(name)
    leftover = [n for n, _, _ in params if n not in used]
    if leftover:
        plan.reason = (
            f"{route.method} {route.path} of {route.service} ({route.where}) takes no "
            f"{', '.join(leftover)}: where they go is not known"
        )
        return plan

    path = _fstring_path(route.path, binding)
    lines = _comment(f"{route.method} {route.path} of {route.service} ({route.where})", 8)
    kwargs: list[str] = []
    for items, variable, keyword in ((body_items, "body", "json"), (query_items, "params", "params")):
        if not items:
            continue
        always = [(k, v) for k, v in items if v not in optional]
        maybe = [(k, v) for k, v in items if v in optional]
        lines += _dict(always, f"{variable} = ", 8)
        for key, value in maybe:
            lines += [f"        if {value} is not None:", f"            {variable}[{_py_str(key)}] = {value}"]
        kwargs.append(f"{keyword}={variable}")
    if body_expr is not None:
        kwargs.append(f"json={body_expr}")
    returns = (method.returns or "None").strip("'\"")
    head = [_py_str(route.service), _py_str(route.method), path]
    if route.redirect is not None:
        expected = f"expected=({route.redirect},)"
        lines += _call("response = self.request", [*head, *kwargs, expected], 8)
        if returns == "str":
            lines.append('        return response.headers["location"]')
        elif returns != "None":
            lines.append("        return response")
    else:
        if route.status is not None and route.status not in (200, 201, 204):
            kwargs.append(f"expected=({route.status},)")
        if returns == "None":
            lines += _call("self.call", [*head, *kwargs], 8)
        else:
            lines += _call("return self.call", [*head, returns, *kwargs], 8)
    plan.lines = lines
    plan.summary = f"{route.method} {route.path} of {route.service} ({route.where})"
    return plan


def _plan(
    method: ProtoMethod,
    routes: Sequence[Route],
    models: Mapping[str, ModelFields],
    events: set[str],
) -> _Plan:
    name = method.name
    if name.startswith(_PUBLISH_VERBS):
        event = [
            n
            for n, annotation, _ in method.params
            if "event" in n.lower() or _annotation_names(annotation) & events
        ]
        if event:
            plan = _Plan(
                method, summary=f"self.publish_event({event[0]}) (the base publishes it to the exchange)"
            )
            returns = (method.returns or "None").strip("'\"")
            statement = f"self.publish_event({event[0]})"
            plan.lines = [f"        {'return ' if returns == 'bool' else ''}{statement}"]
            return plan
    scored = []
    for index, route in enumerate(routes):
        found = _score(method, route)
        if found is not None:
            scored.append((found[0], -index, route, found[1]))
    if not scored:
        params = ", ".join(n for n, _, _ in method.params)
        known = "; ".join(f"{r.method} {r.path} ({r.service})" for r in routes[:12]) or "no routes found"
        return _Plan(
            method,
            reason=f"no route matches {name}({params}) by its name (routes: {known})",
        )
    scored.sort(key=lambda item: (item[0], item[1]), reverse=True)
    _, _, route, binding = scored[0]
    plan = _plan_route(method, route, binding, models)
    if plan.reason is not None and len(scored) > 1:
        for _, _, other, other_binding in scored[1:]:
            second = _plan_route(method, other, other_binding, models)
            if second.reason is None:
                return second
    return plan


def _parameters(args: ast.arguments) -> list[str]:
    """Each parameter of a signature as ruff format writes it (`code: str | None = None`)."""

    def one(arg: ast.arg, default: ast.AST | None, star: str = "") -> str:
        text = star + arg.arg
        if arg.annotation is not None:
            text += f": {ast.unparse(arg.annotation)}"
        if default is not None:
            text += f" = {ast.unparse(default)}" if arg.annotation is not None else f"={ast.unparse(default)}"
        return text

    positional = [*args.posonlyargs, *args.args]
    defaults: list[ast.AST | None] = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    parts = [one(a, d) for a, d in zip(positional, defaults, strict=True)]
    if args.posonlyargs:
        parts.insert(len(args.posonlyargs), "/")
    if args.vararg is not None:
        parts.append(one(args.vararg, None, "*"))
    elif args.kwonlyargs:
        parts.append("*")
    parts += [one(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)]
    if args.kwarg is not None:
        parts.append(one(args.kwarg, None, "**"))
    return parts


def _signature(method: ProtoMethod) -> list[str]:
    parts = _parameters(method.args)
    returns = f" -> {method.returns}" if method.returns else ""
    keyword = "async def" if method.is_async else "def"
    one = f"    {keyword} {method.name}({', '.join(parts)}){returns}:"
    if len(one) <= LINE_LIMIT:
        return [one]
    inner = f"        {', '.join(parts)}"
    if len(inner) <= LINE_LIMIT:
        return [f"    {keyword} {method.name}(", inner, f"    ){returns}:"]
    return [f"    {keyword} {method.name}(", *(f"        {p}," for p in parts), f"    ){returns}:"]


def _comment(text: str, indent: int) -> list[str]:
    pad = " " * indent + "# "
    return textwrap.wrap(
        text, width=LINE_LIMIT, initial_indent=pad, subsequent_indent=pad, break_long_words=False
    ) or [pad.rstrip()]


def _wrap_message(text: str, indent: int) -> list[str]:
    pad = " " * indent
    one = f"{pad}raise NotImplementedError({_py_str(text)})"
    if len(one) <= LINE_LIMIT:
        return [one]
    chunks, current = [], ""
    width = LINE_LIMIT - indent - 6
    for word in text.split(" "):
        candidate = f"{current} {word}" if current else word
        if len(_py_str(candidate)) > width and current:
            chunks.append(current + " ")
            current = word
        else:
            candidate_text = candidate
            current = candidate_text
    chunks.append(current)
    return [f"{pad}raise NotImplementedError(", *(f"{pad}    {_py_str(c)}" for c in chunks), f"{pad})"]


def _import_map(tree: ast.Module) -> dict[str, tuple[str, str | None, int]]:
    """Name -> (module, imported name or None for `import module`, relative level) of a module's imports
    (also those under `if TYPE_CHECKING:`)."""
    found: dict[str, tuple[str, str | None, int]] = {}
    statements: list[ast.stmt] = list(tree.body)
    for stmt in tree.body:
        if isinstance(stmt, ast.If):
            statements += stmt.body
    for stmt in statements:
        if isinstance(stmt, ast.ImportFrom) and stmt.module != "__future__":
            for alias in stmt.names:
                found[alias.asname or alias.name] = (stmt.module or "", alias.name, stmt.level)
        elif isinstance(stmt, ast.Import):
            for alias in stmt.names:
                local = alias.asname or alias.name.split(".")[0]
                found[local] = (alias.name if alias.asname else alias.name.split(".")[0], None, 0)
    return found


def _defined(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for stmt in tree.body:
        if isinstance(stmt, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(stmt.name)
        elif isinstance(stmt, ast.Assign):
            names |= {t.id for t in stmt.targets if isinstance(t, ast.Name)}
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            names.add(stmt.target.id)
        elif isinstance(stmt, getattr(ast, "TypeAlias", ())):  # `type X = ...` (Python 3.12)
            names.add(stmt.name.id)  # type: ignore[attr-defined]
    return names


def _sort_names(names: Iterable[str]) -> list[str]:
    """isort's order_by_type: CONSTANTS, then Classes, then the rest, each case-insensitively."""

    def key(name: str) -> tuple[int, str]:
        if name.isupper() and len(name) > 1:
            return 0, name
        if name[:1].isupper():
            return 1, name.lower()
        return 2, name.lower()

    return sorted(set(names), key=key)


def _render_imports(needed: Mapping[str, tuple[str, str | None, int]], root: Path) -> list[str]:
    """The import block: the toolkit's base, then the project's modules, as isort sorts them."""
    stdlib: dict[str, list[str]] = {}
    third: dict[str, list[str]] = {"integration": [f"RealServiceHarness as {BASE_ALIAS}"]}
    first: dict[str, list[str]] = {}
    local: dict[str, list[str]] = {}
    plain: dict[str, set[str]] = {"std": set(), "third": set(), "first": set()}
    for local_name, (module, imported, level) in needed.items():
        top = module.split(".")[0]
        if level:
            group = local
            module = "." * level + module
        elif top in sys.stdlib_module_names:
            group = stdlib
        elif (root / top).is_dir() or (root / f"{top}.py").is_file():
            group = first
        else:
            group = third
        if imported is None:
            kind = "std" if group is stdlib else "first" if group is first else "third"
            plain[kind].add(module if local_name == module else f"{module} as {local_name}")
            continue
        text = imported if local_name == imported else f"{imported} as {local_name}"
        group.setdefault(module, []).append(text)

    def block(froms: Mapping[str, list[str]], imports: set[str]) -> list[str]:
        lines = [f"import {name}" for name in sorted(imports, key=str.lower)]
        for module in sorted(froms, key=lambda m: m.lower()):
            lines += _from_line(module, _sort_names(froms[module]))
        return lines

    out: list[str] = []
    for froms, imports in (
        (stdlib, plain["std"]),
        (third, plain["third"]),
        (first, plain["first"]),
        (local, set()),
    ):
        lines = block(froms, imports)
        if lines:
            out += [*lines, ""]
    return out


def _from_line(module: str, names: list[str]) -> list[str]:
    one = f"from {module} import {', '.join(names)}"
    if len(one) <= LINE_LIMIT:
        return [one]
    return [f"from {module} import (", *(f"    {n}," for n in names), ")"]


def render_harness(
    protocol: Protocol,
    tests_module: str,
    routes: Sequence[Route],
    models: Mapping[str, ModelFields],
    events: set[str],
    root: Path,
    base_names: set[str],
) -> tuple[str, list[_Plan], list[str]]:
    """The text of real_harness.py, the plan of each method, and the Protocol methods left to the base."""
    plans: list[_Plan] = []
    skipped: list[str] = []
    for method in protocol.methods:
        if method.name.startswith("_") or method.name in BASE_PROVIDED:
            skipped.append(method.name)
            continue
        if method.name in base_names:
            skipped.append(method.name)
            continue
        plans.append(_plan(method, routes, models, events))
    body: list[str] = [f"class {HARNESS_CLASS}({BASE_ALIAS}):"]
    body.append(f'    """{protocol.name}, against the running services."""')
    for plan in plans:
        body.append("")
        body += _signature(plan.method)
        if plan.reason is None:
            body += plan.lines
        else:
            body.append("        # TODO(init): map this method to a route of the services (see the message).")
            body += _wrap_message(f"init could not map this to a route: {plan.reason}", 8)
    class_text = "\n".join(body) + "\n"

    # the names the class uses, imported as the Protocol's module imports them
    tree = ast.parse(class_text)
    local = {BASE_ALIAS, HARNESS_CLASS, "self"}
    for node in ast.walk(tree):
        if isinstance(node, ast.arg):
            local.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            local.add(node.id)
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    used -= local | set(dir(builtins))
    imports = _import_map(protocol.tree)
    defined = _defined(protocol.tree)
    protocol_module = f"{tests_module}.{protocol.path.stem}" if tests_module else protocol.path.stem
    needed: dict[str, tuple[str, str | None, int]] = {}
    for name in sorted(used):
        if name in imports:
            needed[name] = imports[name]
        elif name in defined:
            needed[name] = (protocol_module, name, 0)
    summary = (
        f"The real harness of this system: {protocol.name} ({protocol.rel}) against the running services."
    )
    docstring = [
        *textwrap.wrap(
            '"""' + summary, width=LINE_LIMIT - 10, break_long_words=False, break_on_hyphens=False
        ),
        "",
        "Written by `python -m integration init` from the services' routes; check each mapping. Status codes",
        "become the mock's exceptions (404 -> KeyError; 400, 409, 422 -> ValueError) in the base, which also",
        "provides reset(), get_published_events() and wait_for_events_processed() from [tool.integration].",
        '"""',
    ]
    text = "\n".join(
        [
            *docstring,
            "",
            "from __future__ import annotations",
            "",
            *_render_imports(needed, root),
            "",
            class_text,
        ]
    )
    text = re.sub(r"\n{4,}", "\n\n\n", text)
    return text, plans, skipped


# --- conftest advice ---------------------------------------------------------------------------------------


def _conftest_advice(
    fixtures: Sequence[Fixture], harness_fixture: str, report: Report, module: str
) -> str | None:
    """What to change in conftest.py; returns the mock fixture to configure when it is not the default."""
    names = {f.name: f for f in fixtures}
    own = names.get(harness_fixture)
    if own is not None:
        if "integration_test_harness" in own.source:
            report.fact(
                "tests",
                f"{own.rel}:{own.node.lineno}: `{harness_fixture}` gives the real harness with --integration",
            )
        else:
            report.todo.append(_mock_fixture_todo(own, harness_fixture))
    real = names.get("real_harness_class")
    if real is not None:
        returned = [
            _dotted(n.value) for n in ast.walk(real.node) if isinstance(n, ast.Return) and n.value is not None
        ]
        where = f"{real.rel}:{real.node.lineno}"
        if returned and all(r.rsplit(".", 1)[-1] == HARNESS_CLASS for r in returned):
            report.fact(
                "tests",
                f"{where}: the fixture `real_harness_class` returns {HARNESS_CLASS} (the one written)",
            )
        else:
            report.todo.append(
                f"{where}: the fixture `real_harness_class` returns "
                f"{', '.join(returned) or 'something else'} and takes precedence over real_harness in "
                f"the config: make it return {module}:{HARNESS_CLASS}, or remove it"
            )
    if own is None and DEFAULT_MOCK_FIXTURE not in names:
        mocks = [
            f
            for f in fixtures
            if any(
                isinstance(n, ast.Return)
                and isinstance(n.value, ast.Call)
                and "Mock" in _last_name(n.value.func)
                for n in ast.walk(f.node)
            )
        ]
        if len(mocks) == 1:
            return mocks[0].name
        report.todo.append(
            f"no fixture `{DEFAULT_MOCK_FIXTURE}` (or `{harness_fixture}`) in the tests' conftest.py: "
            "without --integration the tests are skipped; add one that returns the mock harness"
        )
    return None


def _mock_fixture_todo(fixture: Fixture, name: str) -> str:
    """The lines of a conftest fixture that gives the mock also with --integration, and their fix (the
    wording of the plugin's own refusal, integration.plugin._not_real_error)."""
    node = fixture.node
    fix = (
        f'make `{name}` return request.getfixturevalue("integration_test_harness") when '
        'request.config.getoption("integration") is set (and its mock otherwise)'
    )
    lead = (
        f"{fixture.rel}:{node.lineno}: the fixture `{name}` gives the mock also with --integration, so "
        f"pytest --integration stops at its first test; {fix}"
    )
    returns = [s for s in node.body if isinstance(s, ast.Return)]
    if len(returns) != 1 or returns[0] is not node.body[-1] or node.lineno > len(fixture.lines):
        return lead
    ret = returns[0]
    signature = fixture.lines[node.lineno - 1].rstrip()
    returned = fixture.lines[ret.lineno - 1].rstrip()
    arg_names = [a.arg for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs)]
    out = [lead + ", e.g.:"]
    if "request" not in arg_names:
        new = (
            signature.replace("()", "(request)", 1)
            if not arg_names
            else signature.replace("(", "(request, ", 1)
        )
        out += [f"      {node.lineno} - {signature}", f"      {node.lineno} + {new}"]
    indent = " " * ret.col_offset
    out += [
        f"      {ret.lineno} - {returned}",
        f'      {ret.lineno} + {indent}if request.config.getoption("integration"):',
        f'      {ret.lineno} + {indent}    return request.getfixturevalue("integration_test_harness")',
        f"      {ret.lineno} + {returned}",
    ]
    return "\n".join(out)


def _harness_fixture(
    root: Path, sources: _Sources, tests: Path, protocol: Protocol
) -> tuple[str, str | None]:
    """The fixture the tests ask for: the name most test parameters annotated with the Protocol have."""
    counts: dict[str, int] = {}
    first: dict[str, str] = {}
    for path in _python_files(tests, limit=500):
        if not path.name.startswith("test"):
            continue
        tree = sources.tree(path)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
                for arg in node.args.args:
                    if arg.annotation is not None and protocol.name in ast.unparse(arg.annotation):
                        counts[arg.arg] = counts.get(arg.arg, 0) + 1
                        first.setdefault(arg.arg, f"{_rel(path, root)}:{node.lineno}")
    if not counts:
        return DEFAULT_HARNESS_FIXTURE, None
    name = max(counts, key=lambda n: (counts[n], n == DEFAULT_HARNESS_FIXTURE))
    return name, first[name]


# --- writing ------------------------------------------------------------------------------------------------


_HEADER_LINE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")


def _integration_regions(text: str) -> list[tuple[int, int]]:
    """Line ranges [start, end) of the [tool.integration...] tables in a pyproject's text, each with the
    comment lines right above its header; blank lines and the next table's comments are left out."""
    from .configfile import _split_key

    lines = text.splitlines(keepends=True)
    headers = []
    for number, line in enumerate(lines):
        match = _HEADER_LINE.match(line)
        if match:
            keys = _split_key(match.group(1))
            headers.append((number, keys[:2] == ("tool", "integration")))
    regions: list[tuple[int, int]] = []
    for i, (number, ours) in enumerate(headers):
        if not ours:
            continue
        start = number
        while start > 0 and lines[start - 1].lstrip().startswith("#"):
            start -= 1
        end = headers[i + 1][0] if i + 1 < len(headers) else len(lines)
        if i + 1 < len(headers):  # the comments right above the next header are that table's
            while end > number + 1 and lines[end - 1].lstrip().startswith("#"):
                end -= 1
        while end > number + 1 and not lines[end - 1].strip():
            end -= 1
        if regions and all(not line.strip() for line in lines[regions[-1][1] : start]):
            regions[-1] = (regions[-1][0], end)  # only blank lines between two of ours: one region
        else:
            regions.append((start, end))
    return regions


def _with_block(text: str, block: str) -> str:
    """`text` with its [tool.integration] tables replaced by `block` (at the first one's place)."""
    regions = _integration_regions(text)
    lines = text.splitlines(keepends=True)
    if not regions:
        separator = "" if not text else ("\n" if text.endswith("\n") else "\n\n")
        return text + separator + block
    out: list[str] = []
    position = 0
    for index, (start, end) in enumerate(regions):
        out += lines[position:start]
        if index == 0:
            out.append(block)
        position = end
    out += lines[position:]
    return "".join(out)


@dataclass
class _Write:
    path: Path
    text: str
    previous: bytes | None


def _write_all(writes: Sequence[_Write]) -> None:
    """Write every file or none: a failed write puts back what was written before it."""
    done: list[_Write] = []
    try:
        for write in writes:
            write.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{write.path.name}.", dir=write.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
                    handle.write(write.text)
                if write.path.exists():
                    with contextlib.suppress(OSError):
                        os.chmod(tmp, write.path.stat().st_mode & 0o7777)
                os.replace(tmp, write.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            done.append(write)
    except OSError as exc:
        for write in reversed(done):
            with contextlib.suppress(OSError):
                if write.previous is None:
                    write.path.unlink()
                else:
                    write.path.write_bytes(write.previous)
        raise ConfigError(
            write.path, None, f"cannot be written: {exc.strerror or exc}; nothing was written"
        ) from None


def _check_config(root: Path, target: Path, text: str, system: SystemSpec) -> SystemConfig:
    """The config `text` would give once written to `target`, loaded as the toolkit loads it, and the
    system loaded with it: a config init writes always loads."""
    with tempfile.TemporaryDirectory(prefix="integration-init-") as folder:
        (Path(folder) / target.name).write_text(text, encoding="utf-8")
        try:
            config = load_config(Path(folder))
            config = replace(config, table=replace(config.table, path=target))
            load_system(root, base_images=BaseImages(), config=config)
        except ConfigError as exc:
            message = str(exc).replace(folder, str(root))
            raise ConfigError(
                _rel(target, root),
                None,
                f"the config init inferred does not load ({message}); nothing was written",
            ) from None
    return config


# --- the command --------------------------------------------------------------------------------------------


def _root(args: argparse.Namespace) -> Path:
    explicit = getattr(args, "root", None)
    root = resolve_root(explicit, start=Path.cwd())
    if not root.is_dir():
        raise ConfigError(root, None, "is not a folder; pass the system's root folder with --root")
    return root


def inspect_and_write(root: Path, *, force: bool, out: Any = None) -> int:
    """init on `root`: infer, check, write, report. Raises ConfigError for bad input (nothing written)."""
    out = out or sys.stdout
    report = Report()
    inference = _Inference(root, report)
    system = inference.load()
    report.fact(
        "system",
        f"{system.name}: services {', '.join(s.name for s in system.services)} "
        f"({_rel(system.services_file or root / SERVICES_FILE, root)}), exchange {system.exchange}",
    )
    codes, models = inference.scan(system)
    inference.wiring(system, codes)
    inference.health(system, codes)
    inference.events(system, codes)

    # the use-case tests: where the Protocol is
    skip = [root / "architecture", *(root / f for code in codes.values() for f in code.folders)]
    protocol, others = _find_protocol(root, inference.sources, skip)
    harness_path: Path | None = None
    harness_text: str | None = None
    tests_module = ""
    plans: list[_Plan] = []
    if protocol is None:
        report.todo.append(
            "no ITestHarness Protocol found (a class inheriting typing.Protocol with Harness in its name): "
            f"no {HARNESS_FILE} written; write a subclass of integration.RealServiceHarness and name it with "
            'real_harness = "<module>:<Class>" in [tool.integration]'
        )
    else:
        tests_dir = protocol.path.parent
        tests_rel = _rel(tests_dir, root) if tests_dir != root else "."
        tests_module = "" if tests_rel == "." else tests_rel.replace("/", ".")
        importable = all(part.isidentifier() for part in tests_module.split(".")) if tests_module else True
        if not importable:  # pytest's default import mode puts such a folder itself on sys.path
            tests_module = ""
        where = f"{protocol.rel}:{protocol.line}"
        report.fact(
            "tests", f"{protocol.name} in {where}" + (f" (also seen: {', '.join(others)})" if others else "")
        )
        if tests_rel != DEFAULT_TESTS:
            inference.config.set((), "tests", tests_rel, f"{where}: class {protocol.name}(Protocol)")
        harness_fixture, fixture_where = _harness_fixture(root, inference.sources, tests_dir, protocol)
        if harness_fixture != DEFAULT_HARNESS_FIXTURE:
            inference.config.set(
                (), "harness_fixture", harness_fixture, f"{fixture_where}: the tests ask for it"
            )
        harness_module = f"{tests_module}.real_harness" if tests_module else "real_harness"
        harness_path = tests_dir / HARNESS_FILE
        routes = [r for s in system.services for r in codes[s.name].routes if r.path != s.health_path]
        for spec in system.services:
            shown = ", ".join(f"{r.method} {r.path}" for r in codes[spec.name].routes) or "none"
            report.fact(spec.name, f"routes: {shown}")
        events = {name for name in system.event_classes}
        from .harness import RealServiceHarness as Base  # only its attribute names

        base_names = {n for n in dir(Base) if not n.startswith("__")}
        harness_text, plans, skipped = render_harness(
            protocol, tests_module, routes, models, events, root, base_names
        )
        for plan in plans:
            if plan.reason is None:
                report.fact("harness", f"{plan.method.name} -> {plan.summary}")
            else:
                report.fact("harness", f"{plan.method.name}: not mapped ({plan.reason})")
        provided = [n for n in skipped if n in BASE_PROVIDED]
        if provided:
            report.fact("harness", f"{', '.join(provided)}: provided by the base")
        clashing = [n for n in skipped if n not in BASE_PROVIDED and not n.startswith("_")]
        for name in clashing:
            report.todo.append(
                f"{protocol.rel}: the Protocol's {name}() has the name of a method of the base "
                f"(integration.RealServiceHarness); check that the base's does what the tests expect"
            )
        if importable:
            inference.config.set(
                (),
                "real_harness",
                f"{harness_module}:{HARNESS_CLASS}",
                f"written by init: {_rel(harness_path, root)}",
            )
        else:
            report.todo.append(
                f"{tests_rel} is not a module path Python can import, so the config cannot name the harness: "
                f"give {tests_rel}/conftest.py a session fixture `real_harness_class` that returns "
                f"{HARNESS_CLASS} from {HARNESS_FILE}"
            )
        fixtures = _fixtures(root, inference.sources, tests_dir)
        mock = _conftest_advice(fixtures, harness_fixture, report, harness_module)
        if mock is not None:
            fixture = next(f for f in fixtures if f.name == mock)
            inference.config.set(
                (), "mock_fixture", mock, f"{fixture.rel}:{fixture.node.lineno}: returns the mock"
            )

    # where the config goes, and what would be overwritten
    own = root / OWN_FILE
    pyproject = root / PYPROJECT
    target = own if own.exists() or not pyproject.exists() else pyproject
    existing: list[tuple[str, str]] = []  # (file, what is there)
    if own.exists():
        existing.append((OWN_FILE, "exists"))
    original = ""
    if target == pyproject:
        try:
            original = pyproject.read_bytes().decode("utf-8")
            data = tomllib.loads(original)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(PYPROJECT, None, f"cannot be read as TOML ({exc}); fix it first") from None
        tool = data.get("tool")
        if isinstance(tool, dict) and "integration" in tool:
            existing.append((PYPROJECT, "has a [tool.integration] table"))
            if not _integration_regions(original):
                raise ConfigError(
                    PYPROJECT,
                    "tool.integration",
                    "is not written as [tool.integration] tables, so init can neither keep nor replace it "
                    "text-wise; move it into such tables or remove it",
                )
    if harness_path is not None and harness_path.exists():
        rel = _rel(harness_path, root)
        existing.append((rel, "exists"))
    if existing and not force:
        also = "".join(f", and {name} {what}" for name, what in existing[1:])
        raise ConfigError(
            existing[0][0],
            None,
            f"{existing[0][1]}{also}: init overwrites nothing; run it again with --force to replace "
            f"{'them' if also else 'it'}",
        )

    names = [s.name for s in system.services]
    if target == pyproject:
        previous: bytes | None = original.encode("utf-8")
        config_text = _with_block(original, inference.config.render(("tool", "integration"), names))
    else:
        previous = own.read_bytes() if own.exists() else None
        config_text = inference.config.render((), names)
    _check_config(root, target, config_text, system)
    writes = [_Write(target, config_text, previous)]
    if harness_path is not None and harness_text is not None:
        previous_harness = harness_path.read_bytes() if harness_path.exists() else None
        writes.append(_Write(harness_path, harness_text, previous_harness))
    _write_all(writes)

    count = inference.config.count()
    keys = f"{count} key" + ("" if count == 1 else "s")
    what = f"[tool.integration] ({keys})" if target == pyproject else keys
    report.wrote.append(f"{_rel(target, root)}: {what}" + (" (replaced)" if force and existing else ""))
    if harness_path is not None:
        mapped = sum(1 for p in plans if p.reason is None)
        report.wrote.append(
            f"{_rel(harness_path, root)}: class {HARNESS_CLASS}, {mapped} of {len(plans)} methods mapped"
        )
        for plan in plans:
            if plan.reason is not None:
                report.todo.append(
                    f"{_rel(harness_path, root)}: write {plan.method.name}() by hand (TODO(init); "
                    f"{plan.method.where} in the Protocol)"
                )
    report.todo.append(
        f"build the images and run the tests against the real services: python -m integration build --root "
        f"{root} && (cd {root} && pytest --integration)"
    )
    _print(report, out)
    return 0


def _print(report: Report, out: Any) -> None:
    print("inferred:", file=out)
    for subject, text in report.facts:
        print(f"  {subject}: {text}", file=out)
    print("wrote:", file=out)
    for line in report.wrote:
        print(f"  {line}", file=out)
    print("to do:", file=out)
    for line in report.todo:
        print(f"  {line}", file=out)
    out.flush()


def cmd_init(args: argparse.Namespace) -> int:
    """`python -m integration init [--root DIR] [--force]`."""
    try:
        root = _root(args)
        return inspect_and_write(root, force=bool(getattr(args, "force", False)))
    except IntegrationError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_status
    except OSError as exc:
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr, flush=True)
        return 2
