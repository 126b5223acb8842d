"""Service images are a checkout's own: two copies of the example in two folders build images under tags
of their own, so building one never makes the other's stale or replaces it; `python -m integration clean`
removes the images of a checkout that is gone, and leaves those of a checkout that is still there.

The copies get a system name of their own (`itest-checkouts-<token>`), so that `clean --system` here
only ever looks at this test's images, never at another checkout's on the shared engine."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from example_copies import SHORTENER, build, copy_example
from python_on_whales import docker
from python_on_whales.exceptions import DockerException

from integration.baseimages import locally_available
from integration.discovery import load_system
from integration.images import ImageState
from integration.images import check_images as check_against
from integration.model import LABEL_ROOT, LABEL_SYSTEM, SystemSpec

pytestmark = pytest.mark.docker


def _named_copy(destination: Path, system: str) -> Path:
    root = copy_example(SHORTENER, destination)
    services = root / "architecture" / "services.yml"
    text = services.read_text()
    assert "system: shortener\n" in text, "the example's services.yml changed; update this test"
    services.write_text(text.replace("system: shortener\n", f"system: {system}\n", 1))
    return root


def check_images(system: SystemSpec) -> list[ImageState]:
    """The freshness check of `python -m integration check`: on the base images this machine has."""
    return check_against(system, locally_available(system.base_images))


def _ids(root: Path) -> dict[str, str]:
    return {state.service: state.image_id or "" for state in check_images(load_system(root))}


def _remove_system_images(system: str) -> None:
    for image in docker.image.list(filters=[("label", f"{LABEL_SYSTEM}={system}")]):
        with contextlib.suppress(DockerException):  # removed meanwhile
            docker.image.remove(list(image.repo_tags) or image.id, force=True)


def test_two_checkouts_build_without_making_each_other_stale(tmp_path: Path) -> None:
    system = f"itest-checkouts-{uuid.uuid4().hex[:8]}"
    one = _named_copy(tmp_path / "one" / "shortener", system)
    two = _named_copy(tmp_path / "two" / "shortener", system)
    try:
        tags_one = {s.name: s.image for s in load_system(one).services}
        tags_two = {s.name: s.image for s in load_system(two).services}
        assert set(tags_one.values()).isdisjoint(tags_two.values()), (tags_one, tags_two)
        assert all(tag.startswith(f"{system}-") for tag in [*tags_one.values(), *tags_two.values()])

        build(one)
        before = _ids(one)
        assert all(before.values())
        # Checkout two differs from checkout one (an edit not yet in one), as two worktrees do.
        main = two / "services" / "links" / "app" / "main.py"
        main.write_text(main.read_text() + "\n# an edit only checkout two has\n")
        build(two)

        states = check_images(load_system(one))
        assert all(state.fresh for state in states), [(s.image, s.changed) for s in states]
        assert _ids(one) == before  # untouched: the same images, under the same tags
        assert all(state.fresh for state in check_images(load_system(two)))
        assert _ids(two)["links"] != before["links"]  # two's links has its edit
        labels = docker.image.inspect(tags_one["links"]).config.labels or {}
        assert labels[LABEL_ROOT] == str(one.resolve())

        # Checkout one is removed: clean takes its images, and leaves checkout two's.
        shutil.rmtree(tmp_path / "one")
        cleaned = subprocess.run(
            [sys.executable, "-m", "integration", "clean", "--system", system],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
        for tag in tags_one.values():
            assert not docker.image.exists(tag), cleaned.stdout
            assert f"{tag}: removed" in cleaned.stdout
        assert "2 image(s) of removed checkouts removed" in cleaned.stdout
        assert all(docker.image.exists(tag) for tag in tags_two.values())
        assert all(state.fresh for state in check_images(load_system(two)))
    finally:
        _remove_system_images(system)


def test_clean_leaves_images_the_toolkit_did_not_build(tmp_path: Path) -> None:
    """An image that carries a checkout-root label of a gone folder but not the toolkit's inputs hash is
    not the toolkit's: clean leaves it."""
    system = f"itest-checkouts-{uuid.uuid4().hex[:8]}"
    tag = f"{system}-foreign:latest"
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM scratch\nLABEL marker=1\n")
    gone = tmp_path / "gone"
    try:
        docker.build(
            context, tags=[tag], labels={LABEL_ROOT: str(gone), LABEL_SYSTEM: system}, progress=False
        )
        cleaned = subprocess.run(
            [sys.executable, "-m", "integration", "clean", "--system", system],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
        assert docker.image.exists(tag)
        assert "0 image(s) of removed checkouts removed" in cleaned.stdout
    finally:
        _remove_system_images(system)
