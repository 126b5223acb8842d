"""Consuming the links service's events: idempotent processing and the background consumer thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import AMQPError
from pika.spec import Basic, BasicProperties
from pydantic import ValidationError
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app.models import LinkStatsRecord, ProcessedEvent
from architecture.contracts.events import Event, LinkCreated, LinkDeleted, LinkEvent, LinkVisited

logger = logging.getLogger(__name__)


def apply_event(session: Session, event: LinkEvent) -> None:
    """Update the per-code statistics for one event."""
    stats = session.get(LinkStatsRecord, event.code, with_for_update=True)
    if stats is None:
        stats = LinkStatsRecord(code=event.code, url=event.url, visits=0, created_at=None, deleted=False)
        session.add(stats)
    match event:
        case LinkCreated():
            if stats.deleted:  # the code was deleted and reused: a new link, new statistics
                stats.visits = 0
                stats.deleted = False
            stats.url = event.url
            stats.created_at = event.occurred_at
        case LinkVisited():
            stats.visits += 1
        case LinkDeleted():
            stats.deleted = True


def process_event(sessions: sessionmaker[Session], event: LinkEvent) -> bool:
    """Record and apply `event` in one transaction; False (and no change) if it was already processed."""
    with sessions.begin() as session:
        inserted = session.execute(
            insert(ProcessedEvent)
            .values(
                event_id=event.event_id,
                event_type=type(event).__name__,
                processed_at=datetime.now(UTC),
            )
            .on_conflict_do_nothing(index_elements=[ProcessedEvent.event_id])
            .returning(ProcessedEvent.event_id)
        ).first()
        if inserted is None:
            logger.info("event %s already processed; skipped", event.event_id)
            return False
        apply_event(session, event)
        return True


class EventConsumer(threading.Thread):
    """Consumes the service's durable queue; acks each message after its transaction commits.

    The thread owns its BlockingConnection and reconnects after broker failures. `ready` is set once
    the queue has been declared and bound: from then on no event routed to it is lost.
    """

    def __init__(
        self,
        broker_url: str,
        exchange: str,
        queue: str,
        events: Sequence[type[Event]],
        handler: Callable[[Event], bool],
        *,
        retry_interval: float = 2.0,
        prefetch: int = 20,
    ) -> None:
        super().__init__(name="event-consumer", daemon=True)
        self._parameters = pika.URLParameters(broker_url)
        self._parameters.socket_timeout = 5
        self._parameters.connection_attempts = 1
        self._exchange = exchange
        self._queue = queue
        self._events = {cls.__name__: cls for cls in events}
        self._handler = handler
        self._retry_interval = retry_interval
        self._prefetch = prefetch
        self._stopping = threading.Event()
        self.ready = threading.Event()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self.join(timeout)

    def run(self) -> None:
        logger.info("consumer started (queue %r)", self._queue)
        while not self._stopping.is_set():
            try:
                self._consume()
            except (AMQPError, OSError) as exc:
                logger.warning("broker unavailable (%r); reconnecting", exc)
                self._stopping.wait(self._retry_interval)
        logger.info("consumer stopped")

    def _consume(self) -> None:
        connection = pika.BlockingConnection(self._parameters)
        try:
            channel = connection.channel()
            channel.exchange_declare(exchange=self._exchange, exchange_type="topic", durable=True)
            channel.queue_declare(queue=self._queue, durable=True)
            for name in self._events:
                channel.queue_bind(queue=self._queue, exchange=self._exchange, routing_key=name)
            channel.basic_qos(prefetch_count=self._prefetch)
            self.ready.set()
            logger.info("consuming %s from %r", sorted(self._events), self._queue)
            for method, properties, body in channel.consume(self._queue, inactivity_timeout=0.5):
                if self._stopping.is_set():
                    break
                if method is not None:
                    self._handle(channel, method, properties, body)
            channel.cancel()
        finally:
            if connection.is_open:
                connection.close()

    def _handle(
        self, channel: BlockingChannel, method: Basic.Deliver, properties: BasicProperties, body: bytes
    ) -> None:
        name = properties.type or method.routing_key
        event_class = self._events.get(name)
        if event_class is None:
            logger.error("dropping message %s of unknown type %r", properties.message_id, name)
            channel.basic_nack(method.delivery_tag, requeue=False)
            return
        try:
            event = event_class.model_validate_json(body)
        except ValidationError as exc:
            logger.error("dropping malformed %s %s: %s", name, properties.message_id, exc)
            channel.basic_nack(method.delivery_tag, requeue=False)
            return
        try:
            self._handler(event)
        except SQLAlchemyError as exc:
            logger.warning("could not process %s %s (%s); requeued", name, event.event_id, exc)
            channel.basic_nack(method.delivery_tag, requeue=True)
            self._stopping.wait(self._retry_interval)
            return
        channel.basic_ack(method.delivery_tag)
