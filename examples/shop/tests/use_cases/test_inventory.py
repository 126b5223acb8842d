"""Stock levels, and how orders change them."""

from __future__ import annotations

import pytest

from tests.use_cases.harness import ITestHarness


async def test_setting_stock_creates_the_sku(test_harness: ITestHarness) -> None:
    level = await test_harness.set_stock("mug-blue", 5)

    assert (level.sku, level.on_hand, level.reserved, level.available) == ("mug-blue", 5, 0, 5)
    assert await test_harness.get_stock("mug-blue") == level


async def test_setting_stock_again_replaces_the_quantity_on_hand(test_harness: ITestHarness) -> None:
    await test_harness.set_stock("mug-blue", 5)

    level = await test_harness.set_stock("mug-blue", 2)

    assert (level.on_hand, level.available) == (2, 2)


async def test_stock_of_an_unknown_sku_is_a_key_error(test_harness: ITestHarness) -> None:
    with pytest.raises(KeyError):
        await test_harness.get_stock("no-such-sku")


async def test_negative_stock_is_refused(test_harness: ITestHarness) -> None:
    with pytest.raises(ValueError):
        await test_harness.set_stock("mug-blue", -1)


async def test_restocking_keeps_the_reservations(test_harness: ITestHarness) -> None:
    await test_harness.set_stock("mug-blue", 5)
    await test_harness.place_order("mug-blue", 2)

    level = await test_harness.set_stock("mug-blue", 10)

    assert (level.on_hand, level.reserved, level.available) == (10, 2, 8)


async def test_stock_cannot_be_set_below_what_is_reserved(test_harness: ITestHarness) -> None:
    await test_harness.set_stock("mug-blue", 5)
    await test_harness.place_order("mug-blue", 3)

    with pytest.raises(ValueError):
        await test_harness.set_stock("mug-blue", 2)

    assert (await test_harness.get_stock("mug-blue")).on_hand == 5
