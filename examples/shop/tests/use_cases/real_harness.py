"""The shop's ITestHarness against the running services (the service-integration toolkit's base).

Only the use-case methods are here: HTTP status mapping, reset, the outbox and inbox tables, waiting
for events and publishing them come from the base and [tool.integration] in pyproject.toml.
"""

from __future__ import annotations

from architecture.contracts.events import OrderCancelled, OrderPlaced
from architecture.contracts.inventory import StockLevel
from architecture.contracts.orders import OrderResponse
from integration import RealServiceHarness


class RealShopHarness(RealServiceHarness):
    async def set_stock(self, sku: str, quantity: int) -> StockLevel:
        body = {"sku": sku, "quantity": quantity}
        return self.call("inventory", "PUT", f"/stock/{sku}", StockLevel, json=body)

    async def get_stock(self, sku: str) -> StockLevel:
        return self.call("inventory", "GET", f"/stock/{sku}", StockLevel)

    async def place_order(self, sku: str, quantity: int) -> OrderResponse:
        body = {"sku": sku, "quantity": quantity}
        return self.call("orders", "POST", "/orders", OrderResponse, json=body)

    async def get_order(self, order_id: str) -> OrderResponse:
        return self.call("orders", "GET", f"/orders/{order_id}", OrderResponse)

    async def list_orders(self) -> list[OrderResponse]:
        return self.call("orders", "GET", "/orders", list[OrderResponse])

    async def cancel_order(self, order_id: str) -> OrderResponse:
        return self.call("orders", "POST", f"/orders/{order_id}/cancel", OrderResponse)

    async def redeliver_event(self, event: OrderPlaced | OrderCancelled) -> None:
        self.publish_event(event)
