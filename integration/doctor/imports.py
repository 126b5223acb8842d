"""Python files that break when they are imported or run: D100, a file that does not parse; D102, a
function-level import that shadows a module-level name or comes after the function already uses it."""

from __future__ import annotations

import ast
from collections.abc import Iterator, Sequence
from pathlib import Path

from .findings import Finding, Project, error, warning


def check_syntax(project: Project) -> list[Finding]:
    """D100: every Python file of the system that does not parse."""
    findings = []
    for path in project.python_files:
        exc = project.syntax_error(path)
        if exc is not None:
            findings.append(
                error(
                    project.rel(path),
                    exc.lineno,
                    "D100",
                    f"does not parse: {exc.msg}; the container or the test run stops at this import",
                    "fix the syntax (services run on Python 3.11)",
                )
            )
    return findings


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


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


def check_function_imports(project: Project) -> list[Finding]:
    """D102: function-level imports that shadow a module-level name or come after a use."""
    findings: list[Finding] = []
    for path, tree in project.modules(project.python_files):
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
                    error(
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
                    warning(
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
