"""In-memory implementations of the service contracts, wired together by an in-memory event bus."""

from __future__ import annotations

import secrets
import string
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from architecture.contracts import analytics as analytics_contract
from architecture.contracts.analytics import DEFAULT_TOP_LIMIT, MAX_TOP_LIMIT, IAnalyticsService, LinkStats
from architecture.contracts.events import Event, LinkCreated, LinkDeleted, LinkEvent, LinkVisited
from architecture.contracts.links import CreateLinkRequest, ILinksService, LinkResponse

EventHandler = Callable[[LinkEvent], Awaitable[object]]

_CODE_ALPHABET = string.ascii_letters + string.digits


class InMemoryEventBus:
    """Records every published event and delivers it to the subscribers of its name at once."""

    def __init__(self) -> None:
        self._subscribers: defaultdict[str, list[EventHandler]] = defaultdict(list)
        self.published: list[LinkEvent] = []

    def subscribe(self, events: Sequence[type[Event]], handler: EventHandler) -> None:
        for event_class in events:
            self._subscribers[event_class.__name__].append(handler)

    async def publish(self, event: LinkEvent) -> None:
        self.published.append(event)
        await self.deliver(event)

    async def deliver(self, event: LinkEvent) -> None:
        """Hand `event` to its subscribers (also used for redelivery: not recorded again)."""
        for handler in self._subscribers[type(event).__name__]:
            await handler(event)


class MockLinksService(ILinksService):
    def __init__(self, bus: InMemoryEventBus) -> None:
        self._bus = bus
        self._links: dict[str, LinkResponse] = {}

    async def create_link(self, request: CreateLinkRequest) -> LinkResponse:
        if request.code is None:
            code = self._generate_code()
        else:
            code = request.code
            existing = self._links.get(code)
            if existing is not None:
                if existing.url != request.url:
                    raise ValueError(f"code {code!r} already links to another url")
                return existing
        link = LinkResponse(code=code, url=request.url, created_at=datetime.now(UTC))
        self._links[code] = link
        await self._bus.publish(LinkCreated(code=code, url=link.url, occurred_at=link.created_at))
        return link

    async def get_link(self, code: str) -> LinkResponse:
        return self._find(code)

    async def delete_link(self, code: str) -> None:
        link = self._find(code)
        del self._links[code]
        await self._bus.publish(LinkDeleted(code=code, url=link.url))

    async def list_links(self) -> list[LinkResponse]:
        return sorted(self._links.values(), key=lambda link: (link.created_at, link.code))

    async def visit(self, code: str) -> str:
        link = self._find(code)
        await self._bus.publish(LinkVisited(code=code, url=link.url))
        return link.url

    def _find(self, code: str) -> LinkResponse:
        try:
            return self._links[code]
        except KeyError:
            raise KeyError(f"no link with code {code!r}") from None

    def _generate_code(self) -> str:
        while True:
            code = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(7))
            if code not in self._links:
                return code


class MockAnalyticsService(IAnalyticsService):
    def __init__(self) -> None:
        self._processed: set[str] = set()
        self._stats: dict[str, LinkStats] = {}

    async def get_stats(self, code: str) -> LinkStats:
        try:
            return self._stats[code]
        except KeyError:
            raise KeyError(f"no statistics for code {code!r}") from None

    async def top_links(self, limit: int = DEFAULT_TOP_LIMIT) -> list[LinkStats]:
        if not 1 <= limit <= MAX_TOP_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_TOP_LIMIT}")
        live = [stats for stats in self._stats.values() if not stats.deleted]
        return sorted(live, key=lambda stats: (-stats.visits, stats.code))[:limit]

    async def handle_event(self, event: LinkEvent) -> bool:
        if event.event_id in self._processed:
            return False
        self._processed.add(event.event_id)
        stats = self._stats.get(event.code) or LinkStats(
            code=event.code, url=event.url, visits=0, created_at=None, deleted=False
        )
        match event:
            case LinkCreated():
                visits = 0 if stats.deleted else stats.visits  # a reused code starts afresh
                stats = stats.model_copy(
                    update={
                        "url": event.url,
                        "created_at": event.occurred_at,
                        "visits": visits,
                        "deleted": False,
                    }
                )
            case LinkVisited():
                stats = stats.model_copy(update={"visits": stats.visits + 1})
            case LinkDeleted():
                stats = stats.model_copy(update={"deleted": True})
        self._stats[event.code] = stats
        return True


class MockTestHarness:
    """ITestHarness over the mock services: everything in memory, events delivered synchronously."""

    def __init__(self) -> None:
        self._build()

    def _build(self) -> None:
        self.bus = InMemoryEventBus()
        self.links = MockLinksService(self.bus)
        self.analytics = MockAnalyticsService()
        self.bus.subscribe(analytics_contract.EVENTS_CONSUMED, self.analytics.handle_event)

    async def create_link(self, url: str, code: str | None = None) -> LinkResponse:
        return await self.links.create_link(CreateLinkRequest(url=url, code=code))

    async def get_link(self, code: str) -> LinkResponse:
        return await self.links.get_link(code)

    async def delete_link(self, code: str) -> None:
        await self.links.delete_link(code)

    async def list_links(self) -> list[LinkResponse]:
        return await self.links.list_links()

    async def visit(self, code: str) -> str:
        return await self.links.visit(code)

    async def get_stats(self, code: str) -> LinkStats:
        return await self.analytics.get_stats(code)

    async def top_links(self, limit: int = DEFAULT_TOP_LIMIT) -> list[LinkStats]:
        return await self.analytics.top_links(limit)

    async def get_published_events(self) -> list[LinkEvent]:
        return list(self.bus.published)

    async def wait_for_events_processed(self, timeout: float = 10.0) -> None:
        return None  # the bus delivers each event before publish() returns

    async def redeliver_event(self, event: LinkEvent) -> None:
        await self.bus.deliver(event)

    async def reset(self) -> None:
        self._build()
