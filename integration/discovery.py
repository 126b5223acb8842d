"""Discovery: a repository's files → the typed model of its system.

`load_system(root)` reads `<root>/architecture/services.yml` as the repository keeps it, the toolkit's
own config (`integration.settings`), and the contract modules, and returns a `SystemSpec`.

services.yml is read, not owned: other tools and people read it too. Keys the toolkit does not use are
left alone; a key that looks like a typo of one it uses is a warning (an error with `strict = true`).
Each fact is looked for where repositories keep it (`SERVICE_ALIASES`): the container port under
`port`, `container_port`, `http.port` or `ports`, else the Dockerfile's EXPOSE; events in the
service's `publishes`/`consumes` lists or the contract's lists; the exchange at the top or in a
`broker:` section. Where a fact is in neither place, the config says it, and the config wins.

Every malformed input raises `ConfigError` naming the file, the field path (`services.links.port`)
and its line. Pure apart from reading the repository's files and importing its contract modules, which
happens in a child process with a time limit (its answer cached in the user's cache folder).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import keyword
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .model import (
    DEFAULT_EXCHANGE,
    IMAGE_RE,
    BaseImages,
    Notice,
    ServiceSpec,
    SystemSpec,
    default_image,
)
from .settings import SERVICES_FILE, ServiceOverrides, SystemConfig, find_system_root, load_config

__all__ = ["IMAGE_RE", "SERVICES_FILE", "find_system_root", "load_system"]

CONTRACTS_PACKAGE = "architecture.contracts"
CONTRACT_IMPORT_SECONDS = 10.0  # a contract module that takes longer to import is stuck
MAX_SERVICES_BYTES = 4 << 20

# What the toolkit reads from a service's entry, each under the names repositories use for it; the
# first name of each is the toolkit's own (docs/conventions.md).
SERVICE_ALIASES: dict[str, tuple[tuple[str, ...], ...]] = {
    "port": (("port",), ("container_port",), ("http_port",), ("http", "port"), ("ports",)),
    "health": (
        ("health",),
        ("health_path",),
        ("healthcheck",),
        ("health_check",),
        ("http", "health"),
        ("http", "health_path"),
        ("healthcheck", "path"),
    ),
    "database": (("database",), ("db",), ("postgres",), ("database", "name"), ("db", "name")),
    "contract": (("contract",),),
    "image": (("image",),),
    "build": (("build",), ("build", "context"), ("path",)),
    "dockerfile": (("dockerfile",), ("build", "dockerfile")),
    "environment": (("environment",), ("env",)),
    "calls": (("calls",), ("depends_on",), ("dependencies",), ("http", "calls")),
    "publishes": (("publishes",), ("events", "publishes"), ("publish",), ("events", "published")),
    "consumes": (("consumes",), ("events", "consumes"), ("subscribes",), ("events", "consumed")),
    "queue": (("queue",), ("events", "queue")),
}
SERVICE_USED = frozenset(alias[0] for aliases in SERVICE_ALIASES.values() for alias in aliases)
TOP_USED = frozenset({"version", "system", "name", "exchange", "broker", "services"})
NEAR_MISS_CUTOFF = 0.75

NAME_RE = re.compile(r"[a-z][a-z0-9-]*")
# A service name is a hostname on the compose network, and so is `<name>-db`: one DNS label (63 chars).
MAX_SERVICE_NAME = 60
# PostgreSQL identifiers are truncated at 63 bytes; lower case so that no quoting is ever needed.
DATABASE_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# AMQP exchange names: letters, digits, hyphen, underscore, period, colon; `amq.` is reserved by RabbitMQ.
EXCHANGE_RE = re.compile(r"[A-Za-z0-9_.:-]{1,255}")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
HEALTH_RE = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*")
_MISSING = object()


def _is_text(value: object) -> bool:
    return isinstance(value, str)


def _is_mapping(value: object) -> bool:
    return isinstance(value, Mapping)


def _is_names(value: object) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))


def _container_port(value: object) -> int | None:
    """8080, "8080", "8080/tcp", "127.0.0.1:9000:8080" or a list of those (the first) -> 8080."""
    if isinstance(value, list):
        return _container_port(value[0]) if value else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip().split("/")[0].rsplit(":", 1)[-1]
        return int(text) if text.isdigit() else None
    return None


def _is_port_like(value: object) -> bool:
    return _container_port(value) is not None


def _cycle_from(start: str, graph: Mapping[str, tuple[str, ...]]) -> list[str] | None:
    """A path of calls that leads from `start` back to it, or None."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for callee in graph.get(node, ()):
            if callee == start:
                return [*path, callee]
            if callee not in seen:
                seen.add(callee)
                stack.append((callee, [*path, callee]))
    return None


def _folder_name(root: Path) -> str:
    """A system name from the root folder's name, for a services.yml that names none."""
    name = re.sub(r"[^a-z0-9-]+", "-", root.name.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"system-{name}".strip("-")
    return name[:MAX_SERVICE_NAME]


def load_system(
    root: Path, base_images: BaseImages | None = None, config: SystemConfig | None = None
) -> SystemSpec:
    """Read `<root>`'s services file, the toolkit's config and the contract modules they name.

    `base_images` default: the configured ones ($INTEGRATION_{POSTGRES,BROKER,PYTHON}_IMAGE, else the
    registry names), so that every command and the pytest plugin run the images the user asked for.
    """
    root = Path(root).resolve()
    config = load_config(root) if config is None else config
    services_file = (root / config.services_file).resolve()
    document = _ServicesFile.read(services_file, config)
    if base_images is None:
        from .baseimages import configured_base_images  # here: it brings python-on-whales along

        base_images = configured_base_images()
    name, exchange, services = document.validate(root, base_images)
    contracts = _read_contracts(root, services_file, services, config)
    return SystemSpec(
        name=name,
        root=root,
        services=contracts.services,
        base_images=base_images,
        exchange=exchange,
        services_file=services_file,
        credentials=config.credentials,
        events=config.events,
        routing_keys=contracts.routing_keys,
        event_classes=contracts.event_classes,
        warnings=tuple(document.warnings),
    )


# --- services.yml -----------------------------------------------------------------------------------


def _describe(value: object) -> str:
    """How a YAML value reads in an error message: its kind and, when short, the value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})" if len(value) <= 60 else "a string"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


class _ServicesFile:
    """One parsed services.yml: the data, and the YAML node tree to name line numbers in errors."""

    def __init__(self, path: Path, data: object, node: yaml.Node | None, config: SystemConfig) -> None:
        self.path = path
        self.data = data
        self.node = node
        self.config = config
        self.warnings: list[Notice] = []

    @classmethod
    def read(cls, path: Path, config: SystemConfig) -> _ServicesFile:
        if path.exists() and not path.is_file():
            raise ConfigError(path, None, "is not a regular file")
        if path.is_file() and path.stat().st_size > MAX_SERVICES_BYTES:
            raise ConfigError(path, None, f"is larger than {MAX_SERVICES_BYTES} bytes; not a services file")
        if not path.is_file():
            raise ConfigError(
                path,
                None,
                "file not found; a system describes its services in architecture/services.yml "
                "(see docs/conventions.md)",
            )
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(path, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        except OSError as exc:
            raise ConfigError(path, None, f"cannot be read: {exc.strerror or exc}") from exc
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = ": ".join(p for p in (exc.context, exc.problem) if p)
            raise ConfigError(path, None, f"not valid YAML{where}: {problem}; fix the syntax") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(path, None, f"not valid YAML: {exc}") from exc
        except RecursionError as exc:
            raise ConfigError(
                path, None, "not usable YAML: an alias refers to itself or the nesting is too deep"
            ) from exc
        finally:
            loader.dispose()
        document = cls(path, data, node, config)
        document._reject_duplicate_keys(node, ())
        return document

    # -- errors with line numbers

    def _node_at(self, field: tuple[str, ...], *, key: bool = False) -> yaml.Node | None:
        node = self.node
        for i, part in enumerate(field):
            if not isinstance(node, yaml.MappingNode):
                return None
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == part:
                    node = key_node if key and i == len(field) - 1 else value_node
                    break
            else:
                return None
        return node

    def error(self, field: tuple[str, ...], problem: str, *, at_key: bool = False) -> ConfigError:
        node = self._node_at(field, key=at_key) if field else None
        line = node.start_mark.line + 1 if node is not None else None
        return ConfigError(self.path, ".".join(field) or None, problem, line=line)

    def _reject_duplicate_keys(self, node: yaml.Node | None, field: tuple[str, ...]) -> None:
        """Every mapping of the document, each node once: an alias may refer to a node that holds it."""
        pending: list[tuple[yaml.Node | None, tuple[str, ...]]] = [(node, field)]
        visited: set[int] = set()
        while pending:
            current, path = pending.pop()
            if current is None or id(current) in visited:
                continue
            visited.add(id(current))
            if isinstance(current, yaml.SequenceNode):
                pending.extend((item, (*path, str(i))) for i, item in enumerate(current.value))
                continue
            if not isinstance(current, yaml.MappingNode):
                continue
            seen: set[str] = set()
            for key_node, value_node in current.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                if key_node.value in seen:
                    raise ConfigError(
                        self.path,
                        ".".join((*path, key_node.value)),
                        f"key {key_node.value!r} appears twice (line {key_node.start_mark.line + 1}); "
                        "YAML would silently keep only the last one: merge the two entries",
                    )
                seen.add(key_node.value)
                pending.append((value_node, (*path, str(key_node.value))))

    # -- typed getters

    def _string(self, value: object, field: tuple[str, ...]) -> str:
        if not isinstance(value, str):
            raise self.error(field, f"must be a string, got {_describe(value)}")
        if not value.strip():
            raise self.error(field, "must not be empty")
        return value

    def _name(self, value: object, field: tuple[str, ...], what: str) -> str:
        name = self._string(value, field)
        if not NAME_RE.fullmatch(name):
            raise self.error(
                field,
                f"{what} {name!r} is not allowed: use lower-case letters, digits and '-', "
                "starting with a letter (e.g. 'links')",
            )
        return name

    def _relative_path(self, root: Path, value: object, field: tuple[str, ...]) -> Path:
        text = self._string(value, field)
        if Path(text).is_absolute():
            raise self.error(field, f"{text!r} is absolute; give a path relative to the root {root}")
        path = (root / text).resolve()
        if not path.is_relative_to(root):
            raise self.error(
                field,
                f"{text!r} resolves to {path}, which is not under the system root {root}: "
                "docker builds from the root, so everything it uses must live under it",
            )
        return path

    # -- reading what is there

    def _at(self, value: Mapping[Any, Any], path: tuple[str, ...]) -> object:
        """The value at `path` inside `value` (nested mappings), or _MISSING."""
        current: object = value
        for part in path:
            if not isinstance(current, Mapping) or part not in current:
                return _MISSING
            current = current[part]
        return current

    def _lookup(
        self,
        value: Mapping[Any, Any],
        field: tuple[str, ...],
        aliases: tuple[tuple[str, ...], ...],
        accept: Callable[[object], bool],
        expected: str,
    ) -> tuple[object, tuple[str, ...]]:
        """The first alias whose value has the shape `accept` wants, and its field path.

        The first alias is the toolkit's own key: a value of the wrong shape there is an error. Under the
        other names a repository may keep something else (a compose-style `healthcheck:` mapping, a
        `ports:` list of strings), so a value of another shape there is left alone.
        """
        for i, alias in enumerate(aliases):
            found = self._at(value, alias)
            if found is _MISSING:
                continue
            if found is None:
                if i == 0:
                    raise self.error((*field, *alias), "is null: give a value or remove the key")
                continue
            if accept(found):
                return found, (*field, *alias)
            if i == 0 and not isinstance(found, Mapping):
                raise self.error((*field, *alias), f"must be {expected}, got {_describe(found)}")
        return _MISSING, field

    def _near_misses(self, value: Mapping[Any, Any], field: tuple[str, ...], used: frozenset[str]) -> None:
        """A key the toolkit does not read is left alone, unless it looks like a typo of one it reads:
        then a warning (an error with `strict = true`) suggests the key it resembles."""
        for key in value:
            if not isinstance(key, str) or key in used:
                continue
            close = difflib.get_close_matches(key, sorted(used), n=1, cutoff=NEAR_MISS_CUTOFF)
            if not close:
                continue
            error = self.error(
                (*field, key),
                f"unknown key {key!r} looks like {close[0]!r}, which the toolkit reads; rename it, or leave "
                "it if another tool reads it (with `strict = true` in [tool.integration] this is an error)",
                at_key=True,
            )
            if self.config.strict:
                raise error
            self.warnings.append(Notice(error.path, error.field, error.line, error.problem))

    def validate(self, root: Path, base_images: BaseImages) -> tuple[str, str, tuple[ServiceSpec, ...]]:
        data = self.data
        if data is None:
            raise self.error((), "is empty; expected a mapping with a `services:` mapping")
        if not isinstance(data, Mapping):
            raise self.error((), f"must be a mapping with a `services:` mapping, got {_describe(data)}")
        self._near_misses(data, (), TOP_USED)

        if self.config.system is not None:
            name = self._name(self.config.system, ("system",), "system name")
        else:
            found, where = self._lookup(data, (), (("system",), ("name",)), _is_text, "a string")
            name = _folder_name(root) if found is _MISSING else self._name(found, where, "system name")

        exchange = DEFAULT_EXCHANGE
        found, where = self._lookup(data, (), (("exchange",), ("broker", "exchange")), _is_text, "a string")
        if self.config.exchange is not None:
            exchange = self.config.exchange
            where = ("exchange",)
        elif found is not _MISSING:
            exchange = self._string(found, where)
        if not EXCHANGE_RE.fullmatch(exchange) or exchange.startswith("amq."):
            raise self.error(
                where,
                f"{exchange!r} is not a usable RabbitMQ exchange name: use letters, digits, '-', '_', "
                "'.', ':' and do not start with 'amq.' (reserved)",
            )

        if "services" not in data:
            close = difflib.get_close_matches(
                "services", [str(k) for k in data], n=1, cutoff=NEAR_MISS_CUTOFF
            )
            if close:
                raise self.error(
                    (close[0],),
                    f"required key 'services' missing from the top level; did you mean 'services'? "
                    f"(the file has {close[0]!r})",
                    at_key=True,
                )
            raise self.error(("services",), "required key missing from the top level")
        services = data["services"]
        if not isinstance(services, Mapping):
            raise self.error(
                ("services",), f"must be a mapping of service name to settings, got {_describe(services)}"
            )
        if not services:
            raise self.error(("services",), "must name at least one service")
        unknown = sorted(set(self.config.services) - {str(k) for k in services})
        if unknown:
            raise self.config.table.error(
                ("services", unknown[0]),
                f"names a service that {self.path} does not have (services: "
                f"{', '.join(str(k) for k in services)})",
            )

        specs = [self._service(root, name, key, value) for key, value in services.items()]
        self._check_calls(specs)
        self._check_unique(specs, base_images)
        return name, exchange, tuple(specs)

    def _service(self, root: Path, system: str, key: object, value: object) -> ServiceSpec:
        if not isinstance(key, str):
            raise self.error(("services", str(key)), f"a service name must be a string, got {_describe(key)}")
        name = self._name(key, ("services", key), "service name")
        field = ("services", name)
        if len(name) > MAX_SERVICE_NAME:
            raise self.error(
                field,
                f"service name is {len(name)} characters; at most {MAX_SERVICE_NAME} (it is a hostname)",
            )
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise self.error(field, f"must be a mapping of settings, got {_describe(value)}")
        self._near_misses(value, field, SERVICE_USED)
        overrides = self.config.services.get(name, ServiceOverrides())
        config_field = ("services", name)

        build_dir = self._build_dir(root, value, field, overrides)
        dockerfile = self._dockerfile(root, value, field, overrides, build_dir)
        port = self._port(value, field, overrides, dockerfile)

        where: tuple[str, ...]  # the field path the health path was read from
        if overrides.health is not None:
            health, where = overrides.health, ("health",)
        else:
            found, where = self._lookup(value, field, SERVICE_ALIASES["health"], _is_text, "a string")
            health = self.config.health_path if found is _MISSING else self._string(found, where)
        if not HEALTH_RE.fullmatch(health):
            raise self._field_error(
                overrides.health is not None,
                (*config_field, "health"),
                where,
                f"{health!r} is not a URL path: start with '/' and use no spaces or quotes-breaking "
                "characters (e.g. /health)",
            )

        database = self._database(value, field, overrides)
        contract = self._contract(root, value, field, overrides, name)
        image = self._image(value, field, overrides, default_image(system, name, root))
        environment = self._environment(value, field)
        calls = self._names_list(value, field, overrides.calls, "calls")
        queue = overrides.queue
        if queue is None:
            found, where = self._lookup(value, field, SERVICE_ALIASES["queue"], _is_text, "a string")
            queue = None if found is _MISSING else self._string(found, where)

        return ServiceSpec(
            name=name,
            build_dir=build_dir,
            dockerfile=dockerfile,
            port=port,
            health_path=health,
            database=database,
            contract_module=contract,
            events_published=self._names_list(value, field, overrides.publishes, "publishes"),
            events_consumed=self._names_list(value, field, overrides.consumes, "consumes"),
            environment=environment,
            image=image,
            calls=calls,
            queue_name=queue,
            wiring=self.config.wiring_for(name),
        )

    def _field_error(
        self, from_config: bool, config_keys: tuple[str, ...], field: tuple[str, ...], problem: str
    ) -> ConfigError:
        return self.config.table.error(config_keys, problem) if from_config else self.error(field, problem)

    def _build_dir(
        self, root: Path, value: Mapping[Any, Any], field: tuple[str, ...], overrides: ServiceOverrides
    ) -> Path:
        if overrides.build is not None:
            build_dir = self._relative_path(root, overrides.build, ("build",))
            where = (*field, "build")
        else:
            found, where = self._lookup(value, field, SERVICE_ALIASES["build"], _is_text, "a string")
            if found is _MISSING:
                build_dir = (root / "services" / field[-1]).resolve()
                where = (*field, "build")
            else:
                build_dir = self._relative_path(root, found, where)
        if not build_dir.is_dir():
            what = "is not a folder" if build_dir.exists() else "does not exist"
            raise self.error(
                where, f"build folder {build_dir} {what}; create it or set `build:` to the service's folder"
            )
        return build_dir

    def _dockerfile(
        self,
        root: Path,
        value: Mapping[Any, Any],
        field: tuple[str, ...],
        overrides: ServiceOverrides,
        build_dir: Path,
    ) -> Path:
        where = (*field, "dockerfile")
        if overrides.dockerfile is not None:
            dockerfile = self._relative_path(root, overrides.dockerfile, where)
        else:
            found, where = self._lookup(value, field, SERVICE_ALIASES["dockerfile"], _is_text, "a string")
            if found is _MISSING:
                where = (*field, "dockerfile")
                dockerfile = (build_dir / "Dockerfile").resolve()
                if not dockerfile.is_relative_to(root):
                    raise self.error(
                        where,
                        f"{dockerfile} is not under the system root {root}; docker builds from the root",
                    )
            else:
                dockerfile = self._relative_path(root, found, where)
        if not dockerfile.is_file():
            what = "is not a file" if dockerfile.exists() else "does not exist"
            raise self.error(
                where, f"Dockerfile {dockerfile} {what}; create it or set `dockerfile:` to its path"
            )
        return dockerfile

    def _port(
        self, value: Mapping[Any, Any], field: tuple[str, ...], overrides: ServiceOverrides, dockerfile: Path
    ) -> int:
        if overrides.port is not None:
            return overrides.port
        found, where = self._lookup(
            value, field, SERVICE_ALIASES["port"], _is_port_like, "an integer port number"
        )
        if found is not _MISSING:
            port = _container_port(found)
            if port is None:
                raise self.error(where, f"must be an integer port number, got {_describe(found)}")
            if not 1 <= port <= 65535:
                raise self.error(where, f"{port} is out of range; a port is 1..65535")
            return port
        from .dockerfile import exposed_ports

        exposed = exposed_ports(dockerfile)
        if exposed:
            return exposed[0]
        raise self.error(
            field,
            f"no container port: services.yml names none (port:, container_port:, http.port:) and "
            f"{dockerfile} has no EXPOSE; add one of them, or `port = ...` under "
            f"[tool.integration.services.{field[-1]}]",
        )

    def _database(
        self, value: Mapping[Any, Any], field: tuple[str, ...], overrides: ServiceOverrides
    ) -> str | None:
        if overrides.database is not None:
            database: str | None = overrides.database or None
            where = (*field, "database")
        else:
            found, where = self._lookup(value, field, SERVICE_ALIASES["database"], _is_text, "a string")
            database = None if found is _MISSING else self._string(found, where)
        if database is not None and not DATABASE_RE.fullmatch(database):
            raise self.error(
                where,
                f"{database!r} is not a plain PostgreSQL database name: use lower-case letters, digits "
                "and '_', starting with a letter or '_', at most 63 characters",
            )
        return database

    def _contract(
        self,
        root: Path,
        value: Mapping[Any, Any],
        field: tuple[str, ...],
        overrides: ServiceOverrides,
        name: str,
    ) -> str | None:
        """The contract module: a dotted path (architecture.contracts.links), a short name under
        architecture.contracts, or a file path; by default architecture.contracts.<name>, when it exists."""
        explicit = True
        where = (*field, "contract")
        if overrides.contract is not None:
            contract = overrides.contract
        else:
            found, where = self._lookup(value, field, SERVICE_ALIASES["contract"], _is_text, "a string")
            if found is _MISSING:
                explicit = False
                contract = name.replace("-", "_")
            else:
                contract = self._string(found, where)
        if contract.endswith(".py") and "/" in contract:
            contract = contract.removesuffix(".py").replace("/", ".")
        parts = contract.split(".")
        if contract.endswith(".py") or not all(p.isidentifier() and not keyword.iskeyword(p) for p in parts):
            raise self.error(
                where,
                f"{contract!r} is not a module name: give a dotted module path "
                f"({CONTRACTS_PACKAGE}.links) or a module name under {CONTRACTS_PACKAGE} (links)",
            )
        module = f"{CONTRACTS_PACKAGE}.{contract}"
        if len(parts) > 1 and (
            contract.startswith(CONTRACTS_PACKAGE.split(".")[0] + ".")
            or not _contract_file(root, module).is_file()
        ):
            module = contract  # a whole module path; `shared.links` under architecture.contracts if there
        if not explicit and not _contract_file(root, module).is_file():
            return None  # no contract of that name: its events come from services.yml or the config
        return module

    def _image(
        self, value: Mapping[Any, Any], field: tuple[str, ...], overrides: ServiceOverrides, default: str
    ) -> str:
        """The tag as the user wrote it (`image:`, or `image` in the config), else this checkout's own."""
        image = default
        where = (*field, "image")
        if overrides.image is not None:
            image = overrides.image
        else:
            found, where = self._lookup(value, field, SERVICE_ALIASES["image"], _is_text, "a string")
            if found is not _MISSING:
                image = self._string(found, where)
        if not IMAGE_RE.fullmatch(image):
            raise self.error(
                where,
                f"{image!r} is not a Docker image tag: use lower-case 'name:tag' (e.g. '{field[-1]}:test')",
            )
        return image

    def _environment(self, value: Mapping[Any, Any], field: tuple[str, ...]) -> dict[str, str]:
        env, where = self._lookup(value, field, SERVICE_ALIASES["environment"], _is_mapping, "a mapping")
        environment: dict[str, str] = {}
        if env is _MISSING:
            return environment
        assert isinstance(env, Mapping)
        for env_name, env_value in env.items():
            env_field = (*where, str(env_name))
            if not isinstance(env_name, str) or not ENV_NAME_RE.fullmatch(env_name):
                raise self.error(
                    env_field,
                    f"{env_name!r} is not an environment variable name: letters, digits, '_'",
                    at_key=True,
                )
            if isinstance(env_value, bool) or not isinstance(env_value, str | int | float):
                raise self.error(
                    env_field,
                    f'must be a string, got {_describe(env_value)}: quote it (e.g. {env_name}: "1")',
                )
            environment[env_name] = str(env_value)
        return environment

    def _names_list(
        self, value: Mapping[Any, Any], field: tuple[str, ...], override: tuple[str, ...] | None, kind: str
    ) -> tuple[str, ...]:
        if override is not None:
            return override
        found, _ = self._lookup(value, field, SERVICE_ALIASES[kind], _is_names, "a list of names")
        if found is _MISSING:
            return ()
        names = [found] if isinstance(found, str) else list(found)  # type: ignore[call-overload]
        return tuple(dict.fromkeys(str(n) for n in names))

    def _check_calls(self, specs: list[ServiceSpec]) -> None:
        names = {s.name for s in specs}
        for spec in specs:
            for callee in spec.calls:
                if callee not in names:
                    raise self.error(
                        ("services", spec.name, "calls"),
                        f"calls {callee!r}, which is not a service here "
                        f"(services: {', '.join(sorted(names))})",
                    )
                if callee == spec.name:
                    raise self.error(("services", spec.name, "calls"), "a service cannot call itself")
        graph = {s.name: s.calls for s in specs}
        for start in graph:
            cycle = _cycle_from(start, graph)
            if cycle:
                raise self.error(
                    ("services", start, "calls"),
                    f"services call each other in a circle ({' -> '.join(cycle)}); each waits for the "
                    "other to be healthy, so none would start: drop one of the calls from the list",
                )

    def _check_unique(self, specs: list[ServiceSpec], base_images: BaseImages) -> None:
        compose_names = {"broker": "the message broker"}
        databases: dict[str, str] = {}
        images = {
            base_images.postgres: "the PostgreSQL base image",
            base_images.broker: "the broker base image",
            base_images.python: "the Python base image",
        }
        for spec in specs:
            field = ("services", spec.name)
            if spec.name in compose_names:
                raise self.error(
                    field,
                    f"service name {spec.name!r} clashes with {compose_names[spec.name]} in the generated "
                    "compose file; rename the service",
                    at_key=True,
                )
            compose_names[spec.name] = f"service {spec.name!r}"
            if spec.database is not None:
                if spec.db_service in compose_names:
                    raise self.error(
                        field,
                        f"the database container of {spec.name!r} is named {spec.db_service!r}, which "
                        f"clashes with {compose_names[spec.db_service]}; rename one of them",
                        at_key=True,
                    )
                compose_names[spec.db_service] = f"the database container of {spec.name!r}"
                if spec.database in databases:
                    raise self.error(
                        (*field, "database"),
                        f"database {spec.database!r} is also used by service {databases[spec.database]!r}; "
                        "every service owns its own database: give each a distinct name",
                    )
                databases[spec.database] = spec.name
            if spec.image in images:
                raise self.error(
                    (*field, "image"),
                    f"image tag {spec.image!r} is also {images[spec.image]}; building this service "
                    "would overwrite it: give each service its own tag",
                )
            images[spec.image] = f"the image of service {spec.name!r}"


# --- contract modules ---------------------------------------------------------------------------------
#
# The contract modules are the repository's code, imported in a child process (`contract_child`) with a
# time limit: a module that loops, hangs in C code, calls os._exit or prints cannot stop or disturb the
# toolkit's process, and the import works from any thread. The child's answer is cached per content of
# the files it read, so that an unchanged repository starts no child (the freshness check stays fast).

CHILD = Path(__file__).resolve().with_name("contract_child.py")
CHILD_START_SECONDS = 20.0  # on top of the import limit: the child's own start, on a loaded machine
CACHE_ENTRIES = 200  # answers kept in the cache folder (a few KB each)
IMPORT_FIX = (
    "a contract module only declares models and interfaces: move what runs at import "
    "(a loop, a network call, a wait, an exit) into a function"
)
_FAULTHANDLER_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+)', re.MULTILINE)


def _contract_file(root: Path, module: str) -> Path:
    base = root.joinpath(*module.split("."))
    package = base / "__init__.py"
    return package if package.is_file() else base.with_suffix(".py")


def contracts_cache_dir() -> Path:
    """Where the child's answers are kept: the toolkit's folder in the user's cache (the one
    `settings.default_compose_dir` uses), never the repository."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "service-integration" / "contracts"


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _cache_file(request: Mapping[str, Any]) -> Path:
    """The cache entry of one request: the same contracts read the same way by the same Python and the
    same child program. The parent's sys.path is left out: pytest and the command line differ there."""
    key = {k: v for k, v in request.items() if k != "sys_path"}
    key["python"] = [sys.executable, sys.version]
    key["child"] = _digest(CHILD)
    text = json.dumps(key, sort_keys=True)
    return contracts_cache_dir() / f"{hashlib.sha256(text.encode()).hexdigest()[:32]}.json"


def _cached(request: Mapping[str, Any]) -> dict[str, Any] | None:
    """The cached answer, when every file it was read from still has the content it had."""
    try:
        entry = json.loads(_cache_file(request).read_text())
        files = entry["files"]
        result = entry["result"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(files, dict) or not isinstance(result, dict):
        return None
    for file, digest in files.items():
        if _digest(Path(file)) != digest:
            return None
    return result


def _store(request: Mapping[str, Any], result: Mapping[str, Any]) -> None:
    files = set(result.get("files", ())) | {m["file"] for m in request["modules"]}
    digests = {file: _digest(Path(file)) for file in sorted(files)}
    if None in digests.values():
        return  # a file vanished meanwhile: nothing to trust
    target = _cache_file(request)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps({"files": digests, "result": result}))
        os.replace(temporary, target)  # whole or not at all: another process may read it now
        _prune(target.parent)
    except OSError:
        pass  # a read-only cache: every call starts the child, nothing else changes


def _prune(folder: Path) -> None:
    """Keep the newest CACHE_ENTRIES answers: one per checkout is used, checkouts come and go."""
    entries = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in entries[CACHE_ENTRIES:]:
        stale.unlink(missing_ok=True)


def _contract_request(root: Path, modules: Mapping[str, Path], config: SystemConfig) -> dict[str, Any]:
    return {
        "root": str(root),
        "sys_path": [p for p in sys.path if isinstance(p, str)],
        "modules": [{"name": name, "file": str(path)} for name, path in modules.items()],
        "contracts_package": CONTRACTS_PACKAGE,
        "contracts_folder": str(root.joinpath(*CONTRACTS_PACKAGE.split("."))),
        "attribute": config.routing_key_attribute,
        "variables": [config.published_variable, config.consumed_variable],
        "seconds": CONTRACT_IMPORT_SECONDS,
    }


def _innermost_frame(stack: str, root: Path) -> tuple[str, int] | None:
    """The innermost repository frame of a faulthandler dump (it lists the innermost frame first)."""
    for match in _FAULTHANDLER_FRAME.finditer(stack):
        if Path(match["file"]).is_relative_to(root):
            return match["file"], int(match["line"])
    return None


def _child_failed(
    root: Path, modules: Mapping[str, Path], importing: str | None, status: int | None, stderr: str
) -> ConfigError:
    """One ConfigError for a child that ended without an answer: timed out, exited or was killed."""
    module = importing or next(iter(modules))
    path = modules.get(module, next(iter(modules.values())))
    if status is None or "Timeout (" in stderr:
        frame = _innermost_frame(stderr.rpartition("Timeout (")[2], root) if "Timeout (" in stderr else None
        at = f" (it was at {frame[0]}:{frame[1]})" if frame else ""
        line = frame[1] if frame and Path(frame[0]) == path else None
        return ConfigError(
            path,
            module,
            f"importing the contract did not finish within {CONTRACT_IMPORT_SECONDS:g} s{at}",
            line=line,
            fix=IMPORT_FIX,
        )
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        how = f"was killed by {name}"
    else:
        how = f"ended the process with exit status {status} (os._exit or a crash)"
    said = [line for line in stderr.strip().splitlines() if line.strip()]
    last = f"; its last output: {said[-1][:200]}" if said else ""
    return ConfigError(path, module, f"importing the contract {how}{last}", fix=IMPORT_FIX)


def _import_in_child(root: Path, modules: Mapping[str, Path], config: SystemConfig) -> dict[str, Any]:
    """What the contract modules hold (see contract_child), from the cache or from a child process."""
    request = _contract_request(root, modules, config)
    cached = _cached(request)
    if cached is not None:
        return cached
    limit = CONTRACT_IMPORT_SECONDS * len(modules) + CHILD_START_SECONDS
    # -I: no user site, no PYTHON* variables, not the child's folder on sys.path (the request gives the
    # parent's); -B: no __pycache__ folders in the repository.
    command = [sys.executable, "-I", "-B", str(CHILD)]
    try:
        done = subprocess.run(
            command, input=json.dumps(request), capture_output=True, text=True, timeout=limit
        )
        status: int | None = done.returncode
        stdout, stderr = done.stdout, done.stderr
    except subprocess.TimeoutExpired as exc:  # run() has killed it: stuck past faulthandler's limit
        status = None
        stdout = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
    except OSError as exc:
        first = next(iter(modules.values()))
        raise ConfigError(
            first, None, f"cannot start {sys.executable} to import the contracts: {exc.strerror or exc}"
        ) from exc
    importing: str | None = None
    answer: dict[str, Any] | None = None
    for line in stdout.splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict) and "importing" in message:
            importing = str(message["importing"])
        elif isinstance(message, dict):
            answer = message
    if answer is None:
        raise _child_failed(root, modules, importing, status, stderr)
    if "failed" in answer:
        failed = answer["failed"]
        where = failed["where"]
        at = f" at {where}" if where else ""
        file, _, line = where.rpartition(":")
        raise ConfigError(
            failed["file"],
            failed["module"],
            f"importing the contract failed{at}: {failed['type']}: {failed['detail']}; fix the module "
            "(the toolkit imports it with the system root on sys.path)",
            line=int(line) if file == failed["file"] and line.isdigit() else None,
        )
    if "error" in answer:
        error = answer["error"]
        raise ConfigError(error["path"], error["field"], error["problem"])
    result: dict[str, Any] = answer["result"]
    _store(request, result)
    return result


class _Contracts:
    """What the contract modules say: the event classes by name, their routing keys, and each
    service's events once services.yml's lists, the config and the contracts' lists are merged."""

    def __init__(self) -> None:
        self.classes: dict[str, tuple[str, str | None]] = {}  # name -> ("module:Class", declared key)
        self.routing_keys: dict[str, str] = {}
        self.event_classes: dict[str, str] = {}
        self.services: tuple[ServiceSpec, ...] = ()

    def learn(self, module: Mapping[str, Any]) -> None:
        for name, ref, declared in module["classes"]:
            self.classes.setdefault(name, (ref, declared))
        for name, key in module["routing_keys"]:
            self.routing_keys.setdefault(name, key)

    def resolve_name(self, name: str) -> str:
        """An event named in services.yml: its class name, or a routing key that one class declares."""
        if name in self.classes:
            return name
        for event, key in self.routing_keys.items():
            if key == name:
                return event
        return name


def _listed(module: Mapping[str, Any], variable: str) -> list[str]:
    """The event class names a contract lists in `variable` (or the error reading them is)."""
    listed = module["lists"][variable]
    if "error" in listed:
        error = listed["error"]
        raise ConfigError(error["path"], error["field"], error["problem"])
    return list(listed["names"])


def _read_contracts(
    root: Path, services_file: Path, services: tuple[ServiceSpec, ...], config: SystemConfig
) -> _Contracts:
    contracts = _Contracts()
    files: dict[str, Path] = {}
    for spec in services:
        if spec.contract_module and spec.contract_module not in files:
            module_name = spec.contract_module
            path = _contract_file(root, module_name)
            if not path.is_file():
                raise ConfigError(
                    services_file,
                    f"services.{spec.name}.contract",
                    f"contract module {module_name} not found: expected {path}; create it or set `contract:`",
                )
            files[module_name] = path
    modules: dict[str, Mapping[str, Any]] = {}
    if files:
        result = _import_in_child(root, files, config)
        modules = {m["name"]: m for m in result["modules"]}
        for module in result["modules"]:
            contracts.learn(module)
        for module in result["extra"]:
            contracts.learn(module)
    for event, (_ref, declared) in contracts.classes.items():
        if declared and event not in contracts.routing_keys:
            contracts.routing_keys[event] = declared
    contracts.routing_keys.update(config.routing_keys)

    resolved: list[ServiceSpec] = []
    contract_files: dict[str, Path] = {}
    for spec in services:
        published = [contracts.resolve_name(e) for e in spec.events_published]
        consumed = [contracts.resolve_name(e) for e in spec.events_consumed]
        if spec.contract_module:
            module = modules[spec.contract_module]
            contract_files[spec.name] = files[spec.contract_module]
            if not spec.events_published:
                published = _listed(module, config.published_variable)
            if not spec.events_consumed:
                consumed = _listed(module, config.consumed_variable)
        resolved.append(
            replace(
                spec,
                events_published=tuple(dict.fromkeys(published)),
                events_consumed=tuple(dict.fromkeys(consumed)),
            )
        )
    contracts.event_classes = {name: ref for name, (ref, _declared) in contracts.classes.items()}
    contracts.routing_keys = {e: k for e, k in contracts.routing_keys.items() if k != e}

    publishers: dict[str, list[str]] = {}
    for spec in resolved:
        for event in spec.events_published:
            publishers.setdefault(event, []).append(spec.name)
    for spec in resolved:
        for event in spec.events_consumed:
            if event not in publishers:
                known = ", ".join(f"{e} ({', '.join(s)})" for e, s in publishers.items()) or "none"
                where = contract_files.get(spec.name, services_file)
                raise ConfigError(
                    where,
                    f"{spec.contract_module}.{config.consumed_variable}"
                    if spec.name in contract_files and where != services_file
                    else f"services.{spec.name}.consumes",
                    f"service {spec.name!r} consumes event {event!r} but no service publishes it "
                    f"(published events: {known}); add it to a publisher's {config.published_variable} "
                    "or stop consuming it",
                )
    contracts.services = tuple(resolved)
    return contracts
