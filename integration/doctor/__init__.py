"""`python -m integration doctor`: look for the known causes of failed integration runs.

Each check is a small function that returns `Finding`s; `checks.py` lists them, in the order they run, in
`STATIC_CHECKS` (they read the repository's files only) and `LIVE_CHECKS` (they ask the Docker engine and
the local machine). A finding is printed as one line:

    <severity> <file>:<line>: <problem>. Fix: <fix>

(an `info` line says what the toolkit does on its own, and how to change it, instead of a fix).

Findings that belong to no file name a place in angle brackets instead (`<docker>`, `<port 47100>`,
`<pid 812>`). Codes:

    D100  a Python file of the system does not parse
    D101  a catch-all route (GET /{x}, /{x:path}) is registered before the health route and answers it
    D102  a function-level import shadows a module-level name, or the function uses the name before it
    D103  a service imports `architecture` but its Dockerfile does not copy architecture/ into the image
    D104  a COPY/ADD source is not in the build context (the system root), e.g. folder-relative paths
    D105  a FROM does not take ${PYTHON_IMAGE} (hard-coded), or uses it without declaring the ARG
    D106  harness code calls create_engine without poolclass=NullPool
    D107  harness code creates an httpx client outside `with` and never closes it
    D108  harness code sends TRUNCATE
    D109  a service's app has no GET route for its services.yml `health` path
    D110  services.yml or a contract module is invalid (what `load_system` refuses)
    D111  a service's Dockerfile does not parse (an unknown instruction, an unbalanced quote, ...)
    D112  harness code creates a SQLAlchemy engine and never disposes it
    D201  the Docker engine does not answer (live checks skipped)
    D202  docker compose is missing or older than 2.20
    D203  a service image is stale (or not built yet)
    D204  a preferred host port of the stack is taken
    D205  containers of this checkout's compose project are still there
    D206  an orphaned pytest process is still running
    D207  a FROM image is not on this machine, so the build runs on its offline stand-in (info)
    D208  the engine the toolkit talks to: local or remote, Docker or Podman, versions, bind address (info)
    D209  what that engine cannot do (info), or a remote engine without a bind address (error)

The modules: `findings` (the finding, the check and the project view they share), one module a group of
checks (`imports`, `routes`, `dockerfiles`, `harness` with `releases`, `services`, `live`), `astnodes`
(syntax-tree questions several checks ask), `checks` (the ordered lists, and running them); this one
runs the command.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .checks import LIVE_CHECKS, STATIC_CHECKS, live_findings, run_static_checks, static_findings
from .findings import Check, Finding, Project, Severity, load_project
from .live import COMPOSE_PROJECT_LABEL, LiveContext
from .services import live_checks_skipped

__all__ = [
    "COMPOSE_PROJECT_LABEL",
    "LIVE_CHECKS",
    "STATIC_CHECKS",
    "Check",
    "Finding",
    "LiveContext",
    "Project",
    "Reporter",
    "Severity",
    "live_findings",
    "load_project",
    "run_doctor",
    "run_static_checks",
    "static_findings",
]

Reporter = Callable[[str], None]


def run_doctor(root: Path, *, live: bool = True, report: Reporter = print) -> int:
    """Run the checks, report one line per finding and a summary; 1 when any error was found, else 0."""
    project = load_project(root)
    findings = run_static_checks(project)
    if live:
        if project.system is None:
            findings.append(live_checks_skipped(project))
        findings += live_findings(project.system)
    for finding in findings:
        report(finding.render())
    report(_summary(findings, project.root, live))
    return 1 if any(f.severity == "error" for f in findings) else 0


def _summary(findings: list[Finding], root: Path, live: bool) -> str:
    """`doctor: 1 error, 2 warnings, 1 note (static and live checks of <root>)`."""
    errors = sum(f.severity == "error" for f in findings)
    warnings = sum(f.severity == "warning" for f in findings)
    notes = sum(f.severity == "info" for f in findings)
    kind = "static and live" if live else "static"
    plural = {1: ""}
    noted = f", {notes} note{plural.get(notes, 's')}" if notes else ""
    return (
        f"doctor: {errors} error{plural.get(errors, 's')}, {warnings} warning{plural.get(warnings, 's')}"
        f"{noted} ({kind} checks of {root})"
    )
