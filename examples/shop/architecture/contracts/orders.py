"""Contract of the orders service (team-orders): taking and cancelling orders."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from architecture.contracts.events import OrderCancelled, OrderPlaced

OrderStatus = Literal["placed", "cancelled"]


class PlaceOrder(BaseModel):
    """Body of POST /orders."""

    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(gt=0)


class OrderResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    order_id: str
    sku: str
    quantity: int
    status: OrderStatus


class IOrdersService(ABC):
    """The orders service, HTTP on port 8080 (health: GET /healthz).

    Calls inventory's POST /reservations to reserve stock; publishes OrderPlaced and OrderCancelled.
    """

    @abstractmethod
    async def place_order(self, request: PlaceOrder) -> OrderResponse:
        """POST /orders -> 201 OrderResponse (status "placed"); reserves the stock, publishes OrderPlaced.

        404: unknown sku. 409: not enough stock available. 422: invalid body (quantity <= 0).
        """

    @abstractmethod
    async def get_order(self, order_id: str) -> OrderResponse:
        """GET /orders/{order_id} -> 200 OrderResponse. 404: unknown order."""

    @abstractmethod
    async def cancel_order(self, order_id: str) -> OrderResponse:
        """POST /orders/{order_id}/cancel -> 200 OrderResponse (status "cancelled"); publishes
        OrderCancelled, on which inventory releases the reservation.

        404: unknown order. 409: the order is already cancelled.
        """

    @abstractmethod
    async def list_orders(self) -> list[OrderResponse]:
        """GET /orders -> 200 every order, oldest first."""


PUBLISHES = [OrderPlaced, OrderCancelled]
