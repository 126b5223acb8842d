"""Third-party images a stack needs: the registry ones when they can be had, offline stand-ins otherwise.

Real users pull `postgres`, `rabbitmq:*-management` and `python:*-slim`. On a machine without a
registry the toolkit builds stand-ins from Debian packages instead: a minimal bookworm root file system
(debootstrap) imported as `integration-local/debian:bookworm`, then one small Dockerfile per stand-in
(`integration/standins/`). Each stand-in carries a label with the hash of its recipe, so a second run
reuses it and a changed recipe rebuilds it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from python_on_whales import DockerClient, docker
from python_on_whales.exceptions import DockerException, NoSuchImage

from .errors import BuildError, EngineError
from .model import (
    OFFLINE_BROKER_IMAGE,
    OFFLINE_POSTGRES_IMAGE,
    OFFLINE_PYTHON_IMAGE,
    BaseImages,
)

log = logging.getLogger("integration.images")

DEBIAN_SUITE = "bookworm"
DEBIAN_BASE_IMAGE = f"integration-local/debian:{DEBIAN_SUITE}"
LABEL_RECIPE_HASH = "io.integration.recipe-hash"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
RECIPES = Path(__file__).parent / "standins"

# Setting this skips registry pulls and uses the stand-ins straight away.
OFFLINE_ENV = "INTEGRATION_OFFLINE"


@dataclass(frozen=True)
class StandIn:
    """One offline stand-in image and the recipe folder it is built from."""

    kind: str  # postgres, broker, python: the BaseImages field it replaces
    image: str
    recipe: str  # folder under integration/standins


STANDINS = (
    StandIn("postgres", OFFLINE_POSTGRES_IMAGE, "postgres"),
    StandIn("broker", OFFLINE_BROKER_IMAGE, "rabbitmq"),
    StandIn("python", OFFLINE_PYTHON_IMAGE, "python"),
)


@dataclass(frozen=True)
class ImageOutcome:
    """What happened to one base image, for the summary line and the benchmark."""

    kind: str
    image: str
    action: str  # "present", "pulled", "reused", "built"
    seconds: float = 0.0


def debian_mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this machine already uses, read from its apt sources; never hard-coded."""
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


def _debian_recipe_hash() -> str:
    digest = hashlib.sha256(f"{DEBIAN_SUITE}|minbase|ca-certificates".encode())
    digest.update(_ca_bundle_bytes())
    return digest.hexdigest()[:16]


def ensure_debian_base(client: DockerClient = docker) -> ImageOutcome:
    """Import a minimal Debian root file system as an image, unless an identical one exists."""
    wanted = _debian_recipe_hash()
    if _recipe_hash_of(client, DEBIAN_BASE_IMAGE) == wanted:
        return ImageOutcome("debian", DEBIAN_BASE_IMAGE, "reused")
    if shutil.which("debootstrap") is None:
        raise BuildError(
            "debootstrap is not installed; it builds the offline base image. "
            "Install it (apt-get install debootstrap) or make the registry images available"
        )
    started = time.monotonic()
    mirror = debian_mirror()
    log.info("building %s with debootstrap (about a minute)", DEBIAN_BASE_IMAGE)
    with tempfile.TemporaryDirectory(prefix="integration-rootfs-") as work:
        rootfs = Path(work) / "rootfs"
        result = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=ca-certificates",
                DEBIAN_SUITE,
                str(rootfs),
                mirror,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
            raise BuildError(f"debootstrap of {DEBIAN_SUITE} failed (exit {result.returncode}):\n{tail}")
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
        client.image.import_(
            tarball,
            tag=DEBIAN_BASE_IMAGE,
            changes=[
                f"LABEL {LABEL_RECIPE_HASH}={wanted}",
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                'CMD ["bash"]',
            ],
        )
    return ImageOutcome("debian", DEBIAN_BASE_IMAGE, "built", time.monotonic() - started)


def ensure_standin(standin: StandIn, client: DockerClient = docker) -> ImageOutcome:
    """Build one stand-in from its recipe unless an image with the same recipe hash exists."""
    recipe = RECIPES / standin.recipe
    wanted = _hash_folder(recipe, _debian_recipe_hash().encode())
    if _recipe_hash_of(client, standin.image) == wanted:
        return ImageOutcome(standin.kind, standin.image, "reused")
    ensure_debian_base(client)
    started = time.monotonic()
    log.info("building the offline stand-in %s", standin.image)
    try:
        client.build(
            recipe,
            tags=[standin.image],
            labels={LABEL_RECIPE_HASH: wanted},
            build_args={"BASE_IMAGE": DEBIAN_BASE_IMAGE},
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


def resolve_base_images(
    configured: BaseImages | None = None,
    client: DockerClient = docker,
    report: Callable[[str], None] = print,
) -> tuple[BaseImages, list[ImageOutcome]]:
    """Decide which image stands for each of postgres, broker and python; build stand-ins as needed.

    A configured image that is present locally, or can be pulled, is used as it is. Otherwise its
    stand-in is used, and the report says so in one line.
    """
    configured = configured or BaseImages()
    engine_check(client)
    offline = os.environ.get(OFFLINE_ENV, "") not in ("", "0")
    chosen = configured
    outcomes: list[ImageOutcome] = []
    for standin in STANDINS:
        image = getattr(configured, standin.kind)
        if image == standin.image:
            outcomes.append(ensure_standin(standin, client))
            continue
        if client.image.exists(image):
            outcomes.append(ImageOutcome(standin.kind, image, "present"))
            continue
        if not offline and _can_pull(client, image):
            outcomes.append(ImageOutcome(standin.kind, image, "pulled"))
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
    configured = configured or BaseImages()
    chosen = configured
    for standin in STANDINS:
        image = getattr(configured, standin.kind)
        if image != standin.image and not client.image.exists(image) and client.image.exists(standin.image):
            chosen = replace(chosen, **{standin.kind: standin.image})
    return chosen


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


def build_all_standins(client: DockerClient = docker) -> list[ImageOutcome]:
    """Build (or reuse) every stand-in: the `images` command."""
    engine_check(client)
    outcomes = [ensure_debian_base(client)]
    outcomes.extend(ensure_standin(standin, client) for standin in STANDINS)
    return outcomes
