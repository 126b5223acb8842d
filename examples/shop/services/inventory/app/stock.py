"""The inventory's rules, on a SQLAlchemy session. The caller commits."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.models import StockItem, StockReservation
from architecture.contracts.inventory import Reservation, StockLevel


class UnknownSku(LookupError):
    pass


class UnknownReservation(LookupError):
    pass


class Refused(Exception):
    """The request contradicts the current stock (HTTP 409)."""


def level(item: StockItem) -> StockLevel:
    return StockLevel(
        sku=item.sku, on_hand=item.on_hand, reserved=item.reserved, available=item.on_hand - item.reserved
    )


def set_on_hand(session: Session, sku: str, quantity: int) -> StockLevel:
    now = datetime.now(UTC)
    session.execute(
        insert(StockItem)
        .values(sku=sku, on_hand=0, reserved=0, updated_at=now)
        .on_conflict_do_nothing(index_elements=[StockItem.sku])
    )
    item = session.get(StockItem, sku, with_for_update=True, populate_existing=True)
    assert item is not None
    if quantity < item.reserved:
        raise Refused(f"cannot set {sku!r} to {quantity}: {item.reserved} are reserved")
    item.on_hand = quantity
    item.updated_at = now
    return level(item)


def stock_of(session: Session, sku: str) -> StockLevel:
    item = session.get(StockItem, sku)
    if item is None:
        raise UnknownSku(sku)
    return level(item)


def reserve(session: Session, wanted: Reservation) -> tuple[Reservation, bool]:
    """Hold stock for an order. Returns the reservation and whether it is new."""
    existing = session.get(StockReservation, wanted.order_id)
    if existing is not None:
        if existing.released_at is not None:
            raise Refused(f"the reservation of order {wanted.order_id!r} was released")
        if (existing.sku, existing.quantity) != (wanted.sku, wanted.quantity):
            raise Refused(f"order {wanted.order_id!r} already holds another reservation")
        return Reservation.model_validate(existing), False
    item = session.get(StockItem, wanted.sku, with_for_update=True)
    if item is None:
        raise UnknownSku(wanted.sku)
    available = item.on_hand - item.reserved
    if available < wanted.quantity:
        raise Refused(
            f"insufficient stock for {wanted.sku!r}: {available} available, {wanted.quantity} requested"
        )
    now = datetime.now(UTC)
    item.reserved += wanted.quantity
    item.updated_at = now
    session.add(
        StockReservation(order_id=wanted.order_id, sku=wanted.sku, quantity=wanted.quantity, reserved_at=now)
    )
    return wanted, True


def release(session: Session, order_id: str) -> bool:
    """Give an order's reserved stock back. False when it was already released."""
    held = session.get(StockReservation, order_id, with_for_update=True)
    if held is None:
        raise UnknownReservation(order_id)
    if held.released_at is not None:
        return False
    item = session.get(StockItem, held.sku, with_for_update=True)
    assert item is not None
    now = datetime.now(UTC)
    item.reserved -= held.quantity
    item.updated_at = now
    held.released_at = now
    return True
