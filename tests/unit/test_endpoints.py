"""The endpoints of a stack from its inspected containers: pure, no Docker."""

from __future__ import annotations

from pathlib import Path

import pytest

from integration.discovery import load_system
from integration.endpoints import ContainerInfo, MissingEndpoint, endpoints_of

SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop"


def info(service: str, ports: dict[int, int]) -> ContainerInfo:
    return ContainerInfo(service, f"p-{service}-1", "running", 0, None, "sha256:x", ports, f"id-{service}")


CONTAINERS = [
    info("broker", {5672: 48001, 15672: 48000}),
    info("orders-db", {5432: 47101}),
    info("orders", {8080: 47100}),
    info("inventory-db", {5432: 47111}),
    info("inventory", {8081: 47110}),
    info("orders-gw1", {8080: 47200}),
    info("inventory-gw1", {8081: 47210}),
]


def test_the_serial_stack_and_each_workers_part():
    system = load_system(SHOP)
    first = endpoints_of(system, "p", CONTAINERS, ("gw0", "gw1"), "gw0")
    second = endpoints_of(system, "p", CONTAINERS, ("gw0", "gw1"), "gw1")
    assert first.services["orders"].url == "http://127.0.0.1:47100"
    assert second.services["orders"].url == "http://127.0.0.1:47200"
    assert second.services["orders"].container == "p-orders-gw1-1"
    # The same PostgreSQL, the worker's database; the configured role, quoted.
    assert (
        first.services["inventory"].database_url
        == "postgresql+psycopg2://shop:shop-secret@127.0.0.1:47111/inventory"
    )
    assert second.services["inventory"].database_url.endswith(":47111/inventory_gw1")
    assert (first.broker_vhost, second.broker_vhost) == ("/", "gw1")
    assert first.broker_management_url == "http://127.0.0.1:48000"
    assert first.queues == {"inventory": "inventory.order-events"}
    assert first.events.outbox_table == "outbox_messages"
    assert first.routing_keys["OrderCancelled"] == "order.cancelled"
    assert endpoints_of(system, "p", CONTAINERS[:5]).services["orders"].url == "http://127.0.0.1:47100"


def test_a_service_without_its_published_port_is_named():
    system = load_system(SHOP)
    with pytest.raises(MissingEndpoint, match="service inventory has no published port"):
        endpoints_of(system, "p", [c for c in CONTAINERS if c.service != "inventory"])
    with pytest.raises(MissingEndpoint, match="database orders-db is not published"):
        endpoints_of(system, "p", [c for c in CONTAINERS if c.service != "orders-db"])


def test_urls_use_the_engine_host_of_the_environment(monkeypatch):
    system = load_system(SHOP)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.213.0.2:2375")
    monkeypatch.setenv("INTEGRATION_BIND_ADDRESS", "0.0.0.0")
    endpoints = endpoints_of(system, "p", CONTAINERS[:5])
    assert endpoints.services["orders"].url == "http://10.213.0.2:47100"
    assert endpoints.broker_management_url == "http://10.213.0.2:48000"
    assert "@10.213.0.2:47101/" in (endpoints.services["orders"].database_url or "")
    # An explicit host wins (the stack passes none: the engine's).
    assert endpoints_of(system, "p", CONTAINERS[:5], at="[fd00::2]").services["orders"].url == (
        "http://[fd00::2]:47100"
    )
