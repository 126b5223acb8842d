"""D101 and D109: a service's health route, as its app registers it.

The routes of each FastAPI/Starlette app are read from the service's modules in registration order,
routers included with their prefixes (across the service's own modules). D109: no GET route answers the
services.yml `health` path; D101: one does, but a catch-all (`GET /{x}`, `/{x:path}`) registered
before it answers first.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Literal

from .astnodes import call_name, keyword, string
from .findings import Finding, Project, ServiceView, error

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
    methods = keyword(call, "methods")
    if methods is None:
        return True
    if isinstance(methods, ast.List | ast.Tuple | ast.Set):
        names = [string(e) for e in methods.elts]
        if all(n is not None for n in names):
            return any(n.upper() == "GET" for n in names if n)
    return True  # not a literal: assume it may


def _route_path(call: ast.Call) -> str | None:
    return string(call.args[0]) if call.args else string(keyword(call, "path"))


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
        kind = call_name(call)
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        if kind not in APP_CLASSES | ROUTER_CLASSES or not names:
            return
        table = RouteTable(
            "app" if kind in APP_CLASSES else "router",
            self.file,
            names[0],
            stmt.lineno,
            string(keyword(call, "prefix")) or "",
        )
        routes = keyword(call, "routes")  # Starlette(routes=[Route("/x", f), ...])
        if isinstance(routes, ast.List | ast.Tuple):
            for element in routes.elts:
                if isinstance(element, ast.Call) and call_name(element) in {"Route", "APIRoute"}:
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
            target_node = node.args[0] if node.args else keyword(node, "router")
            target: RouteTable | tuple[Path, str] | None = None
            if isinstance(target_node, ast.Name) and target_node.id in scope:
                target = scope[target_node.id]
            elif target_node is not None:
                target = self.resolve_import(target_node)
            table.entries.append(Include(target, string(keyword(node, "prefix")) or "", node.lineno))
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
        for file, tree in project.modules(self.files):
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


def check_health_routes(project: Project) -> list[Finding]:
    """D101 and D109 for every service that has a FastAPI/Starlette app."""
    return [finding for service in project.services for finding in _health_findings(project, service)]


def _health_findings(project: Project, service: ServiceView) -> list[Finding]:
    findings: list[Finding] = []
    routes_of = _ServiceRoutes(project, service)
    if not routes_of.apps:
        return []  # no FastAPI/Starlette app found: nothing to say about its routes
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
                error(
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
        return findings
    for app, catch_all, complete in missing[:1]:
        if not complete:
            continue  # some routes come from a router this check cannot follow
        shadow = (
            f"; GET {catch_all.path} ({project.rel(catch_all.file)}:{catch_all.line}) answers it instead"
            if catch_all
            else ""
        )
        findings.append(
            error(
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
