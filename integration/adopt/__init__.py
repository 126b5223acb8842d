"""`python -m integration init`: inspect a repository and write its adoption.

One job: read what a repository already holds (architecture/services.yml through discovery, the service
Dockerfiles, the services' Python code, the contracts, the use-case tests' ITestHarness Protocol and
conftest.py) and write the two things that adopt it:

- the toolkit's config, `[tool.integration]` tables appended to `<root>/pyproject.toml` (or
  `<root>/integration.toml` when there is no pyproject.toml), holding only what differs from
  docs/conventions.md, each value with a comment naming the file and line it was inferred from;
- `<tests>/real_harness.py`, a `RealServiceHarness` with one method per Protocol method, mapped to the
  services' FastAPI routes where the names allow it, `raise NotImplementedError` with a `TODO(init)`
  where they do not.

The code is read with `ast`, never imported: environment variables a service reads (and their
defaults), the tables its models declare, its routes. It prints each fact with where it was found, what
it wrote and what is left to do. Nothing existing is overwritten without --force; every mistake in the
input is one `error:` line and exit status 2, with nothing written.

This module writes the files and holds the command; the package's other modules read the code
(`reading`, `service_code`, `tests_code`), infer the config (`inference`) and write the harness
(`skeleton`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import tempfile
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..configfile import OWN_FILE, PYPROJECT, split_key
from ..discovery import load_system
from ..errors import ConfigError, IntegrationError
from ..model import BaseImages, SystemSpec
from ..settings import SERVICES_FILE, SystemConfig, load_config, resolve_root
from .inference import Inference, Report
from .reading import relative
from .service_code import ModelFields, ServiceCode
from .skeleton import BASE_PROVIDED, HARNESS_CLASS, Plan, conftest_advice, render_harness
from .tests_code import DEFAULT_HARNESS_FIXTURE, Protocol, find_harness_fixture, find_protocol, read_fixtures

HARNESS_FILE = "real_harness.py"
DEFAULT_TESTS = "use_case_tests"


# --- writing ------------------------------------------------------------------------------------------------


_HEADER_LINE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")


def _integration_regions(text: str) -> list[tuple[int, int]]:
    """Line ranges [start, end) of the [tool.integration...] tables in a pyproject's text, each with the
    comment lines right above its header; blank lines and the next table's comments are left out."""
    lines = text.splitlines(keepends=True)
    headers = []
    for number, line in enumerate(lines):
        match = _HEADER_LINE.match(line)
        if match:
            keys = split_key(match.group(1))
            headers.append((number, keys[:2] == ("tool", "integration")))
    regions: list[tuple[int, int]] = []
    for i, (number, ours) in enumerate(headers):
        if not ours:
            continue
        start = number
        while start > 0 and lines[start - 1].lstrip().startswith("#"):
            start -= 1
        end = headers[i + 1][0] if i + 1 < len(headers) else len(lines)
        if i + 1 < len(headers):  # the comments right above the next header are that table's
            while end > number + 1 and lines[end - 1].lstrip().startswith("#"):
                end -= 1
        while end > number + 1 and not lines[end - 1].strip():
            end -= 1
        if regions and all(not line.strip() for line in lines[regions[-1][1] : start]):
            regions[-1] = (regions[-1][0], end)  # only blank lines between two of ours: one region
        else:
            regions.append((start, end))
    return regions


def _with_block(text: str, block: str) -> str:
    """`text` with its [tool.integration] tables replaced by `block` (at the first one's place)."""
    regions = _integration_regions(text)
    lines = text.splitlines(keepends=True)
    if not regions:
        separator = "" if not text else ("\n" if text.endswith("\n") else "\n\n")
        return text + separator + block
    out: list[str] = []
    position = 0
    for index, (start, end) in enumerate(regions):
        out += lines[position:start]
        if index == 0:
            out.append(block)
        position = end
    out += lines[position:]
    return "".join(out)


@dataclass
class _Write:
    path: Path
    text: str
    previous: bytes | None


def _write_all(writes: Sequence[_Write]) -> None:
    """Write every file or none: a failed write puts back what was written before it."""
    done: list[_Write] = []
    try:
        for write in writes:
            write.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{write.path.name}.", dir=write.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
                    handle.write(write.text)
                if write.path.exists():
                    with contextlib.suppress(OSError):
                        os.chmod(tmp, write.path.stat().st_mode & 0o7777)
                os.replace(tmp, write.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            done.append(write)
    except OSError as exc:
        for write in reversed(done):
            with contextlib.suppress(OSError):
                if write.previous is None:
                    write.path.unlink()
                else:
                    write.path.write_bytes(write.previous)
        raise ConfigError(
            write.path, None, f"cannot be written: {exc.strerror or exc}; nothing was written"
        ) from None


def _check_config(root: Path, target: Path, text: str, system: SystemSpec) -> SystemConfig:
    """The config `text` would give once written to `target`, loaded as the toolkit loads it, and the
    system loaded with it: a config init writes always loads."""
    with tempfile.TemporaryDirectory(prefix="integration-init-") as folder:
        (Path(folder) / target.name).write_text(text, encoding="utf-8")
        try:
            config = load_config(Path(folder))
            config = replace(config, table=replace(config.table, path=target))
            load_system(root, base_images=BaseImages(), config=config)
        except ConfigError as exc:
            message = str(exc).replace(folder, str(root))
            raise ConfigError(
                relative(target, root),
                None,
                f"the config init inferred does not load ({message}); nothing was written",
            ) from None
    return config


# --- the command --------------------------------------------------------------------------------------------


def _root(args: argparse.Namespace) -> Path:
    explicit = getattr(args, "root", None)
    root = resolve_root(explicit, start=Path.cwd())
    if not root.is_dir():
        raise ConfigError(root, None, "is not a folder; pass the system's root folder with --root")
    return root


@dataclass
class _Harness:
    """The real harness init writes: where, its text, and how each Protocol method was written."""

    path: Path
    text: str
    plans: list[Plan]


def inspect_and_write(root: Path, *, force: bool, out: Any = None) -> int:
    """init on `root`: infer, check, write, report. Raises ConfigError for bad input (nothing written)."""
    out = out or sys.stdout
    report = Report()
    inference = Inference(root, report)
    system = inference.load()
    report.fact(
        "system",
        f"{system.name}: services {', '.join(s.name for s in system.services)} "
        f"({relative(system.services_file or root / SERVICES_FILE, root)}), exchange {system.exchange}",
    )
    codes, models = inference.scan(system)
    inference.wiring(system, codes)
    inference.health(system, codes)
    inference.events(system, codes)
    harness = _adopt_tests(inference, system, codes, models)

    target, original, existing = _config_target(root, harness, force=force)
    names = [s.name for s in system.services]
    if target.name == PYPROJECT:
        previous: bytes | None = original.encode("utf-8")
        config_text = _with_block(original, inference.config.render(("tool", "integration"), names))
    else:
        previous = target.read_bytes() if target.exists() else None
        config_text = inference.config.render((), names)
    _check_config(root, target, config_text, system)
    writes = [_Write(target, config_text, previous)]
    if harness is not None:
        previous_harness = harness.path.read_bytes() if harness.path.exists() else None
        writes.append(_Write(harness.path, harness.text, previous_harness))
    _write_all(writes)

    count = inference.config.count()
    keys = f"{count} key" + ("" if count == 1 else "s")
    what = f"[tool.integration] ({keys})" if target.name == PYPROJECT else keys
    report.wrote.append(f"{relative(target, root)}: {what}" + (" (replaced)" if force and existing else ""))
    if harness is not None:
        rel = relative(harness.path, root)
        mapped = sum(1 for p in harness.plans if p.reason is None)
        report.wrote.append(f"{rel}: class {HARNESS_CLASS}, {mapped} of {len(harness.plans)} methods mapped")
        for plan in harness.plans:
            if plan.reason is not None:
                report.todo.append(
                    f"{rel}: write {plan.method.name}() by hand (TODO(init); {plan.method.where} in the "
                    "Protocol)"
                )
    report.todo.append(
        f"build the images and run the tests against the real services: python -m integration build --root "
        f"{root} && (cd {root} && pytest --integration)"
    )
    _print(report, out)
    return 0


def _adopt_tests(
    inference: Inference,
    system: SystemSpec,
    codes: Mapping[str, ServiceCode],
    models: Mapping[str, ModelFields],
) -> _Harness | None:
    """The use-case tests: where their Protocol is, the fixture they ask for, the real harness written
    for them and what their conftest.py needs; None (and a to-do) when there is no Protocol."""
    root, report = inference.root, inference.report
    skip = [root / "architecture", *(root / f for code in codes.values() for f in code.folders)]
    protocol, others = find_protocol(root, inference.sources, skip)
    if protocol is None:
        report.todo.append(
            "no ITestHarness Protocol found (a class inheriting typing.Protocol with Harness in its name): "
            f"no {HARNESS_FILE} written; write a subclass of integration.RealServiceHarness and name it with "
            'real_harness = "<module>:<Class>" in [tool.integration]'
        )
        return None
    tests_dir = protocol.path.parent
    tests_rel = relative(tests_dir, root) if tests_dir != root else "."
    tests_module = "" if tests_rel == "." else tests_rel.replace("/", ".")
    importable = all(part.isidentifier() for part in tests_module.split(".")) if tests_module else True
    if not importable:  # pytest's default import mode puts such a folder itself on sys.path
        tests_module = ""
    where = f"{protocol.rel}:{protocol.line}"
    report.fact(
        "tests", f"{protocol.name} in {where}" + (f" (also seen: {', '.join(others)})" if others else "")
    )
    if tests_rel != DEFAULT_TESTS:
        inference.config.set((), "tests", tests_rel, f"{where}: class {protocol.name}(Protocol)")
    harness_fixture, fixture_where = find_harness_fixture(root, inference.sources, tests_dir, protocol)
    if harness_fixture != DEFAULT_HARNESS_FIXTURE:
        inference.config.set((), "harness_fixture", harness_fixture, f"{fixture_where}: the tests ask for it")
    harness_module = f"{tests_module}.real_harness" if tests_module else "real_harness"
    harness_path = tests_dir / HARNESS_FILE
    text, plans = _skeleton(inference, system, codes, models, protocol, tests_module)
    if importable:
        inference.config.set(
            (),
            "real_harness",
            f"{harness_module}:{HARNESS_CLASS}",
            f"written by init: {relative(harness_path, root)}",
        )
    else:
        report.todo.append(
            f"{tests_rel} is not a module path Python can import, so the config cannot name the harness: "
            f"give {tests_rel}/conftest.py a session fixture `real_harness_class` that returns "
            f"{HARNESS_CLASS} from {HARNESS_FILE}"
        )
    fixtures = read_fixtures(root, inference.sources, tests_dir)
    mock = conftest_advice(fixtures, harness_fixture, report, harness_module)
    if mock is not None:
        fixture = next(f for f in fixtures if f.name == mock)
        inference.config.set(
            (), "mock_fixture", mock, f"{fixture.rel}:{fixture.node.lineno}: returns the mock"
        )
    return _Harness(harness_path, text, plans)


def _skeleton(
    inference: Inference,
    system: SystemSpec,
    codes: Mapping[str, ServiceCode],
    models: Mapping[str, ModelFields],
    protocol: Protocol,
    tests_module: str,
) -> tuple[str, list[Plan]]:
    """The real harness's text and plans, from the services' routes; what it mapped reported."""
    report = inference.report
    routes = [r for s in system.services for r in codes[s.name].routes if r.path != s.health_path]
    for spec in system.services:
        shown = ", ".join(f"{r.method} {r.path}" for r in codes[spec.name].routes) or "none"
        report.fact(spec.name, f"routes: {shown}")
    events = {name for name in system.event_classes}
    from ..harness import RealServiceHarness as Base  # only its attribute names

    base_names = {n for n in dir(Base) if not n.startswith("__")}
    text, plans, skipped = render_harness(
        protocol, tests_module, routes, models, events, inference.root, base_names
    )
    for plan in plans:
        if plan.reason is None:
            report.fact("harness", f"{plan.method.name} -> {plan.summary}")
        else:
            report.fact("harness", f"{plan.method.name}: not mapped ({plan.reason})")
    provided = [n for n in skipped if n in BASE_PROVIDED]
    if provided:
        report.fact("harness", f"{', '.join(provided)}: provided by the base")
    clashing = [n for n in skipped if n not in BASE_PROVIDED and not n.startswith("_")]
    for name in clashing:
        report.todo.append(
            f"{protocol.rel}: the Protocol's {name}() has the name of a method of the base "
            f"(integration.RealServiceHarness); check that the base's does what the tests expect"
        )
    return text, plans


def _config_target(root: Path, harness: _Harness | None, *, force: bool) -> tuple[Path, str, bool]:
    """Where the config goes (integration.toml when it exists or there is no pyproject.toml), the
    pyproject's text when it goes there, and whether init replaces anything; without --force a file that
    would be overwritten is a ConfigError."""
    own = root / OWN_FILE
    pyproject = root / PYPROJECT
    target = own if own.exists() or not pyproject.exists() else pyproject
    existing: list[tuple[str, str]] = []  # (file, what is there)
    if own.exists():
        existing.append((OWN_FILE, "exists"))
    original = ""
    if target == pyproject:
        try:
            original = pyproject.read_bytes().decode("utf-8")
            data = tomllib.loads(original)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(PYPROJECT, None, f"cannot be read as TOML ({exc}); fix it first") from None
        tool = data.get("tool")
        if isinstance(tool, dict) and "integration" in tool:
            existing.append((PYPROJECT, "has a [tool.integration] table"))
            if not _integration_regions(original):
                raise ConfigError(
                    PYPROJECT,
                    "tool.integration",
                    "is not written as [tool.integration] tables, so init can neither keep nor replace it "
                    "text-wise; move it into such tables or remove it",
                )
    if harness is not None and harness.path.exists():
        existing.append((relative(harness.path, root), "exists"))
    if existing and not force:
        also = "".join(f", and {name} {what}" for name, what in existing[1:])
        raise ConfigError(
            existing[0][0],
            None,
            f"{existing[0][1]}{also}: init overwrites nothing; run it again with --force to replace "
            f"{'them' if also else 'it'}",
        )
    return target, original, bool(existing)


def _print(report: Report, out: Any) -> None:
    print("inferred:", file=out)
    for subject, text in report.facts:
        print(f"  {subject}: {text}", file=out)
    print("wrote:", file=out)
    for line in report.wrote:
        print(f"  {line}", file=out)
    print("to do:", file=out)
    for line in report.todo:
        print(f"  {line}", file=out)
    out.flush()


def cmd_init(args: argparse.Namespace) -> int:
    """`python -m integration init [--root DIR] [--force]`."""
    try:
        root = _root(args)
        return inspect_and_write(root, force=bool(getattr(args, "force", False)))
    except IntegrationError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_status
    except OSError as exc:
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr, flush=True)
        return 2
