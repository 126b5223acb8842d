"""Small questions about Python syntax trees that several checks ask: what a call is named, a keyword
argument's value, a string constant's text, each node's parent."""

from __future__ import annotations

import ast


def call_name(node: ast.AST) -> str | None:
    """`f` for `f(...)` and `m.f(...)`."""
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    for argument in call.keywords:
        if argument.arg == name:
            return argument.value
    return None


def string(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def parent_map(tree: ast.AST) -> dict[int, ast.AST]:
    """The parent of every node of `tree`, by the node's id()."""
    return {id(child): parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
