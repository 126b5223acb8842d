"""Events shared by the services. An event's name (and routing key) is its class name."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field


def _new_event_id() -> str:
    return uuid.uuid4().hex


def _now() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """Base of every event: a unique id (the AMQP message_id) and when it happened."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: str = Field(default_factory=_new_event_id)
    occurred_at: datetime = Field(default_factory=_now)


class LinkCreated(Event):
    """A short link was created (not sent again when the same link is created twice)."""

    code: str
    url: str


class LinkVisited(Event):
    """Someone followed a short link."""

    code: str
    url: str


class LinkDeleted(Event):
    """A short link was deleted; its code may be reused."""

    code: str
    url: str


LinkEvent = LinkCreated | LinkVisited | LinkDeleted
