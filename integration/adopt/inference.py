"""What `python -m integration init` infers for one repository, and the config it writes.

One job: load services.yml through discovery tolerantly (inferring what it lacks: the services file, a
port, a build folder, a Dockerfile, a contract module), read the services' code, and infer from it the
wiring (which variable holds the database URL, the broker URL, the services it calls, ...), the health
routes and the event tables; each value goes to the `[tool.integration]` tables being written, with a
comment naming where it was inferred from, and each fact to the report.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from .. import dockerfile as dockerfiles
from ..discovery import SERVICE_ALIASES, load_system
from ..errors import ConfigError
from ..model import (
    DEFAULT_DATABASE_URL_FORMAT,
    BaseImages,
    EventSchema,
    OutboxColumns,
    ServiceSpec,
    SystemSpec,
)
from ..settings import IDENTIFIER_RE, SERVICES_FILE, ServiceOverrides, SystemConfig
from .reading import Sources, dotted, matching_files, python_files, relative
from .service_code import EnvRead, ModelFields, ServiceCode, TableDecl, read_models, read_routes, scan_service

CONVENTIONAL = ("DATABASE_URL", "BROKER_URL", "SERVICE_NAME", "PORT", "EVENT_EXCHANGE", "EVENT_QUEUE")
_POSTGRES_SCHEMES = re.compile(r"^postgres(?:ql)?(?:\+[A-Za-z0-9_]+)?://", re.IGNORECASE)
_AMQP_SCHEMES = re.compile(r"^amqps?://", re.IGNORECASE)
_HTTP_SCHEMES = re.compile(r"^https?://", re.IGNORECASE)


def _part_names(prefix: str, kind: str, last: tuple[str, str]) -> tuple[tuple[re.Pattern[str], str], ...]:
    """The names of variables that hold a part of the `kind` URL (`DB_HOST`, `ORDERS_PGPORT`, ...), each
    with the placeholder of its part, host first; `last` is the kind's own part and the names it goes by."""
    parts = (
        ("host", "HOST(?:NAME)?"),
        ("port", "PORT"),
        ("user", "USER(?:NAME)?"),
        ("password", "(?:PASSWORD|PASS|PASSWD|PWD)"),
        last,
    )
    return tuple(
        (re.compile(rf"^(?:\w+_)?{prefix}_?{names}$"), f"{{{kind}_{part}}}") for part, names in parts
    )


_DB_PREFIX = r"(?:DB|PG|POSTGRES|POSTGRESQL|DATABASE|SQL)"
_DB_PARTS = (
    *_part_names(_DB_PREFIX, "db", ("name", "(?:NAME|DATABASE|DB|DBNAME)")),
    (re.compile(r"^PGDATABASE$"), "{db_name}"),
)
_BROKER_PREFIX = r"(?:RABBIT|RABBITMQ|AMQP|BROKER|MQ)"
_BROKER_PARTS = _part_names(_BROKER_PREFIX, "broker", ("vhost", "(?:VHOST|VIRTUAL_HOST)"))
# Variables that hold a whole URL by their name, for reads whose default init cannot see.
_DB_URL_NAME = re.compile(
    r"(?:^|_)(?:DSN|DATABASE_UR[LI]|DB_UR[LI]|POSTGRES(?:QL)?_UR[LI]|PG_UR[LI]|SQLALCHEMY_DATABASE_UR[LI])$"
)
_BROKER_URL_NAME = re.compile(r"(?:^|_)(?:BROKER_UR[LI]|AMQP_UR[LI]|RABBIT(?:MQ)?_UR[LI]|CELERY_BROKER_URL)$")
_SERVICE_PORT = re.compile(r"^(?:(?:HTTP|APP|SERVER|API|WEB|UVICORN)_)?PORT$")
_CALL_SUFFIX = re.compile(r"(?:URL|URI|API|ENDPOINT|BASE|SERVICE|SVC|ADDR|ADDRESS)")
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "0.0.0.0", "::1", ""})
_COLUMN_NAMES: dict[str, tuple[str, ...]] = {
    "event_type": ("event_type", "routing_key", "topic", "type", "kind", "event_name", "name"),
    "payload": ("payload", "body", "data", "message", "content", "json"),
    "occurred_at": ("occurred_at", "created_at", "timestamp", "created", "emitted_at", "happened_at"),
    "published_at": ("published_at", "sent_at", "dispatched_at", "relayed_at", "delivered_at"),
}


# --- the config being written ------------------------------------------------------------------------------


@dataclass
class _Entry:
    value: str | bool | int | list[str]
    where: str


class _Config:
    """The tables to write, each key with the comment that says where its value came from."""

    def __init__(self) -> None:
        self.tables: dict[tuple[str, ...], dict[str, _Entry]] = {(): {}}

    def set(self, table: tuple[str, ...], key: str, value: str | bool | int | list[str], where: str) -> None:
        self.tables.setdefault(table, {})[key] = _Entry(value, where)

    def get(self, table: tuple[str, ...], key: str) -> _Entry | None:
        return self.tables.get(table, {}).get(key)

    def count(self) -> int:
        return sum(len(entries) for entries in self.tables.values())

    def render(self, prefix: tuple[str, ...], services: Sequence[str]) -> str:
        order = {name: i for i, name in enumerate(services)}

        def rank(table: tuple[str, ...]) -> tuple[Any, ...]:
            head = {"": 0, "database": 1, "wiring": 2, "services": 3, "events": 4}.get(
                table[0] if table else "", 5
            )
            if table[:1] == ("services",) and len(table) > 1:
                return (head, order.get(table[1], len(order)), table[1], len(table), table)
            return (head, 0, "", len(table), table)

        lines = [
            "# The service-integration toolkit's adoption of this repository, written by "
            "`python -m integration init`:",
            "# only what differs from its conventions (docs/conventions.md), each value with where it was "
            "inferred from.",
        ]
        for table in sorted(self.tables, key=rank):
            entries = self.tables[table]
            if not entries and table:
                continue
            path = (*prefix, *table)
            if path:
                lines.append(f"[{'.'.join(_toml_key(p) for p in path)}]")
            for key, entry in entries.items():
                lines.append(f"{_toml_key(key)} = {_toml_value(entry.value)}  # {_one_line(entry.where)}")
            lines.append("")
        return "\n".join(lines).rstrip("\n") + "\n"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_string(key)


def _toml_string(text: str) -> str:
    out = ['"']
    for char in text:
        if char == '"':
            out.append('\\"')
        elif char == "\\":
            out.append("\\\\")
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _toml_value(value: str | bool | int | list[str]) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_string(v) for v in value) + "]"
    return _toml_string(value)


# --- inference ----------------------------------------------------------------------------------------------


@dataclass
class Report:
    facts: list[tuple[str, str]] = field(default_factory=list)
    wrote: list[str] = field(default_factory=list)
    todo: list[str] = field(default_factory=list)

    def fact(self, subject: str, text: str) -> None:
        self.facts.append((subject, text))


def _masked(url: str) -> str:
    """A URL with its password shown as `...`."""
    return re.sub(r"^([^:/]+://[^:/@]*:)[^@]*@", r"\1...@", url)


_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|PASS$|PWD|SECRET|TOKEN|_KEY$")


def _shown(read: EnvRead) -> str:
    """`default <value>` for a message: passwords in URLs and the values of secret-looking names as ..."""
    if read.default is not None:
        if _SECRET_NAME.search(read.name) and read.default:
            return "default ..."
        return f"default {_masked(read.default)}"
    return "a default init cannot read" if read.has_default else "no default"


def _url_format(url: str) -> tuple[str, str | None, str | None, str | None]:
    """`postgresql://shop:secret@localhost:5432/orders?x=1` -> (the form with placeholders, user,
    password, database name)."""
    scheme, _, rest = url.partition("://")
    authority, slash, path_and_query = rest.partition("/")
    path, question, query = path_and_query.partition("?")
    user = password = None
    if "@" in authority:
        userinfo = authority.rsplit("@", 1)[0]
        user, colon, secret = userinfo.partition(":")
        password = secret if colon else None
    form = f"{scheme}://{{db_user}}:{{db_password}}@{{db_host}}:{{db_port}}/{{db_name}}"
    if question:
        form += "?" + query
    return form, user or None, password, (path or None) if slash else None


def _upper(service: str) -> str:
    return service.upper().replace("-", "_")


def _yaml_entry(raw: object, service: str) -> Mapping[str, Any]:
    if isinstance(raw, Mapping):
        services = raw.get("services")
        entry = services.get(service) if isinstance(services, Mapping) else None
        if isinstance(entry, Mapping):
            return entry
    return {}


def _names(entry: Mapping[str, Any], kind: str) -> bool:
    """Whether a service's services.yml entry gives a value under one of the names discovery reads."""
    for alias in SERVICE_ALIASES[kind]:
        current: object = entry
        for part in alias:
            if not isinstance(current, Mapping) or part not in current:
                break
            current = current[part]
        else:
            return True
    return False


def _yaml_exchange(raw: object) -> bool:
    if not isinstance(raw, Mapping):
        return False
    broker = raw.get("broker")
    return "exchange" in raw or (isinstance(broker, Mapping) and "exchange" in broker)


def _fact_order(fact: tuple[str, str]) -> tuple[int, int]:
    text = fact[1]
    if text.startswith("not wired"):
        return 2, 0
    found = re.search(r"\.py:(\d+)", text)
    return (1, int(found.group(1))) if found else (0, 0)


def _creates_cycle(calls: Mapping[str, set[str]], caller: str, callee: str) -> bool:
    stack, seen = [callee], set()
    while stack:
        node = stack.pop()
        if node == caller:
            return True
        if node not in seen:
            seen.add(node)
            stack.extend(calls.get(node, ()))
    return False


@dataclass
class _ServiceWiring:
    """One service's variables, sorted by what they hold, and the wiring inferred from them."""

    spec: ServiceSpec
    entry: Mapping[str, Any]  # its services.yml entry
    reads: dict[str, EnvRead]  # by name, the read with a default first
    keys: dict[str, tuple[Any, str]] = field(default_factory=dict)  # wiring key -> (value, where)
    env: dict[str, tuple[str, str]] = field(default_factory=dict)  # variable -> (template, where)
    db_url: EnvRead | None = None
    broker_url: EnvRead | None = None
    db_parts: dict[str, EnvRead] = field(default_factory=dict)  # "{db_host}" ... -> its read
    broker_parts: dict[str, EnvRead] = field(default_factory=dict)
    unwired: list[EnvRead] = field(default_factory=list)
    service_pattern: tuple[str, str] | None = None  # "{SERVICE}_URL" and where


@dataclass
class _SystemWiring:
    """What the wiring of every service adds up to, written once all are read."""

    system: SystemSpec
    calls: dict[str, set[str]]  # service -> the services it calls, so far
    per_service: dict[str, dict[str, tuple[Any, str]]] = field(default_factory=dict)
    environments: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)
    credentials: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # -> (value, where, service)
    conventional_seen: list[str] = field(default_factory=list)
    new_calls: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # -> [(callee, where)]
    queues: dict[str, tuple[str, str]] = field(default_factory=dict)
    exchange_default: tuple[str, str] | None = None

    def credential(self, key: str, value: str, read: EnvRead, service: str) -> None:
        """The database user or password found in a read's default (the first one found counts)."""
        self.credentials.setdefault(key, (value, f"{read.where}: {read.name}'s default", service))


class Inference:
    """Everything init infers for one repository: the config, the facts and what is left to do."""

    def __init__(self, root: Path, report: Report) -> None:
        self.root = root
        self.report = report
        self.sources = Sources(root)
        self.config = _Config()
        self.raw_yaml: object = None
        self.overrides: dict[str, dict[str, Any]] = {}  # facts load_system needed from the config
        self.services_file = SERVICES_FILE.as_posix()

    # -- services.yml, tolerantly -------------------------------------------------------------------------

    def load(self) -> SystemSpec:
        failures: list[str] = []
        for _ in range(12):
            config = SystemConfig(
                services_file=self.services_file,
                services={name: ServiceOverrides(**keys) for name, keys in self.overrides.items()},
            )
            try:
                system = load_system(self.root, base_images=BaseImages(), config=config)
            except ConfigError as exc:
                if not self._fix(exc):
                    raise
                failures.append(str(exc))
                continue
            self._read_raw_yaml(system)
            for warning in system.warnings:
                self.report.fact("services.yml", f"warning: {warning}")
            return system
        raise ConfigError(self.services_file, None, "init could not read it: " + "; ".join(failures))

    def _read_raw_yaml(self, system: SystemSpec) -> None:
        path = system.services_file or (self.root / self.services_file)
        try:
            self.raw_yaml = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):  # discovery read it: not expected
            self.raw_yaml = None

    def _fix(self, exc: ConfigError) -> bool:
        """Infer the fact a failed load_system lacked, if the config can give it; False otherwise."""
        problem = exc.problem
        if "file not found" in problem and Path(exc.path).name.startswith("services"):
            return self._fix_services_file()
        match = re.match(r"services\.([a-z][a-z0-9-]*)", exc.field or "")
        if not match:
            return False
        name = match.group(1)
        keys = self.overrides.setdefault(name, {})
        if problem.startswith("no container port") and "port" not in keys:
            return self._override(name, "port", self._port_fix(name))
        if "build folder" in problem and "build" not in keys:
            return self._override(name, "build", self._build_fix(name))
        if problem.startswith("Dockerfile") and "dockerfile" not in keys:
            return self._override(name, "dockerfile", self._dockerfile_fix(name, keys))
        if "contract module" in problem and "not found" in problem and "contract" not in keys:
            return self._override(name, "contract", self._contract_fix(name))
        return False

    def _fix_services_file(self) -> bool:
        rel = self._only(matching_files(self.root, re.compile(r"(?:.*/)?services\.ya?ml")))
        if rel is None:
            return False
        self.report.fact("system", f"{self.services_file} not found; using {rel}, the only services file")
        self.services_file = rel
        self.config.set((), "services_file", rel, f"{rel}: the only services file found")
        return True

    def _override(self, name: str, key: str, found: tuple[str | int, str, str] | None) -> bool:
        """A service's `key` load_system lacked, as found: (its value, where it was found, the fact),
        given to it and written to its table; False when it was not found."""
        if found is None:
            return False
        value, where, fact = found
        self.overrides[name][key] = value
        self.config.set(("services", name), key, value, where)
        self.report.fact(name, fact)
        return True

    def _only(self, candidates: Sequence[Path]) -> str | None:
        """The one candidate's path relative to the root; None when there are none or several."""
        return relative(candidates[0], self.root) if len(candidates) == 1 else None

    def _port_fix(self, name: str) -> tuple[int, str, str] | None:
        found = self._port_of(name)
        if found is None:
            return None
        port, where = found
        return (
            port,
            f"{where} (services.yml and the Dockerfile name none)",
            f"port {port} ({where}; services.yml and the Dockerfile's EXPOSE name none)",
        )

    def _build_fix(self, name: str) -> tuple[str, str, str] | None:
        dockerfiles_named = matching_files(self.root, re.compile(rf"(?:.*/)?{re.escape(name)}/Dockerfile"))
        rel = self._only([p.parent for p in dockerfiles_named])
        if rel is None:
            return None
        return (
            rel,
            f"{rel}/Dockerfile (services.yml's build folder does not exist)",
            f"build folder {rel} (its Dockerfile; services.yml's does not exist)",
        )

    def _dockerfile_fix(self, name: str, keys: Mapping[str, Any]) -> tuple[str, str, str] | None:
        build = self.root / keys.get("build", f"services/{name}")
        candidates = [p for p in sorted(build.glob("*Dockerfile*")) if p.is_file()]
        candidates = candidates or matching_files(
            self.root, re.compile(rf"(?:.*/)?{re.escape(name)}\.Dockerfile")
        )
        rel = self._only(candidates)
        if rel is None:
            return None
        return (
            rel,
            f"{rel} (services.yml's Dockerfile does not exist)",
            f"Dockerfile {rel} (services.yml's does not exist)",
        )

    def _contract_fix(self, name: str) -> tuple[str, str, str] | None:
        stem = name.replace("-", "_")
        folder = self.root / "architecture" / "contracts"
        candidates = [p for p in sorted(folder.glob("*.py")) if stem in p.stem or p.stem in stem]
        candidates = [p for p in candidates if not p.stem.startswith("_")]
        rel = self._only(candidates)
        if rel is None:
            return None
        module = f"architecture.contracts.{candidates[0].stem}"
        return (
            module,
            f"{rel} (services.yml's contract module does not exist)",
            f"contract {module} ({rel}; services.yml's does not exist)",
        )

    def _port_of(self, name: str) -> tuple[int, str] | None:
        """A service's port from its Dockerfile's CMD (`--port 8000`) or its code (`uvicorn.run(port=)`)."""
        build = self.root / self.overrides.get(name, {}).get("build", f"services/{name}")
        dockerfile = self.root / self.overrides.get(name, {}).get(
            "dockerfile", relative(build / "Dockerfile", self.root)
        )
        if dockerfile.is_file():
            parsed = dockerfiles.read(dockerfile)
            for instruction in parsed.instructions:
                if instruction.keyword in ("CMD", "ENTRYPOINT"):
                    words = list(instruction.json_args or instruction.args.split())
                    for i, word in enumerate(words):
                        if word in ("--port", "-p") and i + 1 < len(words) and words[i + 1].isdigit():
                            return int(words[i + 1]), f"{relative(dockerfile, self.root)}:{instruction.line}"
                        if word.startswith("--port=") and word[7:].isdigit():
                            return int(word[7:]), f"{relative(dockerfile, self.root)}:{instruction.line}"
        for path in python_files(build):
            tree = self.sources.tree(path)
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and dotted(node.func) in ("uvicorn.run", "run"):
                    for keyword in node.keywords:
                        value = keyword.value
                        if (
                            keyword.arg == "port"
                            and isinstance(value, ast.Constant)
                            and isinstance(value.value, int)
                        ):
                            return value.value, f"{relative(path, self.root)}:{node.lineno}"
        return None

    # -- the services' code -------------------------------------------------------------------------------

    def scan(self, system: SystemSpec) -> tuple[dict[str, ServiceCode], dict[str, ModelFields]]:
        codes: dict[str, ServiceCode] = {}
        for spec in system.services:
            codes[spec.name] = scan_service(
                self.root, self.sources, spec.name, spec.build_dir, spec.dockerfile
            )
        trees = [self.sources.tree(p) for code in codes.values() for p in code.files]
        contracts = self.root / "architecture"
        trees += [self.sources.tree(p) for p in python_files(contracts)] if contracts.is_dir() else []
        models = read_models(trees)
        for code in codes.values():
            for path in code.files:
                rel = relative(path, self.root)
                found = read_routes(self.sources.tree(path), rel, models)
                code.routes += [replace(r, service=code.name) for r in found]
        return codes, models

    # -- the wiring -----------------------------------------------------------------------------------------

    def wiring(self, system: SystemSpec, codes: Mapping[str, ServiceCode]) -> None:
        state = _SystemWiring(system, calls={s.name: set(s.calls) for s in system.services})
        for spec in system.services:
            first_fact = len(self.report.facts)
            wired = self._wire_service(spec, codes[spec.name], state)
            # this service's facts in the order of the lines they were read from, "not wired" last
            self.report.facts[first_fact:] = sorted(self.report.facts[first_fact:], key=_fact_order)
            state.per_service[spec.name] = wired.keys
            state.environments[spec.name] = wired.env
        self._write_wiring(state)
        self._system_facts(state)

    def _wire_service(self, spec: ServiceSpec, code: ServiceCode, state: _SystemWiring) -> _ServiceWiring:
        """One service's variables sorted by what they hold, its facts reported, its to-dos named."""
        where_code = f" ({code.folders_where} COPY)" if code.folders_where else ""
        self.report.fact(spec.name, f"code in {', '.join(code.folders)}{where_code}")
        reads: dict[str, EnvRead] = {}
        for read in code.env:
            known = reads.get(read.name)
            if known is None or (known.default is None and read.default is not None):
                reads[read.name] = read
        wired = _ServiceWiring(spec, _yaml_entry(self.raw_yaml, spec.name), reads)
        for read in reads.values():
            self._sort_read(read, state, wired)
        self._wire_database(state, wired)
        self._wire_broker(wired)
        pattern = wired.service_pattern
        if pattern is not None and pattern[0] != "{SERVICE}_URL":
            wired.keys["service_url"] = (pattern[0], f"{pattern[1]}: the called service's variable")
        self._unwired(wired)
        return wired

    def _sort_read(self, read: EnvRead, state: _SystemWiring, wired: _ServiceWiring) -> None:
        """What one variable holds: the database or broker URL or a part of it, a called service's URL,
        the exchange, the queue, the port; else it is left unwired."""
        spec = wired.spec
        default = read.default or ""
        if read.name in CONVENTIONAL:
            state.conventional_seen.append(f"{spec.name}: {read.name} ({read.where})")
            if read.name == "DATABASE_URL" and _POSTGRES_SCHEMES.match(default):
                wired.db_url = read
            return
        if _POSTGRES_SCHEMES.match(default) or (not read.default and _DB_URL_NAME.search(read.name)):
            db_url = wired.db_url
            if db_url is None or (
                not re.search(r"DSN|DATABASE|DB", db_url.name) and re.search(r"DSN|DATABASE|DB", read.name)
            ):
                if db_url is not None:
                    wired.unwired.append(db_url)
                wired.db_url = read
            else:
                wired.unwired.append(read)
            return
        if _AMQP_SCHEMES.match(default) or (not read.default and _BROKER_URL_NAME.search(read.name)):
            if wired.broker_url is None:
                wired.broker_url = read
            else:
                wired.unwired.append(read)
            return
        callee = self._callee(spec.name, read, state.system)
        if callee is not None:
            self._wire_call(read, callee, state, wired)
            return
        part = next((p for pattern, p in _DB_PARTS if pattern.match(read.name)), None)
        if part == "{db_port}" and default not in ("", "5432"):
            part = None
        if part is not None and (spec.database is not None or wired.db_url is None):
            wired.db_parts.setdefault(part, read)
            return
        part = next((p for pattern, p in _BROKER_PARTS if pattern.match(read.name)), None)
        if part is not None:
            wired.broker_parts.setdefault(part, read)
            return
        if not self._wire_template(read, state, wired):
            wired.unwired.append(read)

    def _wire_call(self, read: EnvRead, callee: str, state: _SystemWiring, wired: _ServiceWiring) -> None:
        """A variable that holds the URL of the service `callee`: wired, unless the call closes a circle."""
        spec = wired.spec
        if callee not in (spec.calls or ()) and _creates_cycle(state.calls, spec.name, callee):
            self.report.fact(
                spec.name,
                f"{read.name} ({read.where}) names {callee}, which calls {spec.name}: a circle, left out",
            )
            wired.unwired.append(read)
            return
        default = read.default or ""
        state.calls[spec.name].add(callee)
        upper = _upper(callee)
        path = urlsplit(default).path if _HTTP_SCHEMES.match(default) else ""
        if read.name.startswith(upper + "_") and path in ("", "/"):
            pattern = "{SERVICE}" + read.name[len(upper) :]
            if wired.service_pattern is None or wired.service_pattern[0] == pattern:
                wired.service_pattern = (pattern, str(read.where))
            else:
                wired.env[read.name] = (f"{{url:{callee}}}", str(read.where))
        else:
            wired.env[read.name] = (f"{{url:{callee}}}{path.rstrip('/')}", str(read.where))
        if callee not in spec.calls:
            state.new_calls.setdefault(spec.name, []).append((callee, str(read.where)))
        self.report.fact(spec.name, f"calls {callee} through {read.name} ({read.where}, {_shown(read)})")

    def _wire_template(self, read: EnvRead, state: _SystemWiring, wired: _ServiceWiring) -> bool:
        """A variable that holds the exchange, the service's queue or its port; False if it is none."""
        spec, system = wired.spec, state.system
        default = read.default or ""
        if (default and default == system.exchange) or (
            "EXCHANGE" in read.name and default and not _yaml_exchange(self.raw_yaml)
        ):
            wired.env[read.name] = ("{exchange}", str(read.where))
            if default != system.exchange and state.exchange_default is None:
                state.exchange_default = (default, str(read.where))
            self.report.fact(spec.name, f"the exchange in {read.name} ({read.where}, {_shown(read)})")
            return True
        if (default and default == spec.queue) or (
            "QUEUE" in read.name and default and not _names(wired.entry, "queue") and spec.events_consumed
        ):
            wired.env[read.name] = ("{queue}", str(read.where))
            if default != spec.queue:
                state.queues[spec.name] = (default, str(read.where))
            self.report.fact(spec.name, f"its queue in {read.name} ({read.where}, {_shown(read)})")
            return True
        if _SERVICE_PORT.match(read.name) and default == str(spec.port):
            wired.env[read.name] = ("{port}", str(read.where))
            self.report.fact(spec.name, f"its port in {read.name} ({read.where}, {_shown(read)})")
            return True
        return False

    def _wire_database(self, state: _SystemWiring, wired: _ServiceWiring) -> None:
        """The variable that holds the database URL, or those that hold its parts; the credentials in
        their defaults; the database's name when services.yml names none."""
        report, spec, entry = self.report, wired.spec, wired.entry
        db_url, db_parts = wired.db_url, wired.db_parts
        if db_url is not None:
            form, user, password, database = _url_format(db_url.default or "")
            if db_url.name != "DATABASE_URL":
                wired.keys["database_url"] = (db_url.name, str(db_url.where))
            if db_url.default and form != DEFAULT_DATABASE_URL_FORMAT:
                wired.keys["database_url_format"] = (
                    form,
                    f"{db_url.where}: the form of {db_url.name}'s default",
                )
            report.fact(spec.name, f"database URL in {db_url.name} ({db_url.where}, {_shown(db_url)})")
            if user:
                state.credential("user", user, db_url, spec.name)
            if password is not None:
                state.credential("password", password, db_url, spec.name)
            self._database(spec.name, entry, spec.database, database, str(db_url.where))
        if db_parts:
            for part, read in db_parts.items():
                wired.env[read.name] = (part, str(read.where))
                report.fact(spec.name, f"database {part[4:-1]} in {read.name} ({read.where}, {_shown(read)})")
                if part == "{db_user}" and read.default:
                    state.credential("user", read.default, read, spec.name)
                if part == "{db_password}" and read.default is not None:
                    state.credential("password", read.default, read, spec.name)
            if db_url is None:
                first = next(iter(db_parts.values()))
                wired.keys["database_url"] = ("", f"{first.where}: reads the parts, no URL")
                name_read = db_parts.get("{db_name}")
                self._database(
                    spec.name,
                    entry,
                    spec.database,
                    name_read.default if name_read else None,
                    str(first.where),
                )
        if spec.database is not None and db_url is None and not db_parts:
            if "DATABASE_URL" in wired.reads:
                report.fact(spec.name, f"database URL in DATABASE_URL ({wired.reads['DATABASE_URL'].where})")
            else:
                report.todo.append(
                    f"{spec.name}: has database {spec.database!r} but init found no variable it reads it "
                    "from; it is given DATABASE_URL (set database_url under "
                    f"[tool.integration.services.{spec.name}.wiring] if it reads another)"
                )

    def _wire_broker(self, wired: _ServiceWiring) -> None:
        """The variable that holds the broker URL, or those that hold its parts."""
        spec, broker_url = wired.spec, wired.broker_url
        if broker_url is not None:
            wired.keys["broker_url"] = (broker_url.name, str(broker_url.where))
            self.report.fact(
                spec.name, f"broker URL in {broker_url.name} ({broker_url.where}, {_shown(broker_url)})"
            )
        if wired.broker_parts:
            for part, read in wired.broker_parts.items():
                wired.env[read.name] = (part, str(read.where))
                self.report.fact(
                    spec.name, f"broker {part[8:-1]} in {read.name} ({read.where}, {_shown(read)})"
                )
            if broker_url is None and "BROKER_URL" not in wired.reads:
                first = next(iter(wired.broker_parts.values()))
                wired.keys["broker_url"] = ("", f"{first.where}: reads the parts, no URL")
        elif broker_url is None and "BROKER_URL" in wired.reads:
            self.report.fact(spec.name, f"broker URL in BROKER_URL ({wired.reads['BROKER_URL'].where})")

    def _unwired(self, wired: _ServiceWiring) -> None:
        """The variables nothing is wired to: a to-do for those without a default, a fact for the rest."""
        spec, unwired = wired.spec, wired.unwired
        for read in unwired:
            if read.has_default:
                continue
            if read.name in spec.environment:
                self.report.fact(
                    spec.name, f"{read.name} ({read.where}) is set in services.yml's environment"
                )
                continue
            self.report.todo.append(
                f"{spec.name}: {read.where} reads {read.name} with no default and init cannot tell what "
                f"it holds: give it under `environment:` of {spec.name} in {self.services_file} (or "
                f"[tool.integration.services.{spec.name}.wiring.environment])"
            )
        defaulted = [r for r in unwired if r.has_default and r.name not in spec.environment]
        if defaulted:
            shown = ", ".join(
                f"{r.name} ({r.where}, {_shown(r)})" if r.default is not None else r.name for r in defaulted
            )
            self.report.fact(spec.name, f"not wired, their defaults apply: {shown}")

    def _write_wiring(self, state: _SystemWiring) -> None:
        """Each service's wiring to the config: a key the same for every service to
        [tool.integration.wiring], the rest per service; the calls and queues services.yml lacks."""
        system, per_service, environments = state.system, state.per_service, state.environments
        services = [s.name for s in system.services]
        for key in ("database_url", "database_url_format", "broker_url", "service_url"):
            values = [per_service[s].get(key) for s in services]
            same = {v[0] for v in values if v is not None}
            if len(services) > 1 and all(v is not None for v in values) and len(same) == 1:
                value, where = per_service[services[0]][key]
                self.config.set(("wiring",), key, value, where)
                for s in services:
                    per_service[s].pop(key)
        shared = set.intersection(*(set(environments[s]) for s in services)) if len(services) > 1 else set()
        for name in sorted(shared, key=lambda n: environments[services[0]][n][1]):
            templates = {environments[s][name][0] for s in services}
            if len(templates) == 1:
                wheres = ", ".join(environments[s][name][1] for s in services)
                self.config.set(("wiring", "environment"), name, templates.pop(), wheres)
                for s in services:
                    environments[s].pop(name)
        for s in services:
            for key, (value, where) in per_service[s].items():
                self.config.set(("services", s, "wiring"), key, value, where)
            for name, (value, where) in environments[s].items():
                self.config.set(("services", s, "wiring", "environment"), name, value, where)
        for s, added in state.new_calls.items():
            spec = system.service(s)
            callees = list(dict.fromkeys([*spec.calls, *(c for c, _ in added)]))
            self.config.set(
                ("services", s),
                "calls",
                callees,
                ", ".join(w for _, w in added) + f" ({self.services_file} names no such call)",
            )
        for s, (queue, where) in state.queues.items():
            self.config.set(("services", s), "queue", queue, f"{where} (services.yml names no queue)")

    def _system_facts(self, state: _SystemWiring) -> None:
        """What the services' reads say of the system: its exchange, whether any reads the conventional
        variables, the database's credentials."""
        report = self.report
        exchange_default = state.exchange_default
        if exchange_default is not None and not _yaml_exchange(self.raw_yaml):
            exchange, where = exchange_default
            self.config.set((), "exchange", exchange, f"{where} (services.yml names none)")
            report.fact("system", f"exchange {exchange} ({where}; services.yml names none)")
        if state.conventional_seen:
            report.fact("system", f"conventional variables read: {'; '.join(state.conventional_seen)}")
        else:
            self.config.set(("wiring",), "conventional", False, f"no service reads {', '.join(CONVENTIONAL)}")
            report.fact("system", f"no service reads any of {', '.join(CONVENTIONAL)}: conventional = false")
        for key in ("user", "password"):
            if key in state.credentials:
                value, where, service = state.credentials[key]
                default = "postgres"
                if value != default:
                    self.config.set(("database",), key, value, where)
                shown = "..." if key == "password" else value
                report.fact(service, f"database {key} {shown} ({where})")

    def _database(
        self, service: str, entry: Mapping[str, Any], declared: str | None, found: str | None, where: str
    ) -> None:
        if declared is not None or _names(entry, "database"):
            return
        name = found if found and re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", found) else service.replace("-", "_")
        self.config.set(("services", service), "database", name, f"{where} (services.yml names no database)")
        self.report.fact(service, f"database {name} ({where}; services.yml names none)")

    def _callee(self, caller: str, read: EnvRead, system: SystemSpec) -> str | None:
        others = [s for s in system.services if s.name != caller]
        default = read.default or ""
        by_name = [s.name for s in others if read.name.startswith(_upper(s.name) + "_")]
        if by_name:
            suffix = read.name[len(_upper(by_name[0])) + 1 :]
            if _HTTP_SCHEMES.match(default) or (not default and _CALL_SUFFIX.search(suffix)):
                return max(by_name, key=len)
            return None
        if not _HTTP_SCHEMES.match(default):
            return None
        parts = urlsplit(default)
        by_host = [s.name for s in others if parts.hostname == s.name]
        if by_host:
            return by_host[0]
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.hostname in _LOCAL_HOSTS and port is not None:
            by_port = [s.name for s in others if s.port == port]
            if len(by_port) == 1:
                return by_port[0]
        return None

    # -- health routes ---------------------------------------------------------------------------------------

    def health(self, system: SystemSpec, codes: Mapping[str, ServiceCode]) -> None:
        for spec in system.services:
            gets = {r.path for r in codes[spec.name].routes if r.method == "GET"}
            if not gets or spec.health_path in gets:
                continue
            entry = _yaml_entry(self.raw_yaml, spec.name)
            if _names(entry, "health"):
                continue
            candidates = [
                r
                for r in codes[spec.name].routes
                if r.method == "GET"
                and r.path
                in (
                    "/health",
                    "/healthz",
                    "/livez",
                    "/readyz",
                    "/ready",
                    "/ping",
                    "/status",
                    "/health/ready",
                    "/health/live",
                )
            ]
            if candidates:
                route = candidates[0]
                self.config.set(
                    ("services", spec.name), "health", route.path, f"{route.where} (GET {route.path})"
                )
                self.report.fact(spec.name, f"health route {route.path} ({route.where})")

    # -- the event tables ------------------------------------------------------------------------------------

    def events(self, system: SystemSpec, codes: Mapping[str, ServiceCode]) -> None:
        report = self.report
        defaults = EventSchema()
        publishers = {s.name for s in system.services if s.events_published}
        consumers = {s.name for s in system.services if s.events_consumed}
        outboxes = [(s, t) for s, code in codes.items() for t in code.tables if "outbox" in t.name.lower()]
        processed = [
            (s, t)
            for s, code in codes.items()
            for t in code.tables
            if re.search(r"processed|inbox|consumed", t.name.lower()) and "outbox" not in t.name.lower()
        ]
        outboxes.sort(key=lambda item: item[0] not in publishers)
        processed.sort(
            key=lambda item: (
                item[0] not in consumers,
                "inbox" not in item[1].name.lower() and "event" not in item[1].name.lower(),
            )
        )
        if outboxes:
            service, table = outboxes[0]
            for other, extra in outboxes[1:]:
                if extra.name != table.name:
                    report.todo.append(
                        f"{other}: its outbox {extra.name} ({extra.where}) differs from {service}'s "
                        f"{table.name}; the harness reads one outbox table name for every service"
                    )
            columns = self._outbox_columns(table)
            shown = ", ".join(f"{k}={v}" for k, v in columns.items())
            report.fact(service, f"outbox table {table.name} ({table.where}): {shown}")
            if table.name != defaults.outbox_table:
                self._identifier(("events",), "outbox_table", table.name, str(table.where))
            default_columns = OutboxColumns()
            for key in OutboxColumns.__dataclass_fields__:
                value = columns.get(key)
                if value is None:
                    report.todo.append(
                        f"{service}: no {key} column found in {table.name} ({table.where}); set it under "
                        "[tool.integration.events.outbox_columns]"
                    )
                elif value != getattr(default_columns, key):
                    self._identifier(
                        ("events", "outbox_columns"), key, value, f"{table.where}: column {value}"
                    )
        elif publishers:
            report.todo.append(
                f"{', '.join(sorted(publishers))}: publish events but init found no outbox table (a table "
                "whose name holds 'outbox'); get_published_events() reads outbox_events unless "
                "[tool.integration.events] outbox_table names another"
            )
        if processed:
            service, table = processed[0]
            column = self._id_column(table)
            report.fact(service, f"processed-events table {table.name} ({table.where}): event id {column}")
            if table.name != defaults.processed_table:
                self._identifier(("events",), "processed_table", table.name, str(table.where))
            if column is not None and column != defaults.processed_event_id:
                self._identifier(("events",), "processed_event_id", column, f"{table.where}: column {column}")
        elif consumers:
            report.todo.append(
                f"{', '.join(sorted(consumers))}: consume events but init found no processed-events table (a "
                "name with processed, inbox or consumed); wait_for_events_processed() reads processed_events"
            )

    def _identifier(self, table: tuple[str, ...], key: str, value: str, where: str) -> None:
        if IDENTIFIER_RE.fullmatch(value):
            self.config.set(table, key, value, where)
        else:
            self.report.todo.append(
                f"{where}: {value!r} is not a plain name; the harness cannot use it as {key}"
            )

    @staticmethod
    def _id_column(table: TableDecl) -> str | None:
        names = [c.name for c in table.columns]
        for column in table.columns:
            if column.primary_key:
                return column.name
        for wanted in ("event_id", "message_id", "id", "uuid"):
            if wanted in names:
                return wanted
        return next((n for n in names if n.endswith("_id")), None)

    def _outbox_columns(self, table: TableDecl) -> dict[str, str]:
        names = [c.name for c in table.columns]
        found: dict[str, str] = {}
        event_id = self._id_column(table)
        if event_id is not None:
            found["event_id"] = event_id
        for key, candidates in _COLUMN_NAMES.items():
            for candidate in candidates:
                if candidate in names and candidate not in found.values():
                    found[key] = candidate
                    break
        return {k: found[k] for k in OutboxColumns.__dataclass_fields__ if k in found}
