"""integration.broker against a real RabbitMQ management API."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from waiting import GENEROUS, Timer

from integration.broker import BrokerAdmin, BrokerError, QueueState
from integration.model import BROKER_PASSWORD, BROKER_USER

pytestmark = pytest.mark.docker


@pytest.fixture
def broker_admin(broker_server) -> Iterator[BrokerAdmin]:
    with BrokerAdmin(broker_server.management_url, BROKER_USER, BROKER_PASSWORD) as admin:
        yield admin


@pytest.fixture
def broker_queue(broker_admin) -> Iterator[str]:
    """A fresh durable queue, deleted after the test."""
    name = f"itest.{uuid.uuid4().hex[:8]}.events"
    broker_admin.declare_queue(name)
    yield name
    httpx.delete(
        f"{broker_admin.base_url}/api/queues/%2F/{name}", auth=(BROKER_USER, BROKER_PASSWORD)
    ).raise_for_status()


def exact_ready(admin: BrokerAdmin, queue: str) -> int:
    """The exact number of ready messages, by fetching them and putting them back (no consumer here):
    unlike the counters of GET /api/queues, this does not lag."""
    response = httpx.post(
        f"{admin.base_url}/api/queues/%2F/{queue}/get",
        json={"count": 100, "ackmode": "ack_requeue_true", "encoding": "auto"},
        auth=(BROKER_USER, BROKER_PASSWORD),
    )
    response.raise_for_status()
    return len(response.json())


def wait_for_counters(admin: BrokerAdmin, queue: str, ready: int, timeout: float = GENEROUS) -> QueueState:
    """Poll until the lagging counters of `queue` report `ready` ready messages."""
    deadline = time.monotonic() + timeout
    while True:
        state = next((q for q in admin.queues() if q.name == queue), None)
        if state is not None and state.ready == ready:
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"the counters of {queue} did not reach {ready} ready: {state}")
        time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_wait_until_ready_returns_on_a_running_broker(broker_admin):
    broker_admin.wait_until_ready(timeout=GENEROUS)


def test_a_new_queue_may_have_no_counters_yet(broker_admin, broker_queue):
    (state,) = [q for q in broker_admin.queues() if q.name == broker_queue]
    # Before the queue's first statistics report its counters are missing: unknown, never made 0.
    assert state.ready in (None, 0) and state.unacked in (None, 0)
    if state.ready is None:
        assert not state.has_messages and "? ready" in str(state)


def test_publish_then_purge_all_empties_every_queue(broker_admin, broker_queue):
    other = f"{broker_queue}.other"
    broker_admin.declare_queue(other)
    try:
        for i in range(3):
            assert broker_admin.publish(broker_queue, f"message {i}", properties={"message_id": str(i)})
        assert broker_admin.publish(other, "x")
        assert exact_ready(broker_admin, broker_queue) == 3
        state = wait_for_counters(broker_admin, broker_queue, 3)
        assert state.has_messages and state.consumers == 0 and "3 ready" in str(state)

        purged = broker_admin.purge_all()

        assert {broker_queue, other} <= set(purged)
        assert exact_ready(broker_admin, broker_queue) == 0 and exact_ready(broker_admin, other) == 0
        # The counters follow at the next statistics report.
        assert not wait_for_counters(broker_admin, broker_queue, 0).has_messages
    finally:
        httpx.delete(f"{broker_admin.base_url}/api/queues/%2F/{other}", auth=(BROKER_USER, BROKER_PASSWORD))


def test_purge_all_purges_the_known_queues_and_every_other_listed_one(broker_admin, broker_queue):
    """Known names are purged beside the listing; a known name that does not exist counts for nothing;
    a queue only the listing names is purged too."""
    other = f"{broker_queue}.unknown"
    missing = f"missing.{uuid.uuid4().hex}"
    broker_admin.declare_queue(other)
    try:
        assert broker_admin.publish(broker_queue, "a") and broker_admin.publish(other, "b")
        purged = broker_admin.purge_all(known=[broker_queue, missing])
        assert {broker_queue, other} <= set(purged) and missing not in purged
        assert purged == sorted(purged)
        assert exact_ready(broker_admin, broker_queue) == 0 and exact_ready(broker_admin, other) == 0
        assert broker_queue in broker_admin.queue_names() and other in broker_admin.queue_names()
    finally:
        httpx.delete(f"{broker_admin.base_url}/api/queues/%2F/{other}", auth=(BROKER_USER, BROKER_PASSWORD))


def test_purge_all_of_an_unreachable_api_is_one_error_naming_it():
    url = f"http://127.0.0.1:{free_port()}"
    with (
        BrokerAdmin(url, BROKER_USER, BROKER_PASSWORD) as admin,
        pytest.raises(BrokerError, match="cannot reach the RabbitMQ management API"),
    ):
        admin.purge_all(known=["a.events", "b.events"])


def test_publishing_to_no_queue_is_not_routed(broker_admin):
    assert broker_admin.publish(f"nobody.{uuid.uuid4().hex}", "lost") is False


def test_purging_a_missing_queue_is_false(broker_admin):
    assert broker_admin.purge(f"missing.{uuid.uuid4().hex}") is False


def test_a_shared_client_is_left_open(broker_server):
    with httpx.Client() as client:
        with BrokerAdmin(broker_server.management_url, BROKER_USER, BROKER_PASSWORD, client) as admin:
            admin.queues()
        assert not client.is_closed
        client.get(f"{broker_server.management_url}/api/overview", auth=(BROKER_USER, BROKER_PASSWORD))


def test_closed_admin_refuses_and_close_is_idempotent(broker_server):
    admin = BrokerAdmin(broker_server.management_url, BROKER_USER, BROKER_PASSWORD)
    admin.close()
    admin.close()
    with pytest.raises(BrokerError, match="closed"):
        admin.queues()


def test_wrong_credentials_fail_at_once_naming_url_and_status(broker_server):
    with BrokerAdmin(broker_server.management_url, BROKER_USER, "wrong") as admin:
        with Timer() as timer, pytest.raises(BrokerError) as caught:
            admin.wait_until_ready(timeout=2 * GENEROUS)
        message = str(caught.value)
        # At once: the 401 itself, not the timeout's "not ready after" with the 401 as its last answer,
        # and far from the timeout (generously).
        assert "not ready after" not in message, message
        assert timer.seconds < GENEROUS
        assert f"{broker_server.management_url}/api/overview" in message and "401" in message
        with pytest.raises(BrokerError, match=r"/api/queues/%2F.*401"):
            admin.queues()


def test_an_unreachable_api_is_named(broker_server):
    url = f"http://127.0.0.1:{free_port()}"
    with BrokerAdmin(url, BROKER_USER, BROKER_PASSWORD) as admin:
        with pytest.raises(BrokerError, match=f"{url}/api/queues/%2F: cannot reach"):
            admin.queues()
        with pytest.raises(BrokerError, match=r"not ready after 0.3 s; last: .*cannot reach"):
            admin.wait_until_ready(timeout=0.3, interval=0.05)
