"""Whether harness code releases the HTTP client or the database engine a call creates (D107, D112).

A resource created by a call is released when the call sits in `with` or is handed to an exit stack
(`enter_context`, `closing`), when it is returned or yielded (its caller owns it), or when what holds it
is released later in the module: `x.close()`, `x.close` given as a callback, `with x`, `closing(x)`,
`stack.enter_context(x)`, `close_all(x)`. What holds it is followed through aliases (`self.c = c`) and
containers (`self.clients.append(c)`, `clients[name] = Client()`, `[Client(), Client()]`): a container
is released by a loop or comprehension over it (`for c in self.clients.values(): c.close()`), by
`clients.pop().close()` / `clients[name].close()`, or by passing it to a function named like close.
When the analysis cannot tell (the resource is passed to some other call), any release in the module
counts: a doctor's false alarm costs more than a missed warning.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass, field

from .astnodes import call_name

CLIENT_CLOSERS = frozenset({"close", "aclose"})
ENGINE_CLOSERS = frozenset({"dispose"})
# Calls that take a context manager or a callback and release it when the stack or block ends.
CONTEXT_TAKERS = frozenset(
    {"enter_context", "enter_async_context", "closing", "aclosing", "callback", "push_async_callback"}
)
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
        if call_name(parent) in _RELEASE_TAKERS:
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
    """Whether `scope` releases what `holders` names (see the module docstring)."""
    everything = holders.direct | holders.containers
    for node in ast.walk(scope):
        if isinstance(node, ast.Attribute) and node.attr in closers:
            if _target_key(node.value) in holders.direct or _keys_in(node.value) & holders.containers:
                return True  # c.close(), stack.callback(c.close), clients[k].close(), clients.pop().close()
        elif isinstance(node, ast.withitem) and _target_key(node.context_expr) in holders.direct:
            return True
        elif isinstance(node, ast.Call):
            name = (call_name(node) or "").lower()
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


def is_released(
    call: ast.Call, tree: ast.Module, parents: dict[int, ast.AST], closers: frozenset[str]
) -> bool:
    """Whether something releases the client or engine that `call` creates (see the module docstring)."""
    first = _first_holders(call, parents)
    if isinstance(first, bool):
        return first
    if first is None:
        return _any_release(tree, closers)  # passed on (a constructor): whoever releases anything
    _follow_aliases(tree, first)
    return _releases(tree, first, closers)
