"""The start's order (integration.startup): what each container waits for before it starts. Pure: the
stack is made and its file written, no engine is called."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from specs import service

from integration.model import SystemSpec
from integration.stack import Stack
from integration.startup import WORKERS_READY, Startup

ROUTED = SystemSpec(
    name="shop",
    root=Path("/repo"),
    services=(
        service("orders", 8000, "orders", published=["OrderPlaced"]),
        service("billing", 8001, "billing", consumed=["OrderPlaced"]),
        replace(service("web", 3000), calls=("orders",)),
        service("audit", 8002, "audit"),
    ),
)


def needs(system: SystemSpec, tmp_path: Path, workers: tuple[str, ...] = ()) -> dict[str, set[str]]:
    stack = Stack(
        system, project="shop-x", compose_dir=tmp_path, is_port_free=lambda port: True, workers=workers
    )
    stack.write()
    return Startup(stack).needs()


def test_infrastructure_needs_nothing_and_each_service_what_it_uses(tmp_path):
    assert needs(ROUTED, tmp_path) == {
        "broker": set(),
        "orders-db": set(),
        "billing-db": set(),
        "audit-db": set(),
        "orders": {"orders-db", "broker"},
        "billing": {"billing-db", "broker"},
        # A caller waits for its callee to answer, not for the broker it does not use.
        "web": {"orders"},
        # A service that routes no event does not wait for the broker.
        "audit": {"audit-db"},
    }


def test_without_routed_events_no_service_waits_for_a_broker(tmp_path):
    quiet = replace(ROUTED, services=(service("orders", 8000, "orders", published=["OrderPlaced"]),))
    assert needs(quiet, tmp_path) == {"orders-db": set(), "orders": {"orders-db"}}


def test_a_shared_stack_starts_every_copy_after_the_workers_are_prepared(tmp_path):
    found = needs(ROUTED, tmp_path, workers=("gw0", "gw1"))
    assert found["broker"] == set() and found["orders-db"] == set()
    assert found["orders"] == {"orders-db", "broker", WORKERS_READY}
    # A worker's copy shares its service's database container and calls the worker's copy of its callee.
    assert found["orders-gw1"] == {"orders-db", "broker", WORKERS_READY}
    assert found["web-gw1"] == {"orders-gw1", WORKERS_READY}
    assert found["audit-gw1"] == {"audit-db", WORKERS_READY}
