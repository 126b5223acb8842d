"""Endpoints: the inspected containers of a stack → where a harness reaches each service. Pure.

`inspect_containers` inspects containers in one engine call and `container_info` reads each one's
document; `endpoints_of` turns the
containers of a project into the `StackEndpoints` of one xdist worker (or of the serial stack), with
the host ports the engine really bound, at the host the harness reaches the engine's published ports on
(`host`: 127.0.0.1 for a local engine, integration.engine for a remote one). A service without a
published port is a `MissingEndpoint`, which the stack reports with its containers' state.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException
from python_on_whales.utils import run as run_docker

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

PROJECT_LABEL = "com.docker.compose.project"  # compose's labels on the containers it creates
ONE_OFF_LABEL = "com.docker.compose.oneoff"


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


def inspect_containers(client: DockerClient, container_ids: Sequence[str]) -> list[ContainerInfo]:
    """One `docker container inspect` of `container_ids`, read from the engine's JSON. python-on-whales
    runs the same command; its models then take about 20 ms per container to parse (100 ms for a stack
    of five, against 25 ms for the engine call), and the start reads its containers every second while
    it waits. Raises DockerException as python-on-whales does (NoSuchContainer for one that is gone)."""
    if not container_ids:
        return []
    output = run_docker(
        [*client.client_config.docker_cmd, "container", "inspect", *container_ids], return_stderr=False
    )
    documents = json.loads(output or "[]")
    return [container_info(document) for document in documents if isinstance(document, dict)]


def project_containers(client: DockerClient, project: str) -> list[ContainerInfo]:
    """The containers of compose project `project` (stopped ones too; not `compose run`'s one-off
    containers), as `compose ps` lists them: found by compose's labels in one engine call, then one
    inspect. `compose ps` starts the compose plugin and reads the project: four times slower."""
    listed = client.container.list(
        all=True,
        filters=[("label", f"{PROJECT_LABEL}={project}"), ("label", f"{ONE_OFF_LABEL}=False")],
    )
    return inspect_containers(client, [container.id for container in listed])


def _mapping(document: Mapping[str, object], key: str) -> Mapping[str, object]:
    value = document.get(key)
    return value if isinstance(value, Mapping) else {}


def _host_ports(bindings: object) -> dict[int, int]:
    """{"5432/tcp": [{"HostIp": "127.0.0.1", "HostPort": "47101"}], ...} -> {5432: 47101}."""
    ports: dict[int, int] = {}
    for key, entries in (bindings if isinstance(bindings, Mapping) else {}).items():
        for entry in entries if isinstance(entries, list) else []:
            host_port = str(entry.get("HostPort") or "") if isinstance(entry, Mapping) else ""
            private = str(key).split("/")[0]
            if host_port.isdigit() and private.isdigit():
                ports[int(private)] = int(host_port)
    return ports


def container_info(document: Mapping[str, object]) -> ContainerInfo:
    """One container's `docker inspect` document."""
    labels = _mapping(_mapping(document, "Config"), "Labels")
    state = _mapping(document, "State")
    health = _mapping(state, "Health").get("Status")
    name = str(document.get("Name") or "").removeprefix("/")
    exit_code = state.get("ExitCode")
    return ContainerInfo(
        service=str(labels.get("com.docker.compose.service", name)),
        name=name,
        state=str(state.get("Status") or "unknown"),
        exit_code=exit_code if isinstance(exit_code, int) else 0,
        health=str(health) if health else None,
        image_id=str(document.get("Image") or ""),
        ports=_host_ports(_mapping(document, "NetworkSettings").get("Ports")),
        container_id=str(document.get("Id") or ""),
    )


def published_ports(client: DockerClient) -> set[int]:
    """Every host port the engine's containers publish or will publish (created ones too), from one
    `docker inspect` of all of them: what a remote engine has bound, where local probes see nothing."""
    try:
        ids = [c.id for c in client.container.list(all=True)]
        output = (
            run_docker([*client.client_config.docker_cmd, "container", "inspect", *ids], return_stderr=False)
            if ids
            else ""
        )
    except DockerException:
        return set()  # one of them was removed meanwhile: the next plan asks again
    ports: set[int] = set()
    for document in json.loads(output or "[]"):
        if isinstance(document, Mapping):
            # A created container has its bindings in HostConfig only; a running one in both.
            ports.update(_host_ports(_mapping(document, "HostConfig").get("PortBindings")).values())
            ports.update(_host_ports(_mapping(document, "NetworkSettings").get("Ports")).values())
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
