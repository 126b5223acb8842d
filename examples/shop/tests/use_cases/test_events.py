"""The events orders publishes, and how inventory consumes them."""

from __future__ import annotations

import pytest

from architecture.contracts.events import OrderCancelled, OrderPlaced
from tests.use_cases.harness import ITestHarness

SKU = "kettle-steel"


async def test_placing_an_order_publishes_order_placed(test_harness: ITestHarness) -> None:
    await test_harness.set_stock(SKU, 5)

    order = await test_harness.place_order(SKU, 2)

    events = await test_harness.get_published_events()
    assert len(events) == 1
    placed = events[0]
    assert isinstance(placed, OrderPlaced)
    assert placed.routing_key == "order.placed"
    assert (placed.order_id, placed.sku, placed.quantity) == (order.order_id, SKU, 2)
    assert placed.event_id
    assert placed.occurred_at.tzinfo is not None


async def test_a_refused_order_publishes_nothing(test_harness: ITestHarness) -> None:
    await test_harness.set_stock(SKU, 1)

    with pytest.raises(ValueError):
        await test_harness.place_order(SKU, 2)
    with pytest.raises(KeyError):
        await test_harness.place_order("no-such-sku", 1)

    assert await test_harness.get_published_events() == []


async def test_cancelling_publishes_order_cancelled_after_order_placed(test_harness: ITestHarness) -> None:
    await test_harness.set_stock(SKU, 5)
    order = await test_harness.place_order(SKU, 3)

    await test_harness.cancel_order(order.order_id)

    placed, cancelled = await test_harness.get_published_events()
    assert isinstance(placed, OrderPlaced)
    assert isinstance(cancelled, OrderCancelled)
    assert cancelled.routing_key == "order.cancelled"
    assert placed.order_id == cancelled.order_id == order.order_id
    assert (cancelled.sku, cancelled.quantity) == (SKU, 3)
    assert placed.event_id != cancelled.event_id
    assert placed.occurred_at <= cancelled.occurred_at


async def test_a_refused_cancel_publishes_nothing_more(test_harness: ITestHarness) -> None:
    await test_harness.set_stock(SKU, 5)
    order = await test_harness.place_order(SKU, 1)
    await test_harness.cancel_order(order.order_id)

    with pytest.raises(ValueError):
        await test_harness.cancel_order(order.order_id)

    assert [type(e) for e in await test_harness.get_published_events()] == [OrderPlaced, OrderCancelled]


@pytest.mark.slow
async def test_a_redelivered_order_cancelled_releases_the_stock_once(test_harness: ITestHarness) -> None:
    await test_harness.set_stock(SKU, 5)
    order = await test_harness.place_order(SKU, 2)
    await test_harness.cancel_order(order.order_id)
    await test_harness.wait_for_events_processed()
    assert (await test_harness.get_stock(SKU)).available == 5
    cancelled = (await test_harness.get_published_events())[-1]

    await test_harness.redeliver_event(cancelled)
    await test_harness.wait_for_events_processed()

    level = await test_harness.get_stock(SKU)
    assert (level.on_hand, level.reserved, level.available) == (5, 0, 5)
    assert len(await test_harness.get_published_events()) == 2


@pytest.mark.slow
async def test_a_redelivered_cancel_does_not_touch_a_later_order(test_harness: ITestHarness) -> None:
    await test_harness.set_stock(SKU, 5)
    first = await test_harness.place_order(SKU, 2)
    await test_harness.cancel_order(first.order_id)
    await test_harness.wait_for_events_processed()
    second = await test_harness.place_order(SKU, 4)
    cancelled = next(e for e in await test_harness.get_published_events() if isinstance(e, OrderCancelled))

    await test_harness.redeliver_event(cancelled)
    await test_harness.wait_for_events_processed()

    level = await test_harness.get_stock(SKU)
    assert (level.reserved, level.available) == (4, 1)
    assert (await test_harness.get_order(second.order_id)).status == "placed"


@pytest.mark.slow
async def test_a_redelivered_order_placed_changes_no_stock(test_harness: ITestHarness) -> None:
    await test_harness.set_stock(SKU, 5)
    await test_harness.place_order(SKU, 2)
    (placed,) = await test_harness.get_published_events()

    await test_harness.redeliver_event(placed)
    await test_harness.wait_for_events_processed()

    assert (await test_harness.get_stock(SKU)).available == 3
    assert await test_harness.get_published_events() == [placed]
