"""Contract of the inventory service (team-warehouse): stock levels and reservations."""

from __future__ import annotations

from abc import ABC, abstractmethod

from pydantic import BaseModel, ConfigDict, Field

from architecture.contracts.events import OrderCancelled


class StockLevel(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    sku: str
    on_hand: int
    reserved: int
    available: int  # on_hand - reserved


class StockUpdate(BaseModel):
    """Body of PUT /stock/{sku}: the new quantity on hand (its sku must be the path's)."""

    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=0)


class Reservation(BaseModel):
    """Body of POST /reservations, and its answer."""

    model_config = ConfigDict(from_attributes=True)

    order_id: str = Field(min_length=1)
    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(gt=0)


class IInventoryService(ABC):
    """The inventory service, HTTP on port 8081 (health: GET /health).

    Consumes OrderCancelled from the queue inventory.order-events (bound to routing key
    order.cancelled) and releases that order's reservation, once per event id (inbox_messages).
    """

    @abstractmethod
    async def set_stock(self, update: StockUpdate) -> StockLevel:
        """PUT /stock/{sku} -> 200 StockLevel; sets the quantity on hand, creating the sku if new.

        400: body sku differs from the path. 409: below the quantity reserved. 422: quantity < 0.
        """

    @abstractmethod
    async def get_stock(self, sku: str) -> StockLevel:
        """GET /stock/{sku} -> 200 StockLevel. 404: unknown sku."""

    @abstractmethod
    async def reserve(self, reservation: Reservation) -> Reservation:
        """POST /reservations -> 201 Reservation; the quantity moves from available to reserved.

        Idempotent per order_id: the same reservation again -> 200, nothing changes.
        404: unknown sku. 409: "insufficient stock", or the order_id already names another
        reservation or a released one.
        """

    @abstractmethod
    async def release(self, order_id: str) -> None:
        """DELETE /reservations/{order_id} -> 204; the reserved quantity becomes available again.

        Releasing a released reservation changes nothing. 404: unknown order_id.
        """


CONSUMES = [OrderCancelled]
