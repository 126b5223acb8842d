"""The typed model of a system under test, shared by discovery, compose generation, images and the stack.

Pure data: nothing here reads files or talks to Docker.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

# Images a user elsewhere pulls from a registry; the offline stand-ins are used when these cannot be had.
DEFAULT_POSTGRES_IMAGE = "postgres:15"
DEFAULT_BROKER_IMAGE = "rabbitmq:3.12-management"
DEFAULT_PYTHON_IMAGE = "python:3.11-slim"

OFFLINE_POSTGRES_IMAGE = "integration-local/postgres:15"
OFFLINE_BROKER_IMAGE = "integration-local/rabbitmq:3.10-management"
OFFLINE_PYTHON_IMAGE = "integration-local/python:3.11-slim"

# Credentials of the disposable test containers. They never leave 127.0.0.1.
POSTGRES_USER = "postgres"
POSTGRES_PASSWORD = "postgres"
BROKER_USER = "guest"
BROKER_PASSWORD = "guest"

DEFAULT_HEALTH_TIMEOUT = 90.0  # seconds a stack waits for each service to become healthy

POSTGRES_PORT = 5432
BROKER_AMQP_PORT = 5672
BROKER_MANAGEMENT_PORT = 15672

BROKER_SERVICE = "broker"
DEFAULT_EXCHANGE = "events"
DEFAULT_VHOST = "/"

# A Docker image reference without digest: [registry[:port]/]path[:tag], path components lower case.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_RE = re.compile(
    rf"(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?"
)

# Labels stamped on images and containers.
LABEL_INPUTS_HASH = "io.integration.inputs-hash"
LABEL_SERVICE = "io.integration.service"
LABEL_SYSTEM = "io.integration.system"
LABEL_WORKER = "io.integration.worker"
# The resolved checkout root a service image was built from: `python -m integration clean` removes the
# toolkit's images whose checkout is gone, and only those.
LABEL_ROOT = "io.integration.root"


def checkout_id(root: Path) -> str:
    """A short id of a checkout: the hash of its resolved root folder. Its first 8 characters are those
    of the checkout's compose project names (`settings.project_name`)."""
    return hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:12]


def default_image(system: str, service: str, root: Path) -> str:
    """The tag a service image gets when neither services.yml nor the config names one:
    `<system>-<service>:<checkout id>`. Two checkouts (clones, worktrees) of one repository, and two
    systems with a service of the same name, then never build over each other's images."""
    return f"{system}-{service}:{checkout_id(root)}"


@dataclass(frozen=True)
class BaseImages:
    """The third-party images a stack needs; configuration, with the registry names as defaults."""

    postgres: str = DEFAULT_POSTGRES_IMAGE
    broker: str = DEFAULT_BROKER_IMAGE
    python: str = DEFAULT_PYTHON_IMAGE


DEFAULT_DATABASE_URL_FORMAT = "postgresql+psycopg2://{db_user}:{db_password}@{db_host}:{db_port}/{db_name}"


@dataclass(frozen=True)
class DatabaseCredentials:
    """The PostgreSQL role every service database is created with: what the services expect."""

    user: str = POSTGRES_USER
    password: str = POSTGRES_PASSWORD


@dataclass(frozen=True)
class Wiring:
    """Which environment variables carry what a service container is given, named as the service's
    authors named them. A variable name of None is not set at all.

    `service_url_variable` is a pattern: `{SERVICE}` is the called service's name in upper case with
    '-' as '_' (`INVENTORY`), `{service}` the name as it is. `environment` holds extra variables whose
    values may hold the placeholders of `integration.wiring.PLACEHOLDERS` (`{db_host}`, `{url:inventory}`).
    """

    database_url_variable: str | None = "DATABASE_URL"
    database_url_format: str = DEFAULT_DATABASE_URL_FORMAT
    broker_url_variable: str | None = "BROKER_URL"
    service_url_variable: str | None = "{SERVICE}_URL"
    environment: Mapping[str, str] = field(default_factory=dict)
    # SERVICE_NAME, PORT, EVENT_EXCHANGE and EVENT_QUEUE (docs/conventions.md): on unless switched off.
    conventional: bool = True


@dataclass(frozen=True)
class OutboxColumns:
    """Column names of a publisher's outbox table."""

    event_id: str = "event_id"
    event_type: str = "event_type"
    payload: str = "payload"
    occurred_at: str = "occurred_at"
    published_at: str = "published_at"


@dataclass(frozen=True)
class EventSchema:
    """Where the services record their events, so the harness can read them (docs/conventions.md)."""

    outbox_table: str = "outbox_events"
    outbox: OutboxColumns = OutboxColumns()
    processed_table: str = "processed_events"
    processed_event_id: str = "event_id"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> EventSchema:
        outbox = data.get("outbox") or {}
        assert isinstance(outbox, Mapping)
        return cls(
            outbox_table=str(data.get("outbox_table", "outbox_events")),
            outbox=OutboxColumns(**{str(k): str(v) for k, v in outbox.items()}),
            processed_table=str(data.get("processed_table", "processed_events")),
            processed_event_id=str(data.get("processed_event_id", "event_id")),
        )


@dataclass(frozen=True)
class ServiceSpec:
    """One service of `architecture/services.yml`, resolved against the system root."""

    name: str
    build_dir: Path  # absolute: services/<name>
    dockerfile: Path  # absolute: services/<name>/Dockerfile
    port: int  # the HTTP port inside the container
    health_path: str = "/health"
    database: str | None = None  # database name; None: the service has no database
    contract_module: str | None = None  # dotted module, e.g. architecture.contracts.links
    events_published: tuple[str, ...] = ()
    events_consumed: tuple[str, ...] = ()
    environment: Mapping[str, str] = field(default_factory=dict)
    image: str = ""  # tag of the built image, by default `model.default_image` (shortener-links:1a2b3c4d5e6f)
    calls: tuple[str, ...] = ()  # the services this one calls over HTTP: depends_on and their URLs
    queue_name: str | None = None  # the broker queue it consumes from; None: `<name>.events`
    wiring: Wiring = Wiring()

    @property
    def db_service(self) -> str:
        """Compose service name of this service's PostgreSQL container."""
        return f"{self.name}-db"

    @property
    def uses_broker(self) -> bool:
        return bool(self.events_published or self.events_consumed)

    @property
    def queue(self) -> str:
        """The broker queue this service consumes from."""
        return self.queue_name or f"{self.name}.events"


@dataclass(frozen=True)
class Notice:
    """Something discovery let pass but a user should see (a near-miss key in services.yml)."""

    path: str
    field: str | None
    line: int | None
    problem: str

    def __str__(self) -> str:
        where = f"{self.path}: {self.field}" if self.field else self.path
        at = f" (line {self.line})" if self.line is not None else ""
        return f"{where}: {self.problem}{at}"


@dataclass(frozen=True)
class SystemSpec:
    """A whole system: its root folder, its services, and how events flow between them."""

    name: str
    root: Path  # absolute; the docker build context
    services: tuple[ServiceSpec, ...]
    base_images: BaseImages = BaseImages()
    exchange: str = DEFAULT_EXCHANGE
    services_file: Path | None = None
    credentials: DatabaseCredentials = DatabaseCredentials()
    events: EventSchema = EventSchema()
    # Event name (class name) -> routing key, for every event whose key is not its name.
    routing_keys: Mapping[str, str] = field(default_factory=dict)
    # Event name -> "module:ClassName" of its contract model, for a harness that maps outbox rows.
    event_classes: Mapping[str, str] = field(default_factory=dict)
    # What discovery noticed and let pass (a near-miss key in services.yml): printed by every command.
    warnings: tuple[Notice, ...] = ()

    @property
    def needs_broker(self) -> bool:
        """A broker runs only when at least one event is routed from a publisher to a consumer."""
        published = {e for s in self.services for e in s.events_published}
        return any(e in published for s in self.services for e in s.events_consumed)

    def with_base_images(self, base_images: BaseImages) -> SystemSpec:
        return replace(self, base_images=base_images)

    def call_levels(self) -> list[tuple[str, ...]]:
        """The services in the order calls allow them to start: first those that call no other, then
        those whose callees are all in an earlier level (discovery refuses calls in a circle)."""
        placed: set[str] = set()
        levels: list[tuple[str, ...]] = []
        remaining = list(self.services)
        while remaining:
            level = tuple(s.name for s in remaining if all(c in placed for c in s.calls))
            if not level:  # a circle: cannot happen after discovery; start the rest together
                level = tuple(s.name for s in remaining)
            levels.append(level)
            placed.update(level)
            remaining = [s for s in remaining if s.name not in placed]
        return levels

    def routing_key(self, event: str) -> str:
        return self.routing_keys.get(event, event)

    def service(self, name: str) -> ServiceSpec:
        for spec in self.services:
            if spec.name == name:
                return spec
        raise KeyError(f"no service named {name!r} in system {self.name!r}")


@dataclass(frozen=True)
class PortPlan:
    """Host ports chosen for one stack, keyed by compose service name then container port."""

    ports: Mapping[str, Mapping[int, int]]
    bind_address: str = "127.0.0.1"  # the engine host's address they are published on (integration.engine)

    def host_port(self, compose_service: str, container_port: int) -> int:
        return self.ports[compose_service][container_port]


@dataclass(frozen=True)
class ServiceEndpoint:
    """Where the harness reaches one running service, read from the stack's real port mappings."""

    name: str
    url: str  # http://127.0.0.1:<port>
    database_url: str | None  # postgresql+psycopg2://...@127.0.0.1:<port>/<db>
    container: str = ""  # container name, for messages


@dataclass(frozen=True)
class StackEndpoints:
    """Everything a RealServiceHarness needs to reach a running stack."""

    project: str
    services: Mapping[str, ServiceEndpoint]
    broker_management_url: str | None = None  # http://127.0.0.1:<port>
    broker_user: str = BROKER_USER
    broker_password: str = BROKER_PASSWORD
    exchange: str = DEFAULT_EXCHANGE
    queues: Mapping[str, str] = field(default_factory=dict)  # service name -> queue name
    consumed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # service -> event names
    broker_vhost: str = DEFAULT_VHOST  # a shared stack gives each xdist worker a virtual host of its own
    worker: str | None = None  # the xdist worker these endpoints belong to in a shared stack
    events: EventSchema = EventSchema()
    routing_keys: Mapping[str, str] = field(default_factory=dict)  # event name -> routing key
    event_classes: Mapping[str, str] = field(default_factory=dict)  # event name -> "module:Class"

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready data (how a shared stack hands each xdist worker its endpoints)."""
        return {
            "project": self.project,
            "services": {name: asdict(endpoint) for name, endpoint in self.services.items()},
            "broker_management_url": self.broker_management_url,
            "broker_user": self.broker_user,
            "broker_password": self.broker_password,
            "exchange": self.exchange,
            "queues": dict(self.queues),
            "consumed": {name: list(events) for name, events in self.consumed.items()},
            "broker_vhost": self.broker_vhost,
            "worker": self.worker,
            "events": self.events.to_dict(),
            "routing_keys": dict(self.routing_keys),
            "event_classes": dict(self.event_classes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> StackEndpoints:
        services = data["services"]
        consumed = data.get("consumed") or {}
        assert isinstance(services, Mapping) and isinstance(consumed, Mapping)
        return cls(
            project=str(data["project"]),
            services={str(name): ServiceEndpoint(**fields) for name, fields in services.items()},
            broker_management_url=data.get("broker_management_url"),  # type: ignore[arg-type]
            broker_user=str(data.get("broker_user", BROKER_USER)),
            broker_password=str(data.get("broker_password", BROKER_PASSWORD)),
            exchange=str(data.get("exchange", DEFAULT_EXCHANGE)),
            queues=dict(data.get("queues") or {}),  # type: ignore[call-overload]
            consumed={str(name): tuple(events) for name, events in consumed.items()},
            broker_vhost=str(data.get("broker_vhost", DEFAULT_VHOST)),
            worker=data.get("worker"),  # type: ignore[arg-type]
            events=EventSchema.from_dict(data.get("events") or {}),  # type: ignore[arg-type]
            routing_keys=dict(data.get("routing_keys") or {}),  # type: ignore[call-overload]
            event_classes=dict(data.get("event_classes") or {}),  # type: ignore[call-overload]
        )


def copy_suffix(workers: Sequence[str], worker: str | None) -> str | None:
    """How an xdist worker's copies are told apart in a shared stack: None for the first worker, whose
    part is exactly the serial stack (`links`, database `links`, virtual host "/"), else the worker's id
    (`links-gw1`, database `links_gw1`, virtual host `gw1`)."""
    return None if worker is None or not workers or worker == workers[0] else worker


def for_worker(compose_service: str, suffix: str | None) -> str:
    """The compose name of a worker's service container: `links` -> `links-gw1`."""
    return f"{compose_service}-{suffix}" if suffix else compose_service


def worker_database(database: str, suffix: str | None) -> str:
    """A worker's database in its service's PostgreSQL container: `links` -> `links_gw1`."""
    return f"{database}_{suffix}" if suffix else database


def worker_vhost(suffix: str | None) -> str:
    """A worker's broker virtual host: "/" for the first worker, else its id."""
    return suffix or DEFAULT_VHOST
