"""Reuse mode's record of a stack it left running, and which containers cannot be reused. Pure.

A `ReuseState` (the compose file's hash, the host ports, the container ids) is written when a healthy
stack is left running; `reuse_blockers` compares it, the compose file the next run would write and the
containers as they are, and names each compose service that must be recreated and why (its entry
changed, its container is gone, dead or unhealthy, it runs another image than the one just verified,
or it depends on one of those).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import yaml

from .endpoints import ContainerInfo

STATE_VERSION = 1


@dataclass(frozen=True)
class ReuseState:
    """What reuse mode records about a stack it leaves running (`<project>.state.json`)."""

    compose_sha256: str
    ports: dict[str, dict[int, int]]  # compose service -> container port -> host port
    containers: dict[str, str]  # compose service -> container id

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": STATE_VERSION,
                "compose_sha256": self.compose_sha256,
                "ports": self.ports,
                "containers": self.containers,
            },
            indent=2,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> ReuseState | None:
        """None for anything unreadable: a state file is a hint, never trusted blindly."""
        try:
            data = json.loads(text)
            if data.get("version") != STATE_VERSION:
                return None
            ports = {
                str(service): {int(c): int(h) for c, h in mapping.items()}
                for service, mapping in data["ports"].items()
            }
            containers = {str(k): str(v) for k, v in data["containers"].items()}
            return cls(str(data["compose_sha256"]), ports, containers)
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def compose_services(text: str | None) -> dict[str, dict[str, object]]:
    if not text:
        return {}
    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError:
        return {}
    services = data.get("services") if isinstance(data, dict) else None
    return services if isinstance(services, dict) else {}


def with_dependents(stale: set[str], services: Mapping[str, Mapping[str, object]]) -> set[str]:
    """`stale` and every compose service that depends on one of them, directly or not: a service
    whose database or broker is recreated has lost its schema, queues or connections with it."""
    result = set(stale)
    changed = True
    while changed:
        changed = False
        for name, config in services.items():
            depends = config.get("depends_on") or {}  # a mapping, or compose's short form: a list
            if not isinstance(depends, Mapping | list):
                continue
            if name not in result and any(dep in result for dep in depends):
                result.add(name)
                changed = True
    return result


def reuse_blockers(
    state: ReuseState,
    text: str,
    on_disk: str | None,
    infos: Sequence[ContainerInfo],
    expected_images: Mapping[str, str],
    service_of: Mapping[str, str],
    base_image_ids: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Compose service -> why its container cannot be reused as it is (empty: reuse everything).
    `service_of` maps a compose service to its service in services.yml (`links-gw1` -> `links`);
    `base_image_ids` maps the broker's and the databases' compose services to the id their image's tag
    names now (a stand-in rebuilt on a new base keeps its tag and gets a new id)."""
    recorded_file = on_disk if on_disk and sha256(on_disk) == state.compose_sha256 else None
    wanted = compose_services(text)
    # The same file: the same entries, without reading YAML (the reuse check's slowest step).
    recorded = wanted if recorded_file == text else compose_services(recorded_file)
    by_service = {i.service: i for i in infos if state.containers.get(i.service) == i.container_id}
    reasons: dict[str, str] = {}
    for name, config in wanted.items():
        info = by_service.get(name)
        expected = expected_images.get(service_of.get(name, "")) or (base_image_ids or {}).get(name)
        if recorded.get(name) != config:
            reasons[name] = "its compose entry changed" if name in recorded else "it is new"
        elif info is None:
            reasons[name] = "its container is gone"
        elif info.state != "running":
            reasons[name] = f"its container is {info.state}"
        elif info.health == "unhealthy":
            # "starting" is no reason: the stack is left as soon as its services answer, often
            # before their first health check; the services' health URLs are asked again below.
            reasons[name] = "its container is unhealthy"
        elif expected and info.image_id != expected:
            reasons[name] = f"its image was rebuilt ({info.image_id[7:19]} -> {expected[7:19]})"
    for name in sorted(with_dependents(set(reasons), wanted) - set(reasons)):
        reasons[name] = "it depends on a recreated container"
    return reasons
