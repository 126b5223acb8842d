"""Events across services: what the links service publishes and how analytics consumes it."""

from __future__ import annotations

import pytest

from architecture.contracts.events import LinkCreated, LinkDeleted, LinkVisited
from use_case_tests.harness import ITestHarness

URL = "https://example.com/events"


async def test_creating_a_link_publishes_link_created(test_harness: ITestHarness) -> None:
    link = await test_harness.create_link(URL, code="created")

    events = await test_harness.get_published_events()

    assert len(events) == 1
    event = events[0]
    assert isinstance(event, LinkCreated)
    assert (event.code, event.url) == ("created", URL)
    assert event.event_id
    assert event.occurred_at == link.created_at


async def test_creating_the_same_link_twice_publishes_one_event(test_harness: ITestHarness) -> None:
    await test_harness.create_link(URL, code="once")
    await test_harness.create_link(URL, code="once")

    assert [type(event) for event in await test_harness.get_published_events()] == [LinkCreated]


async def test_visit_publishes_link_visited_and_analytics_counts_it(test_harness: ITestHarness) -> None:
    await test_harness.create_link(URL, code="counted")

    await test_harness.visit("counted")

    visited = [e for e in await test_harness.get_published_events() if isinstance(e, LinkVisited)]
    assert [(e.code, e.url) for e in visited] == [("counted", URL)]
    await test_harness.wait_for_events_processed()
    assert (await test_harness.get_stats("counted")).visits == 1


async def test_delete_publishes_link_deleted_and_analytics_marks_it(test_harness: ITestHarness) -> None:
    await test_harness.create_link(URL, code="deleted")

    await test_harness.delete_link("deleted")

    events = await test_harness.get_published_events()
    assert [type(event) for event in events] == [LinkCreated, LinkDeleted]
    assert (events[-1].code, events[-1].url) == ("deleted", URL)
    await test_harness.wait_for_events_processed()
    assert (await test_harness.get_stats("deleted")).deleted is True


async def test_every_event_has_its_own_id(test_harness: ITestHarness) -> None:
    await test_harness.create_link(URL, code="ids")
    await test_harness.visit("ids")
    await test_harness.visit("ids")
    await test_harness.delete_link("ids")

    events = await test_harness.get_published_events()

    assert [type(event) for event in events] == [LinkCreated, LinkVisited, LinkVisited, LinkDeleted]
    assert len({event.event_id for event in events}) == 4
    assert [event.occurred_at for event in events] == sorted(event.occurred_at for event in events)


async def test_redelivered_event_is_processed_once(test_harness: ITestHarness) -> None:
    await test_harness.create_link(URL, code="redelivered")
    await test_harness.visit("redelivered")
    await test_harness.wait_for_events_processed()
    visited = [e for e in await test_harness.get_published_events() if isinstance(e, LinkVisited)]

    await test_harness.redeliver_event(visited[0])
    await test_harness.wait_for_events_processed()

    assert (await test_harness.get_stats("redelivered")).visits == 1
    assert len(await test_harness.get_published_events()) == 2


@pytest.mark.parametrize(
    "action",
    ["conflict", "invalid", "unknown-visit", "unknown-delete"],
)
async def test_failed_requests_publish_nothing(test_harness: ITestHarness, action: str) -> None:
    await test_harness.create_link(URL, code="existing")
    before = await test_harness.get_published_events()

    with pytest.raises((KeyError, ValueError)):
        match action:
            case "conflict":
                await test_harness.create_link("https://example.org/else", code="existing")
            case "invalid":
                await test_harness.create_link("no-url", code="fine-code")
            case "unknown-visit":
                await test_harness.visit("nope-404")
            case "unknown-delete":
                await test_harness.delete_link("nope-404")

    assert await test_harness.get_published_events() == before
