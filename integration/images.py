"""Service images: built from the system root with `-f`, stamped with the hash of their inputs.

An image is fresh when its `io.integration.inputs-hash` label equals the hash of its current inputs
(see `buildinputs`). `build_images` rebuilds exactly the stale ones, in parallel; `require_fresh` is the
check the pytest plugin runs when it is started without a build, and refuses stale images by name.

A FROM that names a registry image this machine can neither find nor pull (`FROM python:3.11-slim`) is
built on the stand-in that replaces it, from a rewritten copy of the Dockerfile outside the repository
(`substitution`). The hash is of the original Dockerfile plus the id of the base actually used; the build
and the freshness check decide the base the same way (`baseimages.FromImages`), so they agree.
"""

from __future__ import annotations

import collections
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from python_on_whales import DockerClient, docker
from python_on_whales.exceptions import DockerException, NoSuchImage

from .baseimages import FromImages, ImageCatalog, base_image_names, standin_for, standin_replacing
from .buildinputs import BuildInputs, changed_paths, compute_build_inputs
from .dockerfile import read as read_dockerfile
from .errors import BuildError, ConfigError, StaleImageError
from .model import (
    LABEL_INPUTS_HASH,
    LABEL_ROOT,
    LABEL_SERVICE,
    LABEL_SYSTEM,
    BaseImages,
    ServiceSpec,
    SystemSpec,
)
from .podman import classic_build, is_podman
from .substitution import Substitution, plan, rewrite, rewritten_dockerfile

LABEL_INPUTS_MANIFEST = "io.integration.inputs-manifest"
BUILD_LOG_TAIL = 40

Reporter = Callable[[str], None]


@dataclass(frozen=True)
class ImageState:
    """One service image as checked against its current inputs."""

    service: str
    image: str
    inputs: BuildInputs
    image_id: str | None  # None: no such image
    fresh: bool
    changed: tuple[str, ...] = ()
    action: str = "checked"  # "checked", "fresh" (skipped), "built"
    seconds: float = 0.0
    substitutions: tuple[Substitution, ...] = ()  # FROM lines built on an offline stand-in


def build_args_for(base_images: BaseImages) -> dict[str, str]:
    """Build arguments every service Dockerfile receives."""
    return {"PYTHON_IMAGE": base_images.python}


def _base_identity(
    base_images: BaseImages, client: DockerClient, catalog: ImageCatalog | None = None
) -> dict[str, str]:
    """The python base image's id joins the hash, so that a rebuilt base makes its services stale."""
    return {"<python-image-id>": _image_id(client, base_images.python, catalog)}


def _image_id(client: DockerClient, image: str, catalog: ImageCatalog | None = None) -> str:
    if catalog is not None:
        return catalog.image_id(image) or "missing"
    try:
        return client.image.inspect(image).id
    except NoSuchImage:
        return "missing"


def _prepare(
    service: ServiceSpec,
    system: SystemSpec,
    base_images: BaseImages,
    hash_args: Mapping[str, str],
    bases: FromImages,
    client: DockerClient,
    catalog: ImageCatalog | None = None,
) -> tuple[BuildInputs, tuple[Substitution, ...]]:
    """A service's inputs and the FROM lines it is built on a stand-in for. The hash is of the original
    Dockerfile; each base image other than the python image (already in `hash_args`) adds its id."""
    build_args = build_args_for(base_images)
    dockerfile = read_dockerfile(service.dockerfile)
    substitutions = plan(dockerfile, build_args, bases.choose)
    identities = {}
    for _from, image in dockerfile.external_bases(build_args):
        used = bases.choose(image)
        if used != base_images.python:
            identities[f"<FROM {image}>"] = f"{used}@{_image_id(client, used, catalog)}"
    inputs = compute_build_inputs(system.root, service.dockerfile, hash_args, bases=identities)
    return inputs, substitutions


def _states(
    system: SystemSpec,
    base_images: BaseImages,
    client: DockerClient,
    *,
    for_build: bool,
    catalog: ImageCatalog | None = None,
) -> list[ImageState]:
    """Every service's inputs and image. The check (`catalog`) asks one snapshot of the engine; the build
    asks the engine directly, since it may pull and build base images on the way."""
    hash_args = build_args_for(base_images) | _base_identity(base_images, client, catalog)
    bases = FromImages(
        client, for_build=for_build, configured=system.base_images, chosen=base_images, catalog=catalog
    )
    states = []
    for service in system.services:
        inputs, substitutions = _prepare(service, system, base_images, hash_args, bases, client, catalog)
        state = inspect_state(service, inputs, client, catalog=catalog)
        states.append(replace(state, substitutions=substitutions))
    return states


def images_checked(system: SystemSpec, base_images: BaseImages) -> tuple[list[str], list[str]]:
    """(every image name the freshness check of `system` asks about, the service images among them whose
    labels it reads): what one `ImageCatalog` must hold for the check. A Dockerfile that cannot be read
    adds nothing here; the check itself then fails on it as before."""
    names = [base_images.python]
    build_args = build_args_for(base_images)
    for service in system.services:
        try:
            bases = read_dockerfile(service.dockerfile).external_bases(build_args)
        except Exception:  # only an optimisation: `_prepare` raises the real error
            continue
        for _from, image in bases:
            standin = standin_replacing(image, system.base_images)
            names += [image] if standin is None else [image, standin.image]
    services = [service.image for service in system.services]
    return names + services, services


def catalog_for_check(system: SystemSpec, client: DockerClient = docker) -> ImageCatalog:
    """One snapshot of the engine for a whole check: `locally_available(system.base_images,
    catalog=...)` and then `require_fresh(system, base, catalog=...)` both answer from it. It holds the
    configured base images, their stand-ins and what the check asks under either python image."""
    configured = system.base_images
    names = base_image_names(configured)
    labelled: list[str] = []
    for python in dict.fromkeys([configured.python, standin_for("python", configured.python).image]):
        more, labelled = images_checked(system, replace(configured, python=python))
        names += more
    return ImageCatalog(client, names, labelled)


def inspect_state(
    service: ServiceSpec,
    inputs: BuildInputs,
    client: DockerClient = docker,
    *,
    catalog: ImageCatalog | None = None,
) -> ImageState:
    if catalog is not None:
        facts = catalog.facts(service.image)
        image_id, labels = (facts.id, facts.labels) if facts else (None, None)
    else:
        try:
            image = client.image.inspect(service.image)
            image_id, labels = image.id, image.config.labels or {}
        except NoSuchImage:
            image_id, labels = None, None
    if image_id is None or labels is None:
        return ImageState(service.name, service.image, inputs, None, False, ("(image not built yet)",))
    fresh = labels.get(LABEL_INPUTS_HASH) == inputs.inputs_hash
    changed = () if fresh else tuple(changed_paths(labels.get(LABEL_INPUTS_MANIFEST), inputs))
    return ImageState(service.name, service.image, inputs, image_id, fresh, changed)


def check_images(
    system: SystemSpec,
    base_images: BaseImages | None = None,
    client: DockerClient = docker,
    catalog: ImageCatalog | None = None,
) -> list[ImageState]:
    """The freshness of every service image, without building (or pulling) anything.

    The engine is asked once for every image the check needs (`ImageCatalog`), or `catalog` answers
    (one taken for the whole check by the caller, `images_checked` says what it should hold)."""
    base_images = base_images or system.base_images
    if catalog is None:
        names, labelled = images_checked(system, base_images)
        catalog = ImageCatalog(client, names, labelled)
    return _states(system, base_images, client, for_build=False, catalog=catalog)


def require_fresh(
    system: SystemSpec,
    base_images: BaseImages | None = None,
    client: DockerClient = docker,
    catalog: ImageCatalog | None = None,
) -> dict[str, str]:
    """Image ids of every service, or StaleImageError naming each stale image and what changed."""
    states = check_images(system, base_images, client, catalog)
    stale = [s for s in states if not s.fresh]
    if stale:
        lines = []
        for state in stale:
            shown = ", ".join(state.changed[:8]) + (" ..." if len(state.changed) > 8 else "")
            lines.append(f"  {state.image} (service {state.service}): changed since it was built: {shown}")
        raise StaleImageError(
            "refusing to test stale images; an image is a snapshot of the code it was built from:\n"
            + "\n".join(lines)
            + f"\nRebuild first: nox -s build (or python -m integration build --root {system.root})"
        )
    return {s.service: s.image_id or "" for s in states}


# A Dockerfile step in BuildKit's plain progress: "#7 [2/6] RUN pip install ..." (not "[internal]").
_STEP = re.compile(r"^#\d+ \[(?:[\w.-]+ )?\d+/\d+\] (.*)$")
# The same in the output of podman's classic builder: "STEP 2/6: RUN pip install ...".
_PODMAN_STEP = re.compile(r"^STEP \d+/\d+: (?!LABEL )(.*)$")  # the labels podman appends are ours


def _build_one(
    service: ServiceSpec,
    system: SystemSpec,
    state: ImageState,
    build_args: dict[str, str],
    client: DockerClient,
    report: Reporter,
    lock: threading.Lock,
) -> ImageState:
    if not state.substitutions:
        return _run_build(service, system, state, service.dockerfile, build_args, client, report, lock)
    text = rewrite(read_dockerfile(service.dockerfile), state.substitutions)
    with rewritten_dockerfile(service.dockerfile, text, system.root) as copy:
        return _run_build(service, system, state, copy, build_args, client, report, lock)


def _run_build(
    service: ServiceSpec,
    system: SystemSpec,
    state: ImageState,
    dockerfile: Path,
    build_args: dict[str, str],
    client: DockerClient,
    report: Reporter,
    lock: threading.Lock,
) -> ImageState:
    started = time.monotonic()
    inputs = state.inputs
    tail: collections.deque[str] = collections.deque(maxlen=BUILD_LOG_TAIL)
    labels = {
        LABEL_INPUTS_HASH: inputs.inputs_hash,
        LABEL_INPUTS_MANIFEST: inputs.manifest(),
        LABEL_SERVICE: service.name,
        LABEL_SYSTEM: system.name,
        LABEL_ROOT: str(system.root.resolve()),
    }
    try:
        if is_podman(client):
            # why: podman serves no BuildKit, so buildx cannot build there; the classic builder can.
            stream: Iterator[str] = classic_build(
                client,
                system.root,
                file=dockerfile,
                tags=[service.image],
                labels=labels,
                build_args=build_args,
            )
        else:
            built = client.build(
                system.root,
                file=dockerfile,
                tags=[service.image],
                labels=labels,
                build_args=build_args,
                load=True,
                progress="plain",
                stream_logs=True,
            )
            assert isinstance(built, Iterator)  # stream_logs=True: the build's output lines, not an Image
            stream = built
        seen_steps: set[str] = set()
        for line in stream:
            line = line.rstrip()
            tail.append(line)
            step = _STEP.match(line) or _PODMAN_STEP.match(line)
            if step and step.group(1) not in seen_steps:
                seen_steps.add(step.group(1))
                with lock:
                    report(f"  {service.name}: {step.group(1)[:100]}")
    except DockerException as exc:
        output = "\n".join(tail)
        on = "".join(f"; FROM line {s.line} on {s.standin}" for s in state.substitutions)
        raise BuildError(
            f"building {service.image} from {service.dockerfile.relative_to(system.root)} "
            f"(context {system.root}{on}) failed:\n{output}"
        ) from exc
    image_id = client.image.inspect(service.image).id
    return replace(
        state,
        image_id=image_id,
        fresh=True,
        changed=(),
        action="built",
        seconds=time.monotonic() - started,
    )


def build_images(
    system: SystemSpec,
    base_images: BaseImages | None = None,
    *,
    force: bool = False,
    only: Mapping[str, bool] | None = None,
    client: DockerClient = docker,
    report: Reporter = print,
    max_parallel: int = 4,
) -> list[ImageState]:
    """Rebuild every stale service image (all of them with `force`), in parallel; skip fresh ones."""
    base_images = base_images or system.base_images
    build_args = build_args_for(base_images)
    states = _states(system, base_images, client, for_build=True)
    todo = [s for s in states if force or not s.fresh]
    if only is not None:
        todo = [s for s in todo if only.get(s.service)]
    for state in states:
        if state not in todo:
            report(f"{state.image}: fresh, not rebuilt")
    if not todo:
        report("every image is fresh; nothing to build")
        return [_as_fresh(s) for s in states]
    _refuse_foreign_images(system, todo, client)
    for state in todo:
        reason = "forced" if force and state.fresh else ", ".join(state.changed[:5])
        report(f"{state.image}: building ({reason})")
        for substitution in state.substitutions:
            report(substitution.describe(state.service))
    lock = threading.Lock()
    results: dict[str, ImageState] = {s.service: _as_fresh(s) for s in states}
    with ThreadPoolExecutor(max_workers=max(1, min(max_parallel, len(todo)))) as pool:
        futures = {
            state.service: pool.submit(
                _build_one,
                system.service(state.service),
                system,
                state,
                build_args,
                client,
                report,
                lock,
            )
            for state in todo
        }
        errors = []
        for name, future in futures.items():
            try:
                results[name] = future.result()
                report(f"{results[name].image}: built in {results[name].seconds:.1f}s")
            except BuildError as exc:
                errors.append(str(exc))
    for state in todo:
        built = results[state.service]
        if state.image_id and built.image_id and built.image_id != state.image_id:
            _remove_if_dangling(state.image_id, client)
    if errors:
        raise BuildError("\n\n".join(errors))
    return [results[s.name] for s in system.services]


def _refuse_foreign_images(system: SystemSpec, todo: list[ImageState], client: DockerClient) -> None:
    """A tag the toolkit would build over must be one it built (its inputs label): an `image:` that
    names another image (a base image under another spelling, a colleague's) is never overwritten."""
    for state in todo:
        if state.image_id is None:
            continue
        try:
            config = client.image.inspect(state.image_id).config
            labels = (config.labels if config else None) or {}
        except DockerException:
            continue  # gone meanwhile: nothing to overwrite
        if LABEL_INPUTS_HASH not in labels:
            where = system.services_file or system.root
            raise ConfigError(
                where,
                f"services.{state.service}.image",
                f"image {state.image} exists and was not built by the toolkit (it has no "
                f"{LABEL_INPUTS_HASH} label): building service {state.service} would overwrite it",
                fix=f"give the service an image name of its own (`image:` in services.yml, or `image` under "
                f"[tool.integration.services.{state.service}]), or remove {state.image} yourself",
            )


def _remove_if_dangling(image_id: str, client: DockerClient) -> None:
    """The image a rebuild replaced, when no tag names it any more and no container uses it: builds
    leave no dangling images behind. Only the toolkit's own (its label), never another's."""
    try:
        image = client.image.inspect(image_id)
        labels = (image.config.labels if image.config else None) or {}
        if image.repo_tags or LABEL_INPUTS_HASH not in labels:
            return
        client.image.remove(image_id)
    except DockerException:
        pass  # in use by a container (a reused stack), or removed meanwhile: leave it


def _as_fresh(state: ImageState) -> ImageState:
    return replace(state, action="fresh")


@dataclass(frozen=True)
class Orphan:
    """One of the toolkit's service images whose checkout root no longer exists."""

    image_id: str
    tags: tuple[str, ...]
    root: str
    removed: bool
    reason: str = ""  # why it was not removed (a container uses it)


def remove_orphaned_images(system: str | None = None, client: DockerClient = docker) -> list[Orphan]:
    """Remove the toolkit's service images built from a checkout that is gone (`python -m integration
    clean`). Only images with the toolkit's labels (its inputs hash and the checkout root) are looked
    at, and only those whose root folder no longer exists are removed: another checkout's images, and
    every image the toolkit did not build, stay. An image a container still uses is reported, not
    forced. `system`: only the images of the system of that name."""
    wanted = [LABEL_INPUTS_HASH, LABEL_ROOT] + ([f"{LABEL_SYSTEM}={system}"] if system is not None else [])
    filters: list[tuple[Literal["label"], str]] = [("label", label) for label in wanted]
    orphans = []
    for image in client.image.list(filters=filters):
        labels = (image.config.labels if image.config else None) or {}
        root = labels.get(LABEL_ROOT, "")
        if not root or not Path(root).is_absolute() or Path(root).exists():
            continue
        tags = tuple(image.repo_tags or ())
        try:
            # By tag, not by id with force: removing the last tag removes the image, and an image in use
            # by a container is refused by the engine instead of being untagged under it.
            client.image.remove(list(tags) or image.id)
            orphans.append(Orphan(image.id, tags, root, True))
        except DockerException as exc:
            said = (exc.stderr or "").strip().splitlines()
            orphans.append(Orphan(image.id, tags, root, False, said[-1] if said else "docker refused"))
    return orphans
