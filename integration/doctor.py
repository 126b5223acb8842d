"""`python -m integration doctor`: look for the known causes of failed integration runs.

Each check is a small function that returns `Finding`s; the checks are listed in `STATIC_CHECKS` (they
read the repository's files only) and `LIVE_CHECKS` (they ask the Docker engine and the local machine).
A finding is printed as one line:

    <severity> <file>:<line>: <problem>. Fix: <fix>

(an `info` line says what the toolkit does on its own, and how to change it, instead of a fix).

Findings that belong to no file name a place in angle brackets instead (`<docker>`, `<port 47100>`,
`<pid 812>`). Codes:

    D100  a Python file of the system does not parse
    D101  a catch-all route (GET /{x}, /{x:path}) is registered before the health route and answers it
    D102  a function-level import shadows a module-level name, or the function uses the name before it
    D103  a service imports `architecture` but its Dockerfile does not copy architecture/ into the image
    D104  a COPY/ADD source is not in the build context (the system root), e.g. folder-relative paths
    D105  a FROM does not take ${PYTHON_IMAGE} (hard-coded), or uses it without declaring the ARG
    D106  harness code calls create_engine without poolclass=NullPool
    D107  harness code creates an httpx client outside `with` and never closes it
    D108  harness code sends TRUNCATE
    D109  a service's app has no GET route for its services.yml `health` path
    D110  services.yml or a contract module is invalid (what `load_system` refuses)
    D111  a service's Dockerfile does not parse (an unknown instruction, an unbalanced quote, ...)
    D112  harness code creates a SQLAlchemy engine and never disposes it
    D201  the Docker engine does not answer (live checks skipped)
    D202  docker compose is missing or older than 2.20
    D203  a service image is stale (or not built yet)
    D204  a preferred host port of the stack is taken
    D205  containers of this checkout's compose project are still there
    D206  an orphaned pytest process is still running
    D207  a FROM image is not on this machine, so the build runs on its offline stand-in (info)
"""

from __future__ import annotations

import ast
import fnmatch
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property, partial
from pathlib import Path
from typing import Literal

import yaml
from python_on_whales import DockerClient, docker
from python_on_whales.exceptions import DockerException

from .baseimages import engine_check, locally_available, standin_replacing
from .buildinputs import IgnoreRule, dockerignore_for, is_ignored
from .discovery import SERVICES_FILE, load_system
from .dockerfile import Copy, Dockerfile, DockerfileError, From, Instruction, parse
from .dockerfile import read as read_dockerfile
from .errors import ConfigError, EngineError, IntegrationError
from .images import ImageState, check_images
from .model import SystemSpec
from .ports import DEFAULT_BASE, describe_port_owner, plan_ports, port_is_free
from .stack import check_compose, project_name

Severity = Literal["error", "warning", "info"]
Reporter = Callable[[str], None]
CheckFunction = Callable[..., list["Finding"]]

BUILD_COMMAND = "nox -s build"
COMPOSE_PROJECT_LABEL = "com.docker.compose.project"
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


def _error(path: str, line: int | None, code: str, message: str, fix: str) -> Finding:
    return Finding("error", path, line, code, message, fix)


def _warning(path: str, line: int | None, code: str, message: str, fix: str) -> Finding:
    return Finding("warning", path, line, code, message, fix)


def _info(path: str, line: int | None, code: str, message: str, what_to_do: str) -> Finding:
    return Finding("info", path, line, code, message, what_to_do)


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
    system: SystemSpec | None
    services: tuple[ServiceView, ...]
    config_findings: list[Finding] = field(default_factory=list)
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
    """Load the system for the static checks; a ConfigError becomes a D110 finding, not an exception."""
    root = Path(root).resolve()
    try:
        system = load_system(root)
    except ConfigError as exc:
        project = Project(root, None, _services_from_raw(root))
        project.config_findings.append(_config_finding(project, exc))
        return project
    services = tuple(ServiceView(s.name, s.build_dir, s.dockerfile, s.health_path) for s in system.services)
    project = Project(root, system, services)
    for notice in system.warnings:
        # A key that looks like a typo of one the toolkit reads: a warning, as every command prints it.
        message, _, fix = notice.problem.partition("; ")
        field = f"{notice.field}: " if notice.field else ""
        project.config_findings.append(
            _warning(project.rel(Path(notice.path)), notice.line, "D110", field + message, fix)
        )
    return project


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


_LINE_IN_PROBLEM = re.compile(r"\s*\(line (\d+)\)$|\bat line (\d+), column \d+")
_FILE_LINE_IN_PROBLEM = re.compile(r" at (/[^:\s]+\.py):(\d+)")


def _config_finding(project: Project, exc: ConfigError) -> Finding:
    """D110: a ConfigError as a finding, with the file and line it names."""
    problem = exc.problem
    path, line = Path(exc.path), exc.line
    match = None if line is not None else _LINE_IN_PROBLEM.search(problem)
    if match:
        line = int(match.group(1) or match.group(2))
        if match.group(1):
            problem = problem[: match.start()]
    located = _FILE_LINE_IN_PROBLEM.search(problem)
    if located and Path(located.group(1)).is_relative_to(project.root):
        path, line = Path(located.group(1)), int(located.group(2))
    message, _, fix = (problem, "", exc.fix) if exc.fix else problem.rpartition("; ")
    if not message:
        message, fix = problem, "see docs/conventions.md for the services.yml schema and contract modules"
    where = f"{exc.field}: " if exc.field else ""
    return _error(project.rel(path), line, "D110", where + message, fix)


# --- registry ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One check: the codes it can report, what it looks for, and the function that looks."""

    codes: tuple[str, ...]
    title: str
    run: CheckFunction


STATIC_CHECKS: list[Check] = []
LIVE_CHECKS: list[Check] = []


def _register(
    registry: list[Check], codes: tuple[str, ...], title: str
) -> Callable[[CheckFunction], CheckFunction]:
    def add(function: CheckFunction) -> CheckFunction:
        registry.append(Check(codes, title, function))
        return function

    return add


def static_check(*codes: str, title: str) -> Callable[[CheckFunction], CheckFunction]:
    """Register a check `(Project) -> list[Finding]`."""
    return _register(STATIC_CHECKS, codes, title)


def live_check(*codes: str, title: str) -> Callable[[CheckFunction], CheckFunction]:
    """Register a check `(LiveContext) -> list[Finding]`."""
    return _register(LIVE_CHECKS, codes, title)


# --- AST helpers ------------------------------------------------------------------------------------------


def _call_name(node: ast.AST) -> str | None:
    """`f` for `f(...)` and `m.f(...)`."""
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    return None


def _string(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _docstring_nodes(tree: ast.Module) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and _string(body[0].value) is not None:
                ids.add(id(body[0].value))
    return ids


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports_architecture(tree: ast.Module) -> ast.stmt | None:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            if any(a.name == "architecture" or a.name.startswith("architecture.") for a in node.names):
                return node
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").partition(".")[0] == "architecture"
        ):
            return node
    return None


# --- D100: syntax ----------------------------------------------------------------------------------------


@static_check("D100", title="Python files that do not parse")
def check_syntax(project: Project) -> list[Finding]:
    findings = []
    for path in project.python_files:
        exc = project.syntax_error(path)
        if exc is not None:
            findings.append(
                _error(
                    project.rel(path),
                    exc.lineno,
                    "D100",
                    f"does not parse: {exc.msg}; the container or the test run stops at this import",
                    "fix the syntax (services run on Python 3.11)",
                )
            )
    return findings


# --- D101 / D109: routes ---------------------------------------------------------------------------------

APP_CLASSES = frozenset({"FastAPI", "Starlette"})
ROUTER_CLASSES = frozenset({"APIRouter", "Router"})
ROUTE_DECORATORS = frozenset({"get", "api_route", "route"})
ROUTE_ADDERS = frozenset({"add_api_route", "add_route"})
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z_]+))?\}")
_CONVERTORS = {
    "str": "[^/]+",
    "path": ".*",
    "int": "[0-9]+",
    "float": r"[0-9]+(?:\.[0-9]+)?",
    "uuid": "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
}


@dataclass(frozen=True)
class Route:
    path: str
    get: bool  # answers GET
    file: Path
    line: int

    @property
    def parametrized(self) -> bool:
        return _PARAM.search(self.path) is not None

    def matches(self, path: str) -> bool:
        """Whether Starlette would route a request for `path` to this route (path part only)."""
        pattern, last = "", 0
        for param in _PARAM.finditer(self.path):
            pattern += re.escape(self.path[last : param.start()])
            pattern += f"(?:{_CONVERTORS.get(param.group(2) or 'str', '[^/]+')})"
            last = param.end()
        pattern += re.escape(self.path[last:])
        return re.fullmatch(pattern, path) is not None


@dataclass(frozen=True)
class Include:
    """`include_router(target, prefix=...)`: the target's routes join at this point, in their order."""

    target: RouteTable | tuple[Path, str] | None  # the router, or its (file, name); None: not resolvable
    prefix: str
    line: int


@dataclass
class RouteTable:
    """An app or router object and its routes and includes, in registration order."""

    kind: Literal["app", "router"]
    file: Path
    name: str
    line: int
    prefix: str = ""
    entries: list[Route | Include] = field(default_factory=list)


def _methods_allow_get(call: ast.Call) -> bool:
    methods = _keyword(call, "methods")
    if methods is None:
        return True
    if isinstance(methods, ast.List | ast.Tuple | ast.Set):
        names = [_string(e) for e in methods.elts]
        if all(n is not None for n in names):
            return any(n.upper() == "GET" for n in names if n)
    return True  # not a literal: assume it may


def _route_path(call: ast.Call) -> str | None:
    return _string(call.args[0]) if call.args else _string(_keyword(call, "path"))


class _RouteScanner:
    """Collects the route tables of one module, in the order its statements register routes."""

    def __init__(self, file: Path, resolve_import: Callable[[ast.expr], tuple[Path, str] | None]) -> None:
        self.file = file
        self.resolve_import = resolve_import
        self.tables: dict[str, RouteTable] = {}  # module-level objects by name
        self.local_tables: list[RouteTable] = []  # objects created inside functions (app factories)

    def scan(self, tree: ast.Module) -> None:
        self._statements(tree.body, self.tables, module_level=True)

    def _statements(self, body: Sequence[ast.stmt], scope: dict[str, RouteTable], module_level: bool) -> None:
        for stmt in body:
            if isinstance(stmt, ast.Assign | ast.AnnAssign) and isinstance(stmt.value, ast.Call):
                self._assignment(stmt, stmt.value, scope, module_level)
            elif isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
                for decorator in stmt.decorator_list:
                    self._route_call(decorator, scope, ROUTE_DECORATORS)
                local: dict[str, RouteTable] = {}
                self._statements(stmt.body, local, module_level=False)
            elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
                self._route_call(stmt.value, scope, ROUTE_ADDERS | {"include_router"})
            elif isinstance(stmt, ast.If | ast.For | ast.While | ast.With | ast.AsyncWith | ast.Try):
                for block in ("body", "orelse", "finalbody"):
                    self._statements(getattr(stmt, block, []), scope, module_level)
                for handler in getattr(stmt, "handlers", []):
                    self._statements(handler.body, scope, module_level)

    def _assignment(
        self,
        stmt: ast.Assign | ast.AnnAssign,
        call: ast.Call,
        scope: dict[str, RouteTable],
        module_level: bool,
    ) -> None:
        kind = _call_name(call)
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        if kind not in APP_CLASSES | ROUTER_CLASSES or not names:
            return
        table = RouteTable(
            "app" if kind in APP_CLASSES else "router",
            self.file,
            names[0],
            stmt.lineno,
            _string(_keyword(call, "prefix")) or "",
        )
        routes = _keyword(call, "routes")  # Starlette(routes=[Route("/x", f), ...])
        if isinstance(routes, ast.List | ast.Tuple):
            for element in routes.elts:
                if isinstance(element, ast.Call) and _call_name(element) in {"Route", "APIRoute"}:
                    path = _route_path(element)
                    if path is not None:
                        table.entries.append(
                            Route(path, _methods_allow_get(element), self.file, element.lineno)
                        )
        for name in names:
            scope[name] = table
        if not module_level:
            self.local_tables.append(table)

    def _route_call(
        self, node: ast.expr, scope: dict[str, RouteTable], methods: frozenset[str] | set[str]
    ) -> None:
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            return
        owner = node.func.value
        if not (isinstance(owner, ast.Name) and owner.id in scope) or node.func.attr not in methods:
            return
        table = scope[owner.id]
        if node.func.attr == "include_router":
            target_node = node.args[0] if node.args else _keyword(node, "router")
            target: RouteTable | tuple[Path, str] | None = None
            if isinstance(target_node, ast.Name) and target_node.id in scope:
                target = scope[target_node.id]
            elif target_node is not None:
                target = self.resolve_import(target_node)
            table.entries.append(Include(target, _string(_keyword(node, "prefix")) or "", node.lineno))
            return
        path = _route_path(node)
        if path is not None:
            table.entries.append(Route(path, _methods_allow_get(node), self.file, node.lineno))


class _ServiceRoutes:
    """The route tables of every module of one service, with imports between its modules resolved."""

    def __init__(self, project: Project, service: ServiceView) -> None:
        self.files = project.python_files_under(service.build_dir)
        self.build_dir = service.build_dir.resolve()
        self.tables: dict[tuple[Path, str], RouteTable] = {}
        self.apps: list[RouteTable] = []
        for file in self.files:
            tree = project.module(file)
            if tree is None:
                continue
            bindings = _import_bindings(tree)
            scanner = _RouteScanner(file, partial(self._resolve, file, bindings))
            scanner.scan(tree)
            for name, table in scanner.tables.items():
                self.tables[(file, name)] = table
            for table in [*scanner.tables.values(), *scanner.local_tables]:
                if table.kind == "app" and table not in self.apps:
                    self.apps.append(table)

    def _module_file(self, importer: Path, module: str, level: int) -> Path | None:
        parts = [p for p in module.split(".") if p]
        if level:
            base = importer.parent
            for _ in range(level - 1):
                base = base.parent
            candidates = [base.joinpath(*parts).with_suffix(".py"), base.joinpath(*parts, "__init__.py")]
            return next((c for c in candidates if c in self.files), None)
        best: Path | None = None
        for file in self.files:
            rel = file.relative_to(self.build_dir).with_suffix("").parts
            if rel and rel[-1] == "__init__":
                rel = rel[:-1]
            matches = bool(parts) and tuple(rel[-len(parts) :]) == tuple(parts)
            if matches and (best is None or len(file.parts) < len(best.parts)):
                best = file
        return best

    def _resolve(
        self, importer: Path, bindings: dict[str, tuple[str, str | None, int]], node: ast.expr
    ) -> tuple[Path, str] | None:
        """(file, name) of a router referred to as an imported name or `module.name`."""
        if isinstance(node, ast.Name) and node.id in bindings:
            module, attr, level = bindings[node.id]
            if attr is not None:
                file = self._module_file(importer, module, level)
                return (file, attr) if file else None
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            binding = bindings.get(node.value.id)
            if binding is not None:
                module, attr, level = binding
                dotted = f"{module}.{attr}" if attr else module
                file = self._module_file(importer, dotted, level)
                return (file, node.attr) if file else None
        return None

    def flatten(self, table: RouteTable, seen: frozenset[int] = frozenset()) -> tuple[list[Route], bool]:
        """Every route of `table` with its full path, in registration order; and whether all were found."""
        routes: list[Route] = []
        complete = True
        for entry in table.entries:
            if isinstance(entry, Route):
                routes.append(replace(entry, path=table.prefix + entry.path))
                continue
            target = entry.target if isinstance(entry.target, RouteTable) else None
            if isinstance(entry.target, tuple):
                target = self.tables.get(entry.target)
            if target is None or id(target) in seen:
                complete = False
                continue
            included, ok = self.flatten(target, seen | {id(table)})
            complete = complete and ok
            routes += [replace(r, path=table.prefix + entry.prefix + r.path) for r in included]
        return routes, complete


def _import_bindings(tree: ast.Module) -> dict[str, tuple[str, str | None, int]]:
    """Module-level imported names: name -> (module, attribute or None for a module, level)."""
    bindings: dict[str, tuple[str, str | None, int]] = {}
    for node in tree.body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    bindings[alias.asname] = (alias.name, None, 0)
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                bindings[alias.asname or alias.name] = (node.module or "", alias.name, node.level)
    return bindings


@static_check("D101", "D109", title="health routes, and catch-all routes registered before them")
def check_health_routes(project: Project) -> list[Finding]:
    findings: list[Finding] = []
    for service in project.services:
        routes_of = _ServiceRoutes(project, service)
        if not routes_of.apps:
            continue  # no FastAPI/Starlette app found: nothing to say about its routes
        health = service.health_path.split("?", 1)[0]
        answered = False
        missing: list[tuple[RouteTable, Route | None, bool]] = []
        for app in routes_of.apps:
            routes, complete = routes_of.flatten(app)
            get_routes = [r for r in routes if r.get]
            first = next((r for r in get_routes if r.matches(health)), None)
            literal = next((r for r in get_routes if not r.parametrized and r.path == health), None)
            if first is not None and not first.parametrized:
                answered = True
            elif first is not None and literal is not None:
                answered = True  # it exists, but too late: D101
                findings.append(
                    _error(
                        project.rel(first.file),
                        first.line,
                        "D101",
                        f"catch-all route GET {first.path} of service {service.name} is registered before "
                        f"its health route GET {health} ({project.rel(literal.file)}:{literal.line}), so "
                        f"it answers {health} and the health check gets a 404 or a redirect",
                        f"register GET {health} before GET {first.path} (keep the catch-all last)",
                    )
                )
            else:
                missing.append((app, first, complete))
        if answered:
            continue
        for app, catch_all, complete in missing[:1]:
            if not complete:
                continue  # some routes come from a router this check cannot follow
            shadow = (
                f"; GET {catch_all.path} ({project.rel(catch_all.file)}:{catch_all.line}) answers it instead"
                if catch_all
                else ""
            )
            findings.append(
                _error(
                    project.rel(app.file),
                    app.line,
                    "D109",
                    f"service {service.name}: services.yml gives the health path {service.health_path} but "
                    f"app `{app.name}` has no GET route for it{shadow}; the stack never becomes healthy",
                    f"add @{app.name}.get({health!r}) returning 200 when ready (before any catch-all), or "
                    f"set `health:` of {service.name} in architecture/services.yml to the route it has",
                )
            )
    return findings


# --- D102: function-level imports -------------------------------------------------------------------------


def _module_bindings(tree: ast.Module) -> dict[str, int]:
    """Names bound at module level (outside `if TYPE_CHECKING:`) -> line of the first binding."""
    bound: dict[str, int] = {}

    def bind(name: str, line: int) -> None:
        bound.setdefault(name, line)

    def targets(node: ast.AST, line: int) -> None:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name):
                bind(sub.id, line)

    def visit(body: Sequence[ast.stmt]) -> None:
        for stmt in body:
            if isinstance(stmt, ast.Import):
                for alias in stmt.names:
                    bind(alias.asname or alias.name.split(".")[0], stmt.lineno)
            elif isinstance(stmt, ast.ImportFrom):
                for alias in stmt.names:
                    if alias.name != "*":
                        bind(alias.asname or alias.name, stmt.lineno)
            elif isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                bind(stmt.name, stmt.lineno)
            elif isinstance(stmt, ast.Assign):
                for target in stmt.targets:
                    targets(target, stmt.lineno)
            elif isinstance(stmt, ast.AnnAssign | ast.AugAssign) and (
                not isinstance(stmt, ast.AnnAssign) or stmt.value is not None
            ):
                targets(stmt.target, stmt.lineno)
            elif isinstance(stmt, ast.If):
                if not _is_type_checking(stmt.test):
                    visit(stmt.body)
                visit(stmt.orelse)
            elif isinstance(stmt, ast.For | ast.AsyncFor):
                targets(stmt.target, stmt.lineno)
                visit(stmt.body)
                visit(stmt.orelse)
            elif isinstance(stmt, ast.While):
                visit(stmt.body)
                visit(stmt.orelse)
            elif isinstance(stmt, ast.With | ast.AsyncWith):
                for item in stmt.items:
                    if item.optional_vars is not None:
                        targets(item.optional_vars, stmt.lineno)
                visit(stmt.body)
            elif isinstance(stmt, ast.Try | ast.TryStar):
                visit(stmt.body)
                for handler in stmt.handlers:
                    visit(handler.body)
                visit(stmt.orelse)
                visit(stmt.finalbody)

    visit(tree.body)
    return bound


def _own_scope(function: ast.FunctionDef | ast.AsyncFunctionDef) -> Iterator[ast.AST]:
    """Nodes of the function's own scope (comprehensions included: they see its locals)."""
    stack: list[ast.AST] = list(reversed(function.body))
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            # Decorators and defaults run in this scope; the body is another scope.
            outer: list[ast.AST] = [*node.args.defaults, *[d for d in node.args.kw_defaults if d]]
            if not isinstance(node, ast.Lambda):
                outer += node.decorator_list
            stack.extend(reversed(outer))
        elif isinstance(node, ast.ClassDef):
            stack.extend(reversed([*node.decorator_list, *node.bases, *[k.value for k in node.keywords]]))
        else:
            stack.extend(reversed(list(ast.iter_child_nodes(node))))


@static_check("D102", title="function-level imports that shadow module names or come after a use")
def check_function_imports(project: Project) -> list[Finding]:
    findings: list[Finding] = []
    for path in project.python_files:
        tree = project.module(path)
        if tree is None:
            continue
        module_names = _module_bindings(tree)
        for function in ast.walk(tree):
            if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                findings += _function_import_findings(project, path, function, module_names)
    return findings


def _function_import_findings(
    project: Project,
    path: Path,
    function: ast.FunctionDef | ast.AsyncFunctionDef,
    module_names: dict[str, int],
) -> list[Finding]:
    nodes = list(_own_scope(function))
    declared = {n for node in nodes if isinstance(node, ast.Global | ast.Nonlocal) for n in node.names}
    uses: dict[str, list[ast.Name]] = {}
    for node in nodes:
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load | ast.Del):
            uses.setdefault(node.id, []).append(node)
    findings = []
    reported: set[str] = set()
    for node in nodes:
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        for alias in node.names:
            if alias.name == "*":
                continue
            name = alias.asname or (alias.name.split(".")[0] if isinstance(node, ast.Import) else alias.name)
            if name in declared or name in reported:
                continue
            position = (node.lineno, node.col_offset)
            earlier = [u for u in uses.get(name, []) if (u.lineno, u.col_offset) < position]
            where = project.rel(path)
            if earlier:
                reported.add(name)
                first = min(earlier, key=lambda u: (u.lineno, u.col_offset))
                shadow = (
                    f" (it shadows the module-level `{name}` of line {module_names[name]})"
                    if name in module_names
                    else ""
                )
                findings.append(
                    _error(
                        where,
                        node.lineno,
                        "D102",
                        f"`{name}` is imported inside {function.name}() after the function already uses "
                        f"it at {where}:{first.lineno}{shadow}; the import makes `{name}` local to the whole "
                        "function, so that use raises UnboundLocalError",
                        f"move the import to the top of the module (or above line {first.lineno}), or import "
                        "it under another name",
                    )
                )
            elif name in module_names:
                reported.add(name)
                findings.append(
                    _warning(
                        where,
                        node.lineno,
                        "D102",
                        f"`{name}` is imported inside {function.name}() although the module already binds "
                        f"it at line {module_names[name]}; inside {function.name}() it is now a local name, "
                        "and a use added above this import raises UnboundLocalError",
                        f"remove the inner import and use the module-level `{name}`, or import it under "
                        "another name",
                    )
                )
    return findings


# --- Dockerfiles ------------------------------------------------------------------------------------------


def parse_dockerfile(text: str) -> tuple[Instruction, ...]:
    """The instructions of a Dockerfile's text and the line each starts on (`integration.dockerfile`)."""
    return parse(text).instructions


def _dockerfiles(project: Project) -> Iterator[tuple[ServiceView, Path, Dockerfile]]:
    """Each service's Dockerfile once, parsed; one that does not parse is D111's, skipped here."""
    seen: set[Path] = set()
    for service in project.services:
        if service.dockerfile in seen or not service.dockerfile.is_file():
            continue
        seen.add(service.dockerfile)
        parsed = project.dockerfile(service.dockerfile)
        if isinstance(parsed, Dockerfile):
            yield service, service.dockerfile, parsed


@static_check("D111", title="Dockerfiles that do not parse")
def check_dockerfile_syntax(project: Project) -> list[Finding]:
    findings, seen = [], set()
    for service in project.services:
        if service.dockerfile in seen or not service.dockerfile.is_file():
            continue
        seen.add(service.dockerfile)
        parsed = project.dockerfile(service.dockerfile)
        if isinstance(parsed, DockerfileError):
            problem = parsed.problem.split(": ", 1)[1] if parsed.line else parsed.problem
            findings.append(
                _error(
                    project.rel(service.dockerfile),
                    parsed.line,
                    "D111",
                    f"service {service.name}: the Dockerfile does not parse: {problem}; `docker build` "
                    "fails the same way",
                    "correct the line (https://docs.docker.com/reference/dockerfile/)",
                )
            )
    return findings


def _normalized(source: str) -> str:
    return os.path.normpath(source).replace(os.sep, "/").lstrip("/") if source not in ("", "/") else "."


def _is_glob(source: str) -> bool:
    return any(ch in source for ch in "*?[")


@static_check("D103", title="Dockerfiles that do not copy architecture/ for code that imports it")
def check_architecture_copied(project: Project) -> list[Finding]:
    findings = []
    for service, dockerfile, parsed in _dockerfiles(project):
        importer = None
        for file in project.python_files_under(service.build_dir):
            tree = project.module(file)
            node = _imports_architecture(tree) if tree else None
            if node is not None:
                importer = f"{project.rel(file)}:{node.lineno}"
                break
        if importer is None:
            continue
        if parsed.bind_mounted:
            continue  # files come from a bind mount: cannot tell
        findings += _architecture_copy_findings(
            project, service, dockerfile, importer, list(parsed.copies), list(parsed.froms)
        )
    return findings


def _architecture_copy_findings(
    project: Project,
    service: ServiceView,
    dockerfile: Path,
    importer: str,
    copies: list[Copy],
    froms: list[From],
) -> list[Finding]:
    rel = project.rel(dockerfile)
    explicit: list[tuple[Copy, str]] = []  # COPY architecture... (D104 checks that it exists)
    whole: list[Copy] = []  # COPY . <dest>
    for copy in copies:
        if copy.from_ is not None:
            continue
        for source in copy.sources:
            norm = _normalized(source)
            if norm == ".":
                whole.append(copy)
            elif (
                norm == "architecture"
                or norm.startswith("architecture/")
                or (_is_glob(norm) and fnmatch.fnmatchcase("architecture", norm))
            ):
                explicit.append((copy, norm))
    if explicit:
        findings = []
        for copy, norm in explicit:
            if norm.startswith("architecture/") or Path(copy.dest.rstrip("/") or "/").name == "architecture":
                continue
            findings.append(
                _error(
                    rel,
                    copy.line,
                    "D103",
                    f"`COPY {norm} {copy.dest}` copies the contents of architecture/ into {copy.dest}, not a "
                    f"folder named architecture, so `import architecture` ({importer}) fails with "
                    "ModuleNotFoundError at container start",
                    f"copy it into a folder named architecture: COPY architecture/ "
                    f"{copy.dest.rstrip('/')}/architecture/",
                )
            )
        return findings
    if whole:
        if not is_ignored("architecture/__init__.py", dockerignore_for(project.root, dockerfile)):
            return []
        return [
            _error(
                rel,
                whole[0].line,
                "D103",
                f"service {service.name} imports architecture ({importer}) but .dockerignore excludes "
                "architecture/ from `COPY .`, so the container stops with ModuleNotFoundError",
                "stop ignoring architecture/ in .dockerignore",
            )
        ]
    final_stage = len(froms) - 1
    if any(c.from_ is not None and c.stage == final_stage for c in copies):
        return []  # the final stage takes its files from another stage: cannot tell
    return [
        _error(
            rel,
            froms[-1].line if froms else 1,
            "D103",
            f"service {service.name} imports architecture ({importer}) but its Dockerfile never copies "
            "architecture/, so the container stops with ModuleNotFoundError: No module named 'architecture'",
            "add `COPY architecture/ /srv/architecture/` (into a folder on the service's PYTHONPATH)",
        )
    ]


@static_check("D104", title="COPY/ADD sources that are not in the build context (the system root)")
def check_copy_sources(project: Project) -> list[Finding]:
    findings = []
    for service, dockerfile, parsed in _dockerfiles(project):
        rules = dockerignore_for(project.root, dockerfile)
        rel_dockerfile = project.rel(dockerfile)
        build_cmd = f"docker build -f {rel_dockerfile} ."
        for copy in parsed.copies:
            if copy.from_ is not None:
                continue
            for source in copy.sources:
                if "$" in source or "://" in source or source.startswith("git@"):
                    continue
                norm = _normalized(source)
                if norm == ".":
                    continue
                problem = _copy_source_problem(project.root, norm, rules)
                if problem is None:
                    continue
                beside = dockerfile.parent / norm
                if problem == "missing" and (
                    (beside.exists() or (_is_glob(norm) and any(dockerfile.parent.glob(norm))))
                    and not norm.startswith("..")
                ):
                    from_root = project.rel(beside)
                    message = (
                        f"COPY source {source} exists next to the Dockerfile ({from_root}) but not in the "
                        f'build context, the system root: `{build_cmd}` fails with "{norm}: not found"'
                    )
                    fix = f"write the source relative to the system root: {from_root}"
                elif problem == "missing":
                    message = (
                        f"COPY source {source} is not in the build context ({project.root}): "
                        f'`{build_cmd}` fails with "not found"'
                    )
                    fix = "copy a path that exists relative to the system root"
                elif problem == "outside":
                    message = f"COPY source {source} lies outside the build context (the system root)"
                    fix = "move the files into the system or copy them from inside it"
                else:
                    message = f"COPY source {source} is excluded by .dockerignore: the build finds nothing"
                    fix = "stop ignoring it in .dockerignore (add a `!` rule) or do not copy it"
                findings.append(
                    _error(rel_dockerfile, copy.line, "D104", f"service {service.name}: {message}", fix)
                )
    return findings


def _copy_source_problem(root: Path, norm: str, rules: list[IgnoreRule]) -> str | None:
    """None when fine; else "outside", "missing" or "ignored"."""
    if norm == ".." or norm.startswith("../"):
        return "outside"
    if _is_glob(norm):
        matches = [p for p in root.glob(norm)]
        if not matches:
            return "missing"
        rels = [p.relative_to(root).as_posix() for p in matches]
        return "ignored" if rules and all(is_ignored(r, rules) for r in rels) else None
    target = root / norm
    if not target.exists():
        return "missing"
    if not rules:
        return None
    if target.is_file():
        return "ignored" if is_ignored(norm, rules) else None
    if is_ignored(norm, rules) and not any(r.negated for r in rules):
        return "ignored"
    return None


_PYTHON_IMAGE_REF = re.compile(r"\$\{?PYTHON_IMAGE\b")


@static_check("D105", title="FROM lines that do not take ARG PYTHON_IMAGE")
def check_from_lines(project: Project) -> list[Finding]:
    findings = []
    for service, dockerfile, parsed in _dockerfiles(project):
        rel = project.rel(dockerfile)
        global_args = {arg.name for arg in parsed.global_args}
        for from_ in parsed.froms:
            image = from_.image
            if image == "scratch" or parsed.stage_index(image, from_.stage) is not None:
                continue
            if _PYTHON_IMAGE_REF.search(image):
                if "PYTHON_IMAGE" not in global_args:
                    findings.append(
                        _error(
                            rel,
                            from_.line,
                            "D105",
                            f"service {service.name}: FROM {image} uses PYTHON_IMAGE but no "
                            "`ARG PYTHON_IMAGE` comes before the first FROM, so it expands to nothing and "
                            "the build fails",
                            "put `ARG PYTHON_IMAGE=python:3.11-slim` on the first line",
                        )
                    )
                continue
            resolved = parsed.base_image(from_) or image
            standin = standin_replacing(resolved)
            if standin is not None:
                problem = (
                    f"FROM {image} does not take PYTHON_IMAGE, so INTEGRATION_PYTHON_IMAGE never reaches "
                    f"it; where {resolved} cannot be pulled the build runs on a copy of the Dockerfile that "
                    f"names the offline stand-in {standin.image} instead"
                )
            else:
                problem = (
                    f"FROM {image} does not take PYTHON_IMAGE and no offline stand-in replaces "
                    f"{resolved}, so the build fails where no registry can be reached"
                )
            findings.append(
                _warning(
                    rel,
                    from_.line,
                    "D105",
                    f"service {service.name}: {problem}",
                    "start the Dockerfile with `ARG PYTHON_IMAGE=python:3.11-slim` and "
                    "`FROM ${PYTHON_IMAGE}`"
                    + ("" if standin is not None else f", or keep {resolved} on this machine (docker load)"),
                )
            )
    return findings


# --- D106-D108: harness code ------------------------------------------------------------------------------

ENGINE_FACTORIES = frozenset({"create_engine", "create_async_engine"})
HTTPX_CLIENTS = frozenset({"Client", "AsyncClient"})
CONTEXT_TAKERS = frozenset(
    {"enter_context", "enter_async_context", "closing", "aclosing", "callback", "push_async_callback"}
)
_SQL_NAME = r'(?:"[^"]+"|[A-Za-z_][\w$]*)(?:\.(?:"[^"]+"|[A-Za-z_][\w$]*))?'
# A TRUNCATE statement (f-string fields read as names), or its start in a string concatenated with names.
_TRUNCATE = re.compile(
    rf"""(?:^|;)\s*TRUNCATE(?:\s+TABLE)?(?:\s+ONLY)?
    (?:\s*$
      |\s+{_SQL_NAME}\s*\*?(?:\s*,\s*{_SQL_NAME}\s*\*?)*
       (?:\s+(?:RESTART|CONTINUE)\s+IDENTITY)?(?:\s+(?:CASCADE|RESTRICT))?\s*(?:;|$))""",
    re.IGNORECASE | re.VERBOSE,
)


@static_check("D106", title="create_engine without NullPool in harness code")
def check_engine_pools(project: Project) -> list[Finding]:
    findings = []
    for path in project.harness_files:
        tree = project.module(path)
        if tree is None:
            continue
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and _call_name(node) in ENGINE_FACTORIES):
                continue
            poolclass = _keyword(node, "poolclass")
            if poolclass is None and any(k.arg is None for k in node.keywords):
                continue  # **kwargs may carry it
            if poolclass is not None and _call_name(poolclass) == "NullPool":
                continue
            given = "" if poolclass is None else f" (poolclass={ast.unparse(poolclass)})"
            findings.append(
                _error(
                    project.rel(path),
                    node.lineno,
                    "D106",
                    f"{_call_name(node)}() without poolclass=NullPool{given} in harness code: pooled "
                    "connections stay open between tests, keep their locks against the services' "
                    "transactions and keep the process alive after the run",
                    "pass poolclass=NullPool (from sqlalchemy.pool import NullPool) and dispose() the "
                    "engine when done",
                )
            )
    return findings


def _parents(tree: ast.AST) -> dict[int, ast.AST]:
    return {id(child): parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}


def _httpx_client_names(tree: ast.Module) -> tuple[set[str], set[str]]:
    """(names bound to httpx.Client/AsyncClient by `from httpx import ...`, names of the httpx module)."""
    classes, modules = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "httpx":
            classes |= {a.asname or a.name for a in node.names if a.name in HTTPX_CLIENTS}
        elif isinstance(node, ast.Import):
            modules |= {a.asname or a.name for a in node.names if a.name == "httpx"}
    return classes, modules


@static_check("D107", title="httpx clients in harness code that are never closed")
def check_http_clients(project: Project) -> list[Finding]:
    findings = []
    for path in project.harness_files:
        tree = project.module(path)
        if tree is None:
            continue
        classes, modules = _httpx_client_names(tree)
        if not classes and not modules:
            continue
        parents = _parents(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            is_client = (isinstance(func, ast.Name) and func.id in classes) or (
                isinstance(func, ast.Attribute)
                and func.attr in HTTPX_CLIENTS
                and isinstance(func.value, ast.Name)
                and func.value.id in modules
            )
            if not is_client or _is_released(node, tree, parents, CLIENT_CLOSERS):
                continue
            findings.append(
                _warning(
                    project.rel(path),
                    node.lineno,
                    "D107",
                    f"httpx.{_call_name(node)}() is created outside a `with` block and never closed in this "
                    "class or module: its connections stay open after the tests",
                    "create it in `with`/`async with`, or call .close()/.aclose() where its owner is "
                    "torn down",
                )
            )
    return findings


@static_check("D112", title="SQLAlchemy engines in harness code that are never disposed")
def check_engine_disposal(project: Project) -> list[Finding]:
    findings = []
    for path in project.harness_files:
        tree = project.module(path)
        if tree is None:
            continue
        parents = _parents(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and _call_name(node) in ENGINE_FACTORIES):
                continue
            if _is_released(node, tree, parents, ENGINE_CLOSERS):
                continue
            findings.append(
                _warning(
                    project.rel(path),
                    node.lineno,
                    "D112",
                    f"the engine {_call_name(node)}() creates in harness code is never disposed in this "
                    "module: its connections (and an async engine's event-loop callbacks) outlive the tests",
                    "call engine.dispose() (await it for an async engine) where its owner is torn down, "
                    "or register it on an ExitStack (stack.callback(engine.dispose))",
                )
            )
    return findings


# --- who releases a client or an engine ------------------------------------------------------------------
#
# A resource created by a call is released when the call sits in `with` or is handed to an exit stack
# (`enter_context`, `closing`), when it is returned or yielded (its caller owns it), or when what holds it
# is released later in the module: `x.close()`, `x.close` given as a callback, `with x`, `closing(x)`,
# `stack.enter_context(x)`, `close_all(x)`. What holds it is followed through aliases (`self.c = c`) and
# containers (`self.clients.append(c)`, `clients[name] = Client()`, `[Client(), Client()]`): a container
# is released by a loop or comprehension over it (`for c in self.clients.values(): c.close()`), by
# `clients.pop().close()` / `clients[name].close()`, or by passing it to a function named like close.
# When the analysis cannot tell (the resource is passed to some other call), any release in the module
# counts: a doctor's false alarm costs more than a missed warning.

CLIENT_CLOSERS = frozenset({"close", "aclose"})
ENGINE_CLOSERS = frozenset({"dispose"})
# Methods that put their argument into the container they are called on.
_CONTAINER_ADDERS = frozenset(
    {"append", "appendleft", "add", "extend", "insert", "setdefault", "update", "put", "put_nowait"}
)
# Calls that own what they are given: an exit stack, contextlib.closing.
_RELEASE_TAKERS = CONTEXT_TAKERS | {"push", "push_async_exit"}
_RELEASING_WORDS = ("close", "dispose", "shutdown", "cleanup", "teardown", "release")
_PASS_THROUGH = (ast.keyword, ast.IfExp, ast.BoolOp, ast.Await, ast.Starred)
_CONTAINERS = (
    ast.List,
    ast.Tuple,
    ast.Set,
    ast.Dict,
    ast.ListComp,
    ast.SetComp,
    ast.DictComp,
    ast.GeneratorExp,
)


@dataclass
class _Holders:
    """Names (`client`) and attributes (`.client`) holding a resource, and containers holding it."""

    direct: set[str] = field(default_factory=set)
    containers: set[str] = field(default_factory=set)


def _target_key(node: ast.expr) -> str | None:
    """`name` or `.attr` for what a value is stored in (subscripts: the container)."""
    while isinstance(node, ast.Subscript):
        node = node.value
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return "." + node.attr
    return None


def _keys_in(node: ast.AST) -> set[str]:
    """The key of every name and attribute in `node`."""
    return {key for sub in ast.walk(node) if isinstance(sub, ast.expr) and (key := _target_key(sub))}


def _flatten(target: ast.expr) -> list[ast.expr]:
    if isinstance(target, ast.Tuple | ast.List):
        return [t for element in target.elts for t in _flatten(element)]
    if isinstance(target, ast.Starred):
        return _flatten(target.value)
    return [target]


def _assign_targets(node: ast.AST) -> list[ast.expr]:
    if isinstance(node, ast.Assign):
        return list(node.targets)
    if isinstance(node, ast.AnnAssign | ast.AugAssign | ast.NamedExpr):
        return [node.target]
    return []


def _first_holders(call: ast.Call, parents: dict[int, ast.AST]) -> _Holders | bool | None:
    """Where the resource `call` creates goes first: True when owned on the spot, False when dropped,
    None when handed to a call the analysis cannot follow, else what holds it."""
    node: ast.AST = call
    parent = parents.get(id(node))
    contained = False
    while isinstance(parent, _PASS_THROUGH + _CONTAINERS):
        contained = contained or isinstance(parent, _CONTAINERS)
        node, parent = parent, parents.get(id(parent))
    if isinstance(parent, ast.withitem | ast.Return | ast.Yield | ast.YieldFrom | ast.Lambda):
        return True
    if isinstance(parent, ast.comprehension):
        return None  # iterated over: too odd to judge
    if isinstance(parent, ast.Call):
        if _call_name(parent) in _RELEASE_TAKERS:
            return True
        func = parent.func
        if node is not func and isinstance(func, ast.Attribute) and func.attr in _CONTAINER_ADDERS:
            key = _target_key(func.value)
            return _Holders(containers={key}) if key else None
        return None
    holders = _Holders()
    for target in _assign_targets(parent) if parent is not None else []:
        unpacked = isinstance(target, ast.Tuple | ast.List)
        for element in _flatten(target):
            key = _target_key(element)
            if key is None:
                continue
            if isinstance(element, ast.Subscript) or (contained and not unpacked):
                holders.containers.add(key)
            else:
                holders.direct.add(key)
            if unpacked and contained:
                holders.containers.add(key)
    return holders if holders.direct or holders.containers else False


def _held_kind(value: ast.expr, holders: _Holders) -> str | None:
    """What `value` is, as far as `holders` go: "direct" (a resource: `c`, `clients[k]`,
    `clients.pop()`), "container" (`clients`, `[c, d]`) or None (neither)."""
    element_of = isinstance(value, ast.Call) and (
        isinstance(value.func, ast.Attribute)
        and value.func.attr in ("pop", "popitem", "popleft", "get", "get_nowait")
    )
    if element_of:
        assert isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
        return "direct" if _target_key(value.func.value) in holders.containers else None
    key = _target_key(value)
    if isinstance(value, ast.Subscript) and key in holders.containers:
        return "direct"
    if key in holders.direct and not isinstance(value, ast.Subscript):
        return "direct"
    if key in holders.containers or (isinstance(value, _CONTAINERS) and _keys_in(value) & holders.direct):
        return "container"
    return None


def _follow_aliases(tree: ast.AST, holders: _Holders) -> None:
    """Add what `holders` is copied into: `other = client`, `self.c = c`, `bag.append(c)`, `d[k] = c`,
    `x = clients[k]` or `clients.pop()` (an element of a container), `others = [c]`."""
    for _round in range(8):
        before = (len(holders.direct), len(holders.containers))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                if (
                    isinstance(func, ast.Attribute)
                    and func.attr in _CONTAINER_ADDERS
                    and (key := _target_key(func.value))
                    and any(_target_key(arg) in holders.direct for arg in node.args)
                ):
                    holders.containers.add(key)
                continue
            value = getattr(node, "value", None)
            targets = _assign_targets(node)
            kind = _held_kind(value, holders) if isinstance(value, ast.expr) and targets else None
            if kind is None:
                continue
            for element in (e for t in targets for e in _flatten(t)):
                key = _target_key(element)
                if key is None:
                    continue
                if kind == "direct" and not isinstance(element, ast.Subscript):
                    holders.direct.add(key)
                else:
                    holders.containers.add(key)  # d[k] = c, others = clients, others = [c]
        if (len(holders.direct), len(holders.containers)) == before:
            return


def _releases(scope: ast.AST, holders: _Holders, closers: frozenset[str]) -> bool:
    """Whether `scope` releases what `holders` names (see the comment above)."""
    everything = holders.direct | holders.containers
    for node in ast.walk(scope):
        if isinstance(node, ast.Attribute) and node.attr in closers:
            if _target_key(node.value) in holders.direct or _keys_in(node.value) & holders.containers:
                return True  # c.close(), stack.callback(c.close), clients[k].close(), clients.pop().close()
        elif isinstance(node, ast.withitem) and _target_key(node.context_expr) in holders.direct:
            return True
        elif isinstance(node, ast.Call):
            name = (_call_name(node) or "").lower()
            arguments = [*node.args, *(k.value for k in node.keywords)]
            if name in _RELEASE_TAKERS and any(_target_key(a) in holders.direct for a in arguments):
                return True  # closing(c), stack.enter_context(c), stack.push(c)
            if any(word in name for word in _RELEASING_WORDS) and any(
                _keys_in(a) & everything for a in arguments
            ):
                return True  # close_all(self.clients)
        loops: list[tuple[ast.expr, ast.expr, Sequence[ast.AST]]]  # (iterated, target, body) of each loop
        if isinstance(node, ast.For | ast.AsyncFor):
            loops = [(node.iter, node.target, node.body)]
        elif isinstance(node, ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
            elements = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
            loops = [(g.iter, g.target, elements) for g in node.generators]
        else:
            continue
        for iterated, target, body in loops:
            if not _keys_in(iterated) & everything:
                continue
            names = {key for t in _flatten(target) if (key := _target_key(t))}
            each = _Holders(direct=names)
            if names and any(_releases(part, each, closers) for part in body):
                return True  # for c in self.clients.values(): c.close()
    return False


def _any_release(tree: ast.AST, closers: frozenset[str]) -> bool:
    return any(isinstance(n, ast.Attribute) and n.attr in closers for n in ast.walk(tree))


def _is_released(
    call: ast.Call, tree: ast.Module, parents: dict[int, ast.AST], closers: frozenset[str]
) -> bool:
    """Whether something releases the client or engine that `call` creates (see the comment above)."""
    first = _first_holders(call, parents)
    if isinstance(first, bool):
        return first
    if first is None:
        return _any_release(tree, closers)  # passed on (a constructor): whoever releases anything
    _follow_aliases(tree, first)
    return _releases(tree, first, closers)


@static_check("D108", title="TRUNCATE in harness SQL")
def check_truncate(project: Project) -> list[Finding]:
    findings = []
    for path in project.harness_files:
        tree = project.module(path)
        if tree is None:
            continue
        docstrings = _docstring_nodes(tree)
        parents = _parents(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if id(node) in docstrings or isinstance(parents.get(id(node)), ast.JoinedStr):
                    continue
                text = node.value
            elif isinstance(node, ast.JoinedStr):
                text = "".join(
                    v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "x"
                    for v in node.values
                )
            else:
                continue
            if _TRUNCATE.search(text):
                findings.append(
                    _error(
                        project.rel(path),
                        node.lineno,
                        "D108",
                        "TRUNCATE in harness SQL: it needs an ACCESS EXCLUSIVE lock and deadlocks or hangs "
                        "against transactions the services still hold open (consumers, outbox publishers)",
                        "empty the tables with DELETE FROM <table> (children first), which takes row "
                        "locks only",
                    )
                )
    return findings


@static_check("D110", title="services.yml and contract modules")
def check_services_file(project: Project) -> list[Finding]:
    return list(project.config_findings)


def static_findings(root: Path) -> list[Finding]:
    """Every static check on the system at `root`; no Docker, no network."""
    return run_static_checks(load_project(root))


def run_static_checks(project: Project, checks: Sequence[Check] | None = None) -> list[Finding]:
    findings: list[Finding] = []
    for check in STATIC_CHECKS if checks is None else checks:
        found = check.run(project)
        findings += sorted(found, key=lambda f: (f.path, f.line or 0, f.code))
    return findings


# --- live checks ------------------------------------------------------------------------------------------


@dataclass
class LiveContext:
    """What the live checks look at: the system (None when it did not load), the engine, the machine."""

    system: SystemSpec | None
    client: DockerClient = docker
    port_base: int = DEFAULT_BASE
    proc: Path = Path("/proc")
    is_free: Callable[[int], bool] = port_is_free
    _image_states: list[ImageState] | None = field(default=None, repr=False)

    def image_states(self) -> list[ImageState]:
        """`check_images` of the system, once for every live check that needs it (the same hash and
        the same FROM substitutions as the build and `require_fresh`)."""
        if self._image_states is None:
            assert self.system is not None
            base = locally_available(self.system.base_images, self.client)
            self._image_states = check_images(self.system, base, self.client)
        return self._image_states


def _engine_down(ctx: LiveContext) -> Finding | None:
    try:
        engine_check(ctx.client)
    except EngineError as exc:
        problem = str(exc).partition("; ")[0]  # the rest is engine_check's advice, given as the fix
        return _warning(
            "<docker>",
            None,
            "D201",
            f"live checks skipped: {problem}",
            "start the Docker engine (on Debian: scripts/install-docker-engine.sh), then run the doctor "
            "again",
        )
    return None


@live_check("D202", title="docker compose present and >= 2.20")
def check_compose_version(ctx: LiveContext) -> list[Finding]:
    try:
        check_compose(ctx.client)
    except EngineError as exc:
        message, _, fix = str(exc).rpartition("; ")
        return [_error("<docker>", None, "D202", message or str(exc), fix or "install docker compose v2.20+")]
    return []


@live_check("D203", title="stale service images")
def check_stale_images(ctx: LiveContext) -> list[Finding]:
    system = ctx.system
    if system is None:
        return []
    findings = []
    build = f"{BUILD_COMMAND} (or python -m integration build --root {system.root})"
    for state in ctx.image_states():
        if state.fresh:
            continue
        rel = _dockerfile_rel(system, state.service)
        if state.image_id is None:
            findings.append(
                _warning(
                    rel,
                    None,
                    "D203",
                    f"image {state.image} of service {state.service} is not built yet; a test run that does "
                    "not build first refuses to start",
                    build,
                )
            )
            continue
        shown = ", ".join(state.changed[:8]) + (
            f" and {len(state.changed) - 8} more" if len(state.changed) > 8 else ""
        )
        findings.append(
            _error(
                rel,
                None,
                "D203",
                f"image {state.image} of service {state.service} is stale: changed since it was built: "
                f"{shown}; tests against it would test old code",
                build,
            )
        )
    return findings


def _dockerfile_rel(system: SystemSpec, service: str) -> str:
    dockerfile = system.service(service).dockerfile
    if dockerfile.is_relative_to(system.root):
        return dockerfile.relative_to(system.root).as_posix()
    return str(dockerfile)


@live_check("D207", title="FROM images built on an offline stand-in")
def check_substituted_bases(ctx: LiveContext) -> list[Finding]:
    if ctx.system is None:
        return []
    return [
        _info(
            _dockerfile_rel(ctx.system, state.service),
            substitution.line,
            "D207",
            substitution.describe(state.service)
            + f", because {substitution.image} is not on this machine (and no registry gave it); the "
            "build uses a rewritten copy of the Dockerfile outside the repository",
            f"To build on {substitution.image} itself, make it present (docker pull {substitution.image}, "
            "or docker load) and build again",
        )
        for state in ctx.image_states()
        for substitution in state.substitutions
    ]


_TCP_STATES = {"01": "ESTABLISHED", "06": "TIME-WAIT", "08": "CLOSE-WAIT", "0A": "LISTEN"}


def port_connections(port: int, proc: Path = Path("/proc")) -> dict[str, int]:
    """TCP sockets on local `port` by state (TIME-WAIT, ESTABLISHED, ...), from /proc/net/tcp and tcp6."""
    states: dict[str, int] = {}
    for table in (proc / "net" / "tcp", proc / "net" / "tcp6"):
        try:
            rows = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            try:
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
            except (IndexError, ValueError):
                continue
            if local_port == port:
                state = _TCP_STATES.get(fields[3], f"state {fields[3]}")
                states[state] = states.get(state, 0) + 1
    return states


def _port_holder(port: int, ctx: LiveContext) -> tuple[str, str]:
    """What holds `port` ("taken by ...", "held by ..."), and what to do about it."""
    publisher = _container_publishing(port, ctx)
    if publisher is not None:
        return publisher
    owner = describe_port_owner(port, ctx.proc)
    if owner is not None:
        return (
            f"taken by {owner}",
            f"stop {owner.split(':')[0]} if it is a leftover (a stack: python -m integration down)",
        )
    connections = port_connections(port, ctx.proc)
    if connections.get("TIME-WAIT") and set(connections) == {"TIME-WAIT"}:
        return (
            f"held only by {connections['TIME-WAIT']} closed connections in TIME-WAIT (a stack stopped "
            "less than a minute ago; no process listens on it)",
            "nothing to stop: the kernel frees the port within about 60 s",
        )
    if connections:
        shown = ", ".join(f"{n} {state}" for state, n in sorted(connections.items()))
        return f"held by open connections ({shown})", f"find them with: ss -tanp sport = :{port}"
    return "taken by an unknown process", f"find it with: ss -ltnp sport = :{port}"


def _container_publishing(port: int, ctx: LiveContext) -> tuple[str, str] | None:
    """The container that publishes `port` (its docker-proxy holds it), and how to remove it."""
    try:
        containers = ctx.client.container.list(filters=[("publish", str(port))])
    except DockerException:
        return None
    if not containers:
        return None
    container = containers[0]
    project = (container.config.labels or {}).get(COMPOSE_PROJECT_LABEL)
    if project is None:
        return (
            f"published by container {container.name}",
            f"docker rm -f {container.name} if it is a leftover",
        )
    if ctx.system is not None and _of_checkout(project, ctx.system):
        fix = f"python -m integration down --root {ctx.system.root}"
    else:
        fix = f"docker compose -p {project} down -v -t 0, if that stack is a leftover"
    return f"published by container {container.name} of compose project {project}", fix


def _of_checkout(project: str, system: SystemSpec) -> bool:
    """Whether a compose project is this checkout's (or one of its xdist workers')."""
    mine = project_name(system)
    return project == mine or project.startswith(mine + "-")


@live_check("D204", title="preferred host ports that are taken")
def check_ports(ctx: LiveContext) -> list[Finding]:
    system = ctx.system
    if system is None:
        return []
    preferred = plan_ports(system, is_free=lambda _port: True, base=ctx.port_base)
    findings = []
    for compose_service, ports in preferred.ports.items():
        for container_port, host_port in ports.items():
            if ctx.is_free(host_port):
                continue
            holder, fix = _port_holder(host_port, ctx)
            findings.append(
                _warning(
                    f"<port {host_port}>",
                    None,
                    "D204",
                    f"127.0.0.1:{host_port}, the preferred host port of {compose_service}:"
                    f"{container_port}, is {holder}; the run will fall back to other ports, so "
                    "URLs differ from the documented ones",
                    fix,
                )
            )
    return findings


@live_check("D205", title="leftover containers of this checkout's compose project")
def check_leftover_containers(ctx: LiveContext) -> list[Finding]:
    system = ctx.system
    if system is None:
        return []
    try:
        containers = ctx.client.container.list(all=True, filters=[("label", COMPOSE_PROJECT_LABEL)])
    except DockerException as exc:
        return [_warning("<docker>", None, "D205", f"cannot list containers: {exc}", "check the engine")]
    mine: dict[str, list[str]] = {}
    for container in containers:
        label = (container.config.labels or {}).get(COMPOSE_PROJECT_LABEL, "")
        if _of_checkout(label, system):
            mine.setdefault(label, []).append(f"{container.name} ({container.state.status})")
    findings = []
    for label, names in sorted(mine.items()):
        findings.append(
            _warning(
                "<docker>",
                None,
                "D205",
                f"compose project {label} of this checkout still has containers: {', '.join(sorted(names))}; "
                "a killed or --keep run left them (they hold ports and memory)",
                f"python -m integration down --root {system.root}"
                if label == project_name(system)
                else f"docker compose -p {label} down -v -t 0",
            )
        )
    return findings


def orphaned_pytest_processes(proc: Path = Path("/proc")) -> list[tuple[int, str]]:
    """(pid, command line) of python processes running pytest whose parent is init (pid 1)."""
    found = []
    try:
        entries = [p for p in proc.iterdir() if p.name.isdigit()]
    except OSError:
        return []
    for entry in entries:
        if int(entry.name) == os.getpid():
            continue
        try:
            argv = [a.decode(errors="replace") for a in (entry / "cmdline").read_bytes().split(b"\0") if a]
            status = (entry / "status").read_text()
        except OSError:
            continue
        ppid = next((line.split()[1] for line in status.splitlines() if line.startswith("PPid:")), "")
        if ppid != "1" or not argv:
            continue
        program = Path(argv[0]).name
        runs_pytest = program.startswith("python") and any("pytest" in a for a in argv[1:])
        if runs_pytest or program in ("pytest", "py.test"):
            found.append((int(entry.name), " ".join(argv)[:200]))
    return sorted(found)


@live_check("D206", title="orphaned pytest processes")
def check_orphaned_pytest(ctx: LiveContext) -> list[Finding]:
    return [
        _warning(
            f"<pid {pid}>",
            None,
            "D206",
            f"pytest process {pid} has outlived its parent (its parent is now init): {cmdline}; it may hold "
            "database connections, ports or containers of a stack",
            f"kill {pid} if it is not a run you started on purpose, then look for leftovers with this doctor",
        )
        for pid, cmdline in orphaned_pytest_processes(ctx.proc)
    ]


def live_findings(
    system: SystemSpec | None,
    *,
    client: DockerClient = docker,
    port_base: int = DEFAULT_BASE,
    proc: Path = Path("/proc"),
    checks: Sequence[Check] | None = None,
) -> list[Finding]:
    """Every live check; only a D201 warning when the engine does not answer."""
    ctx = LiveContext(system, client, port_base, proc)
    down = _engine_down(ctx)
    if down is not None:
        return [down, *check_orphaned_pytest(ctx)]
    findings: list[Finding] = []
    for check in LIVE_CHECKS if checks is None else checks:
        try:
            findings += check.run(ctx)
        except (DockerException, IntegrationError, OSError) as exc:
            text = (getattr(exc, "stderr", None) or str(exc)).strip()
            detail = text.splitlines()[-1:] or [type(exc).__name__]
            findings.append(
                _warning(
                    "<docker>",
                    None,
                    check.codes[0],
                    f"{check.title}: not checked: {detail[0]}",
                    "check the engine",
                )
            )
    return findings


# --- the command ------------------------------------------------------------------------------------------


def run_doctor(root: Path, *, live: bool = True, report: Reporter = print) -> int:
    """Run the checks, report one line per finding and a summary; 1 when any error was found, else 0."""
    project = load_project(root)
    findings = run_static_checks(project)
    if live:
        if project.system is None:
            findings.append(
                _warning(
                    project.rel(project.root / SERVICES_FILE),
                    None,
                    "D110",
                    "image, port and container checks skipped because services.yml did not load",
                    "fix the D110 error first",
                )
            )
        findings += live_findings(project.system)
    for finding in findings:
        report(finding.render())
    errors = sum(f.severity == "error" for f in findings)
    warnings = sum(f.severity == "warning" for f in findings)
    notes = sum(f.severity == "info" for f in findings)
    kind = "static and live" if live else "static"
    plural = {1: ""}
    noted = f", {notes} note{plural.get(notes, 's')}" if notes else ""
    report(
        f"doctor: {errors} error{plural.get(errors, 's')}, {warnings} warning{plural.get(warnings, 's')}"
        f"{noted} ({kind} checks of {project.root})"
    )
    return 1 if errors else 0
