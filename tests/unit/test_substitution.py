"""Offline builds of a hard-coded FROM: which image replaces which, the decision per FROM line, the
rewritten copy of the Dockerfile, and the input hash. Pure: the engine is a fake here."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from python_on_whales.exceptions import DockerException, NoSuchImage

from integration import baseimages, images
from integration.baseimages import FromImages, standin_replacing
from integration.dockerfile import parse
from integration.errors import BuildError
from integration.model import OFFLINE_PYTHON_IMAGE, BaseImages, ServiceSpec, SystemSpec
from integration.substitution import Substitution, plan, rewrite, rewritten_dockerfile

STANDIN = OFFLINE_PYTHON_IMAGE  # integration-local/python:3.11-slim


class FakeImages:
    """`client.image` of an engine that has `present` and could pull `pullable`."""

    def __init__(self, present: set[str], pullable: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.present = set(present)
        self.pullable = set(pullable)
        self.pulls: list[str] = []

    def exists(self, image: str) -> bool:
        return image in self.present

    def inspect(self, image: str) -> SimpleNamespace:
        if image not in self.present:
            raise NoSuchImage(["docker", "image", "inspect", image], 1)
        digest = hashlib.sha256(image.encode()).hexdigest()
        return SimpleNamespace(id=f"sha256:{digest}", config=SimpleNamespace(labels={}))

    def pull(self, image: str, quiet: bool = True) -> None:
        self.pulls.append(image)
        if image not in self.pullable:
            raise DockerException(["docker", "pull", image], 1, stderr=b"no such host")
        self.present.add(image)


def fake_client(present: set[str], pullable: set[str] = frozenset()) -> SimpleNamespace:  # type: ignore[assignment]
    return SimpleNamespace(image=FakeImages(present, pullable))


@pytest.fixture
def built_standins(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Stand-ins `FromImages` had built (ensure_standin is faked: nothing is built)."""
    built: list[str] = []

    def ensure(standin: baseimages.StandIn, client: SimpleNamespace) -> None:
        built.append(standin.image)
        client.image.present.add(standin.image)

    monkeypatch.setattr(baseimages, "ensure_standin", ensure)
    monkeypatch.delenv(baseimages.OFFLINE_ENV, raising=False)
    return built


# --- which stand-in replaces which image -----------------------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [
        "python:3.11-slim",
        "python:3.11",
        "python:3.11-slim-bookworm",
        "docker.io/library/python:3.11-slim",
        "docker.io/python:3.11",
    ],
)
def test_python_images_of_the_standins_version_map_to_it(image: str) -> None:
    assert standin_replacing(image).image == STANDIN  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "image",
    [
        "python:3.12-slim",  # another version
        "python:3.11.9-slim",  # a pinned patch release the stand-in is not
        "python:3.11-alpine",  # another libc
        "python",  # latest
        "python@sha256:" + "a" * 64,  # a digest pins content
        "ghcr.io/acme/python:3.11-slim",  # another registry's image of the same name
        "node:20-slim",  # no stand-in
        STANDIN,  # already one
        "postgres:16",  # a major Debian does not package
        "postgres:15-alpine",
    ],
)
def test_images_without_a_matching_standin_are_left_alone(image: str) -> None:
    assert standin_replacing(image) is None


def test_postgres_broker_and_configured_images_map_to_their_standins() -> None:
    assert standin_replacing("postgres:15").image == "integration-local/postgres:15"  # type: ignore[union-attr]
    assert standin_replacing("postgres:17-trixie").image == "integration-local/postgres:17"  # type: ignore[union-attr]
    assert standin_replacing("rabbitmq:3.12-management").kind == "broker"  # type: ignore[union-attr]
    mirror = BaseImages(python="mirror.example.com/base/py:3.11")
    assert standin_replacing("mirror.example.com/base/py:3.11") is None
    assert standin_replacing("mirror.example.com/base/py:3.11", mirror).image == STANDIN  # type: ignore[union-attr]


# --- the decision per FROM image -------------------------------------------------------------------------


def test_a_present_image_is_used_without_a_pull(built_standins: list[str]) -> None:
    client = fake_client({"python:3.11-slim"})

    assert FromImages(client, for_build=True).choose("python:3.11-slim") == "python:3.11-slim"  # type: ignore[arg-type]
    assert client.image.pulls == [] and built_standins == []


def test_a_pullable_image_is_pulled_for_a_build(built_standins: list[str]) -> None:
    client = fake_client(set(), pullable={"python:3.11-slim"})

    assert FromImages(client, for_build=True).choose("python:3.11-slim") == "python:3.11-slim"  # type: ignore[arg-type]
    assert client.image.pulls == ["python:3.11-slim"] and built_standins == []


def test_an_unpullable_image_is_built_on_its_standin_once(built_standins: list[str]) -> None:
    client = fake_client(set())
    bases = FromImages(client, for_build=True)  # type: ignore[arg-type]

    assert bases.choose("python:3.11-slim") == STANDIN
    assert bases.choose("python:3.11-slim") == STANDIN
    assert client.image.pulls == ["python:3.11-slim"], "one pull attempt per build step"
    assert built_standins == [STANDIN]


def test_an_unpullable_image_without_a_standin_stays(built_standins: list[str]) -> None:
    client = fake_client(set())

    assert FromImages(client, for_build=True).choose("node:20-slim") == "node:20-slim"  # type: ignore[arg-type]
    assert built_standins == []


def test_offline_mode_and_an_already_replaced_configured_image_skip_the_pull(
    built_standins: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    client = fake_client(set(), pullable={"python:3.11-slim"})
    configured, chosen = BaseImages(), BaseImages(python=STANDIN)
    bases = FromImages(client, for_build=True, configured=configured, chosen=chosen)  # type: ignore[arg-type]

    assert bases.choose("python:3.11-slim") == STANDIN
    assert client.image.pulls == []
    monkeypatch.setenv(baseimages.OFFLINE_ENV, "1")
    assert FromImages(client, for_build=True).choose("python:3.11") == STANDIN  # type: ignore[arg-type]
    assert client.image.pulls == []


def test_the_freshness_check_never_pulls_or_builds(built_standins: list[str]) -> None:
    nothing = fake_client(set(), pullable={"python:3.11-slim"})
    with_standin = fake_client({STANDIN})

    assert FromImages(nothing, for_build=False).choose("python:3.11-slim") == "python:3.11-slim"  # type: ignore[arg-type]
    assert FromImages(with_standin, for_build=False).choose("python:3.11-slim") == STANDIN  # type: ignore[arg-type]
    assert nothing.image.pulls == [] and built_standins == []


def test_plan_substitutes_only_external_bases_the_chooser_replaces() -> None:
    dockerfile = parse(
        "ARG PYTHON_IMAGE=python:3.11-slim\n"
        "FROM python:3.11-slim AS build\n"
        "FROM build\n"
        "FROM scratch AS empty\n"
        "FROM ${PYTHON_IMAGE}\n"
        "FROM node:20-slim\n"
    )
    replaced = {"python:3.11-slim": STANDIN}

    found = plan(dockerfile, {"PYTHON_IMAGE": STANDIN}, lambda image: replaced.get(image, image))

    assert found == (Substitution(2, 2, "python:3.11-slim", STANDIN),)
    assert found[0].describe("orders") == (
        f"orders: FROM python:3.11-slim (line 2) built on the offline stand-in {STANDIN}"
    )


# --- the rewritten copy ----------------------------------------------------------------------------------

ORIGINAL = (
    "# syntax=docker/dockerfile:1\n"
    "FROM --platform=linux/amd64 \\\n"
    "     python:3.11-slim \\\n"
    "     AS build\n"
    "RUN echo python:3.11-slim\n"
    "FROM python:3.11-slim\n"
    "COPY --from=build /x /x\n"
    "EXPOSE 8000\n"
)


def test_rewrite_changes_only_the_from_lines_and_keeps_every_line_number() -> None:
    dockerfile = parse(ORIGINAL)
    substitutions = plan(dockerfile, {}, lambda image: STANDIN if image == "python:3.11-slim" else image)

    text = rewrite(dockerfile, substitutions)

    original_lines, lines = ORIGINAL.split("\n"), text.split("\n")
    assert len(lines) == len(original_lines)
    assert lines[1] == f"FROM --platform=linux/amd64 {STANDIN} AS build"
    assert lines[2:4] == ["", ""]
    assert lines[5] == f"FROM {STANDIN}"
    changed = [n for n, (a, b) in enumerate(zip(original_lines, lines, strict=True), 1) if a != b]
    assert changed == [2, 3, 4, 6]
    again = parse(text)
    assert [(i.line, i.keyword) for i in again.instructions if i.keyword != "FROM"] == [
        (i.line, i.keyword) for i in dockerfile.instructions if i.keyword != "FROM"
    ]
    assert [f.name for f in again.froms] == ["build", None]
    assert again.directive("syntax") == "docker/dockerfile:1"


def test_the_copy_lives_outside_the_context_and_is_removed(tmp_path: Path) -> None:
    context = tmp_path / "repo"
    (context / "services/orders").mkdir(parents=True)
    original = context / "services/orders/Dockerfile"
    original.write_text(ORIGINAL)
    (context / "services/orders/Dockerfile.dockerignore").write_text("secrets/\n")

    with rewritten_dockerfile(original, "FROM x\n", context) as copy:
        assert not copy.resolve().is_relative_to(context.resolve())
        assert copy.name == "Dockerfile" and copy.read_text() == "FROM x\n"
        assert (copy.parent / "Dockerfile.dockerignore").read_text() == "secrets/\n"
        folder = copy.parent
    assert not folder.exists()
    assert original.read_text() == ORIGINAL


def test_a_temporary_folder_inside_the_context_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()

    with (
        pytest.raises(BuildError, match="inside the build context"),
        rewritten_dockerfile(tmp_path / "Dockerfile", "FROM x\n", tmp_path),
    ):
        pass
    assert list((tmp_path / "tmp").iterdir()) == []


# --- the input hash --------------------------------------------------------------------------------------


def system_with(tmp_path: Path, dockerfile_text: str) -> SystemSpec:
    root = tmp_path / "system"
    (root / "services/orders").mkdir(parents=True)
    (root / "services/orders/Dockerfile").write_text(dockerfile_text)
    (root / "services/orders/app.py").write_text("print('orders')\n")
    service = ServiceSpec(
        "orders",
        root / "services/orders",
        root / "services/orders/Dockerfile",
        8000,
        image="orders:test",
    )
    return SystemSpec("shop", root, (service,))


HARD_CODED = "FROM python:3.11-slim\nCOPY services/orders/app.py /srv/\nCMD python /srv/app.py\n"


def test_the_hash_is_of_the_original_dockerfile_and_the_base_actually_used(tmp_path: Path) -> None:
    system = system_with(tmp_path, HARD_CODED)
    base = BaseImages(python=STANDIN)

    (offline,) = images.check_images(system, base, fake_client({STANDIN}))  # type: ignore[arg-type]
    (online,) = images.check_images(system, base, fake_client({STANDIN, "python:3.11-slim"}))  # type: ignore[arg-type]

    assert offline.substitutions == (Substitution(1, 1, "python:3.11-slim", STANDIN),)
    assert online.substitutions == ()
    text_hash = hashlib.sha256(HARD_CODED.encode()).hexdigest()[:16]
    assert (
        offline.inputs.file_hashes["<Dockerfile>"] == online.inputs.file_hashes["<Dockerfile>"] == text_hash
    )
    assert offline.inputs.inputs_hash != online.inputs.inputs_hash, "switching bases makes the image stale"
    assert "<FROM python:3.11-slim>" in online.inputs.file_hashes


def test_the_build_and_the_check_compute_the_same_hash(tmp_path: Path, built_standins: list[str]) -> None:
    system = system_with(tmp_path, HARD_CODED)
    base = BaseImages(python=STANDIN)
    client = fake_client({STANDIN})

    for_build = images._states(system, base, client, for_build=True)  # type: ignore[arg-type]
    for_check = images.check_images(system, base, client)  # type: ignore[arg-type]

    assert [s.inputs.inputs_hash for s in for_build] == [s.inputs.inputs_hash for s in for_check]
    assert for_build[0].substitutions == for_check[0].substitutions
    # The configured python image (python:3.11-slim) was already replaced by the stand-in: not pulled again.
    assert client.image.pulls == []


def test_a_dockerfile_taking_python_image_keeps_its_hash(tmp_path: Path) -> None:
    # `FROM ${PYTHON_IMAGE}` resolves to the python image whose id `<python-image-id>` already holds:
    # no entry of its own, so images built before this change stay fresh.
    system = system_with(tmp_path, "ARG PYTHON_IMAGE=python:3.11-slim\nFROM ${PYTHON_IMAGE}\n")

    (state,) = images.check_images(system, BaseImages(python=STANDIN), fake_client({STANDIN}))  # type: ignore[arg-type]

    assert state.substitutions == ()
    assert not any(key.startswith("<FROM") for key in state.inputs.file_hashes)
