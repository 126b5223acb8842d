"""Placing, reading, listing and cancelling orders."""

from __future__ import annotations

import pytest

from tests.use_cases.harness import ITestHarness

SKU = "tea-green-100g"


async def test_placing_an_order_reserves_its_stock(test_harness: ITestHarness) -> None:
    await test_harness.set_stock(SKU, 5)

    order = await test_harness.place_order(SKU, 2)

    assert (order.sku, order.quantity, order.status) == (SKU, 2, "placed")
    assert order.order_id
    level = await test_harness.get_stock(SKU)
    assert (level.on_hand, level.reserved, level.available) == (5, 2, 3)


async def test_an_order_for_an_unknown_sku_is_a_key_error(test_harness: ITestHarness) -> None:
    with pytest.raises(KeyError):
        await test_harness.place_order("no-such-sku", 1)

    assert await test_harness.list_orders() == []


async def test_an_order_beyond_the_available_stock_is_refused(test_harness: ITestHarness) -> None:
    await test_harness.set_stock(SKU, 3)

    with pytest.raises(ValueError):
        await test_harness.place_order(SKU, 4)

    assert (await test_harness.get_stock(SKU)).available == 3
    assert await test_harness.list_orders() == []


@pytest.mark.parametrize("quantity", [0, -2])
async def test_an_order_needs_a_positive_quantity(test_harness: ITestHarness, quantity: int) -> None:
    await test_harness.set_stock(SKU, 3)

    with pytest.raises(ValueError):
        await test_harness.place_order(SKU, quantity)

    assert (await test_harness.get_stock(SKU)).available == 3


async def test_a_placed_order_can_be_read_back(test_harness: ITestHarness) -> None:
    await test_harness.set_stock(SKU, 5)
    order = await test_harness.place_order(SKU, 1)

    assert await test_harness.get_order(order.order_id) == order


async def test_orders_are_listed_oldest_first(test_harness: ITestHarness) -> None:
    await test_harness.set_stock(SKU, 5)
    await test_harness.set_stock("cup-white", 5)
    first = await test_harness.place_order(SKU, 1)
    second = await test_harness.place_order("cup-white", 2)

    assert await test_harness.list_orders() == [first, second]


async def test_two_orders_share_the_stock_of_one_sku(test_harness: ITestHarness) -> None:
    await test_harness.set_stock(SKU, 5)

    await test_harness.place_order(SKU, 2)
    await test_harness.place_order(SKU, 3)

    level = await test_harness.get_stock(SKU)
    assert (level.reserved, level.available) == (5, 0)
    with pytest.raises(ValueError):
        await test_harness.place_order(SKU, 1)


@pytest.mark.slow
async def test_cancelling_an_order_gives_its_stock_back(test_harness: ITestHarness) -> None:
    await test_harness.set_stock(SKU, 5)
    order = await test_harness.place_order(SKU, 2)

    cancelled = await test_harness.cancel_order(order.order_id)

    assert cancelled.status == "cancelled"
    assert (await test_harness.get_order(order.order_id)).status == "cancelled"
    await test_harness.wait_for_events_processed()
    level = await test_harness.get_stock(SKU)
    assert (level.reserved, level.available) == (0, 5)


@pytest.mark.slow
async def test_released_stock_can_be_ordered_again(test_harness: ITestHarness) -> None:
    await test_harness.set_stock(SKU, 2)
    order = await test_harness.place_order(SKU, 2)
    await test_harness.cancel_order(order.order_id)
    await test_harness.wait_for_events_processed()

    again = await test_harness.place_order(SKU, 2)

    assert again.order_id != order.order_id
    assert (await test_harness.get_stock(SKU)).available == 0


async def test_an_order_cannot_be_cancelled_twice(test_harness: ITestHarness) -> None:
    await test_harness.set_stock(SKU, 5)
    order = await test_harness.place_order(SKU, 1)
    await test_harness.cancel_order(order.order_id)

    with pytest.raises(ValueError):
        await test_harness.cancel_order(order.order_id)


async def test_an_unknown_order_is_a_key_error(test_harness: ITestHarness) -> None:
    with pytest.raises(KeyError):
        await test_harness.get_order("no-such-order")
    with pytest.raises(KeyError):
        await test_harness.cancel_order("no-such-order")


async def test_reset_forgets_orders_stock_and_events(test_harness: ITestHarness) -> None:
    await test_harness.set_stock(SKU, 5)
    order = await test_harness.place_order(SKU, 1)

    await test_harness.reset()

    assert await test_harness.list_orders() == []
    assert await test_harness.get_published_events() == []
    with pytest.raises(KeyError):
        await test_harness.get_stock(SKU)
    with pytest.raises(KeyError):
        await test_harness.get_order(order.order_id)
