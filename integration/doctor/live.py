"""The live checks: what the Docker engine and this machine say about the system (D201-D209).

D201: the engine does not answer (then only D206 runs). D208: which engine the toolkit talks to (local
or remote, Docker or Podman, its versions, where ports are published and reached); D209: what that
engine cannot do, and a remote engine without a bind address. D202: docker compose is missing or too
old. D203: a service image is stale or not built. D207: a FROM image is absent, so the build runs on its
offline stand-in. D204: a preferred host port is taken, and by what (on a remote engine: by one of its
containers, or by whatever answers on its host). D205: containers of this checkout's compose project
are left over. D206: a pytest process has outlived its parent.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from python_on_whales import DockerClient, docker
from python_on_whales.exceptions import DockerException

from ..baseimages import engine_check, locally_available
from ..endpoints import published_ports
from ..engine import (
    BIND_ADDRESS_ENV,
    EngineEndpoint,
    choose_bind_address,
    describe_engine,
    reach_host,
    resolve_endpoint,
)
from ..errors import ConfigError, EngineError
from ..images import ImageState, check_images
from ..model import SystemSpec
from ..ports import DEFAULT_BASE, describe_port_owner, engine_port_check, plan_ports, port_is_free
from ..stack import check_compose, project_name
from .findings import Finding, error, info, warning

BUILD_COMMAND = "nox -s build"
COMPOSE_PROJECT_LABEL = "com.docker.compose.project"


@dataclass
class LiveContext:
    """What the live checks look at: the system (None when it did not load), the engine, the machine."""

    system: SystemSpec | None
    client: DockerClient = docker
    port_base: int = DEFAULT_BASE
    proc: Path = Path("/proc")
    is_free: Callable[[int], bool] = port_is_free
    _image_states: list[ImageState] | None = field(default=None, repr=False)

    def image_states(self) -> list[ImageState]:
        """`check_images` of the system, once for every live check that needs it (the same hash and
        the same FROM substitutions as the build and `require_fresh`)."""
        if self._image_states is None:
            assert self.system is not None
            base = locally_available(self.system.base_images, self.client)
            self._image_states = check_images(self.system, base, self.client)
        return self._image_states


def _endpoint() -> EngineEndpoint | None:
    try:
        return resolve_endpoint()
    except ConfigError:
        return None  # check_engine reports it


def engine_down(ctx: LiveContext) -> Finding | None:
    try:
        engine_check(ctx.client)
    except EngineError as exc:
        problem = str(exc).partition("; ")[0]  # the rest is engine_check's advice, given as the fix
        endpoint = _endpoint()
        fix = (
            "start the Docker engine (on Debian: scripts/install-docker-engine.sh), then run the doctor again"
        )
        if endpoint is not None and not endpoint.local:
            fix = (
                f"start the engine at {endpoint.url} or check that this machine reaches it (it is named by "
                f"{endpoint.source}), then run the doctor again"
            )
        return warning("<docker>", None, "D201", f"live checks skipped: {problem}", fix)
    return None


def check_engine(ctx: LiveContext) -> list[Finding]:
    """D208: the engine the toolkit talks to; D209: what it cannot do (and a remote one that has no bind
    address, which no run gets past)."""
    try:
        endpoint = resolve_endpoint()
    except ConfigError as exc:
        return [error(exc.path, exc.line, "D209", exc.problem, exc.fix or "set DOCKER_HOST to the engine")]
    facts = describe_engine(ctx.client, endpoint)
    try:
        compose = f"compose {check_compose(ctx.client)}"
    except EngineError:
        compose = "no usable compose (D202)"
    findings: list[Finding] = []
    try:
        bind = choose_bind_address(endpoint, os.environ.get(BIND_ADDRESS_ENV))
        ports = f"ports published on {bind}, reached at {reach_host(endpoint, bind)}"
    except (EngineError, ConfigError) as exc:
        ports = "no bind address for its ports"
        problem = exc.problem if isinstance(exc, ConfigError) else str(exc).partition(": choose")[0]
        findings.append(
            error(
                f"${BIND_ADDRESS_ENV}",
                None,
                "D209",
                f"{problem}; no stack can start on this engine",
                f"export {BIND_ADDRESS_ENV}=<an address of the engine's host> (or 0.0.0.0: every network "
                "of that host reaches the stack's databases, which take no password); see "
                "docs/configuration.md",
            )
        )
    rootless = ", rootless" if facts.rootless else ""
    kind = "local" if endpoint.local else "remote"
    findings.insert(
        0,
        info(
            "<docker>",
            None,
            "D208",
            f"the engine: {facts.kind} {facts.server_version} (API {facts.api_version}, CLI "
            f"{facts.client_version}{rootless}), {kind}, at {endpoint.where}; "
            f"{compose}; {ports}",
            "Another engine: DOCKER_HOST, DOCKER_CONTEXT or docker context use (a remote one also needs "
            f"{BIND_ADDRESS_ENV})",
        ),
    )
    findings += [
        info(
            "<docker>",
            None,
            "D209",
            f"this engine's limit: {limit}",
            "Nothing to do unless a run fails on it",
        )
        for limit in facts.limits
    ]
    return findings


def check_compose_version(ctx: LiveContext) -> list[Finding]:
    try:
        check_compose(ctx.client)
    except EngineError as exc:
        message, _, fix = str(exc).rpartition("; ")
        return [error("<docker>", None, "D202", message or str(exc), fix or "install docker compose v2.20+")]
    return []


def check_stale_images(ctx: LiveContext) -> list[Finding]:
    system = ctx.system
    if system is None:
        return []
    findings = []
    build = f"{BUILD_COMMAND} (or python -m integration build --root {system.root})"
    for state in ctx.image_states():
        if state.fresh:
            continue
        rel = _dockerfile_rel(system, state.service)
        if state.image_id is None:
            findings.append(
                warning(
                    rel,
                    None,
                    "D203",
                    f"image {state.image} of service {state.service} is not built yet; a test run that does "
                    "not build first refuses to start",
                    build,
                )
            )
            continue
        shown = ", ".join(state.changed[:8]) + (
            f" and {len(state.changed) - 8} more" if len(state.changed) > 8 else ""
        )
        findings.append(
            error(
                rel,
                None,
                "D203",
                f"image {state.image} of service {state.service} is stale: changed since it was built: "
                f"{shown}; tests against it would test old code",
                build,
            )
        )
    return findings


def _dockerfile_rel(system: SystemSpec, service: str) -> str:
    dockerfile = system.service(service).dockerfile
    if dockerfile.is_relative_to(system.root):
        return dockerfile.relative_to(system.root).as_posix()
    return str(dockerfile)


def check_substituted_bases(ctx: LiveContext) -> list[Finding]:
    if ctx.system is None:
        return []
    return [
        info(
            _dockerfile_rel(ctx.system, state.service),
            substitution.line,
            "D207",
            substitution.describe(state.service)
            + f", because {substitution.image} is not on this machine (and no registry gave it); the "
            "build uses a rewritten copy of the Dockerfile outside the repository",
            f"To build on {substitution.image} itself, make it present (docker pull {substitution.image}, "
            "or docker load) and build again",
        )
        for state in ctx.image_states()
        for substitution in state.substitutions
    ]


_TCP_STATES = {"01": "ESTABLISHED", "06": "TIME-WAIT", "08": "CLOSE-WAIT", "0A": "LISTEN"}


def port_connections(port: int, proc: Path = Path("/proc")) -> dict[str, int]:
    """TCP sockets on local `port` by state (TIME-WAIT, ESTABLISHED, ...), from /proc/net/tcp and tcp6."""
    states: dict[str, int] = {}
    for table in (proc / "net" / "tcp", proc / "net" / "tcp6"):
        try:
            rows = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            try:
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
            except (IndexError, ValueError):
                continue
            if local_port == port:
                state = _TCP_STATES.get(fields[3], f"state {fields[3]}")
                states[state] = states.get(state, 0) + 1
    return states


def _port_holder(port: int, ctx: LiveContext, remote: bool = False) -> tuple[str, str]:
    """What holds `port` ("taken by ...", "held by ..."), and what to do about it."""
    publisher = _container_publishing(port, ctx)
    if publisher is not None:
        return publisher
    if remote:  # this machine's /proc says nothing about the engine's host
        return (
            "taken by a process on the engine's host",
            f"find it there with: ss -ltnp sport = :{port}",
        )
    owner = describe_port_owner(port, ctx.proc)
    if owner is not None:
        return (
            f"taken by {owner}",
            f"stop {owner.split(':')[0]} if it is a leftover (a stack: python -m integration down)",
        )
    connections = port_connections(port, ctx.proc)
    if connections.get("TIME-WAIT") and set(connections) == {"TIME-WAIT"}:
        return (
            f"held only by {connections['TIME-WAIT']} closed connections in TIME-WAIT (a stack stopped "
            "less than a minute ago; no process listens on it)",
            "nothing to stop: the kernel frees the port within about 60 s",
        )
    if connections:
        shown = ", ".join(f"{n} {state}" for state, n in sorted(connections.items()))
        return f"held by open connections ({shown})", f"find them with: ss -tanp sport = :{port}"
    return "taken by an unknown process", f"find it with: ss -ltnp sport = :{port}"


def _container_publishing(port: int, ctx: LiveContext) -> tuple[str, str] | None:
    """The container that publishes `port` (its docker-proxy holds it), and how to remove it."""
    try:
        containers = ctx.client.container.list(filters=[("publish", str(port))])
    except DockerException:
        return None
    if not containers:
        return None
    container = containers[0]
    project = (container.config.labels or {}).get(COMPOSE_PROJECT_LABEL)
    if project is None:
        return (
            f"published by container {container.name}",
            f"docker rm -f {container.name} if it is a leftover",
        )
    if ctx.system is not None and _of_checkout(project, ctx.system):
        fix = f"python -m integration down --root {ctx.system.root}"
    else:
        fix = f"docker compose -p {project} down -v -t 0, if that stack is a leftover"
    return f"published by container {container.name} of compose project {project}", fix


def _of_checkout(project: str, system: SystemSpec) -> bool:
    """Whether a compose project is this checkout's (or one of its xdist workers')."""
    mine = project_name(system)
    return project == mine or project.startswith(mine + "-")


def check_ports(ctx: LiveContext) -> list[Finding]:
    system = ctx.system
    if system is None:
        return []
    preferred = plan_ports(system, is_free=lambda _port: True, base=ctx.port_base)
    is_free, where, remote = ctx.is_free, "127.0.0.1", False
    endpoint = _endpoint()
    if endpoint is not None and not endpoint.local and ctx.is_free is port_is_free:
        # A remote engine: what its containers bound, and what answers on its host (integration.ports).
        try:
            bind = choose_bind_address(endpoint, os.environ.get(BIND_ADDRESS_ENV))
        except (EngineError, ConfigError):
            bind = "0.0.0.0"  # D209 says it is missing; the ports are checked all the same
        host = reach_host(endpoint, bind)
        is_free, where, remote = engine_port_check(published_ports(ctx.client), host), host, True
    findings = []
    for compose_service, ports in preferred.ports.items():
        for container_port, host_port in ports.items():
            if is_free(host_port):
                continue
            holder, fix = _port_holder(host_port, ctx, remote)
            findings.append(
                warning(
                    f"<port {host_port}>",
                    None,
                    "D204",
                    f"{where}:{host_port}, the preferred host port of {compose_service}:"
                    f"{container_port}, is {holder}; the run will fall back to other ports, so "
                    "URLs differ from the documented ones",
                    fix,
                )
            )
    return findings


def check_leftover_containers(ctx: LiveContext) -> list[Finding]:
    system = ctx.system
    if system is None:
        return []
    try:
        containers = ctx.client.container.list(all=True, filters=[("label", COMPOSE_PROJECT_LABEL)])
    except DockerException as exc:
        return [warning("<docker>", None, "D205", f"cannot list containers: {exc}", "check the engine")]
    mine: dict[str, list[str]] = {}
    for container in containers:
        label = (container.config.labels or {}).get(COMPOSE_PROJECT_LABEL, "")
        if _of_checkout(label, system):
            mine.setdefault(label, []).append(f"{container.name} ({container.state.status})")
    findings = []
    for label, names in sorted(mine.items()):
        findings.append(
            warning(
                "<docker>",
                None,
                "D205",
                f"compose project {label} of this checkout still has containers: {', '.join(sorted(names))}; "
                "a killed or --keep run left them (they hold ports and memory)",
                f"python -m integration down --root {system.root}"
                if label == project_name(system)
                else f"docker compose -p {label} down -v -t 0",
            )
        )
    return findings


def orphaned_pytest_processes(proc: Path = Path("/proc")) -> list[tuple[int, str]]:
    """(pid, command line) of python processes running pytest whose parent is init (pid 1)."""
    found = []
    try:
        entries = [p for p in proc.iterdir() if p.name.isdigit()]
    except OSError:
        return []
    for entry in entries:
        if int(entry.name) == os.getpid():
            continue
        try:
            argv = [a.decode(errors="replace") for a in (entry / "cmdline").read_bytes().split(b"\0") if a]
            status = (entry / "status").read_text()
        except OSError:
            continue
        ppid = next((line.split()[1] for line in status.splitlines() if line.startswith("PPid:")), "")
        if ppid != "1" or not argv:
            continue
        program = Path(argv[0]).name
        runs_pytest = program.startswith("python") and any("pytest" in a for a in argv[1:])
        if runs_pytest or program in ("pytest", "py.test"):
            found.append((int(entry.name), " ".join(argv)[:200]))
    return sorted(found)


def check_orphaned_pytest(ctx: LiveContext) -> list[Finding]:
    return [
        warning(
            f"<pid {pid}>",
            None,
            "D206",
            f"pytest process {pid} has outlived its parent (its parent is now init): {cmdline}; it may hold "
            "database connections, ports or containers of a stack",
            f"kill {pid} if it is not a run you started on purpose, then look for leftovers with this doctor",
        )
        for pid, cmdline in orphaned_pytest_processes(ctx.proc)
    ]
