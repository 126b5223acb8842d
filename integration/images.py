"""Service images: built from the system root with `-f`, stamped with the hash of their inputs.

An image is fresh when its `io.integration.inputs-hash` label equals the hash of its current inputs
(see `buildinputs`). `build_images` rebuilds exactly the stale ones, in parallel; `require_fresh` is the
check the pytest plugin runs when it is started without a build, and refuses stale images by name.
"""

from __future__ import annotations

import collections
import re
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from python_on_whales import DockerClient, docker
from python_on_whales.exceptions import DockerException, NoSuchImage

from .buildinputs import BuildInputs, changed_paths, compute_build_inputs
from .errors import BuildError, StaleImageError
from .model import LABEL_INPUTS_HASH, LABEL_SERVICE, LABEL_SYSTEM, BaseImages, ServiceSpec, SystemSpec

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


def build_args_for(base_images: BaseImages) -> dict[str, str]:
    """Build arguments every service Dockerfile receives."""
    return {"PYTHON_IMAGE": base_images.python}


def _base_identity(base_images: BaseImages, client: DockerClient) -> dict[str, str]:
    """The python base image's id joins the hash, so that a rebuilt base makes its services stale."""
    try:
        return {"<python-image-id>": client.image.inspect(base_images.python).id}
    except NoSuchImage:
        return {"<python-image-id>": "missing"}


def inputs_of(service: ServiceSpec, system: SystemSpec, hash_args: Mapping[str, str]) -> BuildInputs:
    return compute_build_inputs(system.root, service.dockerfile, hash_args)


def inspect_state(service: ServiceSpec, inputs: BuildInputs, client: DockerClient = docker) -> ImageState:
    try:
        image = client.image.inspect(service.image)
    except NoSuchImage:
        return ImageState(service.name, service.image, inputs, None, False, ("(image not built yet)",))
    labels = image.config.labels or {}
    fresh = labels.get(LABEL_INPUTS_HASH) == inputs.inputs_hash
    changed = () if fresh else tuple(changed_paths(labels.get(LABEL_INPUTS_MANIFEST), inputs))
    return ImageState(service.name, service.image, inputs, image.id, fresh, changed)


def check_images(
    system: SystemSpec, base_images: BaseImages | None = None, client: DockerClient = docker
) -> list[ImageState]:
    """The freshness of every service image, without building anything."""
    base_images = base_images or system.base_images
    hash_args = build_args_for(base_images) | _base_identity(base_images, client)
    return [inspect_state(s, inputs_of(s, system, hash_args), client) for s in system.services]


def require_fresh(
    system: SystemSpec, base_images: BaseImages | None = None, client: DockerClient = docker
) -> dict[str, str]:
    """Image ids of every service, or StaleImageError naming each stale image and what changed."""
    states = check_images(system, base_images, client)
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


def _build_one(
    service: ServiceSpec,
    system: SystemSpec,
    inputs: BuildInputs,
    build_args: dict[str, str],
    client: DockerClient,
    report: Reporter,
    lock: threading.Lock,
) -> ImageState:
    started = time.monotonic()
    tail: collections.deque[str] = collections.deque(maxlen=BUILD_LOG_TAIL)
    labels = {
        LABEL_INPUTS_HASH: inputs.inputs_hash,
        LABEL_INPUTS_MANIFEST: inputs.manifest(),
        LABEL_SERVICE: service.name,
        LABEL_SYSTEM: system.name,
    }
    try:
        stream = client.build(
            system.root,
            file=service.dockerfile,
            tags=[service.image],
            labels=labels,
            build_args=build_args,
            load=True,
            progress="plain",
            stream_logs=True,
        )
        seen_steps: set[str] = set()
        for line in stream:
            line = line.rstrip()
            tail.append(line)
            step = _STEP.match(line)
            if step and step.group(1) not in seen_steps:
                seen_steps.add(step.group(1))
                with lock:
                    report(f"  {service.name}: {step.group(1)[:100]}")
    except DockerException as exc:
        output = "\n".join(tail)
        raise BuildError(
            f"building {service.image} from {service.dockerfile.relative_to(system.root)} "
            f"(context {system.root}) failed:\n{output}"
        ) from exc
    image_id = client.image.inspect(service.image).id
    return ImageState(
        service.name, service.image, inputs, image_id, True, (), "built", time.monotonic() - started
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
    hash_args = build_args | _base_identity(base_images, client)
    states = [inspect_state(s, inputs_of(s, system, hash_args), client) for s in system.services]
    todo = [s for s in states if force or not s.fresh]
    if only is not None:
        todo = [s for s in todo if only.get(s.service)]
    for state in states:
        if state not in todo:
            report(f"{state.image}: fresh, not rebuilt")
    if not todo:
        report("every image is fresh; nothing to build")
        return [_as_fresh(s) for s in states]
    for state in todo:
        reason = "forced" if force and state.fresh else ", ".join(state.changed[:5])
        report(f"{state.image}: building ({reason})")
    lock = threading.Lock()
    results: dict[str, ImageState] = {s.service: _as_fresh(s) for s in states}
    with ThreadPoolExecutor(max_workers=max(1, min(max_parallel, len(todo)))) as pool:
        futures = {
            state.service: pool.submit(
                _build_one,
                system.service(state.service),
                system,
                state.inputs,
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
    if errors:
        raise BuildError("\n\n".join(errors))
    return [results[s.name] for s in system.services]


def _as_fresh(state: ImageState) -> ImageState:
    return ImageState(
        state.service, state.image, state.inputs, state.image_id, state.fresh, state.changed, "fresh"
    )
