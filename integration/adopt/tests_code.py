"""What `python -m integration init` reads from the use-case tests' Python code, with `ast`.

One job: find the ITestHarness Protocol (a class inheriting typing.Protocol with Harness in its name)
and its methods' signatures, the fixture the tests ask for the harness by, and the fixtures of the
conftest.py files that apply to the tests folder.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .reading import (
    MAX_FILE_BYTES,
    Sources,
    Where,
    dotted,
    last_name,
    parameter_defaults,
    python_files,
    relative,
)

DEFAULT_HARNESS_FIXTURE = "test_harness"

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
        return [
            (
                a.arg,
                ast.unparse(a.annotation) if a.annotation is not None else "",
                ast.unparse(d) if d is not None else None,
            )
            for a, d in parameter_defaults(self.args)
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
        dotted(b) in ("Protocol", "typing.Protocol", "typing_extensions.Protocol") for b in node.bases
    ) or any(isinstance(b, ast.Subscript) and last_name(b.value) == "Protocol" for b in node.bases)


def find_protocol(root: Path, sources: Sources, skip: Sequence[Path]) -> tuple[Protocol | None, list[str]]:
    """The ITestHarness Protocol (a class inheriting typing.Protocol named *Harness*), and the others seen."""
    found: list[Protocol] = []
    skipped = [p.resolve() for p in skip]
    for path in python_files(root):
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
                        Where(relative(path, root), stmt.lineno),
                    )
                    for stmt in node.body
                    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef)
                )
                found.append(Protocol(path, relative(path, root), node.name, node.lineno, methods, tree))
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


def read_fixtures(root: Path, sources: Sources, tests: Path) -> list[Fixture]:
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
                    if last_name(target) == "fixture":
                        name = node.name
                        if isinstance(decorator, ast.Call):
                            for keyword in decorator.keywords:
                                if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                                    name = str(keyword.value.value)
                        source = ast.get_source_segment(text, node) or ""
                        found.append(
                            Fixture(name, node, relative(conftest, root), source, tuple(text.splitlines()))
                        )
        if folder == root or root not in folder.parents:
            break
        folder = folder.parent
    return found


def find_harness_fixture(
    root: Path, sources: Sources, tests: Path, protocol: Protocol
) -> tuple[str, str | None]:
    """The fixture the tests ask for: the name most test parameters annotated with the Protocol have."""
    counts: dict[str, int] = {}
    first: dict[str, str] = {}
    for path in python_files(tests, limit=500):
        if not path.name.startswith("test"):
            continue
        tree = sources.tree(path)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
                for arg in node.args.args:
                    if arg.annotation is not None and protocol.name in ast.unparse(arg.annotation):
                        counts[arg.arg] = counts.get(arg.arg, 0) + 1
                        first.setdefault(arg.arg, f"{relative(path, root)}:{node.lineno}")
    if not counts:
        return DEFAULT_HARNESS_FIXTURE, None
    name = max(counts, key=lambda n: (counts[n], n == DEFAULT_HARNESS_FIXTURE))
    return name, first[name]
