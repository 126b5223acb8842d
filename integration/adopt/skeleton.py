"""The real harness `python -m integration init` writes, and its advice on the tests' conftest.py.

One job: write `real_harness.py`, a `RealServiceHarness` subclass with one method per method of the
ITestHarness Protocol, each mapped to the FastAPI route its name and parameters match (or raising
NotImplementedError with a `TODO(init)` where none does), its imports taken from the Protocol's module,
formatted as ruff format writes it; and say what to change in the conftest.py fixtures so that
`pytest --integration` gets the real harness.
"""

from __future__ import annotations

import ast
import builtins
import json
import re
import sys
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .inference import Report
from .reading import dotted, last_name, positional_defaults
from .service_code import ModelFields, Route, annotation_names, main_class, path_parameters
from .tests_code import Fixture, Protocol, ProtoMethod

HARNESS_CLASS = "RealServiceHarness"
BASE_ALIAS = "RealServiceHarnessBase"
DEFAULT_MOCK_FIXTURE = "mock_test_harness"
# What the base harness provides: the skeleton does not write these.
BASE_PROVIDED = frozenset({"reset", "get_published_events", "wait_for_events_processed"})
LINE_LIMIT = 110

_VERBS_GET = frozenset({"get", "read", "fetch", "find", "show", "lookup", "load", "describe"})
_VERBS_LIST = frozenset({"list", "all", "search", "browse", "query"})
_VERBS_CREATE = frozenset({"create", "place", "add", "make", "new", "submit", "register", "post", "open"})
_VERBS_SET = frozenset({"set", "put", "update", "replace", "change", "edit", "modify", "save", "upsert"})
_VERBS_DELETE = frozenset({"delete", "remove", "drop", "destroy", "erase"})
_PUBLISH_VERBS = ("redeliver", "republish", "publish", "deliver", "emit")


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
class Plan:
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
    return bool(path_parameters(path))


def _py_str(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _call(head: str, args: Sequence[str], indent: int) -> list[str]:
    """`head(arg, ...)` the way ruff format writes it at `indent`."""
    return _wrapped(f"{head}(", args, ")", indent)


def _wrapped(opening: str, parts: Sequence[str], closing: str, indent: int) -> list[str]:
    """`opening` `parts` `closing` the way ruff format writes it at `indent`: on one line, else the parts
    on one line of their own, else one part per line."""
    pad = " " * indent
    one = f"{pad}{opening}{', '.join(parts)}{closing}"
    if len(one) <= LINE_LIMIT:
        return [one]
    inner = f"{pad}    {', '.join(parts)}"
    if len(inner) <= LINE_LIMIT:
        return [f"{pad}{opening}", inner, f"{pad}{closing}"]
    return [f"{pad}{opening}", *(f"{pad}    {p}," for p in parts), f"{pad}{closing}"]


def _dict(items: Sequence[tuple[str, str]], prefix: str, indent: int) -> list[str]:
    pad = " " * indent
    body = ", ".join(f"{_py_str(k)}: {v}" for k, v in items)
    one = f"{pad}{prefix}{{{body}}}"
    if len(one) <= LINE_LIMIT:
        return [one]
    return [f"{pad}{prefix}{{", *(f"{pad}    {_py_str(k)}: {v}," for k, v in items), f"{pad}}}"]


@dataclass
class _Arguments:
    """Where a method's parameters go in a route's request: body items (or the whole body) and query."""

    body: list[tuple[str, str]] = field(default_factory=list)  # (key, parameter)
    whole_body: str | None = None  # the expression of the whole body
    query: list[tuple[str, str]] = field(default_factory=list)


def _described(route: Route) -> str:
    return f"{route.method} {route.path} of {route.service} ({route.where})"


def _arguments(
    method: ProtoMethod, route: Route, binding: Mapping[str, str], models: Mapping[str, ModelFields]
) -> _Arguments | str:
    """Each parameter of `method` not in the route's path, put in its query or its body; or why they
    cannot all be put."""
    params = method.params
    used = set(binding.values())
    by_name = {name: annotation for name, annotation, _ in params}
    arguments = _Arguments()
    body_params = [p for p in route.params if p.kind == "body"]
    query_params = [p for p in route.params if p.kind == "query"]
    for param in query_params:
        if param.name in by_name and param.name not in used:
            arguments.query.append((param.name, param.name))
            used.add(param.name)
        elif param.required:
            return (
                f"{_described(route)} needs query parameter {param.name!r}, which {method.name} does not take"
            )
    if body_params:
        model = body_params[0].model
        fields = models.get(model) if model else None
        whole = [n for n, a, _ in params if model and main_class(a) == model]
        if whole:
            arguments.whole_body = f'{whole[0]}.model_dump(mode="json")'
            used.add(whole[0])
        elif fields is not None and len(body_params) == 1:
            missing = [f for f, required in fields.fields if required and f not in by_name]
            if missing:
                return (
                    f"{_described(route)} takes a {model} whose {', '.join(missing)} {method.name} does not "
                    "take"
                )
            for name, _ in fields.fields:
                if name in by_name:
                    arguments.body.append((name, name))
                    used.add(name)
        else:
            for name, _, _ in params:
                if name not in used:
                    arguments.body.append((name, name))
                    used.add(name)
    leftover = [n for n, _, _ in params if n not in used]
    if leftover:
        return f"{_described(route)} takes no {', '.join(leftover)}: where they go is not known"
    return arguments


def _plan_route(
    method: ProtoMethod, route: Route, binding: Mapping[str, str], models: Mapping[str, ModelFields]
) -> Plan:
    arguments = _arguments(method, route, binding, models)
    if isinstance(arguments, str):
        return Plan(method, reason=arguments)
    optional = {name for name, _, default in method.params if default == "None"}
    path = _fstring_path(route.path, binding)
    lines = _comment(_described(route), 8)
    kwargs: list[str] = []
    for items, variable, keyword in ((arguments.body, "body", "json"), (arguments.query, "params", "params")):
        if not items:
            continue
        always = [(k, v) for k, v in items if v not in optional]
        maybe = [(k, v) for k, v in items if v in optional]
        lines += _dict(always, f"{variable} = ", 8)
        for key, value in maybe:
            lines += [f"        if {value} is not None:", f"            {variable}[{_py_str(key)}] = {value}"]
        kwargs.append(f"{keyword}={variable}")
    if arguments.whole_body is not None:
        kwargs.append(f"json={arguments.whole_body}")
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
    return Plan(method, lines=lines, summary=_described(route))


def _plan(
    method: ProtoMethod,
    routes: Sequence[Route],
    models: Mapping[str, ModelFields],
    events: set[str],
) -> Plan:
    name = method.name
    if name.startswith(_PUBLISH_VERBS):
        event = [
            n
            for n, annotation, _ in method.params
            if "event" in n.lower() or annotation_names(annotation) & events
        ]
        if event:
            plan = Plan(
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
        return Plan(
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

    parts = [one(a, d) for a, d in positional_defaults(args)]
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
    returns = f" -> {method.returns}" if method.returns else ""
    keyword = "async def" if method.is_async else "def"
    return _wrapped(f"{keyword} {method.name}(", _parameters(method.args), f"){returns}:", 4)


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
) -> tuple[str, list[Plan], list[str]]:
    """The text of real_harness.py, the plan of each method, and the Protocol methods left to the base."""
    plans: list[Plan] = []
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

    needed = _needed_imports(class_text, protocol, tests_module)
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


def _needed_imports(
    class_text: str, protocol: Protocol, tests_module: str
) -> dict[str, tuple[str, str | None, int]]:
    """The names the class uses, imported as the Protocol's module imports them (or from that module,
    for those it defines)."""
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
    return needed


# --- conftest advice ---------------------------------------------------------------------------------------


def conftest_advice(
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
            dotted(n.value) for n in ast.walk(real.node) if isinstance(n, ast.Return) and n.value is not None
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
                and "Mock" in last_name(n.value.func)
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
