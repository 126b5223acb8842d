"""Which checks the doctor runs, in which order, and running them.

`STATIC_CHECKS` read the repository's files only; `LIVE_CHECKS` ask the Docker engine and this machine.
Findings are reported in this order (within one check: by file, line and code), so a check that explains
others (D100, a file that does not parse) comes before them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from python_on_whales import DockerClient, docker
from python_on_whales.exceptions import DockerException

from ..errors import IntegrationError
from ..model import SystemSpec
from ..ports import DEFAULT_BASE
from . import dockerfiles, harness, imports, live, routes, services
from .findings import Check, Finding, Project, load_project, warning
from .live import LiveContext

STATIC_CHECKS: tuple[Check[Project], ...] = (
    Check(("D100",), "Python files that do not parse", imports.check_syntax),
    Check(
        ("D101", "D109"),
        "health routes, and catch-all routes registered before them",
        routes.check_health_routes,
    ),
    Check(
        ("D102",),
        "function-level imports that shadow module names or come after a use",
        imports.check_function_imports,
    ),
    Check(("D111",), "Dockerfiles that do not parse", dockerfiles.check_dockerfile_syntax),
    Check(
        ("D103",),
        "Dockerfiles that do not copy architecture/ for code that imports it",
        dockerfiles.check_architecture_copied,
    ),
    Check(
        ("D104",),
        "COPY/ADD sources that are not in the build context (the system root)",
        dockerfiles.check_copy_sources,
    ),
    Check(("D105",), "FROM lines that do not take ARG PYTHON_IMAGE", dockerfiles.check_from_lines),
    Check(("D106",), "create_engine without NullPool in harness code", harness.check_engine_pools),
    Check(("D107",), "httpx clients in harness code that are never closed", harness.check_http_clients),
    Check(
        ("D112",), "SQLAlchemy engines in harness code that are never disposed", harness.check_engine_disposal
    ),
    Check(("D108",), "TRUNCATE in harness SQL", harness.check_truncate),
    Check(("D110",), "services.yml and contract modules", services.check_services_file),
)

LIVE_CHECKS: tuple[Check[LiveContext], ...] = (
    Check(("D208", "D209"), "the engine the toolkit talks to, and its limits", live.check_engine),
    Check(("D202",), "docker compose present and >= 2.20", live.check_compose_version),
    Check(("D203",), "stale service images", live.check_stale_images),
    Check(("D207",), "FROM images built on an offline stand-in", live.check_substituted_bases),
    Check(("D204",), "preferred host ports that are taken", live.check_ports),
    Check(
        ("D205",), "leftover containers of this checkout's compose project", live.check_leftover_containers
    ),
    Check(("D206",), "orphaned pytest processes", live.check_orphaned_pytest),
)


def static_findings(root: Path) -> list[Finding]:
    """Every static check on the system at `root`; no Docker, no network."""
    return run_static_checks(load_project(root))


def run_static_checks(project: Project, checks: Sequence[Check[Project]] = STATIC_CHECKS) -> list[Finding]:
    findings: list[Finding] = []
    for check in checks:
        found = check.run(project)
        findings += sorted(found, key=lambda f: (f.path, f.line or 0, f.code))
    return findings


def live_findings(
    system: SystemSpec | None,
    *,
    client: DockerClient = docker,
    port_base: int = DEFAULT_BASE,
    proc: Path = Path("/proc"),
    checks: Sequence[Check[LiveContext]] = LIVE_CHECKS,
) -> list[Finding]:
    """Every live check; only a D201 warning (and D206) when the engine does not answer."""
    ctx = LiveContext(system, client, port_base, proc)
    down = live.engine_down(ctx)
    if down is not None:
        return [down, *live.check_orphaned_pytest(ctx)]
    findings: list[Finding] = []
    for check in checks:
        try:
            findings += check.run(ctx)
        except (DockerException, IntegrationError, OSError) as exc:
            text = (getattr(exc, "stderr", None) or str(exc)).strip()
            detail = text.splitlines()[-1:] or [type(exc).__name__]
            findings.append(
                warning(
                    "<docker>",
                    None,
                    check.codes[0],
                    f"{check.title}: not checked: {detail[0]}",
                    "check the engine",
                )
            )
    return findings
