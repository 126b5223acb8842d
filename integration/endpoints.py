"""Endpoints: the inspected containers of a stack → where a harness reaches each service. Pure.

`container_info` reads one inspection of a container (python-on-whales); `endpoints_of` turns the
containers of a project into the `StackEndpoints` of one xdist worker (or of the serial stack), with
the host ports the engine really bound, at the host the harness reaches the engine's published ports on
(`host`: 127.0.0.1 for a local engine, integration.engine for a remote one). A service without a
published port is a `MissingEndpoint`, which the stack reports with its containers' state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

from python_on_whales import Container, DockerClient
from python_on_whales.components.container.models import ContainerInspectResult
from python_on_whales.exceptions import DockerException

from .engine import engine_host
from .model import (
    BROKER_MANAGEMENT_PORT,
    BROKER_SERVICE,
    POSTGRES_PORT,
    DatabaseCredentials,
    ServiceEndpoint,
    StackEndpoints,
    SystemSpec,
    copy_suffix,
    for_worker,
    worker_database,
    worker_vhost,
)


def host() -> str:
    """Where the harness reaches published ports: the current engine's host (integration.engine)."""
    return engine_host()


class MissingEndpoint(Exception):
    """A container the endpoints need has no published port (or does not exist)."""


@dataclass
class ContainerInfo:
    """One container of the project as `docker inspect` shows it."""

    service: str
    name: str
    state: str
    exit_code: int
    health: str | None
    image_id: str
    ports: dict[int, int] = field(default_factory=dict)  # container port -> host port
    container_id: str = ""


def _snapshot(container: Container) -> ContainerInspectResult:
    """The one private API of python-on-whales the toolkit uses: a container's inspection as one
    snapshot. Its public attributes run `docker inspect` again on every read that comes more than 10 ms
    after the last one, which made reading five containers take seconds on a busy machine, and it has
    no public way to read them all from one inspection."""
    cached = getattr(container, "_inspect_result", None)
    return cached if isinstance(cached, ContainerInspectResult) else container._get_inspect_result()


def container_info(container: Container) -> ContainerInfo:
    snapshot = _snapshot(container)
    labels = (snapshot.config.labels if snapshot.config else None) or {}
    ports: dict[int, int] = {}
    network = snapshot.network_settings
    for key, bindings in ((network.ports if network else None) or {}).items():
        private = int(key.split("/")[0])
        for binding in bindings or []:
            host_port = binding.get("HostPort") if isinstance(binding, dict) else None
            if host_port:
                ports[private] = int(host_port)
    state = snapshot.state
    health = state.health.status if state is not None and state.health else None
    name = (snapshot.name or "").removeprefix("/")
    return ContainerInfo(
        service=labels.get("com.docker.compose.service", name),
        name=name,
        state=(state.status if state is not None else None) or "unknown",
        exit_code=(state.exit_code if state is not None else None) or 0,
        health=health,
        image_id=snapshot.image or "",
        ports=ports,
        container_id=snapshot.id or "",
    )


def published_ports(client: DockerClient) -> set[int]:
    """Every host port the engine's containers publish or will publish (created ones too), from one
    `docker inspect` of all of them: what a remote engine has bound, where local probes see nothing."""
    try:
        ids = [c.id for c in client.container.list(all=True)]
        inspected = client.container.inspect(ids) if ids else []
    except DockerException:
        return set()
    ports: set[int] = set()
    for container in inspected:
        try:
            snapshot = _snapshot(container)
        except DockerException:
            continue  # removed meanwhile
        sources = (
            (snapshot.host_config.port_bindings if snapshot.host_config else None) or {},
            (snapshot.network_settings.ports if snapshot.network_settings else None) or {},
        )
        for bindings in sources:
            for entries in bindings.values():
                for entry in entries or []:
                    host_port = entry.get("HostPort") if isinstance(entry, dict) else entry.host_port
                    if host_port:
                        ports.add(int(host_port))
    return ports


def database_url(
    credentials: DatabaseCredentials, host_port: int, database: str, at: str | None = None
) -> str:
    """The host-side URL of `database` through its container's published port (at `at`, else the
    engine's host)."""
    user, password = quote(credentials.user, safe=""), quote(credentials.password, safe="")
    return f"postgresql+psycopg2://{user}:{password}@{at or host()}:{host_port}/{database}"


def published_database_url(
    credentials: DatabaseCredentials,
    by_service: Mapping[str, ContainerInfo],
    db_service: str,
    database: str,
    at: str | None = None,
) -> str:
    db = by_service.get(db_service)
    if db is None or POSTGRES_PORT not in db.ports:
        raise MissingEndpoint(f"database {db_service} is not published")
    return database_url(credentials, db.ports[POSTGRES_PORT], database, at)


def endpoints_of(
    system: SystemSpec,
    project: str,
    infos: Sequence[ContainerInfo],
    workers: Sequence[str] = (),
    worker: str | None = None,
    at: str | None = None,
) -> StackEndpoints:
    """The endpoints of `worker`'s part of a stack (the serial stack without workers), reached at `at`
    (default: the engine's host, `host()`)."""
    at = at or host()
    by_service = {i.service: i for i in infos}
    suffix = copy_suffix(workers, worker)
    services: dict[str, ServiceEndpoint] = {}
    for spec in system.services:
        name = for_worker(spec.name, suffix)
        info = by_service.get(name)
        if info is None or spec.port not in info.ports:
            raise MissingEndpoint(f"service {name} has no published port")
        url = None
        if spec.database:
            database = worker_database(spec.database, suffix)
            url = published_database_url(system.credentials, by_service, spec.db_service, database, at)
        services[spec.name] = ServiceEndpoint(
            name=spec.name,
            url=f"http://{at}:{info.ports[spec.port]}",
            database_url=url,
            container=info.name,
        )
    broker_url = None
    broker = by_service.get(BROKER_SERVICE)
    if broker is not None and BROKER_MANAGEMENT_PORT in broker.ports:
        broker_url = f"http://{at}:{broker.ports[BROKER_MANAGEMENT_PORT]}"
    return StackEndpoints(
        project=project,
        services=services,
        broker_management_url=broker_url,
        exchange=system.exchange,
        queues={s.name: s.queue for s in system.services if s.events_consumed},
        consumed={s.name: s.events_consumed for s in system.services if s.events_consumed},
        broker_vhost=worker_vhost(suffix),
        worker=worker,
        events=system.events,
        routing_keys=dict(system.routing_keys),
        event_classes=dict(system.event_classes),
    )
