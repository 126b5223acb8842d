"""Use cases of the analytics service: statistics built from the links service's events."""

from __future__ import annotations

import pytest

from use_case_tests.harness import ITestHarness


async def _visit(test_harness: ITestHarness, code: str, times: int) -> None:
    for _ in range(times):
        await test_harness.visit(code)


async def test_new_link_has_stats_with_no_visits(test_harness: ITestHarness) -> None:
    link = await test_harness.create_link("https://example.com/fresh", code="fresh")
    await test_harness.wait_for_events_processed()

    stats = await test_harness.get_stats("fresh")

    assert (stats.code, stats.url, stats.visits, stats.deleted) == ("fresh", link.url, 0, False)
    assert stats.created_at == link.created_at


async def test_stats_count_every_visit(test_harness: ITestHarness) -> None:
    await test_harness.create_link("https://example.com/popular", code="popular")
    await _visit(test_harness, "popular", 3)
    await test_harness.wait_for_events_processed()

    assert (await test_harness.get_stats("popular")).visits == 3


async def test_stats_of_unknown_code_raise_key_error(test_harness: ITestHarness) -> None:
    with pytest.raises(KeyError):
        await test_harness.get_stats("nope-404")


async def test_top_links_are_ordered_by_visits(test_harness: ITestHarness) -> None:
    for code, visits in [("bronze", 1), ("gold", 3), ("silver", 2), ("unseen", 0)]:
        await test_harness.create_link(f"https://example.com/{code}", code=code)
        await _visit(test_harness, code, visits)
    await test_harness.wait_for_events_processed()

    top = await test_harness.top_links(limit=3)

    assert [(stats.code, stats.visits) for stats in top] == [("gold", 3), ("silver", 2), ("bronze", 1)]


async def test_top_links_leave_out_deleted_links(test_harness: ITestHarness) -> None:
    await test_harness.create_link("https://example.com/kept", code="kept")
    await test_harness.create_link("https://example.com/gone", code="gone")
    await _visit(test_harness, "gone", 2)
    await test_harness.delete_link("gone")
    await test_harness.wait_for_events_processed()

    assert [stats.code for stats in await test_harness.top_links()] == ["kept"]
    gone = await test_harness.get_stats("gone")
    assert (gone.deleted, gone.visits) == (True, 2)


@pytest.mark.parametrize("limit", [0, -1, 101])
async def test_top_links_limit_out_of_range_is_rejected(test_harness: ITestHarness, limit: int) -> None:
    with pytest.raises(ValueError):
        await test_harness.top_links(limit=limit)


async def test_reused_code_starts_with_fresh_stats(test_harness: ITestHarness) -> None:
    await test_harness.create_link("https://example.com/old", code="again")
    await _visit(test_harness, "again", 2)
    await test_harness.delete_link("again")
    await test_harness.create_link("https://example.com/new", code="again")
    await test_harness.wait_for_events_processed()

    stats = await test_harness.get_stats("again")

    assert (stats.url, stats.visits, stats.deleted) == ("https://example.com/new", 0, False)
