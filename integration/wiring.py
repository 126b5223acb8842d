"""Wiring: the environment a service container is given, under the variable names its authors chose.

Pure (model → dict). What a service gets (docs/conventions.md, "What a service container is given"):
its database URL, the broker URL, the URL of each service it calls, the conventional variables, and
the extra variables of its wiring, whose values may hold these placeholders:

    {service} {port}                         the service's name and container port
    {db_host} {db_port} {db_name}            its PostgreSQL container, port and database
    {db_user} {db_password}                  the role the services expect ([tool.integration.database])
    {database_url}                           the whole URL, in the wiring's database_url_format
    {broker_host} {broker_port} {broker_user} {broker_password} {broker_vhost} {broker_url}
    {exchange} {queue}                       the topic exchange, the queue this service consumes from
    {url:NAME}                               the base URL of service NAME (one it calls)

A worker's copy in a shared xdist stack gets its worker's database, virtual host and, for every
service it calls, that worker's copy of it: one worker's requests never reach another's data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import quote

from .model import (
    BROKER_AMQP_PORT,
    BROKER_PASSWORD,
    BROKER_SERVICE,
    BROKER_USER,
    POSTGRES_PORT,
    ServiceSpec,
    SystemSpec,
    for_worker,
    worker_database,
    worker_vhost,
)

PLACEHOLDERS = (
    "service",
    "port",
    "db_host",
    "db_port",
    "db_name",
    "db_user",
    "db_password",
    "database_url",
    "broker_host",
    "broker_port",
    "broker_user",
    "broker_password",
    "broker_vhost",
    "broker_url",
    "exchange",
    "queue",
)
PATTERN_PLACEHOLDERS = ("SERVICE", "service")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def check_template(text: str, *, pattern: bool = False) -> str | None:
    """What is wrong with a template's placeholders, or None. `pattern`: a service_url pattern, whose
    only placeholders are {SERVICE} and {service}."""
    known = PATTERN_PLACEHOLDERS if pattern else PLACEHOLDERS
    for name in _PLACEHOLDER.findall(text):
        if pattern and name in known:
            continue
        if not pattern and (name in known or (name.startswith("url:") and len(name) > 4)):
            continue
        shown = ", ".join("{" + k + "}" for k in known) + ("" if pattern else ", {url:NAME}")
        return f"unknown placeholder {{{name}}}; known: {shown}"
    if text.count("{") != text.count("}"):
        return "unbalanced braces; a placeholder is written {name}"
    return None


def render(text: str, values: Mapping[str, str]) -> str:
    """`text` with each known placeholder replaced (templates were checked when the config was read)."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def variable_for(pattern: str, service: str) -> str:
    """`{SERVICE}_URL` for `inventory-api` -> `INVENTORY_API_URL`."""
    return render(pattern, {"SERVICE": service.upper().replace("-", "_"), "service": service})


def broker_url(vhost: str) -> str:
    path = quote(vhost, safe="")
    return f"amqp://{BROKER_USER}:{BROKER_PASSWORD}@{BROKER_SERVICE}:{BROKER_AMQP_PORT}/{path}"


def service_url(system: SystemSpec, name: str, suffix: str | None) -> str:
    """Where a service reaches service `name` on the compose network (its worker's copy of it)."""
    callee = system.service(name)
    return f"http://{for_worker(callee.name, suffix)}:{callee.port}"


def placeholder_values(system: SystemSpec, spec: ServiceSpec, suffix: str | None = None) -> dict[str, str]:
    values = {
        "service": spec.name,
        "port": str(spec.port),
        "broker_host": BROKER_SERVICE,
        "broker_port": str(BROKER_AMQP_PORT),
        "broker_user": BROKER_USER,
        "broker_password": BROKER_PASSWORD,
        "broker_vhost": worker_vhost(suffix),
        "broker_url": broker_url(worker_vhost(suffix)),
        "exchange": system.exchange,
        "queue": spec.queue,
    }
    if spec.database is not None:
        values |= {
            "db_host": spec.db_service,
            "db_port": str(POSTGRES_PORT),
            "db_name": worker_database(spec.database, suffix),
            "db_user": system.credentials.user,
            "db_password": system.credentials.password,
        }
        values["database_url"] = render(spec.wiring.database_url_format, values)
    for other in system.services:
        values[f"url:{other.name}"] = service_url(system, other.name, suffix)
    return values


def database_url(system: SystemSpec, spec: ServiceSpec, suffix: str | None = None) -> str:
    return placeholder_values(system, spec, suffix)["database_url"]


def service_environment(system: SystemSpec, spec: ServiceSpec, suffix: str | None = None) -> dict[str, str]:
    """The environment of a service container (or of a worker's copy, `suffix`), unescaped.

    The broker URL is set only when the stack has a broker and the service publishes or consumes
    events; services.yml's `environment:` is merged last and so may override any of it.
    """
    wiring = spec.wiring
    values = placeholder_values(system, spec, suffix)
    env: dict[str, str] = {}
    if wiring.conventional:
        env |= {"SERVICE_NAME": spec.name, "PORT": str(spec.port)}
    if spec.database is not None and wiring.database_url_variable:
        env[wiring.database_url_variable] = values["database_url"]
    if system.needs_broker and spec.uses_broker and wiring.broker_url_variable:
        env[wiring.broker_url_variable] = values["broker_url"]
    if wiring.conventional:
        env |= {"EVENT_EXCHANGE": system.exchange, "EVENT_QUEUE": spec.queue}
    if wiring.service_url_variable:
        for callee in spec.calls:
            env[variable_for(wiring.service_url_variable, callee)] = values[f"url:{callee}"]
    for name, template in wiring.environment.items():
        env[name] = render(template, values)
    env.update(spec.environment)
    return env
