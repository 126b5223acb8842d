"""Which Docker engine the toolkit talks to, where the harness reaches what it publishes, and what it can do.

The engine is the one the docker CLI would use, resolved as the CLI resolves it: `$DOCKER_HOST` first,
then `$DOCKER_CONTEXT`, then the current context of `docker context use` (`currentContext` in the
CLI's config.json, under `$DOCKER_CONFIG` or ~/.docker), else the default context (the local socket).
python-on-whales runs that same CLI with the same environment, so builds, stacks, health waits, resets
and the doctor all reach this engine.

- **Local** (a unix socket, a named pipe, or tcp/ssh to a loopback address): ports are published on
  127.0.0.1 and reached there, as before.
- **Remote** (tcp or ssh to any other host): the harness reaches published ports on the engine's host,
  so they cannot stay on loopback. They are published on the address the user chooses with
  `$INTEGRATION_BIND_ADDRESS` (`bind_address`): one of the engine host's addresses (only that network
  reaches the stack) or `0.0.0.0` (every network the engine's host is on). A remote engine without
  that choice is refused with one message: the stack's databases accept any connection without a
  password, so where they are reachable is the user's decision, not a silent default.

The pure core, `parse_endpoint`, `resolve_endpoint` (files only) and `choose_bind_address`, is tested
without Docker; `describe_engine` asks the engine for its kind (Docker or Podman), its versions and its
known limits, for the doctor.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException

from .errors import ConfigError, EngineError
from .settings import BIND_ADDRESS_ENV as BIND_ADDRESS_ENV

LOOPBACK = "127.0.0.1"
DEFAULT_SOCKET = "unix:///var/run/docker.sock"
DEFAULT_CONTEXT = "default"
LOCAL_SCHEMES = frozenset({"unix", "npipe", "fd"})
REMOTE_SCHEMES = frozenset({"tcp", "http", "https", "ssh"})
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


@dataclass(frozen=True)
class EngineEndpoint:
    """Where the engine's API is, and where that setting came from."""

    url: str  # unix:///var/run/docker.sock, tcp://10.213.0.2:2375, ssh://ci@build-host
    source: str  # "$DOCKER_HOST", "$DOCKER_CONTEXT", "docker context use", "the default context"
    scheme: str
    host: str | None = None  # the engine's host name or address (tcp, ssh); None for a socket
    port: int | None = None
    context: str | None = None  # the docker context, when one named the endpoint

    @property
    def local(self) -> bool:
        """Whether the engine runs on this machine: its published ports are then this machine's."""
        return self.scheme in LOCAL_SCHEMES or is_loopback(self.host or "")

    @property
    def where(self) -> str:
        """`tcp://10.213.0.2:2375 (from $DOCKER_HOST)`, for messages."""
        via = f"context {self.context}, " if self.context else ""
        return f"{self.url} ({via}from {self.source})"


def is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 and ::1 (a literal address or one of the loopback names)."""
    name = host.strip("[]").lower()
    if name in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_unspecified(address: str) -> bool:
    """0.0.0.0 and :: : every address of the host."""
    try:
        return ipaddress.ip_address(address.strip("[]")).is_unspecified
    except ValueError:
        return False


def parse_endpoint(url: str, source: str, context: str | None = None) -> EngineEndpoint:
    """An engine URL as DOCKER_HOST or a context holds it -> EngineEndpoint. Pure.

    A URL the docker CLI would not accept is a ConfigError naming `source`.
    """
    text = url.strip()
    if "://" not in text:
        raise ConfigError(
            source,
            None,
            f"{text!r} is not an engine address",
            fix="write it as unix:///path/docker.sock, tcp://HOST:PORT or ssh://[USER@]HOST",
        )
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme in LOCAL_SCHEMES:
        return EngineEndpoint(url=text, source=source, scheme=scheme, context=context)
    if scheme not in REMOTE_SCHEMES:
        raise ConfigError(
            source,
            None,
            f"{text!r}: the scheme {scheme}:// is not one the docker CLI reaches an engine by",
            fix="use unix://, tcp://, ssh:// (or npipe:// on Windows)",
        )
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(source, None, f"{text!r} has an invalid port") from None
    if not parts.hostname:
        raise ConfigError(source, None, f"{text!r} names no host", fix="write tcp://HOST:PORT or ssh://HOST")
    return EngineEndpoint(
        url=text, source=source, scheme=scheme, host=parts.hostname, port=port, context=context
    )


def docker_config_dir(environ: Mapping[str, str]) -> Path:
    """The docker CLI's config folder: $DOCKER_CONFIG, else ~/.docker."""
    configured = environ.get("DOCKER_CONFIG", "").strip()
    if configured:
        return Path(configured)
    home = environ.get("HOME", "").strip()
    return (Path(home) if home else Path.home()) / ".docker"


def _context_host(config_dir: Path, name: str, source: str) -> str:
    """The docker endpoint of context `name`, from the CLI's context store (meta.json of the context,
    in a folder named by the SHA-256 of its name)."""
    meta = config_dir / "contexts" / "meta" / hashlib.sha256(name.encode()).hexdigest() / "meta.json"
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            source,
            None,
            f"docker context {name!r} does not exist (no {meta})",
            fix="list the contexts with `docker context ls`",
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(meta, None, f"cannot read docker context {name!r}: {exc}") from None
    host = ((data.get("Endpoints") or {}).get("docker") or {}).get("Host") if isinstance(data, dict) else None
    if not isinstance(host, str) or not host:
        raise ConfigError(meta, "Endpoints.docker.Host", f"docker context {name!r} names no engine")
    return host


def _current_context(config_dir: Path) -> str | None:
    path = config_dir / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(path, None, f"cannot read the docker CLI's config: {exc}") from None
    current = data.get("currentContext") if isinstance(data, dict) else None
    return current if isinstance(current, str) and current else None


def resolve_endpoint(environ: Mapping[str, str] | None = None) -> EngineEndpoint:
    """The engine the docker CLI talks to with `environ`: the CLI's own order (module docstring).
    Reads the CLI's config files, runs nothing."""
    environ = os.environ if environ is None else environ
    host = environ.get("DOCKER_HOST", "").strip()
    if host:
        return parse_endpoint(host, "$DOCKER_HOST")
    config_dir = docker_config_dir(environ)
    name = environ.get("DOCKER_CONTEXT", "").strip()
    source = "$DOCKER_CONTEXT"
    if not name:
        name = _current_context(config_dir) or DEFAULT_CONTEXT
        source = "docker context use" if name != DEFAULT_CONTEXT else "the default context"
    if name == DEFAULT_CONTEXT:
        return parse_endpoint(DEFAULT_SOCKET, source)
    return parse_endpoint(_context_host(config_dir, name, source), source, context=name)


def choose_bind_address(endpoint: EngineEndpoint, configured: str | None) -> str:
    """The host address published ports bind to. Pure.

    Local engine: `configured`, else 127.0.0.1. Remote engine: `configured`, which must be given (an
    EngineError says how and what each choice exposes) and must not be loopback (the harness, on
    another machine, could not reach it).
    """
    value = (configured or "").strip()
    if value:
        try:
            address = str(ipaddress.ip_address(value.strip("[]")))
        except ValueError:
            raise ConfigError(
                f"${BIND_ADDRESS_ENV}",
                None,
                f"{value!r} is not an IP address",
                fix="give one address of the engine's host (10.0.0.5), or 0.0.0.0 for all of them",
            ) from None
        if not endpoint.local and is_loopback(address):
            raise ConfigError(
                f"${BIND_ADDRESS_ENV}",
                None,
                f"{address} is the loopback address of the engine's host, which this machine cannot reach "
                f"(the engine is {endpoint.where})",
                fix="give an address of the engine's host that this machine reaches",
            )
        return address
    if endpoint.local:
        return LOOPBACK
    suggestion = endpoint.host if endpoint.host and _is_address(endpoint.host) else "ADDRESS"
    raise EngineError(
        f"the Docker engine is remote ({endpoint.where}), so the stack's ports cannot stay on 127.0.0.1: "
        f"choose where they are published with {BIND_ADDRESS_ENV}, e.g. "
        f"`export {BIND_ADDRESS_ENV}={suggestion}` (one address of the engine's host: only its network "
        f"reaches the stack) or `export {BIND_ADDRESS_ENV}=0.0.0.0` (every network of that host). "
        "Whoever reaches that address reaches the test databases (no password), RabbitMQ (guest/guest) "
        "and the services; see docs/configuration.md"
    )


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def reach_host(endpoint: EngineEndpoint, bind_address: str) -> str:
    """Where the harness reaches a published port: the bind address when it is one address, else
    127.0.0.1 for a local engine and the engine's host for a remote one. Pure."""
    if not is_unspecified(bind_address):
        return bind_address
    if endpoint.local or not endpoint.host:
        return LOOPBACK
    return endpoint.host


@dataclass(frozen=True)
class Engine:
    """The engine of this run: its endpoint, where ports are published and where they are reached."""

    endpoint: EngineEndpoint
    bind_address: str
    host: str  # what the harness puts in URLs (`http://{host}:{port}`)

    @property
    def local(self) -> bool:
        return self.endpoint.local

    @property
    def url_host(self) -> str:
        """`host` as it goes into a URL (an IPv6 address in brackets)."""
        return f"[{self.host}]" if ":" in self.host else self.host

    def reaper_host(self) -> str:
        """The address the reaper publishes on and is reached at: one address for both, so with 0.0.0.0
        the engine host's address (its name resolved here)."""
        if not is_unspecified(self.bind_address):
            return self.bind_address
        try:
            return str(socket.getaddrinfo(self.host, None, type=socket.SOCK_STREAM)[0][4][0])
        except OSError:
            return self.host


def current_engine(environ: Mapping[str, str] | None = None) -> Engine:
    """The engine of this process's environment, with its bind address (EngineError for a remote engine
    without one; ConfigError for an unreadable setting)."""
    environ = os.environ if environ is None else environ
    endpoint = resolve_endpoint(environ)
    bind = choose_bind_address(endpoint, environ.get(BIND_ADDRESS_ENV))
    return Engine(endpoint=endpoint, bind_address=bind, host=reach_host(endpoint, bind))


def engine_host(environ: Mapping[str, str] | None = None) -> str:
    """The host part of the harness's URLs for this environment's engine (127.0.0.1 locally)."""
    return current_engine(environ).url_host


# --- what the engine says about itself (the doctor) ------------------------------------------------------


@dataclass(frozen=True)
class EngineFacts:
    """The engine's answer to `docker version` and `docker info`."""

    kind: str  # "Docker" or "Podman"
    server_version: str
    api_version: str
    client_version: str
    operating_system: str = ""
    rootless: bool = False
    cgroup_version: str = ""
    limits: tuple[str, ...] = field(default_factory=tuple)


def _get(data: Any, *names: str) -> Any:
    """A field of a python-on-whales model or of a plain dict, by its API name or its snake_case one."""
    for name in names:
        if isinstance(data, Mapping):
            if name in data:
                return data[name]
        elif hasattr(data, name):
            return getattr(data, name)
    return None


def _version_tuple(text: str) -> tuple[int, ...]:
    match = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    return tuple(int(g) for g in match.groups() if g is not None) if match else ()


def engine_limits(
    endpoint: EngineEndpoint, kind: str, server_version: str, *, rootless: bool = False, systemd: bool = True
) -> tuple[str, ...]:
    """What this engine cannot do that a run notices, one sentence each. Pure."""
    limits: list[str] = []
    version = _version_tuple(server_version)
    if kind == "Docker" and version and version < (25,):
        limits.append(
            f"Docker {server_version} has no health check start_interval (Docker 25+): the stack's health "
            "checks probe every second from the start instead"
        )
    if kind == "Podman":
        if not systemd:
            limits.append(
                "Podman runs health checks from systemd timers, and this engine's host has no systemd: "
                "health checks never run, so `compose up --wait` waits until its timeout"
            )
        limits.append(
            "Podman's Docker-compatible API serves no BuildKit session: images are built with the classic "
            "builder, which Podman runs with Buildah (integration.podman)"
        )
    if rootless:
        limits.append(
            "the engine is rootless: published ports go through its user-mode network (slower connects), "
            "and ports below 1024 cannot be published"
        )
    if not endpoint.local:
        limits.append(
            "the engine is remote: every build sends its context over the network, and the reaper "
            "mounts /var/run/docker.sock of the engine's host ($INTEGRATION_REAPER_SOCKET if the "
            "socket is elsewhere there)"
        )
    return tuple(limits)


def describe_engine(client: DockerClient, endpoint: EngineEndpoint) -> EngineFacts:
    """Ask the engine what it is (EngineError when it does not answer)."""
    try:
        version = client.version()
        info = client.info()
    except DockerException as exc:
        detail = (exc.stderr or str(exc)).strip().splitlines()[-1:] or [type(exc).__name__]
        raise EngineError(f"the engine at {endpoint.where} does not answer: {detail[0]}") from exc
    server = _get(version, "server", "Server")
    client_part = _get(version, "client", "Client")
    components = _get(server, "components", "Components") or []
    names = " ".join(str(_get(c, "name", "Name") or "") for c in components)
    platform = str(_get(_get(server, "platform", "Platform") or {}, "name", "Name") or "")
    kind = "Podman" if "podman" in f"{names} {platform}".lower() else "Docker"
    server_version = str(_get(server, "version", "Version") or "?")
    if kind == "Podman":
        podman = next((c for c in components if "podman" in str(_get(c, "name", "Name")).lower()), None)
        server_version = str(_get(podman, "version", "Version") or server_version)
    security = [str(s) for s in (_get(info, "security_options", "SecurityOptions") or [])]
    rootless = any("rootless" in s for s in security)
    cgroup_version = str(_get(info, "cgroup_version", "CgroupVersion") or "")
    # Podman runs health checks from systemd timers; its cgroup manager tells whether systemd is there.
    systemd = kind != "Podman" or str(_get(info, "cgroup_driver", "CgroupDriver") or "") == "systemd"
    return EngineFacts(
        kind=kind,
        server_version=server_version,
        api_version=str(_get(server, "api_version", "ApiVersion") or "?"),
        client_version=str(_get(client_part, "version", "Version") or "?"),
        operating_system=str(_get(info, "operating_system", "OperatingSystem") or ""),
        rootless=rootless,
        cgroup_version=cgroup_version,
        limits=engine_limits(endpoint, kind, server_version, rootless=rootless, systemd=systemd),
    )
