"""Discovery: a repository's files → the typed model of its system.

`load_system(root)` reads `<root>/architecture/services.yml`, validates it strictly against the schema
of docs/conventions.md, imports each service's contract module `architecture.contracts.<contract>` to
read the events it publishes and consumes, and returns a `SystemSpec`. Every malformed input raises
`ConfigError` naming the file, the field path (`services.links.port`) and what to do about it.

Pure apart from reading the repository's files and importing its contract modules: no Docker, no network.
"""

from __future__ import annotations

import difflib
import importlib
import keyword
import re
import sys
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from pydantic import BaseModel

from .errors import ConfigError
from .model import DEFAULT_EXCHANGE, BaseImages, ServiceSpec, SystemSpec

SERVICES_FILE = Path("architecture") / "services.yml"
CONTRACTS_PACKAGE = "architecture.contracts"
SCHEMA_VERSION = 1

TOP_KEYS = ("version", "system", "exchange", "services")
REQUIRED_TOP_KEYS = ("version", "system", "services")
SERVICE_KEYS = ("build", "dockerfile", "port", "health", "database", "contract", "image", "environment")
REQUIRED_SERVICE_KEYS = ("port",)

EVENTS_PUBLISHED = "EVENTS_PUBLISHED"
EVENTS_CONSUMED = "EVENTS_CONSUMED"

NAME_RE = re.compile(r"[a-z][a-z0-9-]*")
# A service name is a hostname on the compose network, and so is `<name>-db`: one DNS label (63 chars).
MAX_SERVICE_NAME = 60
# PostgreSQL identifiers are truncated at 63 bytes; lower case so that no quoting is ever needed.
DATABASE_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# AMQP exchange names: letters, digits, hyphen, underscore, period, colon; `amq.` is reserved by RabbitMQ.
EXCHANGE_RE = re.compile(r"[A-Za-z0-9_.:-]{1,255}")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
HEALTH_RE = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*")
# A Docker image reference without digest: [registry[:port]/]path[:tag], path components lower case.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_RE = re.compile(
    rf"(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?"
)


def find_system_root(start: Path) -> Path:
    """The nearest folder at or above `start` that holds `architecture/services.yml`."""
    start = Path(start).resolve()
    for folder in (start, *start.parents):
        if (folder / SERVICES_FILE).is_file():
            return folder
    raise ConfigError(
        start,
        None,
        f"no {SERVICES_FILE.as_posix()} in this folder or any folder above it; run from inside a "
        "system's repository or pass its root folder",
    )


def load_system(root: Path, base_images: BaseImages | None = None) -> SystemSpec:
    """Read and validate `<root>/architecture/services.yml` and the contract modules it names.

    `base_images` default: the configured ones ($INTEGRATION_{POSTGRES,BROKER,PYTHON}_IMAGE, else the
    registry names), so that every command and the pytest plugin run the images the user asked for.
    """
    root = Path(root).resolve()
    services_file = root / SERVICES_FILE
    document = _ServicesFile.read(services_file)
    if base_images is None:
        from .baseimages import configured_base_images  # here: baseimages imports this module

        base_images = configured_base_images()
    name, exchange, services = document.validate(root, base_images)
    services = _read_events(root, services_file, services)
    return SystemSpec(
        name=name,
        root=root,
        services=services,
        base_images=base_images,
        exchange=exchange,
        services_file=services_file,
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


def _suggest(key: object, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}known keys: {', '.join(known)}"


class _ServicesFile:
    """One parsed services.yml: the data, and the YAML node tree to name line numbers in errors."""

    def __init__(self, path: Path, data: object, node: yaml.Node | None) -> None:
        self.path = path
        self.data = data
        self.node = node

    @classmethod
    def read(cls, path: Path) -> _ServicesFile:
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
        finally:
            loader.dispose()
        document = cls(path, data, node)
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
        line = f" (line {node.start_mark.line + 1})" if node is not None else ""
        return ConfigError(self.path, ".".join(field) or None, problem + line)

    def _reject_duplicate_keys(self, node: yaml.Node | None, field: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                if key_node.value in seen:
                    where = ".".join((*field, key_node.value))
                    raise ConfigError(
                        self.path,
                        where,
                        f"key {key_node.value!r} appears twice (line {key_node.start_mark.line + 1}); "
                        "YAML would silently keep only the last one: merge the two entries",
                    )
                seen.add(key_node.value)
                self._reject_duplicate_keys(value_node, (*field, str(key_node.value)))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._reject_duplicate_keys(item, (*field, str(i)))

    # -- typed getters

    def _keys(
        self,
        value: Mapping[Any, Any],
        field: tuple[str, ...],
        known: tuple[str, ...],
        required: tuple[str, ...],
    ) -> None:
        for key in value:
            if key not in known:
                raise self.error(
                    (*field, str(key)), f"unknown key {key!r}; {_suggest(key, known)}", at_key=True
                )
        for key in required:
            if key not in value:
                where = ".".join(field) or "the top level"
                raise self.error((*field, key), f"required key missing from {where}")

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

    # -- the schema

    def validate(self, root: Path, base_images: BaseImages) -> tuple[str, str, tuple[ServiceSpec, ...]]:
        data = self.data
        if data is None:
            raise self.error((), "is empty; expected a mapping with version, system and services")
        if not isinstance(data, Mapping):
            raise self.error(
                (), f"must be a mapping with version, system and services, got {_describe(data)}"
            )
        self._keys(data, (), TOP_KEYS, REQUIRED_TOP_KEYS)

        version = data["version"]
        if isinstance(version, bool) or version != SCHEMA_VERSION or not isinstance(version, int):
            raise self.error(
                ("version",),
                f"must be {SCHEMA_VERSION} (the only schema version there is), got {_describe(version)}",
            )
        name = self._name(data["system"], ("system",), "system name")

        exchange = DEFAULT_EXCHANGE
        if "exchange" in data:
            exchange = self._string(data["exchange"], ("exchange",))
            if not EXCHANGE_RE.fullmatch(exchange) or exchange.startswith("amq."):
                raise self.error(
                    ("exchange",),
                    f"{exchange!r} is not a usable RabbitMQ exchange name: use letters, digits, '-', '_', "
                    "'.', ':' and do not start with 'amq.' (reserved)",
                )

        services = data["services"]
        if not isinstance(services, Mapping):
            raise self.error(
                ("services",), f"must be a mapping of service name to settings, got {_describe(services)}"
            )
        if not services:
            raise self.error(("services",), "must name at least one service")

        specs = [self._service(root, key, value) for key, value in services.items()]
        self._check_unique(specs, base_images)
        return name, exchange, tuple(specs)

    def _service(self, root: Path, key: object, value: object) -> ServiceSpec:
        if not isinstance(key, str):
            raise self.error(("services", str(key)), f"a service name must be a string, got {_describe(key)}")
        name = self._name(key, ("services", key), "service name")
        field = ("services", name)
        if len(name) > MAX_SERVICE_NAME:
            raise self.error(
                field,
                f"service name is {len(name)} characters; at most {MAX_SERVICE_NAME} (it is a hostname)",
            )
        if not isinstance(value, Mapping):
            raise self.error(
                field, f"must be a mapping of settings (at least `port:`), got {_describe(value)}"
            )
        self._keys(value, field, SERVICE_KEYS, REQUIRED_SERVICE_KEYS)
        for option, setting in value.items():
            if setting is None:
                raise self.error((*field, option), "is null: give a value or remove the key")

        port = value["port"]
        if isinstance(port, bool) or not isinstance(port, int):
            raise self.error((*field, "port"), f"must be an integer port number, got {_describe(port)}")
        if not 1 <= port <= 65535:
            raise self.error((*field, "port"), f"{port} is out of range; a port is 1..65535")

        health = "/health"
        if "health" in value:
            health = self._string(value["health"], (*field, "health"))
            if not HEALTH_RE.fullmatch(health):
                raise self.error(
                    (*field, "health"),
                    f"{health!r} is not a URL path: start with '/' and use no spaces or quotes-breaking "
                    "characters (e.g. /health)",
                )

        database = None
        if "database" in value:
            database = self._string(value["database"], (*field, "database"))
            if not DATABASE_RE.fullmatch(database):
                raise self.error(
                    (*field, "database"),
                    f"{database!r} is not a plain PostgreSQL database name: use lower-case letters, digits "
                    "and '_', starting with a letter or '_', at most 63 characters",
                )

        contract = name.replace("-", "_")
        if "contract" in value:
            contract = self._string(value["contract"], (*field, "contract"))
        parts = contract.split(".")
        if contract.endswith(".py") or not all(p.isidentifier() and not keyword.iskeyword(p) for p in parts):
            raise self.error(
                (*field, "contract"),
                f"{contract!r} is not a module name under {CONTRACTS_PACKAGE}: give the module's name "
                "without '.py' (e.g. 'links' for architecture/contracts/links.py)",
            )

        image = f"{name}:test"
        if "image" in value:
            image = self._string(value["image"], (*field, "image"))
            if not IMAGE_RE.fullmatch(image):
                raise self.error(
                    (*field, "image"),
                    f"{image!r} is not a Docker image tag: use lower-case 'name:tag' (e.g. '{name}:test')",
                )

        environment: dict[str, str] = {}
        if "environment" in value:
            env = value["environment"]
            if not isinstance(env, Mapping):
                raise self.error(
                    (*field, "environment"), f"must be a mapping of NAME: value, got {_describe(env)}"
                )
            for env_name, env_value in env.items():
                env_field = (*field, "environment", str(env_name))
                if not isinstance(env_name, str) or not ENV_NAME_RE.fullmatch(env_name):
                    raise self.error(
                        env_field,
                        f"{env_name!r} is not an environment variable name: letters, digits, '_'",
                        at_key=True,
                    )
                if not isinstance(env_value, str):
                    raise self.error(
                        env_field,
                        f'must be a string, got {_describe(env_value)}: quote it (e.g. {env_name}: "1")',
                    )
                environment[env_name] = env_value

        if "build" in value:
            build_dir = self._relative_path(root, value["build"], (*field, "build"))
        else:
            build_dir = (root / "services" / name).resolve()
        if not build_dir.is_dir():
            what = "is not a folder" if build_dir.exists() else "does not exist"
            raise self.error(
                (*field, "build"),
                f"build folder {build_dir} {what}; create it or set `build:` to the service's folder",
            )

        if "dockerfile" in value:
            dockerfile = self._relative_path(root, value["dockerfile"], (*field, "dockerfile"))
        else:
            dockerfile = (build_dir / "Dockerfile").resolve()
            if not dockerfile.is_relative_to(root):
                raise self.error(
                    (*field, "dockerfile"),
                    f"{dockerfile} is not under the system root {root}; docker builds from the root",
                )
        if not dockerfile.is_file():
            what = "is not a file" if dockerfile.exists() else "does not exist"
            raise self.error(
                (*field, "dockerfile"),
                f"Dockerfile {dockerfile} {what}; create it or set `dockerfile:` to its path",
            )

        return ServiceSpec(
            name=name,
            build_dir=build_dir,
            dockerfile=dockerfile,
            port=port,
            health_path=health,
            database=database,
            contract_module=f"{CONTRACTS_PACKAGE}.{contract}",
            environment=environment,
            image=image,
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


def _is_architecture_module(name: str) -> bool:
    return name == "architecture" or name.startswith("architecture.")


@contextmanager
def _contracts_importable(root: Path) -> Iterator[None]:
    """Make `architecture.*` importable from `root` only, and leave the interpreter as it was after.

    Modules named `architecture*` already imported (another system's, or this one's imported by the
    caller) are set aside and put back afterwards, so two calls with different roots never see each
    other's contracts and a caller's own imports keep their identity.
    """
    saved_modules = {n: m for n, m in sys.modules.items() if _is_architecture_module(n)}
    saved_path = list(sys.path)
    saved_bytecode = sys.dont_write_bytecode
    for name in saved_modules:
        del sys.modules[name]
    sys.path.insert(0, str(root))
    sys.dont_write_bytecode = True  # discovery leaves no __pycache__ folders in the repository
    importlib.invalidate_caches()
    try:
        yield
    finally:
        for name in [n for n in sys.modules if _is_architecture_module(n)]:
            del sys.modules[name]
        sys.modules.update(saved_modules)
        sys.path[:] = saved_path
        sys.dont_write_bytecode = saved_bytecode
        importlib.invalidate_caches()


def _contract_file(root: Path, module: str) -> Path:
    base = root.joinpath(*module.split("."))
    package = base / "__init__.py"
    return package if package.is_file() else base.with_suffix(".py")


def _where(exc: BaseException, root: Path) -> str:
    """`file:line` of the innermost traceback frame in the repository, or of a SyntaxError."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}" if exc.lineno else exc.filename
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).is_relative_to(root)]
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else ""


def _import_contract(root: Path, services_file: Path, spec: ServiceSpec) -> tuple[ModuleType, Path]:
    module_name = spec.contract_module or ""
    path = _contract_file(root, module_name)
    if not path.is_file():
        raise ConfigError(
            services_file,
            f"services.{spec.name}.contract",
            f"contract module {module_name} not found: expected {path}; create it or set `contract:`",
        )
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:
        where = _where(exc, root)
        detail = exc.msg if isinstance(exc, SyntaxError) else str(exc)
        at = f" at {where}" if where else ""
        raise ConfigError(
            path,
            module_name,
            f"importing the contract failed{at}: {type(exc).__name__}: {detail}; fix the module "
            "(the toolkit imports it with the system root on sys.path)",
        ) from exc
    loaded = Path(getattr(module, "__file__", None) or "").resolve()
    if loaded != path.resolve():
        raise ConfigError(
            path,
            module_name,
            f"importing {module_name} loaded {loaded or 'a namespace package'} instead of {path}; "
            "add architecture/__init__.py and architecture/contracts/__init__.py",
        )
    return module, path


def _event_names(module: ModuleType, path: Path, variable: str) -> tuple[str, ...]:
    field = f"{module.__name__}.{variable}"
    events = getattr(module, variable, None)
    if events is None:
        if hasattr(module, variable):
            raise ConfigError(path, field, "is None; make it a list of event classes (or remove it)")
        return ()
    if not isinstance(events, list | tuple):
        raise ConfigError(
            path, field, f"must be a list of pydantic model classes, got {type(events).__name__}"
        )
    names: list[str] = []
    for i, event in enumerate(events):
        if not (isinstance(event, type) and issubclass(event, BaseModel)) or event is BaseModel:
            shown = event.__name__ if isinstance(event, type) else repr(event)[:60]
            raise ConfigError(
                path,
                f"{field}[{i}]",
                f"{shown} is not a pydantic model class: list event classes (subclasses of "
                "pydantic.BaseModel), not instances or names",
            )
        if event.__name__ not in names:
            names.append(event.__name__)
    return tuple(names)


def _read_events(
    root: Path, services_file: Path, services: tuple[ServiceSpec, ...]
) -> tuple[ServiceSpec, ...]:
    resolved: list[ServiceSpec] = []
    contract_files: dict[str, Path] = {}
    with _contracts_importable(root):
        for spec in services:
            module, path = _import_contract(root, services_file, spec)
            contract_files[spec.name] = path
            resolved.append(
                replace(
                    spec,
                    events_published=_event_names(module, path, EVENTS_PUBLISHED),
                    events_consumed=_event_names(module, path, EVENTS_CONSUMED),
                )
            )

    publishers: dict[str, list[str]] = {}
    for spec in resolved:
        for event in spec.events_published:
            publishers.setdefault(event, []).append(spec.name)
    for spec in resolved:
        for event in spec.events_consumed:
            if event not in publishers:
                known = ", ".join(f"{e} ({', '.join(s)})" for e, s in publishers.items()) or "none"
                raise ConfigError(
                    contract_files[spec.name],
                    f"{spec.contract_module}.{EVENTS_CONSUMED}",
                    f"service {spec.name!r} consumes event {event!r} but no service publishes it "
                    f"(published events: {known}); add it to a publisher's {EVENTS_PUBLISHED} or stop "
                    "consuming it",
                )
    return tuple(resolved)
