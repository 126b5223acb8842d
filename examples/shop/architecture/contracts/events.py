"""Events on the `shop.events` topic exchange.

Every event class names its routing key in `routing_key`; the AMQP message carries the event's JSON
as body and its `event_id` as `message_id`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field


def new_event_id() -> str:
    return str(uuid.uuid4())


def utc_now() -> datetime:
    return datetime.now(UTC)


class OrderEvent(BaseModel):
    """Common fields of the order events. Not published itself."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    routing_key: ClassVar[str]

    event_id: str = Field(default_factory=new_event_id)
    order_id: str
    sku: str
    quantity: int
    occurred_at: datetime = Field(default_factory=utc_now)


class OrderPlaced(OrderEvent):
    """An order was accepted and its stock reserved."""

    routing_key: ClassVar[str] = "order.placed"


class OrderCancelled(OrderEvent):
    """An order was cancelled; the stock reserved for it may be released."""

    routing_key: ClassVar[str] = "order.cancelled"


ShopEvent = OrderPlaced | OrderCancelled

EVENT_CLASSES: dict[str, type[OrderEvent]] = {cls.routing_key: cls for cls in (OrderPlaced, OrderCancelled)}
"""Event class by routing key."""
