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
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
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
from .podman import classic_build_quietly, is_podman

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


def locally_available(configured: BaseImages | None = None, client: DockerClient = docker) -> BaseImages:
    """The images `resolve_base_images` chose, found without pulling or building anything.

    A configured image present locally wins; otherwise its stand-in, when that exists. This is what the
    freshness check and the stack use, so that they agree with the build step.
    """
    configured = configured or configured_base_images()
    chosen = configured
    for kind in KINDS:
        image = getattr(configured, kind)
        try:
            standin = standin_for(kind, image)
        except BuildError:  # no stand-in for this PostgreSQL major: the configured image or nothing
            continue
        if image != standin.image and not client.image.exists(image) and client.image.exists(standin.image):
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
    ) -> None:
        self.client = client
        self.for_build = for_build
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


def engine_check(client: DockerClient = docker) -> None:
    """Fail with one actionable message when no Docker engine answers."""
    try:
        client.version()
    except DockerException as exc:
        raise EngineError(
            "the Docker engine does not answer "
            f"({_tail(exc, 1) or exc}); start it, or on Debian run scripts/install-docker-engine.sh"
        ) from exc
    except FileNotFoundError as exc:
        raise EngineError(
            "the docker command is not installed; on Debian run scripts/install-docker-engine.sh"
        ) from exc


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
