"""What a started stack serves is the image just verified: never an older one, whether its containers
are new or reused, and whether the image is a service's or a database's stand-in.

The start checks every container's image before it starts any (integration.startup): a service's must be
the id verified fresh before `up`, a database's the id its tag names now. These tests change an image
between two starts and read the running containers' image ids back from the engine.

The system is the echo system of `echo_system` (`web` with a database, `api` without), built under
tmp_path with unique tags; the database runs a test-owned tag derived from the PostgreSQL stand-in (the
shared stand-in tag is never touched). Each stack runs under its own `itest-served-` project on a free
port block; whatever a failing test left is removed.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from compose_projects import PROJECT_LABEL, remove_project
from echo_system import free_port_base, remove_images, token, write_echo_system
from opened_stacks import open_stack
from python_on_whales import docker
from waiting import GENEROUS

from integration.baseimages import locally_available
from integration.discovery import load_system
from integration.errors import StackError
from integration.images import build_images, require_fresh
from integration.model import SystemSpec
from integration.stack import Stack
from integration.startup import Startup

pytestmark = pytest.mark.docker

SERVICE_LABEL = "com.docker.compose.service"


def running_images(project: str) -> dict[str, str]:
    """Compose service -> image id of its running container in `project`, as the engine reports it."""
    containers = docker.container.list(filters=[("label", f"{PROJECT_LABEL}={project}")])
    return {c.config.labels[SERVICE_LABEL]: c.image for c in containers}


def build(system: SystemSpec) -> dict[str, str]:
    build_images(system, report=lambda line: None)
    return require_fresh(system)


OWNER_LABEL = "io.integration.test-owner"


def tag_database_image(tag: str, base: str, generation: str) -> str:
    """(Re)build `tag` from the PostgreSQL image `base` with a generation label: a new id, as a stand-in
    rebuilt on a new base gets under the same tag. Returns the id."""
    dockerfile = (
        f"FROM {base}\nLABEL {OWNER_LABEL}={tag.replace(':', '_')} "
        f"io.integration.test-generation={generation}\n"
    )
    command = ["docker", "build", "-q", "-t", tag, "-"]
    subprocess.run(command, input=dockerfile, text=True, check=True, capture_output=True)
    return docker.image.inspect(tag).id


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict[str, object]]:
    """A fresh echo system whose database runs a test-owned tag; its images and stacks go at the end."""
    name = f"itest-served-{token()}"
    root = tmp_path / "system"
    write_echo_system(root, name, {"web": {"port": 8080, "database": "web"}, "api": {"port": 9090}})
    base = load_system(root, locally_available())
    database_tag = f"{name}-postgres:15"
    first_id = tag_database_image(database_tag, base.base_images.postgres, "one")
    system = base.with_base_images(replace(base.base_images, postgres=database_tag))
    project = f"{name}-stack"
    try:
        yield {
            "root": root,
            "system": system,
            "project": project,
            "database_tag": database_tag,
            "database_base": base.base_images.postgres,
            "first_database_id": first_id,
            "compose_dir": tmp_path / "compose",
            "port_base": free_port_base(),
        }
    finally:
        remove_project(project)
        remove_images(name)
        # Every generation of the test's tag, the ones it no longer names too.
        owned = docker.image.list(filters=[("label", f"{OWNER_LABEL}={database_tag.replace(':', '_')}")])
        if owned:
            docker.image.remove([image.id for image in owned], force=True)


def stack_of(served: dict[str, object], expected: dict[str, str], *, reuse: bool) -> Stack:
    return open_stack(
        served["system"],  # type: ignore[arg-type]
        project=str(served["project"]),
        compose_dir=served["compose_dir"],  # type: ignore[arg-type]
        port_base=int(served["port_base"]),  # type: ignore[arg-type]
        health_timeout=GENEROUS,
        reuse=reuse,
        expected_images=expected,
    )


def version_of(stack: Stack, service: str) -> str:
    assert stack.endpoints is not None
    answer = httpx.get(stack.endpoints.services[service].url + "/", timeout=GENEROUS)
    return str(answer.json()["version"])


@pytest.mark.parametrize("reuse", [True, False], ids=["reused-stack", "fresh-stack"])
def test_a_rebuilt_service_image_is_what_the_next_start_serves(served, reuse):
    system: SystemSpec = served["system"]  # type: ignore[assignment]
    project = str(served["project"])
    first = build(system)
    with stack_of(served, first, reuse=reuse) as stack:
        assert running_images(project)["web"] == first["web"]
        assert version_of(stack, "web") == "1"
        first_container = {i.service: i.container_id for i in stack.containers()}["web"]

    # A changed input: the image is rebuilt, and the old one is what the old container (if any) runs.
    server = Path(served["root"]) / "services" / "web" / "server.py"  # type: ignore[arg-type]
    server.write_text(server.read_text().replace('VERSION = "1"', 'VERSION = "2"'))
    second = build(system)
    assert second["web"] != first["web"] and second["api"] == first["api"]

    with stack_of(served, second, reuse=reuse) as stack:
        if reuse:
            assert stack.outcome.startswith("recreated"), stack.outcome
        images = running_images(project)
        assert images["web"] == second["web"], "the container serves an image other than the one verified"
        assert images["api"] == second["api"]
        assert version_of(stack, "web") == "2"
        web_container = {i.service: i.container_id for i in stack.containers()}["web"]
        assert web_container != first_container  # a new container: the old one ran the old image
    stack.down()  # reuse mode left it running
    assert not running_images(project)


@pytest.mark.parametrize("reuse", [True, False], ids=["reused-stack", "fresh-stack"])
def test_a_database_image_rebuilt_under_its_tag_is_what_the_next_start_serves(served, reuse):
    system: SystemSpec = served["system"]  # type: ignore[assignment]
    project = str(served["project"])
    expected = build(system)
    with stack_of(served, expected, reuse=reuse):
        assert running_images(project)["web-db"] == served["first_database_id"]

    # The same tag, a new image (a stand-in rebuilt on a new base): the next start must serve it, also
    # when the stack was left running for reuse (its database container runs the first image).
    second_id = tag_database_image(str(served["database_tag"]), str(served["database_base"]), "two")
    assert second_id != served["first_database_id"]
    with stack_of(served, expected, reuse=reuse) as stack:
        if reuse:
            assert stack.outcome.startswith("recreated"), stack.outcome
        assert running_images(project)["web-db"] == second_id
    stack.down()
    assert not running_images(project)


def test_a_container_created_from_an_image_its_tag_no_longer_names_is_never_started(served):
    system: SystemSpec = served["system"]  # type: ignore[assignment]
    project = str(served["project"])
    expected = build(system)
    stack = stack_of(served, expected, reuse=False)
    stack.write()
    try:
        # Created from the first image; then the tag moves on before the start.
        stack.client.compose.up(detach=True, start=False, quiet=True, pull="never", no_build=True)
        tag_database_image(str(served["database_tag"]), str(served["database_base"]), "moved")
        with pytest.raises(StackError, match=r"web-db.*was created from image .*not .*postgres:15"):
            Startup(stack).verify_images(stack.containers())
        assert not running_images(project), "nothing may start from the image the tag no longer names"

        # A service container created from an image other than the verified one is refused as well.
        wrong = dict(expected, web=expected["api"])
        stack.expected_images = wrong
        with pytest.raises(StackError, match=r"runs image .*not the verified .*of service web"):
            Startup(stack).verify_images(stack.containers())
    finally:
        stack.down()
    assert not docker.container.list(all=True, filters=[("label", f"{PROJECT_LABEL}={project}")])
