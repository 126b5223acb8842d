"""The freshness check's image catalog: names matched to tags as Docker resolves them, and one snapshot
answering for many names. Pure: the engine is a fake that keeps images by (registry, path, tag), so the
expected answer for every spelling of a name is known without the code under test's normalisation."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException, NoSuchImage

from integration import baseimages, images
from integration.baseimages import ImageCatalog, canonical_reference, familiar_reference, locally_available
from integration.model import BaseImages, ServiceSpec, SystemSpec

# --- names -----------------------------------------------------------------------------------------------
# Property-based with a seeded generator (hypothesis is not among the project's dependencies): every seed
# is one case, the same on every run.

CASES = range(300)
REGISTRIES = ["docker.io", "docker.io", "quay.io", "localhost", "localhost:5000", "reg.example.com:443"]
ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"


def component(rng: random.Random) -> str:
    # No dot in a component: a first component with one is a registry (`a.b/x` is on registry a.b).
    word = rng.choice("abcdefghijklmnopqrstuvwxyz") + "".join(rng.choices(ALNUM, k=rng.randrange(6)))
    if rng.random() < 0.3:
        word += rng.choice(["_", "__", "-", "--"]) + "".join(rng.choices(ALNUM, k=rng.randrange(1, 4)))
    return word


def tag(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return "latest"
    return rng.choice(ALNUM) + "".join(rng.choices(ALNUM + "._-", k=rng.randrange(9)))


@dataclass(frozen=True)
class Ref:
    """An image reference by structure: its registry, path components and tag."""

    registry: str
    path: tuple[str, ...]
    tag: str

    def spellings(self) -> list[str]:
        """Every way of writing this reference that Docker resolves to it."""
        tags = [f":{self.tag}"] + ([""] if self.tag == "latest" else [])
        path = "/".join(self.path)
        if self.registry != "docker.io":
            return [f"{self.registry}/{path}{t}" for t in tags]
        if len(self.path) == 1:
            prefixes = ["", "library/", "docker.io/", "docker.io/library/", "index.docker.io/library/"]
        else:
            prefixes = ["", "docker.io/", "index.docker.io/"]
        return [f"{prefix}{path}{t}" for prefix in prefixes for t in tags]

    def shown(self) -> str:
        """How the engine shows the tag (`docker image ls`, RepoTags): the familiar form."""
        return self.spellings()[0]


def ref(rng: random.Random) -> Ref:
    return Ref(rng.choice(REGISTRIES), tuple(component(rng) for _ in range(rng.randrange(1, 4))), tag(rng))


@pytest.mark.parametrize("seed", CASES)
def test_every_spelling_of_a_reference_has_one_canonical_form(seed: int) -> None:
    ref = globals()["ref"](random.Random(seed))
    forms = {canonical_reference(spelling) for spelling in ref.spellings()}
    assert len(forms) == 1
    (canonical,) = forms
    assert canonical is not None


@pytest.mark.parametrize("seed", CASES)
def test_different_references_have_different_canonical_forms(seed: int) -> None:
    rng = random.Random(seed)
    one, two = ref(rng), ref(rng)
    two = rng.choice([two, Ref(one.registry, one.path, two.tag), Ref(two.registry, one.path, one.tag)])
    if one != two:
        assert canonical_reference(one.spellings()[0]) != canonical_reference(two.spellings()[0])


@pytest.mark.parametrize("seed", CASES)
def test_the_familiar_form_is_how_the_engine_shows_the_tag_and_resolves_back(seed: int) -> None:
    ref = globals()["ref"](random.Random(seed))
    canonical = canonical_reference(ref.spellings()[0])
    assert canonical is not None
    assert familiar_reference(canonical) == ref.shown()
    assert canonical_reference(familiar_reference(canonical)) == canonical


@pytest.mark.parametrize(
    "name",
    [
        "python@sha256:" + "a" * 64,
        "python:3.11@sha256:" + "a" * 64,
        "Python:3.11",
        "python:",
        ":tag",
        "a//b",
        "python:3.11:x",
        "reg.io/",
        "x" * 256,
        "python:" + "t" * 129,
    ],
)
def test_names_the_catalog_does_not_answer_have_no_canonical_form(name: str) -> None:
    assert canonical_reference(name) is None


# --- a fake engine -----------------------------------------------------------------------------------------


def image_id_of(ref: Ref) -> str:
    return "sha256:" + hashlib.sha256(repr(ref).encode()).hexdigest()


@dataclass
class FakeEngine:
    """Images by structure; answers `docker image ls --filter reference=...` and `docker image inspect`
    the way Docker's daemon does, and `client.image.inspect(name)` for any spelling."""

    images: dict[Ref, str] = field(default_factory=dict)  # ref -> image id
    labels: dict[str, dict[str, str]] = field(default_factory=dict)  # image id -> labels
    cli_calls: list[list[str]] = field(default_factory=list)
    direct_calls: list[str] = field(default_factory=list)

    def add(self, ref: Ref, image_id: str | None = None, labels: dict[str, str] | None = None) -> str:
        image_id = image_id or image_id_of(ref)
        self.images[ref] = image_id
        self.labels[image_id] = labels or {}
        return image_id

    def resolve(self, name: str) -> str | None:
        for ref, image_id in self.images.items():
            if name in ref.spellings():
                return image_id
        # The daemon's fallback: an image id prefix.
        bare = name.removeprefix("sha256:")
        if bare and all(c in "0123456789abcdef" for c in bare):
            for image_id in self.images.values():
                if image_id.removeprefix("sha256:").startswith(bare):
                    return image_id
        return None

    def run(self, args: list[Any], return_stderr: bool = False) -> str:
        args = [str(a) for a in args]
        self.cli_calls.append(args)
        verb = args[1:3]
        if verb == ["image", "ls"]:
            patterns = [a.split("=", 2)[2] for a in args if a.startswith("--filter=reference=")]
            lines = []
            for ref, image_id in self.images.items():
                shown = ref.shown()
                name = shown.rpartition(":")[0]
                # Docker's FamiliarMatch: the pattern against the familiar string, else the familiar name.
                if any(fnmatch.fnmatchcase(shown, p) or fnmatch.fnmatchcase(name, p) for p in patterns):
                    lines.append(f"{image_id} {shown}")
            return "\n".join(lines)
        if verb == ["image", "inspect"]:
            ids = args[3:]
            if any(i not in self.labels for i in ids):
                raise NoSuchImage(args, 1)
            return json.dumps([{"Id": i, "Config": {"Labels": self.labels[i]}} for i in ids])
        raise AssertionError(f"unexpected call {args}")

    def inspect(self, name: str) -> SimpleNamespace:
        self.direct_calls.append(name)
        image_id = self.resolve(name)
        if image_id is None:
            raise NoSuchImage(["docker", "image", "inspect", name], 1)
        return SimpleNamespace(id=image_id, config=SimpleNamespace(labels=self.labels[image_id]))

    def exists(self, name: str) -> bool:
        try:
            self.inspect(name)
        except NoSuchImage:
            return False
        return True


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    fake = FakeEngine()
    monkeypatch.setattr(baseimages, "run_docker", fake.run)
    return fake


def client_of(engine: FakeEngine, monkeypatch: pytest.MonkeyPatch) -> DockerClient:
    """A real DockerClient (constructing one asks nothing) whose engine is known to be Docker's, with
    `client.image` answered by the fake."""
    client = DockerClient()
    monkeypatch.setitem(baseimages._DOCKER_ENGINES, baseimages._engine_key(client), True)
    monkeypatch.setattr(client, "image", engine)
    return client


@pytest.mark.parametrize("seed", CASES)
def test_the_catalog_answers_exactly_like_the_engine_in_two_calls(seed: int) -> None:
    rng = random.Random(seed)
    present = list(dict.fromkeys(ref(rng) for _ in range(rng.randrange(7))))
    absent = [r for r in (ref(rng) for _ in range(rng.randrange(5))) if r not in present]
    # Near misses: the same repository under another tag, the same tag in another registry.
    absent += [Ref(p.registry, p.path, p.tag + "x") for p in present[:2]]
    absent += [Ref("quay.io", p.path, p.tag) for p in present[:2] if p.registry != "quay.io"]
    with pytest.MonkeyPatch.context() as monkeypatch:
        engine = FakeEngine()
        monkeypatch.setattr(baseimages, "run_docker", engine.run)
        for one in present:
            engine.add(one, labels={"ref": repr(one)})
        asked = [rng.choice(one.spellings()) for one in present + absent]
        catalog = ImageCatalog(client_of(engine, monkeypatch), asked, labelled=asked)
        snapshot_calls = len(engine.cli_calls)

        for name in asked:
            expected = engine.resolve(name)
            assert catalog.exists(name) == (expected is not None), name
            assert catalog.image_id(name) == expected, name
            facts = catalog.facts(name)
            assert (facts.id if facts else None) == expected
            if facts is not None:
                assert facts.labels == engine.labels[facts.id]
        assert snapshot_calls <= 2
        assert len(engine.cli_calls) == snapshot_calls, "answered from the snapshot"
        # Hex-looking names that are absent could be id prefixes: only those are confirmed directly.
        assert all(baseimages._resolvable_otherwise(name) for name in engine.direct_calls)


def test_an_absent_name_that_could_be_an_id_prefix_is_asked_directly(
    engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    image_id = engine.add(Ref("docker.io", ("base",), "1"))
    prefix = image_id.removeprefix("sha256:")[:10]
    catalog = ImageCatalog(client_of(engine, monkeypatch), [prefix, f"sha256:{prefix}", "base:1"])
    assert catalog.image_id(prefix) == image_id
    assert catalog.image_id(f"sha256:{prefix}") == image_id
    assert engine.direct_calls == [prefix, f"sha256:{prefix}"]


def test_a_digest_or_a_name_not_listed_is_asked_directly_once(
    engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine.add(Ref("docker.io", ("base",), "1"))
    digest = "base@sha256:" + "b" * 64
    catalog = ImageCatalog(client_of(engine, monkeypatch), ["base:1", digest])
    assert not catalog.exists(digest)
    assert catalog.exists("other:2") is False
    assert catalog.exists("other:2") is False
    assert catalog.exists("base:1")
    assert engine.direct_calls == [digest, "other:2"]


def test_a_failed_snapshot_falls_back_to_asking_each_name(
    engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    image_id = engine.add(Ref("docker.io", ("base",), "1"), labels={"a": "b"})

    def gone(args: list[Any], return_stderr: bool = False) -> str:
        if args[1:3] == ["image", "inspect"]:
            raise DockerException([str(a) for a in args], 1)
        return engine.run(args)

    monkeypatch.setattr(baseimages, "run_docker", gone)
    catalog = ImageCatalog(client_of(engine, monkeypatch), ["base:1"], labelled=["base:1"])
    facts = catalog.facts("base:1")
    assert facts is not None and facts.id == image_id and facts.labels == {"a": "b"}
    assert engine.direct_calls == ["base:1"]


def test_a_test_double_or_podman_is_never_snapshotted(engine: FakeEngine) -> None:
    double = SimpleNamespace(image=engine)
    catalog = ImageCatalog(double, ["base:1"])  # type: ignore[arg-type]
    assert engine.cli_calls == []
    assert catalog.exists("base:1") is False
    assert engine.direct_calls == ["base:1"]


def test_podman_engines_are_asked_name_by_name(engine: FakeEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    client = client_of(engine, monkeypatch)
    monkeypatch.setitem(baseimages._DOCKER_ENGINES, baseimages._engine_key(client), False)
    ImageCatalog(client, ["base:1"]).exists("base:1")
    assert engine.cli_calls == [] and engine.direct_calls == ["base:1"]


@pytest.mark.parametrize("present", [set(), {"configured"}, {"standin"}, {"configured", "standin"}])
def test_locally_available_chooses_as_before_in_at_most_two_calls(
    engine: FakeEngine, monkeypatch: pytest.MonkeyPatch, present: set[str]
) -> None:
    configured = BaseImages()
    for kind in baseimages.KINDS:
        image = getattr(configured, kind)
        standin = baseimages.standin_for(kind, image).image
        for which, name in (("configured", image), ("standin", standin)):
            if which in present:
                repository, _, tag_ = name.rpartition(":")
                engine.add(Ref("docker.io", tuple(repository.split("/")), tag_))
    client = client_of(engine, monkeypatch)

    chosen = locally_available(configured, client)

    for kind in baseimages.KINDS:
        image = getattr(configured, kind)
        standin = baseimages.standin_for(kind, image).image
        expected = standin if not engine.exists(image) and engine.exists(standin) else image
        assert getattr(chosen, kind) == expected
    assert len(engine.cli_calls) <= 1  # exists() needs the listing only


# --- the whole check from one snapshot ---------------------------------------------------------------------


def shop(root: Path, dockerfiles: dict[str, str]) -> SystemSpec:
    services = []
    for name, text in dockerfiles.items():
        folder = root / "services" / name
        folder.mkdir(parents=True)
        (folder / "Dockerfile").write_text(text)
        services.append(ServiceSpec(name, folder, folder / "Dockerfile", 8000, image=f"shop-{name}:test"))
    return SystemSpec("shop", root, tuple(services))


def as_ref(name: str) -> Ref:
    repository, _, tag_ = name.rpartition(":")
    return Ref("docker.io", tuple(repository.split("/")), tag_)


@pytest.mark.parametrize("online", [False, True])
@pytest.mark.parametrize("built", [False, True])
def test_the_check_from_one_catalog_gives_the_answers_of_asking_image_by_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, online: bool, built: bool
) -> None:
    system = shop(
        tmp_path,
        {
            "orders": "ARG PYTHON_IMAGE=python:3.11-slim\nFROM ${PYTHON_IMAGE}\n",
            "billing": "FROM python:3.11-slim\n",
            "legacy": "FROM python:3.11-slim@sha256:" + "c" * 64 + "\n",
        },
    )
    engine = FakeEngine()
    monkeypatch.setattr(baseimages, "run_docker", engine.run)
    for kind in baseimages.KINDS:
        image = getattr(BaseImages(), kind)
        engine.add(as_ref(baseimages.standin_for(kind, image).image))
        if online:
            engine.add(as_ref(image))
    direct = SimpleNamespace(image=engine)  # a test double: asked image by image, as before
    base = locally_available(system.base_images, direct)  # type: ignore[arg-type]
    if built:
        for state in images.check_images(system, base, direct):  # type: ignore[arg-type]
            labels = {images.LABEL_INPUTS_HASH: state.inputs.inputs_hash}
            engine.add(as_ref(state.image), labels=labels)
    expected = images.check_images(system, base, direct)  # type: ignore[arg-type]
    engine.cli_calls.clear()
    engine.direct_calls.clear()

    client = client_of(engine, monkeypatch)
    catalog = images.catalog_for_check(system, client)
    shared = locally_available(system.base_images, client, catalog=catalog)
    states = images.check_images(system, shared, client, catalog=catalog)
    shared_calls = len(engine.cli_calls)
    alone = images.check_images(system, locally_available(system.base_images, client), client)

    assert shared == base
    for got in (states, alone):
        assert [(s.service, s.image_id, s.fresh, s.changed, s.substitutions) for s in got] == [
            (s.service, s.image_id, s.fresh, s.changed, s.substitutions) for s in expected
        ]
        assert [s.inputs.inputs_hash for s in got] == [s.inputs.inputs_hash for s in expected]
    assert all(s.fresh for s in states) == built
    # The shared catalog: one listing and one inspect; the digest FROM is asked directly, as before.
    assert shared_calls <= 2
    # Without it: locally_available lists, then the check lists and inspects.
    assert len(engine.cli_calls) - shared_calls <= 3
    assert all("@" in name or baseimages._resolvable_otherwise(name) for name in engine.direct_calls)
