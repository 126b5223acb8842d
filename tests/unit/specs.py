"""Model objects the unit tests build systems from (importable: pytest puts tests/unit on sys.path)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from integration.model import ServiceSpec


def service(
    name: str,
    port: int = 8000,
    database: str | None = None,
    published: Iterable[str] = (),
    consumed: Iterable[str] = (),
    environment: Mapping[str, str] | None = None,
    health: str = "/health",
) -> ServiceSpec:
    """A service of a system rooted at /repo, image `<name>:test`."""
    return ServiceSpec(
        name=name,
        build_dir=Path("/repo/services") / name,
        dockerfile=Path("/repo/services") / name / "Dockerfile",
        port=port,
        health_path=health,
        database=database,
        events_published=tuple(published),
        events_consumed=tuple(consumed),
        environment=environment or {},
        image=f"{name}:test",
    )
