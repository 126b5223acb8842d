"""Tables of the orders database (SQLAlchemy Core), created at startup."""

from __future__ import annotations

import logging
import time

from sqlalchemy import Column, DateTime, Engine, Index, Integer, MetaData, Table, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import OperationalError

log = logging.getLogger(__name__)

metadata = MetaData()

orders = Table(
    "orders",
    metadata,
    Column("order_id", Text, primary_key=True),
    Column("sku", Text, nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("status", Text, nullable=False),  # "placed" | "cancelled"
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("cancelled_at", DateTime(timezone=True)),
)

# Transactional outbox: a row is written in the transaction of the change it announces and sent to
# the broker afterwards by app.outbox.
outbox_messages = Table(
    "outbox_messages",
    metadata,
    Column("message_id", Text, primary_key=True),  # the event_id
    Column("routing_key", Text, nullable=False),  # "order.placed" | "order.cancelled"
    Column("body", JSONB, nullable=False),  # event.model_dump(mode="json")
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True)),  # NULL until published
    Index("ix_outbox_messages_unsent", "created_at", postgresql_where=text("sent_at IS NULL")),
)


def create_tables(engine: Engine, wait_seconds: float = 60.0) -> None:
    """metadata.create_all, retried while the database is still starting."""
    give_up = time.monotonic() + wait_seconds
    while True:
        try:
            metadata.create_all(engine)
            return
        except OperationalError as exc:
            if time.monotonic() > give_up:
                raise
            log.info("orders database not reachable yet: %s", str(exc.orig).strip())
            time.sleep(1.0)
