"""Third-party images a stack needs: the registry ones when they can be had, offline stand-ins otherwise.

Which images a stack asks for is configuration: the registry names by default, each replaceable through
an environment variable (`configured_base_images`, the one place that reads them):

    INTEGRATION_POSTGRES_IMAGE   default postgres:15      (postgres:17 for PostgreSQL 17)
    INTEGRATION_BROKER_IMAGE     default rabbitmq:3.12-management
    INTEGRATION_PYTHON_IMAGE     default python:3.11-slim

Real users pull them. On a machine without a registry the toolkit builds stand-ins from Debian packages
instead: a minimal Debian root file system (debootstrap) imported as `integration-local/debian:<suite>`,
then one small Dockerfile per stand-in (`integration/standins/`). PostgreSQL has one stand-in per major
that a Debian release packages (`POSTGRES_SUITES`: 15 from bookworm, 17 from trixie), built only when a
stack asks for that major. Each stand-in carries a label with the hash of its recipe, so a second run
reuses it and a changed recipe rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

from python_on_whales import DockerClient, docker
from python_on_whales.exceptions import DockerException, NoSuchImage
from python_on_whales.utils import run as run_docker

from .errors import BuildError, ConfigError, EngineError
from .model import (
    IMAGE_RE,
    OFFLINE_BROKER_IMAGE,
    OFFLINE_PYTHON_IMAGE,
    BaseImages,
)
from .podman import PODMAN_COMPONENT, classic_build_quietly, is_podman

log = logging.getLogger("integration.images")

DEBIAN_SUITE = "bookworm"
DEBIAN_BASE_IMAGE = f"integration-local/debian:{DEBIAN_SUITE}"
LABEL_RECIPE_HASH = "io.integration.recipe-hash"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
RECIPES = Path(__file__).parent / "standins"

# Setting this skips registry pulls and uses the stand-ins straight away.
OFFLINE_ENV = "INTEGRATION_OFFLINE"
# A folder laid out like /etc/apt whose sources name the Debian mirror (default: /etc/apt itself).
APT_SOURCES_ENV = "INTEGRATION_APT_SOURCES"

# The one place the base images are configured from the environment: BaseImages field -> variable.
BASE_IMAGE_ENV = {
    "postgres": "INTEGRATION_POSTGRES_IMAGE",
    "broker": "INTEGRATION_BROKER_IMAGE",
    "python": "INTEGRATION_PYTHON_IMAGE",
}

# PostgreSQL majors that Debian packages, and the release that has each: the majors with a stand-in.
POSTGRES_SUITES = {"15": "bookworm", "17": "trixie"}
DEFAULT_POSTGRES_MAJOR = "15"
_MAJOR_TAG = re.compile(r":(\d+)(?:[.-][A-Za-z0-9_.-]*)?$")


def configured_base_images(environ: Mapping[str, str] | None = None) -> BaseImages:
    """The base images a stack asks for: `INTEGRATION_{POSTGRES,BROKER,PYTHON}_IMAGE`, else the defaults.

    An empty variable counts as unset. A value that is not an image reference is a ConfigError naming
    the variable.
    """
    environ = os.environ if environ is None else environ
    chosen: dict[str, str] = {}
    for kind, variable in BASE_IMAGE_ENV.items():
        value = environ.get(variable, "").strip()
        if not value:
            continue
        if not IMAGE_RE.fullmatch(value):
            raise ConfigError(
                f"${variable}",
                None,
                f"{value!r} is not an image reference like {getattr(BaseImages(), kind)}; "
                "fix or unset the variable",
            )
        chosen[kind] = value
    return BaseImages(**chosen)


def postgres_major(image: str) -> str | None:
    """The PostgreSQL major an image's tag names (`postgres:17`, `postgres:17.2-bookworm` -> "17")."""
    match = _MAJOR_TAG.search(image.rsplit("/", 1)[-1])
    return match.group(1) if match else None


@dataclass(frozen=True)
class StandIn:
    """One offline stand-in image, the recipe folder it is built from and the Debian release under it."""

    kind: str  # postgres, broker, python: the BaseImages field it replaces
    image: str
    recipe: str  # folder under integration/standins
    suite: str = DEBIAN_SUITE
    build_args: tuple[tuple[str, str], ...] = ()


def postgres_standin(major: str = DEFAULT_POSTGRES_MAJOR) -> StandIn:
    """The stand-in for one PostgreSQL major, from the Debian release that packages it."""
    suite = POSTGRES_SUITES.get(major)
    if suite is None:
        known = ", ".join(f"{m} ({s})" for m, s in POSTGRES_SUITES.items())
        raise BuildError(
            f"no offline stand-in for PostgreSQL {major}: Debian packages only {known}. Make "
            f"postgres:{major} pullable, or choose a major with a stand-in "
            f"(INTEGRATION_POSTGRES_IMAGE=postgres:{DEFAULT_POSTGRES_MAJOR})"
        )
    image = f"integration-local/postgres:{major}"
    return StandIn("postgres", image, "postgres", suite, (("PG_MAJOR", major),))


STANDINS = (
    postgres_standin(DEFAULT_POSTGRES_MAJOR),
    StandIn("broker", OFFLINE_BROKER_IMAGE, "rabbitmq"),
    StandIn("python", OFFLINE_PYTHON_IMAGE, "python"),
)
KINDS = tuple(f.name for f in fields(BaseImages))


def standin_for(kind: str, image: str) -> StandIn:
    """The stand-in that replaces `image`: for PostgreSQL the one of the major its tag names.

    A postgres image whose tag names no major gets the default major's stand-in; a major that Debian
    does not package is a BuildError.
    """
    if kind == "postgres":
        return postgres_standin(postgres_major(image) or DEFAULT_POSTGRES_MAJOR)
    for standin in STANDINS:
        if standin.kind == kind:
            return standin
    raise ValueError(f"no stand-in kind {kind!r}; known: {', '.join(KINDS)}")


_PYTHON_TAG = re.compile(r"^(\d+\.\d+)(?:-slim)?(?:-bookworm)?$")
_POSTGRES_TAG = re.compile(r"^(\d+)(?:\.\d+)?(?:-(?:bookworm|trixie))?$")
_DOCKER_HUB = ("docker.io/library/", "docker.io/", "index.docker.io/library/", "index.docker.io/")


def _normalized_reference(image: str) -> tuple[str, str] | None:
    """(repository, tag) with Docker Hub's implicit prefixes dropped; None for a digest reference,
    whose content no stand-in has."""
    if "@" in image:
        return None
    for prefix in _DOCKER_HUB:
        if image.startswith(prefix):
            image = image[len(prefix) :]
            break
    repository, colon, tag = image.rpartition(":")
    if not colon or "/" in tag:
        repository, tag = image, "latest"
    return repository, tag


def standin_replacing(image: str, configured: BaseImages | None = None) -> StandIn | None:
    """The stand-in that can take `image`'s place in a FROM line, or None. Pure: no engine asked.

    `python:<X.Y>`, `python:<X.Y>-slim` (and `-bookworm`) when X.Y is the python stand-in's version;
    `postgres:<major>` (and `<major>.<minor>`, `-bookworm`, `-trixie`) for a major with a stand-in; and
    the configured or default image of each kind, which the stand-ins replace anyway. A digest, another
    version, an alpine variant or an image with no stand-in gives None."""
    reference = _normalized_reference(image)
    if reference is None or image in {s.image for s in STANDINS} or image.startswith("integration-local/"):
        return None
    repository, tag = reference
    python_standin = standin_for("python", OFFLINE_PYTHON_IMAGE)
    if repository == "python":
        version = _PYTHON_TAG.match(tag)
        wanted = _PYTHON_TAG.match(python_standin.image.rsplit(":", 1)[1])
        return python_standin if version and wanted and version.group(1) == wanted.group(1) else None
    if repository == "postgres":
        major = _POSTGRES_TAG.match(tag)
        return postgres_standin(major.group(1)) if major and major.group(1) in POSTGRES_SUITES else None
    for images in (configured or BaseImages(), BaseImages()):
        for kind in KINDS:
            if _normalized_reference(getattr(images, kind)) == reference:
                try:
                    return standin_for(kind, getattr(images, kind))
                except BuildError:
                    return None
    return None


def debian_base_image(suite: str = DEBIAN_SUITE) -> str:
    return f"integration-local/debian:{suite}"


@dataclass(frozen=True)
class ImageOutcome:
    """What happened to one base image, for the summary line and the benchmark."""

    kind: str
    image: str
    action: str  # "present", "pulled", "reused", "built"
    seconds: float = 0.0


def debian_mirror(sources_dir: Path | None = None) -> str:
    """The Debian mirror this machine already uses, read from its apt sources; never hard-coded.

    `$INTEGRATION_APT_SOURCES` names another folder laid out like /etc/apt, for a host whose own sources
    are not Debian's (CI on Ubuntu copies them out of Debian's image).
    """
    if sources_dir is None:
        sources_dir = Path(os.environ.get(APT_SOURCES_ENV) or "/etc/apt")
    candidates: list[str] = []
    for sources in sorted((sources_dir / "sources.list.d").glob("*.sources")):
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:"):
                candidates.extend(line.split()[1:])
    legacy = sources_dir / "sources.list"
    if legacy.exists():
        for line in legacy.read_text().splitlines():
            parts = line.split()
            if parts and parts[0] == "deb":
                candidates.extend(p for p in parts[1:] if "://" in p)
    for uri in candidates:
        if "security" not in uri:
            return uri
    raise BuildError(
        f"no Debian mirror found in {sources_dir}/sources.list.d/*.sources or {legacy}; "
        "the offline stand-ins are built from Debian packages and need one"
    )


def _hash_folder(folder: Path, *extra: bytes) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    for blob in extra:
        digest.update(blob)
    return digest.hexdigest()[:16]


def _ca_bundle_bytes() -> bytes:
    return HOST_CA_BUNDLE.read_bytes() if HOST_CA_BUNDLE.exists() else b""


def _recipe_hash_of(client: DockerClient, image: str) -> str | None:
    try:
        return (client.image.inspect(image).config.labels or {}).get(LABEL_RECIPE_HASH)
    except NoSuchImage:
        return None


def _debian_recipe_hash(suite: str = DEBIAN_SUITE) -> str:
    digest = hashlib.sha256(f"{suite}|minbase|ca-certificates".encode())
    digest.update(_ca_bundle_bytes())
    return digest.hexdigest()[:16]


def ensure_debian_base(client: DockerClient = docker, suite: str = DEBIAN_SUITE) -> ImageOutcome:
    """Import a minimal Debian root file system of `suite` as an image, unless an identical one exists."""
    image = debian_base_image(suite)
    wanted = _debian_recipe_hash(suite)
    if _recipe_hash_of(client, image) == wanted:
        return ImageOutcome("debian", image, "reused")
    if shutil.which("debootstrap") is None:
        raise BuildError(
            "debootstrap is not installed; it builds the offline base image. "
            "Install it (apt-get install debootstrap) or make the registry images available"
        )
    started = time.monotonic()
    mirror = debian_mirror()
    log.info("building %s with debootstrap (about a minute)", image)
    with tempfile.TemporaryDirectory(prefix="integration-rootfs-") as work:
        rootfs = Path(work) / "rootfs"
        result = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=ca-certificates",
                suite,
                str(rootfs),
                mirror,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
            raise BuildError(f"debootstrap of {suite} failed (exit {result.returncode}):\n{tail}")
        bundle = _ca_bundle_bytes()
        if bundle:
            # Trust the host's CA bundle so that apt and pip inside the images reach what the host reaches.
            local_ca = rootfs / "usr/local/share/ca-certificates/host-bundle.crt"
            local_ca.parent.mkdir(parents=True, exist_ok=True)
            local_ca.write_bytes(bundle)
            (rootfs / "etc/ssl/certs/ca-certificates.crt").write_bytes(bundle)
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (rootfs / cache).glob("*"):
                if item.is_file():
                    item.unlink()
        tarball = Path(work) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], check=True)
        changes = [
            f"LABEL {LABEL_RECIPE_HASH}={wanted}",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            'CMD ["bash"]',
        ]
        # why: podman's Docker-compatible API answers an import with "sha256:<id>: sha256:<id>", which
        # `client.image.import_` then fails to inspect ("invalid reference format"); the import is run
        # through the same CLI and client config without reading its answer: the image is found by tag.
        import_cmd = [*client.client_config.docker_cmd, "image", "import"]
        import_cmd += [f"--change={change}" for change in changes]
        run_docker([*import_cmd, str(tarball), image])
    return ImageOutcome("debian", image, "built", time.monotonic() - started)


def ensure_standin(standin: StandIn, client: DockerClient = docker) -> ImageOutcome:
    """Build one stand-in from its recipe unless an image with the same recipe hash exists."""
    recipe = RECIPES / standin.recipe
    build_args = dict(standin.build_args)
    wanted = _hash_folder(
        recipe,
        _debian_recipe_hash(standin.suite).encode(),
        *(f"{key}={value}".encode() for key, value in standin.build_args),
    )
    if _recipe_hash_of(client, standin.image) == wanted:
        return ImageOutcome(standin.kind, standin.image, "reused")
    ensure_debian_base(client, standin.suite)
    started = time.monotonic()
    log.info("building the offline stand-in %s", standin.image)
    try:
        if is_podman(client):
            # why: podman serves no BuildKit, so buildx cannot build there; the classic builder can.
            classic_build_quietly(
                client,
                recipe,
                tags=[standin.image],
                labels={LABEL_RECIPE_HASH: wanted},
                build_args={"BASE_IMAGE": debian_base_image(standin.suite), **build_args},
            )
        else:
            client.build(
                recipe,
                tags=[standin.image],
                labels={LABEL_RECIPE_HASH: wanted},
                build_args={"BASE_IMAGE": debian_base_image(standin.suite), **build_args},
                load=True,
                progress=False,
            )
    except DockerException as exc:
        raise BuildError(f"building {standin.image} from {recipe} failed:\n{_tail(exc)}") from exc
    return ImageOutcome(standin.kind, standin.image, "built", time.monotonic() - started)


def _tail(exc: DockerException, lines: int = 25) -> str:
    # The error is on stderr; stdout may hold a half-written JSON document (docker version --format).
    text = (exc.stderr or "").strip() or (exc.stdout or "").strip()
    return "\n".join(text.splitlines()[-lines:])


def _can_pull(client: DockerClient, image: str) -> bool:
    try:
        client.image.pull(image, quiet=True)
    except DockerException as exc:
        reason = (exc.stderr or str(exc)).strip().splitlines()
        log.debug("pull of %s failed: %s", image, reason[-1] if reason else exc)
        return False
    return True


def _offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0")


def _usable(client: DockerClient, image: str, *, pull: bool) -> str | None:
    """How `image` can be had: "present" (local), "pulled", or None (neither: a stand-in's turn).
    `pull` False, or $INTEGRATION_OFFLINE set, never pulls."""
    if client.image.exists(image):
        return "present"
    if pull and not _offline() and _can_pull(client, image):
        return "pulled"
    return None


def resolve_base_images(
    configured: BaseImages | None = None,
    client: DockerClient = docker,
    report: Callable[[str], None] = print,
) -> tuple[BaseImages, list[ImageOutcome]]:
    """Decide which image stands for each of postgres, broker and python; build stand-ins as needed.

    A configured image that is present locally, or can be pulled, is used as it is. Otherwise its
    stand-in is used, and the report says so in one line.
    """
    configured = configured or configured_base_images()
    engine_check(client)
    chosen = configured
    outcomes: list[ImageOutcome] = []
    for kind in KINDS:
        image = getattr(configured, kind)
        standin = standin_for(kind, image)
        if image == standin.image:
            outcomes.append(ensure_standin(standin, client))
            continue
        how = _usable(client, image, pull=True)
        if how is not None:
            outcomes.append(ImageOutcome(standin.kind, image, how))
            continue
        report(f"{image} cannot be pulled; using the offline stand-in {standin.image}")
        outcomes.append(ensure_standin(standin, client))
        chosen = replace(chosen, **{standin.kind: standin.image})
    return chosen, outcomes


def _standins_of(configured: BaseImages) -> dict[str, StandIn]:
    """Each kind's stand-in; a PostgreSQL major without one has none: the configured image or nothing."""
    candidates: dict[str, StandIn] = {}
    for kind in KINDS:
        try:
            candidates[kind] = standin_for(kind, getattr(configured, kind))
        except BuildError:
            continue
    return candidates


def base_image_names(configured: BaseImages) -> list[str]:
    """Every image `locally_available` may ask about: each configured image and its stand-in."""
    names = [getattr(configured, kind) for kind in KINDS]
    return names + [standin.image for standin in _standins_of(configured).values()]


def locally_available(
    configured: BaseImages | None = None,
    client: DockerClient = docker,
    catalog: ImageCatalog | None = None,
) -> BaseImages:
    """The images `resolve_base_images` chose, found without pulling or building anything.

    A configured image present locally wins; otherwise its stand-in, when that exists. This is what the
    freshness check and the stack use, so that they agree with the build step. The engine is asked once
    for all of them (`ImageCatalog`), or `catalog` answers: one the caller took for the whole check.
    """
    configured = configured or configured_base_images()
    candidates = _standins_of(configured)
    if catalog is None:
        catalog = ImageCatalog(client, base_image_names(configured))
    chosen = configured
    for kind, standin in candidates.items():
        image = getattr(configured, kind)
        if image != standin.image and not catalog.exists(image) and catalog.exists(standin.image):
            chosen = replace(chosen, **{kind: standin.image})
    return chosen


class FromImages:
    """Which image each FROM line's base is built on: the image itself when it is here (or, for a build,
    can be pulled), else the stand-in that replaces it (`standin_replacing`), else the image as named.

    The same decision as `resolve_base_images` for the configured images, for the images a Dockerfile
    names itself (`FROM python:3.11-slim`). A build (`for_build=True`) may pull and builds a missing
    stand-in; the freshness check (`for_build=False`) asks the engine only what is present, and so
    reaches the same image the build used. Decisions are kept for the object's life (one build step).
    """

    def __init__(
        self,
        client: DockerClient = docker,
        *,
        for_build: bool,
        configured: BaseImages | None = None,
        chosen: BaseImages | None = None,
        catalog: ImageCatalog | None = None,
    ) -> None:
        self.client = client
        self.for_build = for_build
        if catalog is not None and for_build:
            raise ValueError("a build pulls and builds: it asks the engine itself, never a snapshot")
        self.catalog = catalog
        self.configured = configured
        # Configured images that `resolve_base_images` already replaced: not pulled a second time.
        self._unpullable = (
            {getattr(configured, k) for k in KINDS if getattr(configured, k) != getattr(chosen, k)}
            if configured is not None and chosen is not None
            else set()
        )
        self._chosen: dict[str, str] = {}

    def choose(self, image: str) -> str:
        if image not in self._chosen:
            self._chosen[image] = self._decide(image)
        return self._chosen[image]

    def _decide(self, image: str) -> str:
        if not IMAGE_RE.fullmatch(image):
            return image  # not an image reference: the build says what is wrong with it
        if self.catalog is not None:
            # The check: only what is present counts, as `_usable(..., pull=False)` would say.
            if self.catalog.exists(image):
                return image
            standin = standin_replacing(image, self.configured)
            return standin.image if standin is not None and self.catalog.exists(standin.image) else image
        pull = self.for_build and image not in self._unpullable
        if _usable(self.client, image, pull=pull) is not None:
            return image
        standin = standin_replacing(image, self.configured)
        if standin is None:
            return image
        if self.for_build:
            ensure_standin(standin, self.client)
            return standin.image
        return standin.image if self.client.image.exists(standin.image) else image


# --- one snapshot of the local images, for the freshness check -------------------------------------------

# Docker's reference grammar (distribution/reference), kept strict: a name outside it is asked directly.
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*(?::[0-9]+)?")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
# What else the engine resolves a name to once no tag has it: an image id prefix (`abc123`,
# `sha256:abc123`) and, in older engines, the deprecated `repo:<short id>`.
_ID_PREFIX = re.compile(r"(?:sha256:)?[0-9a-f]+")
_SHORT_ID = re.compile(r"[0-9a-f]{12}")
_DEFAULT_DOMAIN = "docker.io"


def canonical_reference(name: str) -> str | None:
    """`name` as the engine resolves a tag: `domain/path:tag`, with Docker Hub's implicit `docker.io`,
    `library/` and `:latest` filled in (`postgres` -> `docker.io/library/postgres:latest`). None for a
    name the catalog does not answer: a digest reference, an id, anything outside Docker's grammar."""
    if len(name) > 255 or "@" in name:
        return None
    first, slash, rest = name.partition("/")
    # Docker's rule: the first component is a registry when it has a dot or a port, or is localhost.
    if slash and ("." in first or ":" in first or first == "localhost"):
        if not _DOMAIN.fullmatch(first):
            return None
        domain = "docker.io" if first == "index.docker.io" else first
    else:
        domain, rest = _DEFAULT_DOMAIN, name
    path, colon, tag = rest.partition(":")
    if not colon:
        tag = "latest"
    if ":" in tag or not _TAG.fullmatch(tag):
        return None
    if not all(_PATH_COMPONENT.fullmatch(part) for part in path.split("/")):
        return None
    if domain == _DEFAULT_DOMAIN and "/" not in path:
        path = f"library/{path}"
    return f"{domain}/{path}:{tag}"


def familiar_reference(canonical: str) -> str:
    """The short form the engine shows, and that its `reference` filter matches: `docker.io/library/x:t`
    -> `x:t`, `docker.io/user/x:t` -> `user/x:t` (a filter of the long form matches nothing)."""
    prefix = f"{_DEFAULT_DOMAIN}/"
    if not canonical.startswith(prefix):
        return canonical
    short = canonical[len(prefix) :]
    repository = short.rpartition(":")[0]
    if repository.startswith("library/") and repository.count("/") == 1:
        short = short[len("library/") :]
    return short


def _resolvable_otherwise(name: str) -> bool:
    """Whether the engine could find an image for `name` that no tag names (an id prefix, `repo:<id>`):
    the snapshot's "absent" is then not the engine's answer."""
    tag = name.rpartition("/")[2].partition(":")[2]
    return bool(_ID_PREFIX.fullmatch(name) or _SHORT_ID.fullmatch(tag[:12]))


@dataclass(frozen=True)
class ImageFacts:
    """What the freshness check reads of one local image."""

    id: str
    labels: Mapping[str, str]


def _engine_key(client: DockerClient) -> tuple[str, ...]:
    # The CLI reads DOCKER_HOST and DOCKER_CONTEXT itself: they pick the engine as much as the command.
    docker_cmd = tuple(str(part) for part in client.client_config.docker_cmd)
    return (*docker_cmd, os.environ.get("DOCKER_HOST", ""), os.environ.get("DOCKER_CONTEXT", ""))


# Engines `engine_check` heard answer: key -> whether it is Docker's own (not Podman).
_DOCKER_ENGINES: dict[tuple[str, ...], bool] = {}


def _remember_engine(client: DockerClient, version: object) -> None:
    if not isinstance(client, DockerClient):
        return  # a test double: never snapshotted (`_snapshots_reliably`)
    components = getattr(getattr(version, "server", None), "components", None)
    if isinstance(components, list):
        names = {getattr(component, "name", None) for component in components}
        _DOCKER_ENGINES[_engine_key(client)] = PODMAN_COMPONENT not in names


def _snapshots_reliably(client: DockerClient) -> bool:
    """Whether the catalog may answer from a snapshot: a real client of Docker's engine. Podman names
    its images otherwise (`localhost/...`, always a registry) and resolves short names by its own rules;
    a test double has no CLI to list with. Both are asked image by image, as before."""
    if not isinstance(client, DockerClient):
        return False
    known = _DOCKER_ENGINES.get(_engine_key(client))
    return (not is_podman(client)) if known is None else known


class ImageCatalog:
    """The local images the freshness check asks about, from one snapshot taken when it is made.

    One `docker image ls` with a `reference` filter per name gives the id of every present name, and one
    `docker image inspect` of the ids in `labelled` their labels: two engine calls instead of one or two
    per name. Answers are those of `client.image.exists` / `inspect` at the snapshot's time. A name the
    snapshot cannot answer as the engine would (outside Docker's grammar, a digest, an id, one that was
    not listed, an absent one the engine might still resolve as an id) is asked directly, once.

    For the check only: the build pulls and builds, so a snapshot taken before would be out of date.
    """

    def __init__(
        self, client: DockerClient = docker, names: Iterable[str] = (), labelled: Iterable[str] = ()
    ) -> None:
        self.client = client
        self._ids: dict[str, str] = {}  # canonical reference -> image id, for the listed names
        self._labels: dict[str, Mapping[str, str]] = {}  # image id -> labels, for the inspected ids
        self._listed: set[str] = set()  # canonical references the snapshot answers
        self._asked: dict[str, ImageFacts | None] = {}  # names asked directly
        wanted = {c for c in map(canonical_reference, dict.fromkeys(names)) if c is not None}
        if wanted and _snapshots_reliably(client):
            self._take(client, sorted(wanted), set(labelled))

    def _take(self, client: DockerClient, wanted: list[str], labelled: set[str]) -> None:
        listing = [*client.client_config.docker_cmd, "image", "ls", "--no-trunc"]
        listing += ["--format", "{{.ID}} {{.Repository}}:{{.Tag}}"]
        listing += [f"--filter=reference={familiar_reference(c)}" for c in wanted]
        try:
            output = run_docker(listing, return_stderr=False)
        except DockerException:
            return  # nothing listed: every name is asked directly
        ids: dict[str, str] = {}
        for line in (output or "").splitlines():
            image_id, _, reference = line.strip().partition(" ")
            canonical = canonical_reference(reference)
            if canonical is not None and image_id:
                ids[canonical] = image_id
        inspect = sorted({ids[c] for c in map(canonical_reference, labelled) if c in ids})
        if inspect:
            try:
                inspecting = [*client.client_config.docker_cmd, "image", "inspect", *inspect]
                found = json.loads(run_docker(inspecting, return_stderr=False) or "[]")
            except (DockerException, json.JSONDecodeError):
                return  # an image went away between the two calls: no snapshot, every name asked directly
            for image in found:
                self._labels[image["Id"]] = (image.get("Config") or {}).get("Labels") or {}
        self._ids = {c: ids[c] for c in wanted if c in ids}
        self._listed = set(wanted)

    def _listed_id(self, name: str) -> tuple[bool, str | None]:
        """(whether the snapshot answers `name`, the id it lists for it or None when it lists none)."""
        canonical = canonical_reference(name)
        if canonical is None or canonical not in self._listed:
            return False, None
        image_id = self._ids.get(canonical)
        # An absent name the engine might still resolve (an id prefix): the snapshot does not answer.
        return (image_id is not None or not _resolvable_otherwise(name)), image_id

    def facts(self, name: str) -> ImageFacts | None:
        """The image `name` resolves to (its id and labels), or None when there is none."""
        answered, image_id = self._listed_id(name)
        if answered and image_id is None:
            return None
        if answered and image_id is not None and image_id in self._labels:
            return ImageFacts(image_id, self._labels[image_id])
        if name not in self._asked:
            self._asked[name] = self._inspect(name)
        return self._asked[name]

    def _inspect(self, name: str) -> ImageFacts | None:
        try:
            image = self.client.image.inspect(name)
        except NoSuchImage:
            return None
        config = getattr(image, "config", None)
        return ImageFacts(image.id, (config.labels if config else None) or {})

    def image_id(self, name: str) -> str | None:
        """The id of the image `name` resolves to, or None (`client.image.inspect(name).id`)."""
        answered, image_id = self._listed_id(name)
        if answered:
            return image_id
        facts = self.facts(name)
        return facts.id if facts else None

    def exists(self, name: str) -> bool:
        """`client.image.exists(name)`, from the snapshot when it can say."""
        return self.image_id(name) is not None


def engine_check(client: DockerClient = docker) -> None:
    """Fail with one actionable message when no Docker engine answers."""
    try:
        version = client.version()
    except DockerException as exc:
        raise EngineError(
            "the Docker engine does not answer "
            f"({_tail(exc, 1) or exc}); start it, or on Debian run scripts/install-docker-engine.sh"
        ) from exc
    except FileNotFoundError as exc:
        raise EngineError(
            "the docker command is not installed; on Debian run scripts/install-docker-engine.sh"
        ) from exc
    _remember_engine(client, version)


def build_all_standins(
    base_images: BaseImages | None = None, client: DockerClient = docker
) -> list[ImageOutcome]:
    """Build (or reuse) the stand-ins of the configured images (`configured_base_images`): `images`.

    Only the PostgreSQL major asked for is built: `INTEGRATION_POSTGRES_IMAGE=postgres:17` builds the
    trixie base and `integration-local/postgres:17`, the default builds bookworm's 15.
    """
    engine_check(client)
    configured = base_images or configured_base_images()
    standins = [standin_for(kind, getattr(configured, kind)) for kind in KINDS]
    suites = dict.fromkeys(s.suite for s in standins)
    outcomes = [ensure_debian_base(client, suite) for suite in suites]
    outcomes.extend(ensure_standin(standin, client) for standin in standins)
    return outcomes
