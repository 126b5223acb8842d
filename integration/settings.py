"""Every setting of the toolkit, and where each one comes from.

Two kinds of setting:

- **The system's** (`SystemConfig`): what the toolkit must be told about a repository beyond what its
  own files say: how its services name their environment variables, its event tables, its test
  fixtures. They live in the toolkit's own config, `[tool.integration]` in the system's pyproject.toml
  or `integration.toml` at its root (`integration.configfile`), every key documented in `KEYS` below and
  in the README. A repository without a config gets the defaults, which are the conventions of
  docs/conventions.md.
- **The run's** (`RunSettings`): the root, the images, ports, timeouts and modes of one command or test
  session. For each, the first source that gives a value wins:

      root            --root (CLI), --integration-root / ini integration_root (pytest), $INTEGRATION_ROOT,
                      the folder around the working folder (pytest: its rootdir), the bundled example (CLI)
      compose folder  $INTEGRATION_COMPOSE_DIR, else $XDG_CACHE_HOME (~/.cache)/service-integration/<project>
      health timeout  --health-timeout, health_timeout in the config, 90 s
      port base       $INTEGRATION_PORT_BASE, 47100
      reuse           --reuse-stack, $INTEGRATION_REUSE, off
      base images     $INTEGRATION_{POSTGRES,BROKER,PYTHON}_IMAGE, the registry names
      input size      $INTEGRATION_MAX_INPUT_BYTES (largest file an image may copy), 1 GiB
      reaper          $INTEGRATION_REAPER=0 turns it off
      engine          $DOCKER_HOST, $DOCKER_CONTEXT, `docker context use`, the local socket
                      (integration.engine)
      bind address    $INTEGRATION_BIND_ADDRESS; 127.0.0.1 for a local engine, none for a remote one
                      (the user must choose: integration.engine)

Nothing here talks to Docker; reading the config file is `configfile`'s job.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .configfile import ConfigTable, read_config
from .errors import ConfigError
from .model import (
    DEFAULT_HEALTH_TIMEOUT,
    DatabaseCredentials,
    EventSchema,
    OutboxColumns,
    SystemSpec,
    Wiring,
)
from .ports import BROKER_AMQP_OFFSET, DEFAULT_BASE

ROOT_ENV = "INTEGRATION_ROOT"
COMPOSE_DIR_ENV = "INTEGRATION_COMPOSE_DIR"
PROJECT_ENV = "INTEGRATION_PROJECT"
REUSE_ENV = "INTEGRATION_REUSE"
PORT_BASE_ENV = "INTEGRATION_PORT_BASE"
BIND_ADDRESS_ENV = "INTEGRATION_BIND_ADDRESS"  # where published ports bind (integration.engine)
SERVICES_FILE = Path("architecture") / "services.yml"
MIN_HEALTH_TIMEOUT = 1.0
MAX_HEALTH_TIMEOUT = 3600.0

ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
IDENTIFIER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
OPTION_RE = re.compile(r"--[A-Za-z0-9][A-Za-z0-9-]*")
HARNESS_RE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


# --- the system's config ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceOverrides:
    """`[tool.integration.services.<name>]`: facts about one service that services.yml does not hold
    (or holds under a name the toolkit does not read). Each None defers to services.yml."""

    port: int | None = None
    health: str | None = None
    database: str | None = None
    contract: str | None = None
    image: str | None = None
    build: str | None = None
    dockerfile: str | None = None
    queue: str | None = None
    calls: tuple[str, ...] | None = None
    publishes: tuple[str, ...] | None = None
    consumes: tuple[str, ...] | None = None
    wiring: Mapping[str, Any] = field(default_factory=dict)  # the keys of [tool.integration.wiring]


@dataclass(frozen=True)
class SystemConfig:
    """The toolkit's config of one system; see `KEYS` for what each field means."""

    table: ConfigTable = field(default_factory=ConfigTable)
    strict: bool = False
    system: str | None = None
    services_file: str = SERVICES_FILE.as_posix()
    tests: str = "use_case_tests"
    harness_fixture: str = "test_harness"
    mock_fixture: str = "mock_test_harness"
    real_harness: str | None = None
    mode_option: str = "--integration"
    health_timeout: float | None = None
    health_path: str = "/health"
    exchange: str | None = None
    credentials: DatabaseCredentials = field(default_factory=DatabaseCredentials)
    wiring: Wiring = field(default_factory=Wiring)
    events: EventSchema = field(default_factory=EventSchema)
    routing_keys: Mapping[str, str] = field(default_factory=dict)
    routing_key_attribute: str = "routing_key"
    published_variable: str = "EVENTS_PUBLISHED"
    consumed_variable: str = "EVENTS_CONSUMED"
    services: Mapping[str, ServiceOverrides] = field(default_factory=dict)

    @property
    def path(self) -> Path | None:
        return self.table.path

    def where(self, keys: tuple[str, ...]) -> str:
        return self.table.where(keys)

    def wiring_for(self, service: str) -> Wiring:
        """The system's wiring with the service's own keys laid over it."""
        overrides = self.services.get(service)
        if overrides is None or not overrides.wiring:
            return self.wiring
        return _wiring(self.wiring, overrides.wiring)


# key -> (kind, what it means). Kinds: bool, str, int, number, identifier, env, list, table.
KEYS: dict[str, tuple[str, str]] = {
    "strict": ("bool", "near-miss keys in services.yml are errors instead of warnings (default false)"),
    "system": ("str", "the system's name when services.yml has neither `system:` nor `name:`"),
    "services_file": ("str", "where the service list is, relative to the root (architecture/services.yml)"),
    "tests": ("str", "the folder of the use-case tests, relative to the root (use_case_tests)"),
    "harness_fixture": ("identifier", "the fixture the use-case tests ask for (test_harness)"),
    "mock_fixture": ("identifier", "the fixture that gives the mock harness (mock_test_harness)"),
    "real_harness": (
        "str",
        "the real harness class as 'module:Class', instead of a real_harness_class fixture",
    ),
    "mode_option": ("str", "the pytest option that switches to the real services (--integration)"),
    "health_timeout": ("number", "seconds to wait for each service to become healthy (90)"),
    "health_path": ("str", "the health route of a service services.yml gives none for (/health)"),
    "exchange": ("str", "the RabbitMQ topic exchange when services.yml names none (events)"),
    "database": ("table", "user, password: the PostgreSQL role the services expect (postgres/postgres)"),
    "wiring": ("table", "the environment variables every service reads; see WIRING_KEYS"),
    "events": ("table", "event tables, columns, routing keys; see EVENT_KEYS"),
    "services": ("table", "per service: facts services.yml does not hold; see SERVICE_KEYS"),
}
WIRING_KEYS: dict[str, tuple[str, str]] = {
    "database_url": ("env", 'variable that gets the database URL (DATABASE_URL; "" for none)'),
    "database_url_format": (
        "str",
        "the URL's form, with {db_user} {db_password} {db_host} {db_port} {db_name}",
    ),
    "broker_url": ("env", 'variable that gets the AMQP URL (BROKER_URL; "" for none)'),
    "service_url": ("str", "variable per called service, {SERVICE} its upper-case name ({SERVICE}_URL)"),
    "conventional": ("bool", "also set SERVICE_NAME, PORT, EVENT_EXCHANGE, EVENT_QUEUE (true)"),
    "environment": ("table", "extra variables; values may hold the placeholders of integration.wiring"),
}
EVENT_KEYS: dict[str, tuple[str, str]] = {
    "outbox_table": ("identifier", "the publishers' outbox table (outbox_events)"),
    "processed_table": ("identifier", "the consumers' processed-events table (processed_events)"),
    "processed_event_id": ("identifier", "its event id column (event_id)"),
    "outbox_columns": ("table", "event_id, event_type, payload, occurred_at, published_at column names"),
    "routing_keys": ("table", "event name = routing key, for keys that are not the class name"),
    "routing_key_attribute": ("identifier", "event class attribute that holds its routing key (routing_key)"),
    "published": ("identifier", "contract module variable listing published events (EVENTS_PUBLISHED)"),
    "consumed": ("identifier", "contract module variable listing consumed events (EVENTS_CONSUMED)"),
}
SERVICE_KEYS: dict[str, tuple[str, str]] = {
    "port": ("int", "the HTTP port inside the container"),
    "health": ("str", "the health route"),
    "database": ("str", 'the database name; "" for a service without one'),
    "contract": ("str", "the contract module, dotted or short (architecture.contracts.<name>)"),
    "image": ("str", "the image tag to build"),
    "build": ("str", "the service's folder"),
    "dockerfile": ("str", "its Dockerfile"),
    "queue": ("str", "the broker queue it consumes from"),
    "calls": ("list", "the services it calls over HTTP"),
    "publishes": ("list", "event names it publishes"),
    "consumes": ("list", "event names it consumes"),
    "wiring": ("table", "its own wiring keys, over [tool.integration.wiring]"),
}


def _suggest(key: str, known: Mapping[str, object]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}known keys: {', '.join(known)}"


class _Reader:
    """Typed getters over the config table that raise ConfigError naming the key and its line."""

    def __init__(self, table: ConfigTable) -> None:
        self.table = table

    def table_at(self, value: object, keys: tuple[str, ...], known: Mapping[str, object]) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise self.table.error(keys, f"must be a table, got {type(value).__name__}")
        for key in value:
            if key not in known:
                raise self.table.error((*keys, key), f"unknown key {key!r}; {_suggest(key, known)}")
        return dict(value)

    def get(self, value: object, keys: tuple[str, ...], kind: str) -> Any:
        error = self.table.error
        if kind == "bool":
            if not isinstance(value, bool):
                raise error(keys, f"must be true or false, got {value!r}")
            return value
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
                raise error(keys, f"must be a port number 1..65535, got {value!r}")
            return value
        if kind == "number":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise error(keys, f"must be a number, got {value!r}")
            return float(value)
        if kind == "list":
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise error(keys, f"must be a list of names, got {value!r}")
            return tuple(value)
        if not isinstance(value, str):
            raise error(keys, f"must be a string, got {value!r}")
        if kind == "identifier" and not IDENTIFIER_RE.fullmatch(value):
            raise error(keys, f"{value!r} is not a plain name: letters, digits and '_'")
        if kind == "env" and value and not ENV_NAME_RE.fullmatch(value):
            raise error(keys, f"{value!r} is not an environment variable name: letters, digits, '_'")
        return value


def _wiring(base: Wiring, keys: Mapping[str, Any]) -> Wiring:
    changes: dict[str, Any] = {}
    if "database_url" in keys:
        changes["database_url_variable"] = keys["database_url"] or None
    if "database_url_format" in keys:
        changes["database_url_format"] = keys["database_url_format"]
    if "broker_url" in keys:
        changes["broker_url_variable"] = keys["broker_url"] or None
    if "service_url" in keys:
        changes["service_url_variable"] = keys["service_url"] or None
    if "conventional" in keys:
        changes["conventional"] = keys["conventional"]
    if "environment" in keys:
        changes["environment"] = {**base.environment, **keys["environment"]}
    return replace(base, **changes)


def _read_wiring(reader: _Reader, value: object, keys: tuple[str, ...]) -> dict[str, Any]:
    from .wiring import check_template  # the placeholders are the wiring module's

    raw = reader.table_at(value, keys, WIRING_KEYS)
    result: dict[str, Any] = {}
    for key, setting in raw.items():
        kind = WIRING_KEYS[key][0]
        where = (*keys, key)
        if kind == "table":
            environment = reader.table_at(
                setting, where, {k: None for k in setting} if isinstance(setting, Mapping) else {}
            )
            checked = {}
            for name, text in environment.items():
                if not ENV_NAME_RE.fullmatch(name):
                    raise reader.table.error((*where, name), f"{name!r} is not an environment variable name")
                text = reader.get(text, (*where, name), "str")
                problem = check_template(text)
                if problem:
                    raise reader.table.error((*where, name), problem)
                checked[name] = text
            result[key] = checked
            continue
        result[key] = reader.get(setting, where, kind)
        if key in ("database_url_format", "service_url") and result[key]:
            problem = check_template(result[key], pattern=key == "service_url")
            if problem:
                raise reader.table.error(where, problem)
    return result


def _read_events(reader: _Reader, value: object) -> dict[str, Any]:
    keys = ("events",)
    raw = reader.table_at(value, keys, EVENT_KEYS)
    result: dict[str, Any] = {}
    for key, setting in raw.items():
        kind = EVENT_KEYS[key][0]
        if key == "outbox_columns":
            columns = reader.table_at(
                setting, (*keys, key), {f: None for f in OutboxColumns.__dataclass_fields__}
            )
            result[key] = {c: reader.get(v, (*keys, key, c), "identifier") for c, v in columns.items()}
        elif key == "routing_keys":
            mapping = reader.table_at(
                setting, (*keys, key), {k: None for k in setting} if isinstance(setting, Mapping) else {}
            )
            result[key] = {str(e): reader.get(v, (*keys, key, str(e)), "str") for e, v in mapping.items()}
        else:
            result[key] = reader.get(setting, (*keys, key), kind)
    return result


def load_config(root: Path) -> SystemConfig:
    """The toolkit's config of the system at `root`, validated (defaults where there is none)."""
    table = read_config(root)
    reader = _Reader(table)
    data = reader.table_at(table.data, (), KEYS)
    values: dict[str, Any] = {"table": table}
    for key, setting in data.items():
        kind = KEYS[key][0]
        if kind != "table":
            values[key] = reader.get(setting, (key,), kind)
    if "mode_option" in values and not OPTION_RE.fullmatch(values["mode_option"]):
        raise table.error(
            ("mode_option",), f"{values['mode_option']!r} is not a long option such as --integration"
        )
    if "real_harness" in values and not HARNESS_RE.fullmatch(values["real_harness"]):
        raise table.error(
            ("real_harness",),
            f"{values['real_harness']!r} is not 'module:Class' (e.g. tests.harness:RealHarness)",
        )
    if "health_timeout" in values:
        try:
            values["health_timeout"] = checked_health_timeout(values["health_timeout"], "health_timeout")
        except ConfigError as exc:
            raise table.error(("health_timeout",), exc.problem) from None
    if "health_path" in values and not values["health_path"].startswith("/"):
        raise table.error(("health_path",), f"{values['health_path']!r} is not a URL path starting with '/'")
    if "database" in data:
        database = reader.table_at(data["database"], ("database",), {"user": None, "password": None})
        values["credentials"] = DatabaseCredentials(
            **{k: reader.get(v, ("database", k), "str") for k, v in database.items()}
        )
    if "wiring" in data:
        values["wiring"] = _wiring(Wiring(), _read_wiring(reader, data["wiring"], ("wiring",)))
    if "events" in data:
        events = _read_events(reader, data["events"])
        schema = EventSchema(
            outbox_table=events.get("outbox_table", EventSchema.outbox_table),
            outbox=OutboxColumns(**events.get("outbox_columns", {})),
            processed_table=events.get("processed_table", EventSchema.processed_table),
            processed_event_id=events.get("processed_event_id", EventSchema.processed_event_id),
        )
        values["events"] = schema
        values["routing_keys"] = events.get("routing_keys", {})
        for source, target in (
            ("routing_key_attribute", "routing_key_attribute"),
            ("published", "published_variable"),
            ("consumed", "consumed_variable"),
        ):
            if source in events:
                values[target] = events[source]
    if "services" in data:
        services = data["services"]
        if not isinstance(services, Mapping):
            raise table.error(("services",), "must be a table of service name to settings")
        overrides: dict[str, ServiceOverrides] = {}
        for name, setting in services.items():
            where = ("services", name)
            raw = reader.table_at(setting, where, SERVICE_KEYS)
            fields_: dict[str, Any] = {}
            for key, value in raw.items():
                if key == "wiring":
                    fields_["wiring"] = _read_wiring(reader, value, (*where, "wiring"))
                else:
                    fields_[key] = reader.get(value, (*where, key), SERVICE_KEYS[key][0])
            overrides[name] = ServiceOverrides(**fields_)
        values["services"] = overrides
    return SystemConfig(**values)


# --- the run's settings -------------------------------------------------------------------------------


def checked_health_timeout(value: object, source: str) -> float:
    """A health timeout from `source` (an option, a config key): a number of seconds, 1..3600."""
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(source, None, f"must be a number of seconds, not {value!r}") from None
    if not math.isfinite(seconds) or not MIN_HEALTH_TIMEOUT <= seconds <= MAX_HEALTH_TIMEOUT:
        raise ConfigError(
            source,
            None,
            f"{value!r} is out of range: give {MIN_HEALTH_TIMEOUT:g} to {MAX_HEALTH_TIMEOUT:g} seconds",
        )
    return seconds


def find_system_root(start: Path) -> Path:
    """The nearest folder at or above `start` that holds `architecture/services.yml`, or whose
    integration config names another services file that exists."""
    start = Path(start).resolve()
    for folder in (start, *start.parents):
        if (folder / SERVICES_FILE).is_file():
            return folder
        if (folder / "integration.toml").is_file() or (folder / "pyproject.toml").is_file():
            try:
                config = load_config(folder)
            except ConfigError:
                continue
            if config.path is not None and config.table.data and (folder / config.services_file).is_file():
                return folder
    raise ConfigError(
        start,
        None,
        f"no {SERVICES_FILE.as_posix()} in this folder or any folder above it; run from inside a "
        "system's repository or pass its root folder",
    )


def resolve_root(explicit: str | Path | None, *, start: Path, fallback: Path | None = None) -> Path:
    """The system root: `explicit` (an option; relative to `start`), else $INTEGRATION_ROOT, else the
    system around `start`, else `fallback` (the CLI's bundled example) when given."""
    if explicit:
        path = Path(explicit)
        return (path if path.is_absolute() else start / path).resolve()
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV]).resolve()
    try:
        return find_system_root(start)
    except ConfigError:
        if fallback is not None and (fallback / SERVICES_FILE).exists():
            return fallback
        raise


def default_port_base() -> int:
    """$INTEGRATION_PORT_BASE (the block of preferred host ports, e.g. to keep clear of a stack already
    running on the default one), else the default block 47100."""
    configured = os.environ.get(PORT_BASE_ENV, "").strip()
    if not configured:
        return DEFAULT_BASE
    try:
        base = int(configured)
    except ValueError:
        raise ConfigError(f"${PORT_BASE_ENV}", None, f"must be a port number, not {configured!r}") from None
    highest = 65535 - BROKER_AMQP_OFFSET
    if not 1024 <= base <= highest:
        raise ConfigError(
            f"${PORT_BASE_ENV}",
            None,
            f"{base} is out of range: the block of preferred ports {base}..{base}+{BROKER_AMQP_OFFSET} "
            f"must hold unprivileged ports; choose 1024..{highest}",
        )
    return base


def reuse_from_env() -> bool:
    """Whether $INTEGRATION_REUSE asks for reuse mode (1, true, yes or on)."""
    return os.environ.get(REUSE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def project_name(system: SystemSpec, worker: str | None = None) -> str:
    """`<system>-<hash of the checkout's root>[-<worker>]`: unique per checkout and per xdist worker."""
    override = os.environ.get(PROJECT_ENV)
    if override:
        name = override  # still suffixed per worker: workers sharing a project would down each other's
    else:
        digest = hashlib.sha1(str(system.root.resolve()).encode()).hexdigest()[:8]
        name = f"{system.name}-{digest}"
    if worker and worker != "master":
        name += f"-{worker}"
    return re.sub(r"[^a-z0-9_-]", "-", name.lower())


def default_compose_dir(system: SystemSpec) -> Path:
    """$INTEGRATION_COMPOSE_DIR, else a folder of this checkout's in the user's cache: never inside the
    system root, which is the build context (a `COPY . .` would bake the compose files and run folders
    into an image and change its inputs at every run) and the user's git work tree."""
    configured = os.environ.get(COMPOSE_DIR_ENV)
    if configured:
        return Path(configured).resolve()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return (cache / "service-integration" / project_name(system)).resolve()


@dataclass(frozen=True)
class RunSettings:
    """The settings of one command or test session, each resolved from its sources (module docstring)."""

    root: Path
    config: SystemConfig
    health_timeout: float = DEFAULT_HEALTH_TIMEOUT
    reuse: bool = False
    keep: bool = False
    port_base: int = DEFAULT_BASE


def run_settings(
    root: Path,
    *,
    health_timeout: object = None,
    reuse: bool | None = None,
    keep: bool = False,
    option_name: str = "--health-timeout",
    config: SystemConfig | None = None,
) -> RunSettings:
    """Resolve a run's settings: options first, then the environment, the config (`config` when the
    caller has read it already), the defaults."""
    config = load_config(root) if config is None else config
    if health_timeout is not None:
        timeout = checked_health_timeout(health_timeout, option_name)
    elif config.health_timeout is not None:
        timeout = config.health_timeout
    else:
        timeout = DEFAULT_HEALTH_TIMEOUT
    return RunSettings(
        root=root,
        config=config,
        health_timeout=timeout,
        reuse=reuse_from_env() if reuse is None else reuse,
        keep=keep,
        port_base=default_port_base(),
    )
