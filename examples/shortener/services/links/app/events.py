"""The outbox: events are written with the change they record, then published by a background thread."""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import AMQPError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app.models import OutboxEvent
from architecture.contracts.events import Event

logger = logging.getLogger(__name__)


def record_event(session: Session, event: Event) -> None:
    """Add `event` to the outbox in the session's transaction: it is sent only if that commits."""
    session.add(
        OutboxEvent(
            event_id=event.event_id,
            event_type=type(event).__name__,
            payload=event.model_dump(mode="json"),
            occurred_at=event.occurred_at,
        )
    )


class OutboxPublisher(threading.Thread):
    """Polls unpublished outbox rows and publishes them to the topic exchange (at least once).

    The thread owns its BlockingConnection; on any broker or database failure it drops the
    connection, waits, and tries again. Rows are marked published only after the broker confirms.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        broker_url: str,
        exchange: str,
        *,
        poll_interval: float = 0.2,
        retry_interval: float = 2.0,
        batch_size: int = 100,
    ) -> None:
        super().__init__(name="outbox-publisher", daemon=True)
        self._sessions = sessions
        self._parameters = pika.URLParameters(broker_url)
        self._parameters.socket_timeout = 5
        self._parameters.connection_attempts = 1
        self._exchange = exchange
        self._poll_interval = poll_interval
        self._retry_interval = retry_interval
        self._batch_size = batch_size
        self._stopping = threading.Event()
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self.join(timeout)

    def run(self) -> None:
        logger.info("outbox publisher started (exchange %r)", self._exchange)
        while not self._stopping.is_set():
            try:
                sent = self._publish_batch()
            except (AMQPError, OSError) as exc:
                logger.warning("broker unavailable (%r); reconnecting", exc)
                self._disconnect()
                self._stopping.wait(self._retry_interval)
                continue
            except SQLAlchemyError as exc:
                logger.warning("database unavailable (%s); retrying", exc)
                self._stopping.wait(self._retry_interval)
                continue
            if sent < self._batch_size:
                self._stopping.wait(self._poll_interval)
        self._disconnect()
        logger.info("outbox publisher stopped")

    def _publish_batch(self) -> int:
        with self._sessions.begin() as session:
            rows = session.scalars(
                select(OutboxEvent)
                .where(OutboxEvent.published_at.is_(None))
                .order_by(OutboxEvent.occurred_at)
                .limit(self._batch_size)
                .with_for_update(skip_locked=True)
            ).all()
            if not rows:
                return 0
            channel = self._ensure_channel()
            for row in rows:
                channel.basic_publish(
                    exchange=self._exchange,
                    routing_key=row.event_type,
                    body=json.dumps(row.payload).encode(),
                    properties=pika.BasicProperties(
                        message_id=row.event_id,
                        type=row.event_type,
                        content_type="application/json",
                        delivery_mode=pika.DeliveryMode.Persistent,
                        timestamp=int(row.occurred_at.timestamp()),
                    ),
                )
                row.published_at = datetime.now(UTC)
            logger.debug("published %d events", len(rows))
            return len(rows)

    def _ensure_channel(self) -> BlockingChannel:
        if self._channel is None or not self._channel.is_open:
            self._disconnect()
            self._connection = pika.BlockingConnection(self._parameters)
            channel = self._connection.channel()
            channel.exchange_declare(exchange=self._exchange, exchange_type="topic", durable=True)
            channel.confirm_delivery()
            self._channel = channel
            logger.info("connected to the broker")
        return self._channel

    def _disconnect(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except (AMQPError, OSError):
                logger.debug("error closing the broker connection", exc_info=True)
