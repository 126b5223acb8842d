"""ITestHarness: everything a use-case test may do with the shop.

The mock implementation is MockTestHarness (mock_harness.py); an implementation against the running
services maps HTTP answers the same way: 404 -> KeyError; 400, 409 and 422 -> ValueError.
"""

from __future__ import annotations

from typing import Protocol

from architecture.contracts.events import OrderCancelled, OrderPlaced
from architecture.contracts.inventory import StockLevel
from architecture.contracts.orders import OrderResponse


class ITestHarness(Protocol):
    # inventory
    async def set_stock(self, sku: str, quantity: int) -> StockLevel:
        """PUT /stock/{sku}: set the quantity on hand (creates the sku).

        ValueError: quantity < 0, or below what is reserved.
        """
        ...

    async def get_stock(self, sku: str) -> StockLevel:
        """GET /stock/{sku}. KeyError: unknown sku."""
        ...

    # orders
    async def place_order(self, sku: str, quantity: int) -> OrderResponse:
        """POST /orders. KeyError: unknown sku. ValueError: quantity <= 0, insufficient stock."""
        ...

    async def get_order(self, order_id: str) -> OrderResponse:
        """GET /orders/{order_id}. KeyError: unknown order."""
        ...

    async def list_orders(self) -> list[OrderResponse]:
        """GET /orders, oldest first."""
        ...

    async def cancel_order(self, order_id: str) -> OrderResponse:
        """POST /orders/{order_id}/cancel. KeyError: unknown order. ValueError: already cancelled.

        The stock comes back only when inventory has consumed the OrderCancelled event: call
        wait_for_events_processed() before looking at it.
        """
        ...

    # events
    async def get_published_events(self) -> list[OrderPlaced | OrderCancelled]:
        """Every event the orders service has published since the last reset, oldest first."""
        ...

    async def wait_for_events_processed(self, timeout: float = 10.0) -> None:
        """Return once every published (or redelivered) event has been consumed.

        TimeoutError when that takes longer than `timeout` seconds.
        """
        ...

    async def redeliver_event(self, event: OrderPlaced | OrderCancelled) -> None:
        """Publish `event` again with the same event id, as a broker does after a lost ack.

        It is not a new publication: get_published_events() does not list it twice.
        """
        ...

    async def reset(self) -> None:
        """Forget every order, stock level, reservation and event."""
        ...
