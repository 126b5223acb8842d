"""A shared stack for pytest-xdist workers, as pure data: the compose file, the port plan, the naming
rules and the endpoints handed to each worker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from specs import service

from integration.compose import render_compose
from integration.model import (
    BROKER_SERVICE,
    LABEL_WORKER,
    ServiceEndpoint,
    StackEndpoints,
    SystemSpec,
    copy_suffix,
    for_worker,
    worker_database,
    worker_vhost,
)
from integration.ports import BROKER_MANAGEMENT_OFFSET, DEFAULT_BASE, plan_ports

SHOP = SystemSpec(
    name="shop",
    root=Path("/repo"),
    services=(
        service("orders", 8000, "orders", published=["OrderPlaced"]),
        service("billing", 8001, "billing", consumed=["OrderPlaced"]),
        service("web", 3000),
    ),
)
WORKERS = ("gw0", "gw1", "gw2")


def shared(system: SystemSpec = SHOP, workers=WORKERS) -> dict:
    return render_compose(
        system, plan_ports(system, is_free=lambda p: True, workers=workers), workers=workers
    )


def test_naming_rules_leave_the_first_worker_as_the_serial_stack():
    assert copy_suffix(WORKERS, "gw0") is None
    assert copy_suffix(WORKERS, "gw2") == "gw2"
    assert copy_suffix((), None) is None
    assert for_worker("orders", None) == "orders"
    assert for_worker("orders", "gw1") == "orders-gw1"
    assert worker_database("orders", None) == "orders"
    assert worker_database("orders", "gw1") == "orders_gw1"
    assert worker_vhost(None) == "/"
    assert worker_vhost("gw1") == "gw1"


def test_one_broker_one_database_per_service_and_a_service_copy_per_later_worker():
    services = shared()["services"]
    assert list(services) == [
        BROKER_SERVICE,
        "orders-db",
        "orders",
        "billing-db",
        "billing",
        "web",
        "orders-gw1",
        "billing-gw1",
        "web-gw1",
        "orders-gw2",
        "billing-gw2",
        "web-gw2",
    ]


def test_the_first_workers_part_is_the_serial_file_exactly():
    serial = render_compose(SHOP, plan_ports(SHOP, is_free=lambda p: True))["services"]
    services = shared()["services"]
    assert {name: services[name] for name in serial} == serial


def test_a_copy_gets_its_workers_database_and_virtual_host():
    services = shared()["services"]
    orders = services["orders-gw1"]["environment"]
    assert orders["DATABASE_URL"].endswith("@orders-db:5432/orders_gw1")
    assert orders["BROKER_URL"].endswith("@broker:5672/gw1")
    billing = services["billing-gw2"]["environment"]
    assert billing["DATABASE_URL"].endswith("@billing-db:5432/billing_gw2")
    assert billing["BROKER_URL"].endswith("@broker:5672/gw2")
    assert services["orders"]["environment"]["BROKER_URL"].endswith("@broker:5672/%2F")
    # The names a service reads its queue and exchange from stay the same in every copy: the virtual
    # host is what separates them.
    assert billing["EVENT_QUEUE"] == services["billing"]["environment"]["EVENT_QUEUE"]
    assert services["web-gw1"]["environment"].get("DATABASE_URL") is None


def test_a_copy_waits_for_the_shared_database_and_broker_and_is_labelled():
    services = shared()["services"]
    assert services["orders-gw1"]["depends_on"] == {
        "orders-db": {"condition": "service_healthy"},
        BROKER_SERVICE: {"condition": "service_healthy"},
    }
    assert services["orders-gw1"]["labels"][LABEL_WORKER] == "gw1"
    assert LABEL_WORKER not in services["orders-db"]["labels"]


def test_ports_never_clash_and_copies_follow_the_block():
    plan = plan_ports(SHOP, is_free=lambda p: True, workers=WORKERS)
    ports = [port for mapping in plan.ports.values() for port in mapping.values()]
    assert len(ports) == len(set(ports))
    assert plan.host_port("orders", 8000) == DEFAULT_BASE
    # Worker k's copy of service i: slot k * 3 + i.
    assert plan.host_port("orders-gw1", 8000) == DEFAULT_BASE + 30
    assert plan.host_port("web-gw2", 3000) == DEFAULT_BASE + 80
    assert "orders-db-gw1" not in plan.ports
    published = [p for config in shared()["services"].values() for p in config.get("ports", [])]
    assert published and all(p.startswith("127.0.0.1:") for p in published)


def test_copies_beyond_the_block_fall_back_to_free_ports():
    workers = tuple(f"gw{i}" for i in range(40))  # 40 workers x 3 services: slots beyond the broker's
    fallbacks = iter(range(52000, 53000))
    plan = plan_ports(SHOP, is_free=lambda p: True, workers=workers, free_port=fallbacks.__next__)
    ports = [port for mapping in plan.ports.values() for port in mapping.values()]
    assert len(ports) == len(set(ports))
    limit = DEFAULT_BASE + BROKER_MANAGEMENT_OFFSET
    assert plan.host_port("orders-gw29", 8000) == DEFAULT_BASE + 870
    assert plan.host_port("orders-gw30", 8000) >= 52000
    assert all(port < limit or port >= 52000 for port in ports if port not in (limit, limit + 1))


def test_endpoints_round_trip_through_json():
    endpoints = StackEndpoints(
        project="shop-1234",
        services={
            "orders": ServiceEndpoint("orders", "http://127.0.0.1:47130", "postgresql+psycopg2://x/y", "c")
        },
        broker_management_url="http://127.0.0.1:48000",
        queues={"billing": "billing.events"},
        consumed={"billing": ("OrderPlaced",)},
        broker_vhost="gw1",
        worker="gw1",
    )
    assert StackEndpoints.from_dict(json.loads(json.dumps(endpoints.to_dict()))) == endpoints


@pytest.mark.parametrize("workers", [(), ("gw0",)])
def test_no_copies_without_a_second_worker(workers):
    services = shared(workers=workers)["services"]
    assert not any(name.endswith("-gw0") or "-gw" in name for name in services)
