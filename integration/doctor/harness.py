"""Harness code that holds on to what it should let go: D106, an engine with a connection pool; D107, an
httpx client never closed; D112, an engine never disposed; D108, TRUNCATE, which waits for every lock
the services hold. Harness code is what lies under use_case_tests/ and tests/."""

from __future__ import annotations

import ast
import re

from .astnodes import call_name, keyword, parent_map, string
from .findings import Finding, Project, error, warning
from .releases import CLIENT_CLOSERS, ENGINE_CLOSERS, is_released

ENGINE_FACTORIES = frozenset({"create_engine", "create_async_engine"})
HTTPX_CLIENTS = frozenset({"Client", "AsyncClient"})
_SQL_NAME = r'(?:"[^"]+"|[A-Za-z_][\w$]*)(?:\.(?:"[^"]+"|[A-Za-z_][\w$]*))?'
# A TRUNCATE statement (f-string fields read as names), or its start in a string concatenated with names.
_TRUNCATE = re.compile(
    rf"""(?:^|;)\s*TRUNCATE(?:\s+TABLE)?(?:\s+ONLY)?
    (?:\s*$
      |\s+{_SQL_NAME}\s*\*?(?:\s*,\s*{_SQL_NAME}\s*\*?)*
       (?:\s+(?:RESTART|CONTINUE)\s+IDENTITY)?(?:\s+(?:CASCADE|RESTRICT))?\s*(?:;|$))""",
    re.IGNORECASE | re.VERBOSE,
)


def check_engine_pools(project: Project) -> list[Finding]:
    """D106: create_engine/create_async_engine calls without poolclass=NullPool."""
    findings = []
    for path, tree in project.modules(project.harness_files):
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and call_name(node) in ENGINE_FACTORIES):
                continue
            poolclass = keyword(node, "poolclass")
            if poolclass is None and any(k.arg is None for k in node.keywords):
                continue  # **kwargs may carry it
            if poolclass is not None and call_name(poolclass) == "NullPool":
                continue
            given = "" if poolclass is None else f" (poolclass={ast.unparse(poolclass)})"
            findings.append(
                error(
                    project.rel(path),
                    node.lineno,
                    "D106",
                    f"{call_name(node)}() without poolclass=NullPool{given} in harness code: pooled "
                    "connections stay open between tests, keep their locks against the services' "
                    "transactions and keep the process alive after the run",
                    "pass poolclass=NullPool (from sqlalchemy.pool import NullPool) and dispose() the "
                    "engine when done",
                )
            )
    return findings


def _httpx_client_names(tree: ast.Module) -> tuple[set[str], set[str]]:
    """(names bound to httpx.Client/AsyncClient by `from httpx import ...`, names of the httpx module)."""
    classes, modules = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "httpx":
            classes |= {a.asname or a.name for a in node.names if a.name in HTTPX_CLIENTS}
        elif isinstance(node, ast.Import):
            modules |= {a.asname or a.name for a in node.names if a.name == "httpx"}
    return classes, modules


def check_http_clients(project: Project) -> list[Finding]:
    """D107: httpx clients created outside `with` that nothing closes."""
    findings = []
    for path, tree in project.modules(project.harness_files):
        classes, modules = _httpx_client_names(tree)
        if not classes and not modules:
            continue
        parents = parent_map(tree)
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
            if not is_client or is_released(node, tree, parents, CLIENT_CLOSERS):
                continue
            findings.append(
                warning(
                    project.rel(path),
                    node.lineno,
                    "D107",
                    f"httpx.{call_name(node)}() is created outside a `with` block and never closed in this "
                    "class or module: its connections stay open after the tests",
                    "create it in `with`/`async with`, or call .close()/.aclose() where its owner is "
                    "torn down",
                )
            )
    return findings


def check_engine_disposal(project: Project) -> list[Finding]:
    """D112: SQLAlchemy engines that nothing disposes."""
    findings = []
    for path, tree in project.modules(project.harness_files):
        parents = parent_map(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and call_name(node) in ENGINE_FACTORIES):
                continue
            if is_released(node, tree, parents, ENGINE_CLOSERS):
                continue
            findings.append(
                warning(
                    project.rel(path),
                    node.lineno,
                    "D112",
                    f"the engine {call_name(node)}() creates in harness code is never disposed in this "
                    "module: its connections (and an async engine's event-loop callbacks) outlive the tests",
                    "call engine.dispose() (await it for an async engine) where its owner is torn down, "
                    "or register it on an ExitStack (stack.callback(engine.dispose))",
                )
            )
    return findings


def _docstring_nodes(tree: ast.Module) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and string(body[0].value) is not None:
                ids.add(id(body[0].value))
    return ids


def check_truncate(project: Project) -> list[Finding]:
    """D108: TRUNCATE statements in the harness's strings."""
    findings = []
    for path, tree in project.modules(project.harness_files):
        docstrings = _docstring_nodes(tree)
        parents = parent_map(tree)
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
                    error(
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
