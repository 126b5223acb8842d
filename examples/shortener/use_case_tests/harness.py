"""What a use-case test may do with the system: the ITestHarness Protocol.

MockTestHarness implements it in memory; RealServiceHarness implements it against the running
services (HTTP for the endpoints, the event tables and the broker for events). Errors follow the
contracts: KeyError for 404, ValueError for 400/409/422.
"""

from __future__ import annotations

from typing import Protocol

from architecture.contracts.analytics import DEFAULT_TOP_LIMIT, LinkStats
from architecture.contracts.events import LinkEvent
from architecture.contracts.links import LinkResponse


class ITestHarness(Protocol):
    # links
    async def create_link(self, url: str, code: str | None = None) -> LinkResponse:
        """POST /links. ValueError: invalid url or code (422), code taken by another url (409)."""
        ...

    async def get_link(self, code: str) -> LinkResponse:
        """GET /links/{code}. KeyError: unknown code."""
        ...

    async def delete_link(self, code: str) -> None:
        """DELETE /links/{code}. KeyError: unknown code."""
        ...

    async def list_links(self) -> list[LinkResponse]:
        """GET /links."""
        ...

    async def visit(self, code: str) -> str:
        """GET /{code}: the url the 307 redirect points to. KeyError: unknown code."""
        ...

    # analytics
    async def get_stats(self, code: str) -> LinkStats:
        """GET /stats/{code}. KeyError: no statistics for the code."""
        ...

    async def top_links(self, limit: int = DEFAULT_TOP_LIMIT) -> list[LinkStats]:
        """GET /stats?limit=N. ValueError: limit outside 1..100."""
        ...

    # events
    async def get_published_events(self) -> list[LinkEvent]:
        """Every event published since the last reset, oldest first."""
        ...

    async def wait_for_events_processed(self, timeout: float = 10.0) -> None:
        """Return once every published event has been processed by its consumers.

        TimeoutError if that has not happened within `timeout` seconds.
        """
        ...

    async def redeliver_event(self, event: LinkEvent) -> None:
        """Deliver an already published event to its consumers again, as the broker does after a
        lost acknowledgement (same event_id). It is not recorded as a new publication."""
        ...

    async def reset(self) -> None:
        """Empty every service's state and forget the published events."""
        ...
