"""The child process that imports a system's contract modules for discovery (`discovery._read_contracts`).

A contract module is the repository's code: importing it may loop, hang in C code, call `os._exit` or
print. It is imported here, in a process of its own started with `sys.executable -I -B <this file>`, so
that none of that reaches the toolkit's process: a stuck import is ended by a time limit, an exit is an
exit status, its output goes to stderr. This file imports nothing of the toolkit (it is run by path, not
as `integration.contract_child`) and nothing but the standard library and pydantic.

Protocol: the request is one JSON object on stdin (`discovery._contract_request`). On the original
stdout the child writes JSON lines: `{"importing": module}` before each import, so that the parent
knows which contract an abrupt end belongs to, then one `{"result": ...}` (what discovery needs of each
module: its event classes, their declared routing keys, a ROUTING_KEYS mapping, the published and
consumed lists), `{"error": ...}` (a ConfigError's fields) or `{"failed": ...}` (an import raised).
The contract's own stdout is sent to stderr. When an import does not finish within the limit,
faulthandler prints the child's Python stack to stderr and exits (status 1), even when the import is
stuck in C code; the parent reads the innermost frame from there.
"""

from __future__ import annotations

import faulthandler
import importlib
import json
import os
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import IO, Any


def _where(exc: BaseException, root: Path) -> str:
    """`file:line` of the innermost traceback frame in the repository, or of a SyntaxError."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}" if exc.lineno else exc.filename
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).is_relative_to(root)]
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else ""


def _error(path: object, field: str, problem: str) -> dict[str, Any]:
    return {"error": {"path": str(path), "field": field, "problem": problem}}


class _Refused(Exception):
    def __init__(self, message: dict[str, Any]) -> None:
        super().__init__()
        self.message = message


def _declared_routing_key(event: Any, attribute: str) -> str | None:
    """An event class's own routing key: a class attribute (a ClassVar) or a field's default."""
    value = getattr(event, attribute, None)
    if isinstance(value, str) and value:
        return value
    declared = event.model_fields.get(attribute)
    if declared is not None and isinstance(declared.default, str) and declared.default:
        return str(declared.default)
    return None


def _event_list(module: ModuleType, path: str, variable: str, base: type) -> dict[str, Any]:
    """The class names a module lists in `variable`, or the error discovery raises when it reads them."""
    field = f"{module.__name__}.{variable}"
    events = getattr(module, variable, None)
    if events is None:
        if hasattr(module, variable):
            return _error(path, field, "is None; make it a list of event classes (or remove it)")
        return {"names": []}
    if not isinstance(events, list | tuple):
        return _error(path, field, f"must be a list of pydantic model classes, got {type(events).__name__}")
    names: list[str] = []
    for i, event in enumerate(events):
        if not (isinstance(event, type) and issubclass(event, base)) or event is base:
            shown = event.__name__ if isinstance(event, type) else repr(event)[:60]
            return _error(
                path,
                f"{field}[{i}]",
                f"{shown} is not a pydantic model class: list event classes (subclasses of "
                "pydantic.BaseModel), not instances or names",
            )
        if event.__name__ not in names:
            names.append(event.__name__)
    return {"names": names}


def _describe(module: ModuleType, path: str, attribute: str, base: type) -> dict[str, Any]:
    """The event classes a module holds (name, `module:qualname`, declared routing key) and its
    ROUTING_KEYS mapping, in the order discovery merges them."""
    classes = []
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, base) and value is not base:
            ref = f"{value.__module__}:{value.__qualname__}"
            classes.append([value.__name__, ref, _declared_routing_key(value, attribute)])
    keys = []
    mapping = getattr(module, "ROUTING_KEYS", None)
    if isinstance(mapping, Mapping):
        for event, key in mapping.items():
            name = event.__name__ if isinstance(event, type) else str(event)
            if not isinstance(key, str) or not key:
                raise _Refused(
                    _error(path, f"{module.__name__}.ROUTING_KEYS[{name}]", "must be a routing key string")
                )
            keys.append([name, key])
    return {"name": module.__name__, "file": path, "classes": classes, "routing_keys": keys}


def _run(request: Mapping[str, Any], out: IO[str]) -> dict[str, Any]:
    root = Path(request["root"])
    sys.path[:] = [str(root), *request["sys_path"]]
    seconds = float(request["seconds"])

    modules: list[tuple[ModuleType, str]] = []
    for entry in request["modules"]:
        name, path = entry["name"], entry["file"]
        out.write(json.dumps({"importing": name}) + "\n")
        out.flush()
        faulthandler.dump_traceback_later(seconds, exit=True, file=2)  # stderr, even in C code
        try:
            module = importlib.import_module(name)
        except (Exception, SystemExit) as exc:
            detail = exc.msg if isinstance(exc, SyntaxError) else str(exc)
            return {
                "failed": {
                    "module": name,
                    "file": path,
                    "type": type(exc).__name__,
                    "detail": detail,
                    "where": _where(exc, root),
                }
            }
        finally:
            faulthandler.cancel_dump_traceback_later()
        loaded = Path(getattr(module, "__file__", None) or "").resolve()
        if loaded != Path(path).resolve():
            shown = loaded if getattr(module, "__file__", None) else "a namespace package"
            return _error(
                path,
                name,
                f"importing {name} loaded {shown} instead of {path}; "
                "add architecture/__init__.py and architecture/contracts/__init__.py",
            )
        modules.append((module, path))

    from pydantic import BaseModel  # after the contracts: their own import of pydantic is timed

    attribute = request["attribute"]
    described = []
    try:
        for module, path in modules:
            entry = _describe(module, path, attribute, BaseModel)
            entry["lists"] = {v: _event_list(module, path, v, BaseModel) for v in request["variables"]}
            described.append(entry)
        # Classes may live in a module no service names (architecture/contracts/events.py): those the
        # contracts imported count too.
        extra = []
        named = {m.__name__ for m, _ in modules}
        folder = Path(request["contracts_folder"])
        if folder.is_dir():
            for file in sorted(folder.glob("*.py")):
                name = f"{request['contracts_package']}.{file.stem}"
                imported = sys.modules.get(name)
                if file.stem.startswith("_") or name in named or imported is None:
                    continue
                extra.append(_describe(imported, str(file), attribute, BaseModel))
    except _Refused as refused:
        return refused.message
    # The repository's files this result was read from: the parent's cache is valid while they are.
    files = set()
    for loaded_module in list(sys.modules.values()):
        loaded_file = getattr(loaded_module, "__file__", None)
        if loaded_file and Path(loaded_file).resolve().is_relative_to(root):
            files.add(str(Path(loaded_file).resolve()))
    return {"result": {"modules": described, "extra": extra, "files": sorted(files)}}


def main() -> int:
    request = json.loads(sys.stdin.read())
    # The result goes to the original stdout; whatever the contracts print goes to stderr.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    out.write(json.dumps(_run(request, out)) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
