"""The freshness check's image catalog against the real engine: for present and absent names, in every
spelling, it answers exactly as `client.image.exists` / `inspect` do. The images are tags of
`integration-local/debian:bookworm` made here under unique names, and only those tags are removed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from python_on_whales import docker
from python_on_whales.exceptions import NoSuchImage

from integration.baseimages import DEBIAN_BASE_IMAGE, ImageCatalog, engine_check


@pytest.fixture(scope="module")
def tagged() -> Iterator[tuple[str, list[str]]]:
    """(a unique word, the tags made of the Debian base under it)."""
    if not docker.image.exists(DEBIAN_BASE_IMAGE):
        pytest.skip(f"{DEBIAN_BASE_IMAGE} is not built (python -m integration images)")
    word = f"itest-catalog-{uuid.uuid4().hex[:8]}"
    tags = [f"{word}:latest", f"{word}/nested:v1", f"localhost:5000/{word}:v2", f"{word}:0123456789abcdef"]
    made = []
    try:
        for name in tags:
            docker.image.tag(DEBIAN_BASE_IMAGE, name)
            made.append(name)
        yield word, made
    finally:
        for name in made:
            docker.image.remove(name)  # untags only: the Debian base keeps its own tag


def direct_id(name: str) -> str | None:
    try:
        return docker.image.inspect(name).id
    except NoSuchImage:
        return None


def test_the_catalog_answers_like_the_engine(tagged: tuple[str, list[str]]) -> None:
    word, _ = tagged
    engine_check(docker)  # as the check does first: it learns that the engine is Docker's
    base_id = docker.image.inspect(DEBIAN_BASE_IMAGE).id
    present = [
        word,
        f"{word}:latest",
        f"docker.io/library/{word}",
        f"docker.io/library/{word}:latest",
        f"index.docker.io/library/{word}:latest",
        f"library/{word}",
        f"{word}/nested:v1",
        f"docker.io/{word}/nested:v1",
        f"localhost:5000/{word}:v2",
        f"{word}:0123456789abcdef",
        DEBIAN_BASE_IMAGE,
    ]
    absent = [
        f"{word}:v1",
        f"{word}/nested",
        f"{word}/nested:v2",
        f"localhost:5000/{word}",
        f"localhost:5001/{word}:v2",
        f"quay.io/{word}:latest",
        f"{word}-other:latest",
        f"{word}:0123456789abcdee",
    ]
    names = present + absent
    catalog = ImageCatalog(docker, names, labelled=names)
    for name in names:
        expected = direct_id(name)
        assert (expected is not None) == (name in present), name
        assert catalog.exists(name) == docker.image.exists(name), name
        assert catalog.image_id(name) == expected, name
        facts = catalog.facts(name)
        assert (facts.id if facts else None) == expected, name
        if facts is not None:
            assert expected == base_id
            assert dict(facts.labels) == (docker.image.inspect(name).config.labels or {})


def test_an_id_prefix_and_a_digest_are_asked_directly(tagged: tuple[str, list[str]]) -> None:
    engine_check(docker)
    base_id = docker.image.inspect(DEBIAN_BASE_IMAGE).id
    short = base_id.removeprefix("sha256:")[:12]
    names = [short, f"sha256:{short}", f"{DEBIAN_BASE_IMAGE}@sha256:{'0' * 64}"]
    catalog = ImageCatalog(docker, names)
    for name in names:
        assert catalog.image_id(name) == direct_id(name), name
