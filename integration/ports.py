"""The host port plan: which host port each container port of a stack is published on (on 127.0.0.1 for
a local engine, on the chosen bind address of a remote one: integration.engine).

The default block starts at `DEFAULT_BASE` = 47100. It is chosen to stay clear of what developers
commonly run locally: PostgreSQL 5432, RabbitMQ 5672/15672, web frameworks and dev servers on 3000,
5000, 8000, 8080, 8888, 9000, Redis 6379, MySQL 3306, Elasticsearch 9200, and the Docker registry
5000. Service number i (0-based, in services.yml order) gets:

    HTTP             base + 10*i        (47100, 47110, 47120, ...)
    its database     base + 10*i + 1    (47101, 47111, 47121, ...)

and the broker, when the system routes events, gets:

    management UI    base + 900         (48000)
    AMQP             base + 901         (48001)

So a developer can rely on "the first service is on 47100" while exploring a stack by hand. Ports are
preferences only: when one is taken (another stack, a local install, an outgoing connection; the block
lies inside Linux's ephemeral range 32768-60999) the plan falls back to a port the operating system
reports free, never one already in the plan and never another entry's preferred port. A plan never holds
the same host port twice.

`port_is_free` and `describe_port_owner` look at the local machine; `plan_ports` takes the check as an
argument so it can be tested without sockets. On a remote engine (integration.engine) local probes say
nothing about the engine's host: `engine_port_check` answers from the ports the engine's containers
have bound (integration.endpoints.published_ports) and from a connect to the port on the engine's host
(a listener of any other process there answers it), and `unclaimed_port` supplies fallbacks from the
ephemeral range instead of this machine's free ports. A port lost anyway (a listener that appeared
after planning) fails `compose up`, and the stack plans again (integration.stack).
"""

from __future__ import annotations

import os
import pwd
import random
import socket
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from .errors import StackError
from .model import (
    BROKER_AMQP_PORT,
    BROKER_MANAGEMENT_PORT,
    BROKER_SERVICE,
    POSTGRES_PORT,
    PortPlan,
    SystemSpec,
    for_worker,
)

DEFAULT_BASE = 47100
SLOT_WIDTH = 10  # host ports per service slot: HTTP at +0, database at +1, the rest spare
DATABASE_OFFSET = 1
BROKER_MANAGEMENT_OFFSET = 900
BROKER_AMQP_OFFSET = 901
FALLBACK_ATTEMPTS = 200

LOCALHOST = "127.0.0.1"
_LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp
EPHEMERAL = (32768, 60999)  # Linux's default ip_local_port_range: where remote fallbacks are drawn from
CONNECT_PROBE_TIMEOUT = 0.3  # seconds: a closed port on a reachable host answers at once with a reset


def port_is_free(port: int) -> bool:
    """True when a TCP listener could bind 127.0.0.1:`port` right now.

    SO_REUSEADDR is set as servers (and docker-proxy) set it: connections in TIME-WAIT, left by a stack
    that just stopped, do not make a port look taken, while any listener on 127.0.0.1 or 0.0.0.0 does.
    """
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 1..65535")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOCALHOST, port))
        except OSError:
            return False
    return True


def ephemeral_port() -> int:
    """A port the operating system considers free on 127.0.0.1 (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def port_answers(host: str, port: int, timeout: float = CONNECT_PROBE_TIMEOUT) -> bool:
    """True when something accepts a TCP connection on `host`:`port` (a timeout counts as no)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def engine_port_check(
    claimed: set[int], host: str, answers: Callable[[str, int], bool] = port_answers
) -> Callable[[int], bool]:
    """`is_free` for a remote engine: not bound by one of its containers (`claimed`) and not answering on
    the engine's host (another process listens there)."""

    def is_free(port: int) -> bool:
        return port not in claimed and not answers(host, port)

    return is_free


def unclaimed_port(claimed: set[int], rng: random.Random | None = None) -> Callable[[], int]:
    """`free_port` for a remote engine: a random port of the ephemeral range that no container of the
    engine has bound (plan_ports also skips ports already in the plan)."""
    pick = rng or random.Random()

    def free_port() -> int:
        for _ in range(FALLBACK_ATTEMPTS):
            port = pick.randint(*EPHEMERAL)
            if port not in claimed:
                return port
        raise StackError(f"every port tried of {EPHEMERAL[0]}..{EPHEMERAL[1]} is bound on the engine's host")

    return free_port


def _preferred_ports(
    system: SystemSpec, base: int, workers: Sequence[str] = ()
) -> list[tuple[str, int, int | None]]:
    """(compose service, container port, preferred host port or None), in the order the plan is filled.

    A shared stack (`workers`) adds, for every worker after the first, a copy of each service: worker
    k's copy of service i takes slot k * len(services) + i (its HTTP port only; the databases are not
    copied). Slots that would reach the broker's ports get no preferred port (None): they fall back to
    free ones.
    """
    wanted: list[tuple[str, int, int | None]] = []
    count = len(system.services)
    for i, spec in enumerate(system.services):
        wanted.append((spec.name, spec.port, base + SLOT_WIDTH * i))
        if spec.database is not None:
            wanted.append((spec.db_service, POSTGRES_PORT, base + SLOT_WIDTH * i + DATABASE_OFFSET))
    for k, worker in enumerate(workers[1:], start=1):
        for i, spec in enumerate(system.services):
            slot = base + SLOT_WIDTH * (k * count + i)
            fits = slot < base + BROKER_MANAGEMENT_OFFSET
            wanted.append((for_worker(spec.name, worker), spec.port, slot if fits else None))
    if system.needs_broker:
        wanted.append((BROKER_SERVICE, BROKER_MANAGEMENT_PORT, base + BROKER_MANAGEMENT_OFFSET))
        wanted.append((BROKER_SERVICE, BROKER_AMQP_PORT, base + BROKER_AMQP_OFFSET))
    return wanted


def plan_ports(
    system: SystemSpec,
    is_free: Callable[[int], bool] = port_is_free,
    base: int = DEFAULT_BASE,
    *,
    free_port: Callable[[], int] = ephemeral_port,
    workers: Sequence[str] = (),
    bind_address: str = LOCALHOST,
) -> PortPlan:
    """Host ports for every published container port of `system`'s stack.

    Keys: compose service name (`<name>`, `<name>-db`, `broker`), then container port (the service's
    port, 5432, 15672, 5672); a shared stack (`workers`, e.g. ("gw0", "gw1")) adds each service once
    more per worker after the first, `<name>-<worker>`. `is_free` decides whether a preferred port can be
    used; `free_port` supplies fallbacks (both replaceable in tests). `bind_address` is the engine host's
    address the ports are published on (integration.engine.current_engine().bind_address).
    """
    if not 1024 <= base <= 65535 - BROKER_AMQP_OFFSET:
        raise ValueError(
            f"port base {base} is out of range: it must be 1024..{65535 - BROKER_AMQP_OFFSET} so that the "
            f"block base..base+{BROKER_AMQP_OFFSET} holds unprivileged ports"
        )
    wanted = _preferred_ports(system, base, workers)
    preferred = {port for _, _, port in wanted if port is not None}
    used: set[int] = set()
    plan: dict[str, dict[int, int]] = {}
    for compose_service, container_port, port in wanted:
        if port is None or port in used or port > 65535 or not is_free(port):
            port = _fallback(used | preferred, free_port, f"{compose_service}:{container_port}")
        used.add(port)
        plan.setdefault(compose_service, {})[container_port] = port
    return PortPlan(ports=plan, bind_address=bind_address)


def _fallback(avoid: set[int], free_port: Callable[[], int], what: str) -> int:
    for _ in range(FALLBACK_ATTEMPTS):
        port = free_port()
        if port not in avoid:
            return port
    raise StackError(
        f"could not find a free host port for {what} after {FALLBACK_ATTEMPTS} tries; "
        "free some ports on the engine's host or stop other stacks"
    )


# --- who holds a port (diagnostics, Linux only, best effort) --------------------------------------------


def _listening_sockets(port: int, tables: Iterable[Path]) -> dict[int, int]:
    """inode -> uid of sockets listening on `port`, read from /proc/net/tcp-style tables."""
    found: dict[int, int] = {}
    for table in tables:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            try:
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                uid, inode = int(fields[7]), int(fields[9])
            except (IndexError, ValueError):
                continue
            if local_port == port and inode:
                found[inode] = uid
    return found


def _process(pid_dir: Path) -> str:
    try:
        comm = (pid_dir / "comm").read_text().strip()
    except OSError:
        comm = "?"
    try:
        argv = (pid_dir / "cmdline").read_bytes().split(b"\0")
        cmdline = " ".join(a.decode(errors="replace") for a in argv if a)
    except OSError:
        cmdline = ""
    if len(cmdline) > 200:
        cmdline = cmdline[:197] + "..."
    return f"{comm} (pid {pid_dir.name})" + (f": {cmdline}" if cmdline else "")


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def describe_port_owner(port: int, proc: Path = Path("/proc")) -> str | None:
    """Name the process listening on TCP `port`, e.g. "docker-proxy (pid 812): /usr/bin/docker-proxy ...".

    Reads /proc/net/tcp and /proc/net/tcp6 for the listening socket's inode, then /proc/<pid>/fd for the
    process holding it. Processes of other users are usually not readable: then the answer names only the
    user. None when nothing is known to listen (or /proc is not there, as on macOS).
    """
    sockets = _listening_sockets(port, (proc / "net" / "tcp", proc / "net" / "tcp6"))
    if not sockets:
        return None
    targets = {f"socket:[{inode}]" for inode in sockets}
    try:
        pid_dirs = [p for p in proc.iterdir() if p.name.isdigit()]
    except OSError:
        pid_dirs = []
    for pid_dir in pid_dirs:
        try:
            fds = os.listdir(pid_dir / "fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(pid_dir / "fd" / fd)
            except OSError:
                continue
            if target in targets:
                return _process(pid_dir)
    users = sorted({_user(uid) for uid in sockets.values()})
    return f"a process of user {', '.join(users)} (not visible to this user)"
