"""A shared stack for pytest-xdist on the example system, for real: one broker and one PostgreSQL per
service, a service copy per later worker with its own database and virtual host. What one worker does
(links, events, resets) is invisible to the other."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict
from python_on_whales import docker

from integration.broker import BrokerAdmin
from integration.harness import RealServiceHarness
from integration.model import BROKER_PASSWORD, BROKER_USER, LABEL_WORKER
from integration.stack import Stack
from tests.docker.shared_stacks import WORKERS
from tests.docker.shared_stacks import shared_stack as open_shared_stack

pytestmark = [pytest.mark.docker, pytest.mark.slow]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shortener"


class AnyEvent(BaseModel):
    model_config = ConfigDict(extra="allow")
    event_id: str
    code: str


class ExampleHarness(RealServiceHarness):
    event_types = {"LinkCreated": AnyEvent, "LinkVisited": AnyEvent, "LinkDeleted": AnyEvent}
    consumed = {"analytics": {"LinkCreated", "LinkVisited", "LinkDeleted"}}


@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with open_shared_stack(
        EXAMPLE, tmp_path_factory.mktemp("compose"), port_base=46100, prefix="itest-shared"
    ) as stack:
        yield stack


@pytest.fixture
def harnesses(shared_stack: Stack) -> Iterator[dict[str, ExampleHarness]]:
    made = {worker: ExampleHarness(shared_stack.worker_endpoints[worker]) for worker in WORKERS}
    for harness in made.values():
        harness.reset_sync()
    yield made
    for harness in made.values():
        harness.close()


def codes(harness: ExampleHarness) -> list[str]:
    return sorted(link["code"] for link in harness.request("links", "GET", "/links").json())


def create(harness: ExampleHarness, code: str) -> None:
    harness.request("links", "POST", "/links", json={"url": f"https://{code}.example/", "code": code})


def test_each_worker_has_its_own_services_databases_and_virtual_host(shared_stack: Stack):
    first, second = (shared_stack.worker_endpoints[w] for w in WORKERS)
    assert first.project == second.project == shared_stack.project
    assert (first.broker_vhost, second.broker_vhost) == ("/", "gw1")
    for name in ("links", "analytics"):
        assert first.services[name].url != second.services[name].url
        # The same PostgreSQL container, another database.
        db0, db1 = first.services[name].database_url, second.services[name].database_url
        assert db0 and db1 and db0.rsplit("/", 1)[0] == db1.rsplit("/", 1)[0]
        assert (db0.rsplit("/", 1)[1], db1.rsplit("/", 1)[1]) == (name, f"{name}_gw1")
    containers = docker.container.list(
        filters=[("label", f"com.docker.compose.project={shared_stack.project}")]
    )
    services = {c.config.labels["com.docker.compose.service"]: c for c in containers}
    assert sorted(services) == sorted(
        ["broker", "links-db", "analytics-db", "links", "analytics", "links-gw1", "analytics-gw1"]
    )
    assert services["links-gw1"].config.labels[LABEL_WORKER] == "gw1"


def test_data_events_and_resets_stay_within_their_worker(harnesses: dict[str, ExampleHarness]):
    zero, one = harnesses["gw0"], harnesses["gw1"]
    create(zero, "zero")
    create(one, "one")
    create(one, "uno")
    assert codes(zero) == ["zero"]
    assert codes(one) == ["one", "uno"]

    asyncio.run(zero.wait_for_events_processed(timeout=20))
    asyncio.run(one.wait_for_events_processed(timeout=20))
    # Each worker's analytics consumed its own worker's events only, through its own virtual host.
    assert zero.request("analytics", "GET", "/stats/zero").json()["code"] == "zero"
    with pytest.raises(KeyError):
        zero.request("analytics", "GET", "/stats/one")
    with pytest.raises(KeyError):
        one.request("analytics", "GET", "/stats/zero")
    assert sorted(e.code for e in zero.published_events_sync()) == ["zero"]
    assert sorted(e.code for e in one.published_events_sync()) == ["one", "uno"]

    one.reset_sync()
    assert codes(one) == []
    assert codes(zero) == ["zero"], "a reset of worker gw1 removed worker gw0's data"


def test_each_virtual_host_holds_its_own_workers_queue(shared_stack: Stack):
    url = shared_stack.worker_endpoints["gw0"].broker_management_url
    assert url
    names = {}
    for vhost in ("/", "gw1"):
        with BrokerAdmin(url, BROKER_USER, BROKER_PASSWORD, vhost=vhost) as admin:
            names[vhost] = sorted(q.name for q in admin.queues())
    # The same queue, once per virtual host (its consumer counts lag by a statistics interval: unread).
    assert "analytics.events" in names["/"], names
    assert names["gw1"] == names["/"], names
