"""Compose generation: golden file, broker presence, published ports, dependencies, determinism."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from specs import service

from integration.compose import BROKER_PROBE, dump_compose, render_compose, write_compose
from integration.discovery import load_system
from integration.model import BaseImages, PortPlan, ServiceSpec, SystemSpec, checkout_id
from integration.ports import plan_ports

HERE = Path(__file__).resolve().parent
FIXTURE = HERE.parent / "fixtures" / "systems" / "minimal"
GOLDEN = HERE / "golden"


def system(*services: ServiceSpec, **kwargs) -> SystemSpec:
    return SystemSpec(name="shop", root=Path("/repo"), services=tuple(services), **kwargs)


ROUTED = system(
    service("orders", 8000, "orders", published=["OrderPlaced"]),
    service("billing", 8001, "billing", consumed=["OrderPlaced"]),
    service("web", 3000),
)


def render(spec: SystemSpec, images=None) -> dict:
    return render_compose(spec, plan_ports(spec, is_free=lambda p: True), images)


def test_golden_minimal():
    minimal = load_system(FIXTURE)
    text = dump_compose(render_compose(minimal, plan_ports(minimal, is_free=lambda p: True)))
    # The default image tags carry this checkout's id, which differs between clones of the repository.
    text = text.replace(f":{checkout_id(FIXTURE)}\n", ":<checkout>\n")
    golden = GOLDEN / "minimal.yml"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert golden.is_file(), f"{golden} is missing: run with UPDATE_GOLDEN=1 to create it"
    assert text == golden.read_text(), (
        f"compose output changed: review, then UPDATE_GOLDEN=1 to accept ({golden})"
    )


def test_layout_order_broker_first_each_database_before_its_service():
    compose = render(ROUTED)

    assert list(compose) == ["services", "networks"]
    assert list(compose["services"]) == ["broker", "orders-db", "orders", "billing-db", "billing", "web"]
    assert compose["networks"] == {"backend": {"driver": "bridge"}}


def test_no_version_and_no_project_name():
    compose = render(ROUTED)
    text = dump_compose(compose)

    assert "version" not in compose and "name" not in compose
    assert not any(line.startswith(("version:", "name:")) for line in text.splitlines())


def test_no_routed_event_means_no_broker():
    lonely = system(service("orders", 8000, "orders", published=["OrderPlaced"]), service("web", 3000))

    compose = render(lonely)

    assert "broker" not in compose["services"]
    orders = compose["services"]["orders"]
    assert "BROKER_URL" not in orders["environment"]
    assert "broker" not in orders["depends_on"]
    assert "broker" not in dump_compose(compose).replace("io.integration", "")


def test_every_published_port_binds_loopback():
    compose = render(ROUTED)

    published = [p for svc in compose["services"].values() for p in svc["ports"]]
    assert len(published) == 7
    for port in published:
        host_ip, host_port, container_port = port.split(":")
        assert host_ip == "127.0.0.1"
        assert host_port.isdigit() and container_port.isdigit()


def test_ports_follow_the_plan():
    plan = PortPlan(
        ports={
            "broker": {5672: 1, 15672: 2},
            "orders": {8000: 3},
            "orders-db": {5432: 4},
            "billing": {8001: 5},
            "billing-db": {5432: 6},
            "web": {3000: 7},
        }
    )

    services = render_compose(ROUTED, plan)["services"]

    assert services["broker"]["ports"] == ["127.0.0.1:1:5672", "127.0.0.1:2:15672"]
    assert services["orders"]["ports"] == ["127.0.0.1:3:8000"]
    assert services["orders-db"]["ports"] == ["127.0.0.1:4:5432"]
    assert services["web"]["ports"] == ["127.0.0.1:7:3000"]


def test_a_plan_missing_a_port_is_refused():
    plan = plan_ports(ROUTED, is_free=lambda p: True)
    partial = PortPlan(ports={k: v for k, v in plan.ports.items() if k != "billing-db"})

    with pytest.raises(ValueError, match="billing-db:5432"):
        render_compose(ROUTED, partial)


def test_depends_on_waits_for_healthy_database_and_broker():
    services = render(ROUTED)["services"]

    assert services["orders"]["depends_on"] == {
        "orders-db": {"condition": "service_healthy"},
        "broker": {"condition": "service_healthy"},
    }
    assert services["billing"]["depends_on"] == {
        "billing-db": {"condition": "service_healthy"},
        "broker": {"condition": "service_healthy"},
    }
    assert "depends_on" not in services["web"]
    conditions = [c["condition"] for svc in services.values() for c in svc.get("depends_on", {}).values()]
    assert conditions and set(conditions) == {"service_healthy"}


def test_database_container():
    db = render(ROUTED)["services"]["orders-db"]

    assert db["image"] == "postgres:15"
    assert db["environment"] == {
        "POSTGRES_USER": "postgres",
        "POSTGRES_PASSWORD": "postgres",
        "POSTGRES_DB": "orders",
        "POSTGRES_HOST_AUTH_METHOD": "trust",
    }
    assert db["tmpfs"] == ["/var/lib/postgresql/data"]
    assert db["command"] == [
        "postgres",
        "-c",
        "fsync=off",
        "-c",
        "synchronous_commit=off",
        "-c",
        "full_page_writes=off",
    ]
    check = db["healthcheck"]
    assert check["test"][:3] == ["CMD", "pg_isready", "-q"]
    assert check["test"][-4:] == ["-U", "postgres", "-d", "orders"]
    assert (check["interval"], check["timeout"], check["retries"]) == ("1s", "3s", 120)
    assert db["stop_grace_period"] == "1s"
    assert db["networks"] == ["backend"]
    assert db["labels"] == {"io.integration.system": "shop", "io.integration.service": "orders-db"}


def test_broker_container():
    broker = render(ROUTED)["services"]["broker"]

    assert broker["image"] == "rabbitmq:3.12-management"
    assert broker["healthcheck"] == {
        "test": ["CMD", "bash", "-c", BROKER_PROBE],
        "interval": "1s",
        "timeout": "3s",
        "retries": 120,
    }
    assert broker["stop_grace_period"] == "1s"
    assert broker["labels"]["io.integration.service"] == "broker"


def test_service_container_environment():
    services = render(ROUTED)["services"]

    assert services["orders"]["environment"] == {
        "SERVICE_NAME": "orders",
        "PORT": "8000",
        "DATABASE_URL": "postgresql+psycopg2://postgres:postgres@orders-db:5432/orders",
        "BROKER_URL": "amqp://guest:guest@broker:5672/%2F",
        "EVENT_EXCHANGE": "events",
        "EVENT_QUEUE": "orders.events",
    }
    web = services["web"]["environment"]
    assert "DATABASE_URL" not in web and "BROKER_URL" not in web
    assert web["PORT"] == "3000"
    for svc in services.values():
        assert all(isinstance(v, str) for v in svc["environment"].values())


def test_services_yml_environment_is_merged_last_and_dollars_are_escaped():
    spec = system(service("web", 3000, environment={"PORT": "3001", "PRICE": "$5 or ${X}", "A": "b"}))

    env = render(spec)["services"]["web"]["environment"]

    assert env["PORT"] == "3001"
    assert env["PRICE"] == "$$5 or $${X}"
    assert list(env)[-2:] == ["PRICE", "A"]


def test_images_and_base_images_are_configurable():
    spec = system(
        service("orders", 8000, "orders", published=["E"]),
        service("billing", 8001, consumed=["E"]),
        base_images=BaseImages(postgres="integration-local/postgres:15", broker="local/rabbit:1"),
        exchange="domain",
    )

    services = render(spec, images={"orders": "orders:candidate"})["services"]

    assert services["orders"]["image"] == "orders:candidate"
    assert services["billing"]["image"] == "billing:test"
    assert services["orders-db"]["image"] == "integration-local/postgres:15"
    assert services["broker"]["image"] == "local/rabbit:1"
    assert services["billing"]["environment"]["EVENT_EXCHANGE"] == "domain"


def test_images_for_unknown_services_are_refused():
    with pytest.raises(ValueError, match="ordrs"):
        render(ROUTED, images={"ordrs": "x:y"})


def test_a_service_container_has_no_health_check_its_image_would_have_to_run():
    services = render(ROUTED)["services"]
    # The stack probes service health from the host (integration.health); only the infrastructure,
    # whose images the toolkit knows, checks itself.
    assert [name for name, svc in services.items() if "healthcheck" in svc] == [
        "broker",
        "orders-db",
        "billing-db",
    ]


def test_labels_on_every_container():
    for name, svc in render(ROUTED)["services"].items():
        assert svc["labels"] == {"io.integration.system": "shop", "io.integration.service": name}
        assert svc["networks"] == ["backend"]
        assert svc["stop_grace_period"] == "1s"


def test_output_is_deterministic():
    first = dump_compose(render(ROUTED))
    plan = plan_ports(ROUTED, is_free=lambda p: True)
    shuffled = PortPlan(ports={k: dict(reversed(v.items())) for k, v in reversed(list(plan.ports.items()))})

    assert dump_compose(render(ROUTED)) == first
    assert dump_compose(render_compose(ROUTED, shuffled)) == first


def test_dump_round_trips_and_does_not_fold_long_lines():
    compose = render(system(service("web", 3000, environment={"LONG": "x" * 200})))
    text = dump_compose(compose)

    assert yaml.safe_load(text) == compose
    assert any(len(line) > 200 for line in text.splitlines())


def test_write_compose(tmp_path):
    target = tmp_path / "compose" / "nested" / "stack.yml"
    plan = plan_ports(ROUTED, is_free=lambda p: True)

    written = write_compose(ROUTED, plan, target, images={"web": "web:v2"})

    assert written == target
    assert target.read_text() == dump_compose(render_compose(ROUTED, plan, {"web": "web:v2"}))
    assert [p.name for p in target.parent.iterdir()] == ["stack.yml"]
