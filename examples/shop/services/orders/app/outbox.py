"""The outbox: rows written with each change, sent to the topic exchange by a background thread."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from datetime import UTC, datetime

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import AMQPError
from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from app.tables import outbox_messages
from architecture.contracts.events import OrderEvent

log = logging.getLogger(__name__)

BATCH = 50
IDLE_SECONDS = 0.2
BACKOFF_SECONDS = (0.5, 1.0, 2.0, 5.0)


def add_to_outbox(conn: Connection, event: OrderEvent) -> None:
    """Queue `event` in the caller's transaction: it leaves only if that transaction commits."""
    conn.execute(
        insert(outbox_messages).values(
            message_id=event.event_id,
            routing_key=event.routing_key,
            body=event.model_dump(mode="json"),
            created_at=event.occurred_at,
        )
    )


class OutboxRelay:
    """Publishes unsent outbox rows, oldest first, and stamps their `sent_at` (at-least-once).

    Runs on its own thread with its own BlockingConnection. Neither a missing broker nor a missing
    database stops it: it backs off and tries again, so the HTTP API never waits for RabbitMQ.
    """

    def __init__(self, engine: Engine, amqp_uri: str, exchange: str) -> None:
        self.engine = engine
        self.exchange = exchange
        self.params = pika.URLParameters(amqp_uri)
        self.params.connection_attempts = 1
        self.params.socket_timeout = 5
        self.params.blocked_connection_timeout = 10
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="outbox-relay", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        failures = 0
        while not self._halt.is_set():
            connection = None
            try:
                connection = pika.BlockingConnection(self.params)
                channel = connection.channel()
                channel.exchange_declare(self.exchange, exchange_type="topic", durable=True)
                channel.confirm_delivery()
                log.info("outbox relay connected; publishing to %r", self.exchange)
                failures = 0
                while not self._halt.is_set():
                    if self._relay_batch(channel) < BATCH:
                        connection.sleep(IDLE_SECONDS)  # also services heartbeats
            except (AMQPError, OSError, SQLAlchemyError) as exc:
                delay = BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS) - 1)]
                failures += 1
                log.warning("outbox relay interrupted (%r); retrying in %.1fs", exc, delay)
                self._halt.wait(delay)
            finally:
                if connection is not None and connection.is_open:
                    with contextlib.suppress(AMQPError, OSError):
                        connection.close()

    def _relay_batch(self, channel: BlockingChannel) -> int:
        with self.engine.begin() as conn:
            rows = (
                conn.execute(
                    select(outbox_messages)
                    .where(outbox_messages.c.sent_at.is_(None))
                    .order_by(outbox_messages.c.created_at, outbox_messages.c.message_id)
                    .limit(BATCH)
                    .with_for_update(skip_locked=True)
                )
                .mappings()
                .all()
            )
            sent = 0
            for row in rows:
                channel.basic_publish(
                    exchange=self.exchange,
                    routing_key=row["routing_key"],
                    body=json.dumps(row["body"]).encode(),
                    properties=pika.BasicProperties(
                        message_id=row["message_id"],
                        content_type="application/json",
                        delivery_mode=pika.DeliveryMode.Persistent,
                    ),
                )
                conn.execute(
                    update(outbox_messages)
                    .where(outbox_messages.c.message_id == row["message_id"])
                    .values(sent_at=datetime.now(UTC))
                )
                sent += 1
            return sent
