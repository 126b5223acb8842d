"""What `python -m integration init` reads from one service's Python code, with `ast`.

One job: from the files a service's Dockerfile copies, read the environment variables it reads (and
their literal defaults, also pydantic-settings fields), the tables its models and migrations declare
(and their columns), its FastAPI routes (and their parameters), and the fields of the pydantic models
the routes take; each fact with the file and line it was found at.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import dockerfile as dockerfiles
from .reading import (
    Sources,
    Where,
    constant_strings,
    dotted,
    last_name,
    literal,
    parameter_defaults,
    python_files,
    relative,
)

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


# --- environment variables --------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvRead:
    """One read of an environment variable: `os.environ["X"]`, `os.getenv("X", "d")`, a settings field."""

    name: str
    default: str | None  # the default's text when it is a literal
    has_default: bool
    where: Where


def _env_reads(tree: ast.Module, where_file: str) -> list[EnvRead]:
    constants = constant_strings(tree)
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
        name = literal(name_node, constants)
        if not name or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            return
        if not has_default and id(node) in or_defaults:
            default, has_default = or_defaults[id(node)], True
        value = literal(default, constants) if has_default else None
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
        if not isinstance(node, ast.ClassDef) or not any(last_name(b) == "BaseSettings" for b in node.bases):
            continue
        prefix = _env_prefix(node, constants)
        for stmt in node.body:
            if not isinstance(stmt, ast.AnnAssign) or not isinstance(stmt.target, ast.Name):
                continue
            field_name = stmt.target.id
            if field_name == "model_config" or "ClassVar" in ast.unparse(stmt.annotation):
                continue
            env_name = (prefix + field_name).upper()
            default: ast.AST | None = stmt.value
            if isinstance(default, ast.Call) and last_name(default.func) == "Field":
                alias, default = _field_call(default, constants)
                if alias:
                    env_name = alias.upper()
            has_default = default is not None
            reads.append(
                EnvRead(env_name, literal(default, constants), has_default, Where(where_file, stmt.lineno))
            )
    return reads


def _env_prefix(settings: ast.ClassDef, constants: Mapping[str, str]) -> str:
    """The env_prefix of a settings class: `model_config = SettingsConfigDict(env_prefix=...)` or its
    inner `class Config`, the last one given."""
    prefix = ""
    for stmt in settings.body:
        value = stmt.value if isinstance(stmt, ast.Assign | ast.AnnAssign) else None
        targets = stmt.targets if isinstance(stmt, ast.Assign) else []
        if isinstance(stmt, ast.AnnAssign):
            targets = [stmt.target]
        if any(isinstance(t, ast.Name) and t.id == "model_config" for t in targets) and isinstance(
            value, ast.Call
        ):
            for keyword in value.keywords:
                if keyword.arg == "env_prefix":
                    prefix = literal(keyword.value, constants) or ""
        if isinstance(stmt, ast.ClassDef) and stmt.name == "Config":
            for inner in stmt.body:
                if isinstance(inner, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "env_prefix" for t in inner.targets
                ):
                    prefix = literal(inner.value, constants) or ""
    return prefix


def _field_call(call: ast.Call, constants: Mapping[str, str]) -> tuple[str | None, ast.AST | None]:
    """A settings field's `Field(...)`: the variable name it gives (alias, validation_alias or env), and
    its default (None for `...` or none)."""
    alias = None
    for keyword in call.keywords:
        if keyword.arg in ("alias", "validation_alias", "env"):
            alias = literal(keyword.value, constants)
    default: ast.AST | None = call.args[0] if call.args else None
    for keyword in call.keywords:
        if keyword.arg == "default":
            default = keyword.value
    if isinstance(default, ast.Constant) and default.value is Ellipsis:
        default = None
    return alias, default


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
                kind = last_name(value.func)
                if kind in ("mapped_column", "Column") or (sqlmodel and kind == "Field"):
                    column = _column(value, target)
                    if column is not None:
                        columns.append(column)
                elif sqlmodel and kind != "Relationship":
                    columns.append(Column(target))
            tables.append(TableDecl(table_name, tuple(columns), Where(where_file, node.lineno)))
        elif (
            isinstance(node, ast.Call)
            and last_name(node.func) in ("Table", "create_table")  # Core, and Alembic migrations
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            columns = []
            for arg in node.args[1:]:
                if isinstance(arg, ast.Call) and last_name(arg.func) == "Column":
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
        return tuple(path_parameters(self.path))

    @property
    def static(self) -> tuple[str, ...]:
        return tuple(s for s in self.path.strip("/").split("/") if s and not s.startswith("{"))


def path_parameters(path: str) -> list[str]:
    return [p.split(":", 1)[0] for p in re.findall(r"\{([^{}]+)\}", path)]


def _status(node: ast.AST | None) -> int | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.Attribute | ast.Name):
        found = re.match(r"HTTP_(\d{3})", last_name(node))
        return int(found.group(1)) if found else None
    return None


def annotation_names(text: str) -> set[str]:
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        return set()
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
    }


def main_class(text: str) -> str | None:
    """`StockUpdate` of `StockUpdate`, `schemas.StockUpdate` or `Annotated[StockUpdate, Body()]`."""
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        return None
    if isinstance(node, ast.Subscript) and last_name(node.value) == "Annotated":
        inner = node.slice.elts[0] if isinstance(node.slice, ast.Tuple) else node.slice
        node = inner
    name = last_name(node)
    return name or None


def read_routes(tree: ast.Module, where_file: str, models: Mapping[str, Any]) -> list[Route]:
    constants = constant_strings(tree)
    aliases: dict[str, str] = {}  # DB = Annotated[Session, Depends(session)]
    prefixes: dict[str, str] = {}  # router = APIRouter(prefix="/orders")
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            name, value = stmt.targets[0].id, stmt.value
            if isinstance(value, ast.Call) and last_name(value.func) in ("APIRouter", "FastAPI"):
                for keyword in value.keywords:
                    if keyword.arg == "prefix":
                        prefixes[name] = literal(keyword.value, constants) or ""
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
            receiver = dotted(decorator.func.value)
            if verb == "api_route":
                methods = []
                for keyword in decorator.keywords:
                    if keyword.arg == "methods" and isinstance(keyword.value, ast.List | ast.Tuple):
                        methods = [literal(e, constants) or "" for e in keyword.value.elts]
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
                    response_class = last_name(keyword.value)
            path = literal(path_node, constants)
            if path is None:
                continue
            path = prefixes.get(receiver, "") + path
            returns = ast.unparse(node.returns) if node.returns is not None else None
            redirect = None
            if "Redirect" in (returns or "") or "Redirect" in (response_class or ""):
                redirect = status or 307
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Call) and "Redirect" in last_name(inner.func):
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
    in_path = set(path_parameters(path))
    for arg, default in parameter_defaults(node.args):
        if arg.arg in ("self", "cls"):
            continue
        annotation = ast.unparse(arg.annotation) if arg.annotation is not None else ""
        expanded = aliases.get(annotation, annotation)
        text = expanded + " " + (ast.unparse(default) if default is not None else "")
        required = default is None
        names = annotation_names(expanded)
        main = main_class(expanded)
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


def read_models(trees: Iterable[ast.Module]) -> dict[str, ModelFields]:
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
            raw[node.name] = ([last_name(b) for b in node.bases], own)

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
    if isinstance(value, ast.Call) and last_name(value.func) == "Field":
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
            if (path.is_dir() and python_files(path, limit=1)) or (path.is_file() and path.suffix == ".py"):
                found.append(path)
                where = where or Where(relative(dockerfile, root), copy.line)
    if not found:
        found = [build_dir]
    return found, where


def scan_service(root: Path, sources: Sources, name: str, build_dir: Path, dockerfile: Path) -> ServiceCode:
    folders, where = _code_folders(root, build_dir, dockerfile)
    files = []
    for folder in folders:
        for path in python_files(folder):
            parts = relative(path, root).split("/")
            if path.name.startswith("test_") or "tests" in parts[:-1] or path.name == "conftest.py":
                continue
            files.append(path)
    code = ServiceCode(name, [relative(f, root) + ("/" if f.is_dir() else "") for f in folders], where, files)
    for path in files:
        tree = sources.tree(path)
        rel = relative(path, root)
        code.env += _env_reads(tree, rel)
        code.tables += _tables(tree, rel)
    return code
