"""Service images against the real engine: build what is stale, skip what is fresh, refuse stale images.

Each test builds its own copy of a small two-service system (stdlib servers, no pip install) with a
unique system name and unique image tags; every image carrying that system's label is removed after.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from echo_system import remove_images
from python_on_whales import docker
from python_on_whales.exceptions import NoSuchImage

from integration.baseimages import DEBIAN_BASE_IMAGE, locally_available
from integration.discovery import load_system
from integration.errors import BuildError, ConfigError, StaleImageError
from integration.images import LABEL_INPUTS_MANIFEST, build_images, check_images, require_fresh
from integration.model import LABEL_INPUTS_HASH, LABEL_SERVICE, LABEL_SYSTEM, SystemSpec

pytestmark = pytest.mark.docker

SERVER = """\
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GREETING = "hello"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(GREETING.encode())


ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""

DOCKERFILE = """\
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${{PYTHON_IMAGE}}
COPY architecture/ /srv/architecture/
COPY services/{name}/ /srv/app/
CMD ["python", "/srv/app/server.py"]
"""


def write_system(root: Path, system: str) -> None:
    services = {}
    files = {
        "architecture/__init__.py": "",
        "architecture/contracts/__init__.py": "",
        ".dockerignore": "use_case_tests/\n**/__pycache__/\n",
        "use_case_tests/test_greeting.py": "def test_greeting(): pass\n",
    }
    for name, port in (("alpha", 8000), ("beta", 8001)):
        services[name] = {"port": port, "image": f"{system}-{name}:test"}
        files[f"architecture/contracts/{name}.py"] = f'"""Contract of {name}: no events."""\n'
        files[f"services/{name}/Dockerfile"] = DOCKERFILE.format(name=name)
        files[f"services/{name}/server.py"] = SERVER
    files["architecture/services.yml"] = yaml.safe_dump(
        {"version": 1, "system": system, "services": services}
    )
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def system(tmp_path: Path) -> Iterator[SystemSpec]:
    """A fresh copy of the two-service system; all images labelled with its (unique) name go after."""
    name = f"itest-img-{uuid.uuid4().hex[:8]}"
    root = tmp_path / "system"
    write_system(root, name)
    try:
        yield load_system(root, locally_available())
    finally:
        remove_images(name)


class Report(list):
    """Collects the lines `build_images` reports."""

    def __call__(self, line: str) -> None:
        self.append(line)


def image_id(tag: str) -> str | None:
    try:
        return docker.image.inspect(tag).id
    except NoSuchImage:
        return None


def edit(system: SystemSpec, relative: str) -> None:
    path = system.root / relative
    path.write_text(path.read_text().replace('GREETING = "hello"', 'GREETING = "hello again"'))


def test_build_images_builds_every_image_then_nothing(system):
    first = Report()
    states = build_images(system, report=first)

    assert [(s.service, s.action) for s in states] == [("alpha", "built"), ("beta", "built")]
    for state in states:
        assert state.image_id == image_id(state.image) is not None
    assert f"{system.service('alpha').image}: building ((image not built yet))" in first

    second = Report()
    again = build_images(system, report=second)

    assert [(s.service, s.action, s.fresh) for s in again] == [
        ("alpha", "fresh", True),
        ("beta", "fresh", True),
    ]
    assert [s.image_id for s in again] == [s.image_id for s in states]
    assert second[-1] == "every image is fresh; nothing to build"
    assert not any("building" in line for line in second)


def test_after_editing_one_file_of_one_service_only_that_service_rebuilds(system):
    built = {s.service: s.image_id for s in build_images(system, report=Report())}

    edit(system, "services/beta/server.py")
    report = Report()
    states = {s.service: s for s in build_images(system, report=report)}

    assert states["alpha"].action == "fresh"
    assert states["beta"].action == "built"
    assert image_id(system.service("alpha").image) == built["alpha"]
    assert image_id(system.service("beta").image) not in (None, built["beta"])
    assert f"{system.service('beta').image}: building (services/beta/server.py)" in report
    assert f"{system.service('alpha').image}: fresh, not rebuilt" in report


def test_editing_a_shared_copied_file_rebuilds_both_and_a_test_file_neither(system):
    build_images(system, report=Report())

    (system.root / "use_case_tests" / "test_greeting.py").write_text("def test_other(): pass\n")
    assert all(s.action == "fresh" for s in build_images(system, report=Report()))

    (system.root / "architecture" / "contracts" / "alpha.py").write_text('"""Contract of alpha, edited."""\n')
    assert [s.action for s in build_images(system, report=Report())] == ["built", "built"]


def test_require_fresh_refuses_a_stale_image_naming_it_what_changed_and_the_fix(system):
    build_images(system, report=Report())
    ids = require_fresh(system)
    assert ids == {s.name: image_id(s.image) for s in system.services}

    edit(system, "services/alpha/server.py")
    (system.root / "services/alpha/extra.py").write_text("X = 1\n")
    with pytest.raises(StaleImageError) as raised:
        require_fresh(system)

    message = str(raised.value)
    alpha, beta = system.service("alpha").image, system.service("beta").image
    assert f"{alpha} (service alpha): changed since it was built: " in message
    assert "services/alpha/extra.py, services/alpha/server.py" in message
    assert beta not in message  # beta is fresh and not named
    assert f"python -m integration build --root {system.root}" in message
    assert "nox -s build" in message
    assert raised.value.exit_status == 2


def test_require_fresh_names_an_image_that_was_never_built(system):
    with pytest.raises(StaleImageError, match=r"\(service alpha\): changed since it was built: \(image not"):
        require_fresh(system)


def test_the_labels_hold_the_hash_and_the_manifest(system):
    build_images(system, report=Report())
    states = {s.service: s for s in check_images(system)}

    for service in system.services:
        labels = docker.image.inspect(service.image).config.labels
        inputs = states[service.name].inputs
        assert states[service.name].fresh
        assert labels[LABEL_INPUTS_HASH] == inputs.inputs_hash
        assert labels[LABEL_SERVICE] == service.name
        assert labels[LABEL_SYSTEM] == system.name
        manifest = json.loads(labels[LABEL_INPUTS_MANIFEST])
        assert manifest == dict(inputs.file_hashes)
        other = "beta" if service.name == "alpha" else "alpha"
        assert f"services/{service.name}/server.py" in manifest
        assert f"services/{other}/server.py" not in manifest
        assert "use_case_tests/test_greeting.py" not in manifest
        assert {"<Dockerfile>", "<build-args>"} <= set(manifest)  # build args include the base image id


def test_another_python_base_image_makes_every_image_stale(system):
    build_images(system, report=Report())
    other_base = replace(system.base_images, python=DEBIAN_BASE_IMAGE)

    states = check_images(system, other_base)

    assert [(s.fresh, s.changed) for s in states] == [(False, ("<build-args>",))] * 2
    assert all(s.fresh for s in check_images(system))


def test_the_image_holds_what_was_hashed(system):
    build_images(system, report=Report())

    listing = "import os; print(sorted(os.listdir('/srv/app')))"
    output = docker.run(system.service("alpha").image, ["python", "-c", listing], remove=True)

    assert output.strip() == "['Dockerfile', 'server.py']"


def test_a_failing_build_names_the_image_and_shows_the_log_tail(system):
    dockerfile = system.root / "services/beta/Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + 'RUN echo "about to fail" && exit 3\n')

    with pytest.raises(BuildError) as raised:
        build_images(system, report=Report())

    message = str(raised.value)
    assert f"building {system.service('beta').image} from services/beta/Dockerfile" in message
    assert "about to fail" in message
    assert image_id(system.service("alpha").image) is not None  # the other service still built


def test_a_rebuild_leaves_no_dangling_image(system):
    first = {s.service: s.image_id for s in build_images(system, report=Report())}
    edit(system, "services/alpha/server.py")

    second = {s.service: s.image_id for s in build_images(system, report=Report())}

    assert second["alpha"] != first["alpha"]
    assert image_id(first["alpha"]) is None, "the replaced image was left behind, untagged"
    assert second["beta"] == first["beta"]


def test_an_image_the_toolkit_did_not_build_is_never_overwritten(system):
    foreign = system.service("alpha").image
    docker.image.tag(DEBIAN_BASE_IMAGE, foreign)  # e.g. a base image under another spelling
    before = image_id(foreign)
    try:
        with pytest.raises(ConfigError) as caught:
            build_images(system, report=Report())
        assert f"image {foreign} exists and was not built by the toolkit" in str(caught.value)
        assert caught.value.field == "services.alpha.image" and caught.value.fix
        assert image_id(foreign) == before
        assert image_id(DEBIAN_BASE_IMAGE) == before
    finally:
        docker.image.remove(foreign)  # the tag only: the base image stays
