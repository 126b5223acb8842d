"""D110: what `load_system` says of services.yml, the toolkit's config and the contract modules.

An error it raises (a `ConfigError`) becomes one error finding at the file and line the error carries;
the near-miss keys it lets pass (`SystemSpec.warnings`) become warnings. The live checks need the
system, so when it did not load they are skipped, and `live_checks_skipped` says so.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..discovery import SERVICES_FILE
from ..errors import ConfigError
from ..model import Notice
from .findings import Finding, Project, error, warning

SCHEMA_ADVICE = "see docs/conventions.md for the services.yml schema and contract modules"


def check_services_file(project: Project) -> list[Finding]:
    """D110: the error that stopped `load_system`, or the warnings it gave."""
    if project.config_error is not None:
        return [config_finding(project, project.config_error)]
    if project.system is None:
        return []
    return [_notice_finding(project, notice) for notice in project.system.warnings]


def config_finding(project: Project, exc: ConfigError) -> Finding:
    """D110: a ConfigError as a finding, with the file, line and fix it carries."""
    path, line = _location(project, exc)
    message, fix = (exc.problem, exc.fix) if exc.fix else _fix_from_text(exc.problem)
    where = f"{exc.field}: " if exc.field else ""
    return error(project.rel(path), line, "D110", where + message, fix)


def _notice_finding(project: Project, notice: Notice) -> Finding:
    # A key that looks like a typo of one the toolkit reads: a warning, as every command prints it.
    # FALLBACK (text): a Notice has no fix field yet; its problem is "<what>; <fix>".
    message, _, fix = notice.problem.partition("; ")
    where = f"{notice.field}: " if notice.field else ""
    return warning(project.rel(Path(notice.path)), notice.line, "D110", where + message, fix)


def live_checks_skipped(project: Project) -> Finding:
    """The warning `run_doctor` gives instead of the live checks when the system did not load."""
    return warning(
        project.rel(project.root / SERVICES_FILE),
        None,
        "D110",
        "image, port and container checks skipped because services.yml did not load",
        "fix the D110 error first",
    )


# --- FALLBACK: locations and fixes that are still only in the message text -----------------------------
#
# To be deleted once integration/discovery.py passes them as fields (`line=`, `fix=`, and as `path` the
# file the line is in). Until then:
#   - `_ServicesFile.read`, invalid YAML: "not valid YAML at line N, column M: ...", without `line=`;
#   - a contract that fails to import in its child process (integration/contract_child.py: "importing
#     the contract failed at FILE:N") or does not finish in time ("(it was at FILE:N)"): `path` is the
#     contract module; the innermost frame's file, when it is another module, is only in the text;
#   - most ConfigErrors end their problem with "; <fix>" instead of passing `fix=`.

_YAML_LINE = re.compile(r"\bat line (\d+), column \d+")
_FRAME_IN_PROBLEM = re.compile(r" at (/[^:\s]+\.py):(\d+)")


def _location(project: Project, exc: ConfigError) -> tuple[Path, int | None]:
    """The file and line of `exc`: its fields, else (FALLBACK) what its problem text names."""
    path, line = Path(exc.path), exc.line
    if line is None and (yaml_line := _YAML_LINE.search(exc.problem)):
        line = int(yaml_line.group(1))
    frame = _FRAME_IN_PROBLEM.search(exc.problem)
    if frame and Path(frame.group(1)).is_relative_to(project.root):
        path, line = Path(frame.group(1)), int(frame.group(2))
    return path, line


def _fix_from_text(problem: str) -> tuple[str, str]:
    """FALLBACK: (message, fix) of a problem written as "<message>; <fix>"."""
    message, _, fix = problem.rpartition("; ")
    return (message, fix) if message else (problem, SCHEMA_ADVICE)
