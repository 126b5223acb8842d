"""The shortener's ITestHarness against the real services.

Endpoints go over HTTP, events are read from the services' event tables, and redelivery goes through
the broker. Everything generic (status mapping, reset, event tables, waiting) is in the toolkit's base.
"""

from __future__ import annotations

from architecture.contracts import analytics, links
from architecture.contracts.analytics import DEFAULT_TOP_LIMIT, LinkStats
from architecture.contracts.events import LinkEvent
from architecture.contracts.links import LinkResponse
from integration import RealServiceHarness as RealServiceHarnessBase
from integration import event_map


class RealServiceHarness(RealServiceHarnessBase):
    event_types = event_map(links.EVENTS_PUBLISHED)
    consumed = {"analytics": analytics.EVENTS_CONSUMED}

    async def create_link(self, url: str, code: str | None = None) -> LinkResponse:
        body = {"url": url} if code is None else {"url": url, "code": code}
        return self.call("links", "POST", "/links", LinkResponse, json=body)

    async def get_link(self, code: str) -> LinkResponse:
        return self.call("links", "GET", f"/links/{code}", LinkResponse)

    async def delete_link(self, code: str) -> None:
        self.call("links", "DELETE", f"/links/{code}")

    async def list_links(self) -> list[LinkResponse]:
        return self.call("links", "GET", "/links", list[LinkResponse])

    async def visit(self, code: str) -> str:
        response = self.request("links", "GET", f"/{code}", expected=(307,))
        return response.headers["location"]

    async def get_stats(self, code: str) -> LinkStats:
        return self.call("analytics", "GET", f"/stats/{code}", LinkStats)

    async def top_links(self, limit: int = DEFAULT_TOP_LIMIT) -> list[LinkStats]:
        return self.call("analytics", "GET", "/stats", list[LinkStats], params={"limit": limit})

    async def redeliver_event(self, event: LinkEvent) -> None:
        """Publish the same event again (same event_id), as the broker does after a lost ack."""
        self.publish_event(event)
