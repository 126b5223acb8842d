"""Consumer of the order events on the queue inventory.order-events.

An OrderCancelled releases the order's reservation. The message id goes into inbox_messages in the
same transaction as the release, and the message is acknowledged only after that commit: a
redelivered message finds its id and changes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from datetime import UTC, datetime

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import AMQPError
from pika.spec import Basic, BasicProperties
from pydantic import ValidationError
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app import stock
from app.models import InboxMessage
from architecture.contracts.events import OrderCancelled, OrderEvent
from architecture.contracts.inventory import CONSUMES

log = logging.getLogger(__name__)

RECONNECT_SECONDS = 2.0


def handle(sessions: sessionmaker[Session], message_id: str, event: OrderEvent) -> bool:
    """Apply one event exactly once. False if its message id was already in the inbox."""
    with sessions.begin() as session:
        first_time = session.execute(
            insert(InboxMessage)
            .values(message_id=message_id, received_at=datetime.now(UTC))
            .on_conflict_do_nothing(index_elements=[InboxMessage.message_id])
            .returning(InboxMessage.message_id)
        ).first()
        if first_time is None:
            log.info("message %s already received; skipped", message_id)
            return False
        if isinstance(event, OrderCancelled):
            try:
                released = stock.release(session, event.order_id)
            except stock.UnknownReservation:
                log.warning("order %s was cancelled but holds no reservation here", event.order_id)
            else:
                log.info("order %s cancelled: reservation released=%s", event.order_id, released)
        return True


class OrderEventsConsumer:
    """Owns a thread with a BlockingConnection; reconnects whenever the broker goes away.

    `bound` is set once the queue has been declared and bound: from then on no routed event is lost.
    """

    def __init__(self, sessions: sessionmaker[Session], amqp_url: str, exchange: str, queue: str) -> None:
        self.sessions = sessions
        self.exchange = exchange
        self.queue = queue
        self.params = pika.URLParameters(amqp_url)
        self.params.connection_attempts = 1
        self.params.socket_timeout = 5
        self.bound = threading.Event()
        self._by_key = {cls.routing_key: cls for cls in CONSUMES}
        self._stopping = threading.Event()
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._thread = threading.Thread(target=self._run, name="order-events-consumer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        connection, channel = self._connection, self._channel
        if connection is not None and channel is not None and connection.is_open:
            with contextlib.suppress(AMQPError, OSError):
                connection.add_callback_threadsafe(channel.stop_consuming)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._consume()
            except (AMQPError, OSError) as exc:
                log.warning("broker connection lost (%r); reconnecting in %.0fs", exc, RECONNECT_SECONDS)
            finally:
                self._close()
            self._stopping.wait(RECONNECT_SECONDS)

    def _consume(self) -> None:
        self._connection = pika.BlockingConnection(self.params)
        channel = self._channel = self._connection.channel()
        channel.exchange_declare(self.exchange, exchange_type="topic", durable=True)
        channel.queue_declare(self.queue, durable=True)
        for routing_key in self._by_key:
            channel.queue_bind(self.queue, self.exchange, routing_key=routing_key)
        channel.basic_qos(prefetch_count=10)
        channel.basic_consume(self.queue, on_message_callback=self._on_message, auto_ack=False)
        self.bound.set()
        log.info("consuming %s from %r on %r", sorted(self._by_key), self.queue, self.exchange)
        if not self._stopping.is_set():
            channel.start_consuming()

    def _close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            with contextlib.suppress(AMQPError, OSError):
                connection.close()

    def _on_message(
        self, channel: BlockingChannel, method: Basic.Deliver, properties: BasicProperties, body: bytes
    ) -> None:
        event_class = self._by_key.get(method.routing_key)
        if event_class is None:
            log.error("no handler for routing key %r; message dropped", method.routing_key)
            channel.basic_nack(method.delivery_tag, requeue=False)
            return
        try:
            event = event_class.model_validate_json(body)
        except ValidationError as exc:
            log.error("malformed %s message dropped: %s", method.routing_key, exc)
            channel.basic_nack(method.delivery_tag, requeue=False)
            return
        try:
            handle(self.sessions, properties.message_id or event.event_id, event)
        except SQLAlchemyError as exc:
            log.warning("could not handle %s (%s); requeued", event.event_id, exc)
            time.sleep(1.0)
            channel.basic_nack(method.delivery_tag, requeue=True)
            return
        channel.basic_ack(method.delivery_tag)
