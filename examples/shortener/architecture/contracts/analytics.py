"""Contract of the `analytics` service: visit statistics built from the links service's events."""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from architecture.contracts.events import LinkCreated, LinkDeleted, LinkEvent, LinkVisited

DEFAULT_TOP_LIMIT = 10
MAX_TOP_LIMIT = 100


class LinkStats(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    code: str
    url: str
    visits: int
    created_at: datetime | None  # None until the LinkCreated event has been seen
    deleted: bool


class IAnalyticsService(ABC):
    """The analytics service (HTTP, port 8000). Consumes LinkCreated, LinkVisited, LinkDeleted."""

    @abstractmethod
    async def get_stats(self, code: str) -> LinkStats:
        """GET /stats/{code} -> 200 LinkStats (deleted links included). Errors: KeyError for 404."""

    @abstractmethod
    async def top_links(self, limit: int = DEFAULT_TOP_LIMIT) -> list[LinkStats]:
        """GET /stats?limit=N -> 200 the live links with the most visits, most first (ties by code).

        Errors: ValueError for 422 (limit outside 1..100).
        """

    @abstractmethod
    async def handle_event(self, event: LinkEvent) -> bool:
        """Consume one event from queue analytics.events (not HTTP).

        Returns False, changing nothing, when the event's event_id was already processed (idempotent).
        """


EVENTS_PUBLISHED: list[type] = []
EVENTS_CONSUMED = [LinkCreated, LinkVisited, LinkDeleted]
