"""Use cases of the links service: create, read, list, delete and follow short links."""

from __future__ import annotations

import pytest

from use_case_tests.harness import ITestHarness

URL = "https://example.com/articles/42?ref=newsletter"


async def test_create_link_with_chosen_code(test_harness: ITestHarness) -> None:
    link = await test_harness.create_link(URL, code="article-42")

    assert link.code == "article-42"
    assert link.url == URL
    assert link.created_at is not None


async def test_create_link_without_code_generates_a_code(test_harness: ITestHarness) -> None:
    first = await test_harness.create_link(URL)
    second = await test_harness.create_link(URL)

    assert first.code and second.code
    assert first.code != second.code
    assert await test_harness.get_link(first.code) == first


async def test_creating_the_same_link_twice_is_idempotent(test_harness: ITestHarness) -> None:
    first = await test_harness.create_link(URL, code="twice")
    second = await test_harness.create_link(URL, code="twice")

    assert second == first
    assert [link.code for link in await test_harness.list_links()].count("twice") == 1


async def test_code_taken_by_another_url_is_a_conflict(test_harness: ITestHarness) -> None:
    await test_harness.create_link(URL, code="taken")

    with pytest.raises(ValueError):
        await test_harness.create_link("https://example.org/other", code="taken")

    assert (await test_harness.get_link("taken")).url == URL


@pytest.mark.parametrize(
    "url",
    ["", "not a url", "example.com/no-scheme", "ftp://example.com/file", "https://", "javascript:alert(1)"],
)
async def test_invalid_url_is_rejected(test_harness: ITestHarness, url: str) -> None:
    with pytest.raises(ValueError):
        await test_harness.create_link(url)


@pytest.mark.parametrize("code", ["ab", "x" * 33, "has space", "slash/code", "dots.dots", "health", "links"])
async def test_invalid_or_reserved_code_is_rejected(test_harness: ITestHarness, code: str) -> None:
    with pytest.raises(ValueError):
        await test_harness.create_link(URL, code=code)


async def test_get_unknown_link_raises_key_error(test_harness: ITestHarness) -> None:
    with pytest.raises(KeyError):
        await test_harness.get_link("nope-404")


async def test_list_links_returns_every_link(test_harness: ITestHarness) -> None:
    created = [await test_harness.create_link(f"https://example.com/{n}", code=f"list-{n}") for n in range(3)]

    listed = await test_harness.list_links()

    assert [link for link in listed if link.code.startswith("list-")] == created


async def test_delete_link_removes_it(test_harness: ITestHarness) -> None:
    await test_harness.create_link(URL, code="short-lived")

    await test_harness.delete_link("short-lived")

    with pytest.raises(KeyError):
        await test_harness.get_link("short-lived")
    with pytest.raises(KeyError):
        await test_harness.visit("short-lived")
    assert "short-lived" not in [link.code for link in await test_harness.list_links()]


async def test_delete_unknown_link_raises_key_error(test_harness: ITestHarness) -> None:
    with pytest.raises(KeyError):
        await test_harness.delete_link("nope-404")


async def test_deleted_code_can_be_reused_for_another_url(test_harness: ITestHarness) -> None:
    await test_harness.create_link(URL, code="reused")
    await test_harness.delete_link("reused")

    link = await test_harness.create_link("https://example.org/new", code="reused")

    assert link.url == "https://example.org/new"


async def test_visit_returns_the_target_url(test_harness: ITestHarness) -> None:
    await test_harness.create_link(URL, code="go-there")

    assert await test_harness.visit("go-there") == URL


async def test_visit_unknown_code_raises_key_error(test_harness: ITestHarness) -> None:
    with pytest.raises(KeyError):
        await test_harness.visit("nope-404")
