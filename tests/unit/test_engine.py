"""integration.engine's pure core: which engine, local or remote, where ports bind and are reached."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from integration.engine import (
    BIND_ADDRESS_ENV,
    Engine,
    EngineEndpoint,
    choose_bind_address,
    current_engine,
    describe_engine,
    engine_limits,
    parse_endpoint,
    reach_host,
    resolve_endpoint,
)
from integration.errors import ConfigError, EngineError


@pytest.mark.parametrize(
    ("url", "scheme", "host", "port", "local"),
    [
        ("unix:///var/run/docker.sock", "unix", None, None, True),
        ("unix:///run/user/1000/docker.sock", "unix", None, None, True),
        ("npipe:////./pipe/docker_engine", "npipe", None, None, True),
        ("tcp://127.0.0.1:2375", "tcp", "127.0.0.1", 2375, True),
        ("tcp://localhost:2376", "tcp", "localhost", 2376, True),
        ("tcp://[::1]:2375", "tcp", "::1", 2375, True),
        ("tcp://10.213.0.2:2375", "tcp", "10.213.0.2", 2375, False),
        ("tcp://build-host.internal:2376", "tcp", "build-host.internal", 2376, False),
        ("ssh://ci@10.0.0.7", "ssh", "10.0.0.7", None, False),
        ("ssh://ci@build-host:2222", "ssh", "build-host", 2222, False),
        ("ssh://localhost", "ssh", "localhost", None, True),
    ],
)
def test_an_endpoint_is_parsed_and_classified(url, scheme, host, port, local):
    endpoint = parse_endpoint(url, "$DOCKER_HOST")
    assert (endpoint.scheme, endpoint.host, endpoint.port, endpoint.local) == (scheme, host, port, local)
    assert endpoint.url == url


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("10.0.0.5:2375", "is not an engine address"),
        ("ftp://host", "ftp:// is not one"),
        ("tcp://", "names no host"),
        ("tcp://host:notaport", "invalid port"),
    ],
)
def test_an_endpoint_the_cli_would_not_take_is_one_config_error_naming_its_source(url, says):
    with pytest.raises(ConfigError) as caught:
        parse_endpoint(url, "$DOCKER_HOST")
    assert says in str(caught.value) and str(caught.value).startswith("$DOCKER_HOST")


def _context(config: Path, name: str, host: str) -> None:
    folder = config / "contexts" / "meta" / hashlib.sha256(name.encode()).hexdigest()
    folder.mkdir(parents=True)
    meta = {"Name": name, "Metadata": {}, "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": False}}}
    (folder / "meta.json").write_text(json.dumps(meta))


def test_resolution_follows_the_cli_order(tmp_path: Path):
    config = tmp_path / "docker"
    _context(config, "remote", "tcp://10.213.0.2:2375")
    _context(config, "other", "ssh://ci@other-host")
    base = {"DOCKER_CONFIG": str(config)}

    default = resolve_endpoint(base)
    assert (default.url, default.source, default.local) == (
        "unix:///var/run/docker.sock",
        "the default context",
        True,
    )

    (config / "config.json").write_text(json.dumps({"currentContext": "other", "auths": {}}))
    used = resolve_endpoint(base)
    assert (used.url, used.context, used.source, used.local) == (
        "ssh://ci@other-host",
        "other",
        "docker context use",
        False,
    )

    by_variable = resolve_endpoint({**base, "DOCKER_CONTEXT": "remote"})
    assert (by_variable.url, by_variable.context, by_variable.source) == (
        "tcp://10.213.0.2:2375",
        "remote",
        "$DOCKER_CONTEXT",
    )
    assert resolve_endpoint({**base, "DOCKER_CONTEXT": "default"}).local

    # DOCKER_HOST wins over every context, as in the CLI.
    host = resolve_endpoint({**base, "DOCKER_CONTEXT": "remote", "DOCKER_HOST": "unix:///tmp/d.sock"})
    assert (host.url, host.source, host.context) == ("unix:///tmp/d.sock", "$DOCKER_HOST", None)


def test_the_config_folder_defaults_to_home(tmp_path: Path):
    _context(tmp_path / ".docker", "remote", "tcp://10.0.0.9:2375")
    (tmp_path / ".docker" / "config.json").write_text('{"currentContext": "remote"}')
    assert resolve_endpoint({"HOME": str(tmp_path)}).url == "tcp://10.0.0.9:2375"


def test_a_missing_or_broken_context_is_one_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="docker context 'gone' does not exist"):
        resolve_endpoint({"DOCKER_CONFIG": str(tmp_path), "DOCKER_CONTEXT": "gone"})
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read the docker CLI's config"):
        resolve_endpoint({"DOCKER_CONFIG": str(tmp_path)})
    _context(tmp_path, "empty", "")
    with pytest.raises(ConfigError, match="names no engine"):
        resolve_endpoint({"DOCKER_CONFIG": str(tmp_path), "DOCKER_CONTEXT": "empty"})


LOCAL = parse_endpoint("unix:///var/run/docker.sock", "the default context")
REMOTE = parse_endpoint("tcp://10.213.0.2:2375", "$DOCKER_HOST")
REMOTE_BY_NAME = parse_endpoint("ssh://ci@build-host", "$DOCKER_HOST")


def test_a_local_engine_binds_to_loopback_unless_told_otherwise():
    assert choose_bind_address(LOCAL, None) == "127.0.0.1"
    assert choose_bind_address(LOCAL, "  ") == "127.0.0.1"
    assert choose_bind_address(LOCAL, "0.0.0.0") == "0.0.0.0"
    assert reach_host(LOCAL, "0.0.0.0") == "127.0.0.1"
    assert reach_host(LOCAL, "127.0.0.1") == "127.0.0.1"


def test_a_remote_engine_without_a_bind_address_is_refused_with_how_to_choose_one():
    with pytest.raises(EngineError) as caught:
        choose_bind_address(REMOTE, None)
    message = str(caught.value)
    assert "tcp://10.213.0.2:2375" in message and "$DOCKER_HOST" in message
    assert f"export {BIND_ADDRESS_ENV}=10.213.0.2" in message and f"{BIND_ADDRESS_ENV}=0.0.0.0" in message
    assert "no password" in message
    with pytest.raises(EngineError, match=f"{BIND_ADDRESS_ENV}=ADDRESS"):
        choose_bind_address(REMOTE_BY_NAME, "")


def test_a_remote_engine_binds_where_the_user_chose_and_is_reached_there():
    assert choose_bind_address(REMOTE, "10.213.0.2") == "10.213.0.2"
    assert reach_host(REMOTE, "10.213.0.2") == "10.213.0.2"
    # Every address of the engine's host: reached at the host DOCKER_HOST names.
    assert reach_host(REMOTE, "0.0.0.0") == "10.213.0.2"
    assert reach_host(REMOTE_BY_NAME, "0.0.0.0") == "build-host"
    assert choose_bind_address(REMOTE, "fd00::5") == "fd00::5"


@pytest.mark.parametrize("value", ["10.0.0", "build-host", "10.0.0.5:80"])
def test_a_bind_address_that_is_no_address_is_a_config_error(value):
    with pytest.raises(ConfigError, match="is not an IP address"):
        choose_bind_address(REMOTE, value)


def test_loopback_on_a_remote_engine_is_refused():
    with pytest.raises(ConfigError, match="loopback address of the engine's host"):
        choose_bind_address(REMOTE, "127.0.0.1")


def test_current_engine_from_an_environment(tmp_path: Path):
    local = current_engine({"DOCKER_CONFIG": str(tmp_path)})
    assert (local.local, local.bind_address, local.host, local.url_host) == (
        True,
        "127.0.0.1",
        "127.0.0.1",
        "127.0.0.1",
    )
    remote = current_engine({"DOCKER_HOST": "tcp://[fd00::2]:2375", BIND_ADDRESS_ENV: "fd00::2"})
    assert (remote.local, remote.host, remote.url_host) == (False, "fd00::2", "[fd00::2]")
    assert remote.reaper_host() == "fd00::2"
    wide = Engine(endpoint=REMOTE, bind_address="0.0.0.0", host="10.213.0.2")
    assert wide.reaper_host() == "10.213.0.2"  # one address the reaper is published on and reached at


def test_limits_are_named_per_kind_version_and_place():
    assert any("start_interval" in limit for limit in engine_limits(LOCAL, "Docker", "20.10.24+dfsg1"))
    assert engine_limits(LOCAL, "Docker", "27.3.1") == ()
    podman = engine_limits(LOCAL, "Podman", "4.3.1", systemd=False)
    assert any("systemd" in limit for limit in podman) and not any("start_interval" in x for x in podman)
    assert any("rootless" in limit for limit in engine_limits(LOCAL, "Docker", "27.0", rootless=True))
    assert any("remote" in limit for limit in engine_limits(REMOTE, "Docker", "27.0"))


class _Client:
    """`version()` and `info()` as python-on-whales returns them (plain mappings here)."""

    def __init__(self, version: dict[str, Any], info: dict[str, Any]) -> None:
        self._version, self._info = version, info

    def version(self) -> dict[str, Any]:
        return self._version

    def info(self) -> dict[str, Any]:
        return self._info


def test_describe_engine_tells_podman_from_docker():
    podman = _Client(
        {
            "Client": {"Version": "28.2.2"},
            "Server": {
                "Platform": {"Name": "linux/amd64/debian-12"},
                "Components": [{"Name": "Podman Engine", "Version": "4.3.1"}],
                "Version": "4.3.1",
                "ApiVersion": "1.41",
            },
        },
        {"SecurityOptions": ["name=rootless"], "CgroupDriver": "cgroupfs", "OperatingSystem": "debian"},
    )
    facts = describe_engine(podman, REMOTE)  # type: ignore[arg-type]
    assert (facts.kind, facts.server_version, facts.api_version, facts.client_version, facts.rootless) == (
        "Podman",
        "4.3.1",
        "1.41",
        "28.2.2",
        True,
    )
    assert any("systemd" in limit for limit in facts.limits) and any("remote" in x for x in facts.limits)
    docker = _Client(
        {
            "Client": {"Version": "28.2.2"},
            "Server": {
                "Components": [{"Name": "Engine", "Version": "27.3.1"}],
                "Version": "27.3.1",
                "ApiVersion": "1.47",
            },
        },
        {"SecurityOptions": ["name=seccomp,profile=default"]},
    )
    facts = describe_engine(docker, LOCAL)  # type: ignore[arg-type]
    assert (facts.kind, facts.server_version, facts.rootless, facts.limits) == ("Docker", "27.3.1", False, ())


def test_where_names_the_context_and_the_source():
    endpoint = EngineEndpoint(
        url="tcp://10.0.0.1:2375", source="$DOCKER_CONTEXT", scheme="tcp", host="10.0.0.1", context="ci"
    )
    assert endpoint.where == "tcp://10.0.0.1:2375 (context ci, from $DOCKER_CONTEXT)"


# --- where the engine's answer is used: the stack's plan, the compose file, the doctor -------------------


def _stack_system():
    from specs import service

    from integration.model import SystemSpec

    return SystemSpec(
        name="shop",
        root=Path("/repo"),
        services=(service("orders", 8000, "orders"), service("web", 3000)),
    )


def test_a_stack_on_a_remote_engine_plans_from_the_engine_and_binds_where_the_user_chose(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    import integration.stack as stack_module
    from integration.ports import DEFAULT_BASE

    monkeypatch.setenv("DOCKER_HOST", "tcp://10.213.0.2:2375")
    monkeypatch.setenv(BIND_ADDRESS_ENV, "10.213.0.2")
    bound = {DEFAULT_BASE}  # a container of the engine publishes the first preferred port
    monkeypatch.setattr(stack_module, "published_ports", lambda client: set(bound))
    asked: list[tuple[str, int]] = []

    def answers(host: str, port: int, timeout: float = 0.3) -> bool:
        asked.append((host, port))
        return port == DEFAULT_BASE + 1  # another process listens there on the engine's host

    monkeypatch.setattr("integration.ports.port_answers", answers)
    monkeypatch.setattr("integration.ports.engine_port_check.__defaults__", (answers,))
    stack = stack_module.Stack(_stack_system(), project="p", compose_dir=tmp_path, report=lambda _m: None)
    stack.write()
    assert stack.ports is not None and stack.ports.bind_address == "10.213.0.2"
    ports = stack.ports.ports
    assert ports["orders"][8000] not in (DEFAULT_BASE,) and ports["orders-db"][5432] != DEFAULT_BASE + 1
    assert ports["web"][3000] == DEFAULT_BASE + 10
    assert ("10.213.0.2", DEFAULT_BASE + 10) in asked
    text = stack.compose_file.read_text()
    assert f"10.213.0.2:{DEFAULT_BASE + 10}:3000" in text and "- 127.0.0.1:" not in text

    monkeypatch.delenv(BIND_ADDRESS_ENV)
    with pytest.raises(EngineError, match=BIND_ADDRESS_ENV):
        stack.write()


def test_a_local_engine_still_binds_to_loopback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    import integration.stack as stack_module

    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv(BIND_ADDRESS_ENV, raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-config"))
    stack = stack_module.Stack(
        _stack_system(),
        project="p",
        compose_dir=tmp_path,
        report=lambda _m: None,
        is_port_free=lambda _p: True,
    )
    stack.write()
    assert stack.ports is not None and stack.ports.bind_address == "127.0.0.1"
    assert "- 127.0.0.1:47100:8000" in stack.compose_file.read_text()


def test_an_ipv6_bind_address_is_bracketed_in_the_compose_file():
    from integration.compose import render_compose
    from integration.ports import plan_ports

    plan = plan_ports(_stack_system(), lambda _p: True, bind_address="fd00::2")
    compose = render_compose(_stack_system(), plan)
    assert compose["services"]["web"]["ports"] == ["[fd00::2]:47110:3000"]


def test_the_doctor_reports_the_engine_and_a_missing_bind_address(monkeypatch: pytest.MonkeyPatch):
    from integration.doctor.live import LiveContext, check_engine

    class Client:
        def version(self) -> dict[str, Any]:
            return {"Client": {"Version": "28.2.2"}, "Server": {"Version": "20.10.24", "ApiVersion": "1.41"}}

        def info(self) -> dict[str, Any]:
            return {"SecurityOptions": []}

        class compose:  # python-on-whales: client.compose.version()
            @staticmethod
            def version() -> str:
                return "Docker Compose version v2.26.1"

    monkeypatch.setenv("DOCKER_HOST", "tcp://10.213.0.2:2375")
    monkeypatch.delenv(BIND_ADDRESS_ENV, raising=False)
    found = check_engine(LiveContext(None, client=Client()))  # type: ignore[arg-type]
    rendered = [f.render() for f in found]
    assert found[0].code == "D208" and found[0].severity == "info"
    assert (
        "the engine: Docker 20.10.24 (API 1.41, CLI 28.2.2), remote, at tcp://10.213.0.2:2375" in rendered[0]
    )
    assert "compose v2.26.1" in rendered[0] and "no bind address" in rendered[0]
    missing = [f for f in found if f.severity == "error"]
    assert [f.code for f in missing] == ["D209"] and f"export {BIND_ADDRESS_ENV}=" in missing[0].fix
    assert {f.code for f in found if f.severity == "info"} == {"D208", "D209"}  # start_interval, remote

    monkeypatch.setenv(BIND_ADDRESS_ENV, "10.213.0.2")
    found = check_engine(LiveContext(None, client=Client()))  # type: ignore[arg-type]
    assert not [f for f in found if f.severity == "error"]
    assert "ports published on 10.213.0.2, reached at 10.213.0.2" in found[0].message
