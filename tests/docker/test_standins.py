"""The offline stand-in images: each starts, does its job, and stops; a second resolve reuses them.

PostgreSQL and RabbitMQ shut down on `docker stop`'s signal (exit 0, not killed when the grace period ran
out). Which images `resolve_base_images` chooses depends on the machine: where the registry answers (a
GitHub runner) the registry's own, pulled; where it does not (this workplace), the stand-ins. The test
finds out which kind of machine it is on by pulling a tiny image once, and expects accordingly.

Start-to-ready and stop times are printed (`pytest -s` shows them): they are figures, not asserted (the
benchmark measures speed). Containers are named `itest-standin-...`, publish on 127.0.0.1 to ports the
engine picks, and are removed (force) after each test.
"""

from __future__ import annotations

import functools
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import fields

import httpx
import psycopg2
import pytest
from python_on_whales import Container, docker
from python_on_whales.exceptions import DockerException
from waiting import GENEROUS

from integration.baseimages import OFFLINE_ENV, resolve_base_images, standin_for
from integration.model import (
    BROKER_AMQP_PORT,
    BROKER_MANAGEMENT_PORT,
    OFFLINE_BROKER_IMAGE,
    OFFLINE_POSTGRES_IMAGE,
    OFFLINE_PYTHON_IMAGE,
    POSTGRES_PORT,
    BaseImages,
)

pytestmark = pytest.mark.docker

READY_TIMEOUT = 90.0
# Seconds `docker stop` waits for a container that handles its stop signal before killing it: generous,
# so that only a container that ignores the signal is killed (RabbitMQ takes about 6 s here).
STOP_GRACE = 90
# A tiny image of the registry the base images come from: whether it can be pulled tells the two kinds of
# machine apart.
PROBE_IMAGE = "hello-world:latest"

Run = Callable[..., Container]


@pytest.fixture
def run() -> Iterator[Run]:
    """`run(image, command=None, **options)`: a detached container, removed with its volumes afterwards."""
    started: list[Container] = []

    def start(image: str, command: list[str] | None = None, **options: object) -> Container:
        name = f"itest-standin-{uuid.uuid4().hex[:8]}"
        container = docker.run(image, command or [], name=name, detach=True, **options)
        started.append(container)
        return container

    yield start
    for container in started:
        with suppress(DockerException):  # already gone
            container.remove(force=True, volumes=True)


def host_port(container: Container, port: int) -> int:
    container.reload()
    for binding in container.network_settings.ports.get(f"{port}/tcp") or []:
        if binding.get("HostPort"):
            return int(binding["HostPort"])
    raise AssertionError(f"{container.name} publishes no host port for {port}/tcp")


def wait_until(ready: Callable[[], object], container: Container, what: str) -> float:
    """Seconds until `ready()` returns without raising; fails at once if the container exits."""
    started = time.monotonic()
    while True:
        try:
            ready()
            return time.monotonic() - started
        except Exception as exc:
            container.reload()
            if not container.state.running:
                logs = docker.container.logs(container, tail=30)
                pytest.fail(f"{what} exited ({container.state.exit_code}) before it was ready:\n{logs}")
            if time.monotonic() - started > READY_TIMEOUT:
                pytest.fail(f"{what} not ready within {READY_TIMEOUT:.0f}s; last error: {exc}")
            time.sleep(0.1)


def timed_stop(container: Container, grace: int | None = None) -> tuple[float, int]:
    """Stop the container and time it; `grace`: seconds before the engine kills it (default: the engine's).

    The CLI is called directly for a grace period: python-on-whales 0.81 drops an integer `time` from
    `Container.stop` (its formatter knows only datetime and timedelta) and turns a timedelta into "1.0s",
    which `docker stop` rejects.
    """
    command = ["docker", "container", "stop"] + (["-t", str(grace)] if grace is not None else [])
    started = time.monotonic()
    subprocess.run([*command, container.id], check=True, capture_output=True)
    elapsed = time.monotonic() - started
    container.reload()
    return elapsed, container.state.exit_code


@functools.cache
def registry_reachable() -> bool:
    """Whether this machine can pull from the registry: one pull of PROBE_IMAGE, tried once per run (a
    pull asks the registry even when the image is present)."""
    try:
        docker.image.pull(PROBE_IMAGE, quiet=True)
    except DockerException:
        return False
    return True


def figures(what: str, ready: float, stopped: float, exit_code: int) -> None:
    print(
        f"\n[stand-in] {what}: ready {ready:.2f}s after start, stopped in {stopped:.2f}s (exit {exit_code})"
    )


def test_postgres_accepts_the_configured_credentials_and_stops_on_its_signal(run):
    credentials = {
        "POSTGRES_USER": "itest_owner",
        "POSTGRES_PASSWORD": "itest-s3cret",
        "POSTGRES_DB": "orders",
    }
    started = time.monotonic()
    container = run(OFFLINE_POSTGRES_IMAGE, envs=credentials, publish=[("127.0.0.1:", POSTGRES_PORT)])
    port = host_port(container, POSTGRES_PORT)

    def connect(
        password: str = credentials["POSTGRES_PASSWORD"], timeout: int = 2
    ) -> psycopg2.extensions.connection:
        return psycopg2.connect(
            host="127.0.0.1",
            port=port,
            user="itest_owner",
            password=password,
            dbname="orders",
            connect_timeout=timeout,
        )

    wait_until(lambda: connect().close(), container, "postgres")
    ready = time.monotonic() - started

    connection = connect(timeout=int(GENEROUS))
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_database(), current_user, current_setting('server_version_num')")
            database, user, version = cursor.fetchone()
    finally:
        connection.close()
    assert (database, user) == ("orders", "itest_owner")
    assert version.startswith("15")
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        connect(password="wrong", timeout=int(GENEROUS))

    stopped, exit_code = timed_stop(container, grace=STOP_GRACE)  # STOPSIGNAL SIGINT: a fast shutdown
    figures("postgres", ready, stopped, exit_code)
    assert exit_code == 0  # it shut down on the signal, and was not killed when the grace period ran out


def test_rabbitmq_management_api_answers_guest_and_it_stops_on_its_signal(run):
    started = time.monotonic()
    container = run(
        OFFLINE_BROKER_IMAGE,
        publish=[("127.0.0.1:", BROKER_MANAGEMENT_PORT), ("127.0.0.1:", BROKER_AMQP_PORT)],
    )
    url = f"http://127.0.0.1:{host_port(container, BROKER_MANAGEMENT_PORT)}/api/overview"

    def overview(timeout: float = 2) -> dict:
        response = httpx.get(url, auth=("guest", "guest"), timeout=timeout)
        response.raise_for_status()
        return response.json()

    wait_until(overview, container, "rabbitmq")
    ready = time.monotonic() - started

    answer = overview(timeout=GENEROUS)
    assert answer["rabbitmq_version"].startswith("3.10")
    assert {"management_version", "node"} <= set(answer)
    assert httpx.get(url, auth=("guest", "wrong"), timeout=GENEROUS).status_code == 401

    # The boot's modules were loaded in parallel (integration_preload.erl): the node ran the preload,
    # and its list, made when the image was built, holds every module the booted node has loaded
    # beyond the emulator's own.
    unlisted = container.execute(
        [
            "rabbitmqctl",
            "eval",
            '{ok, [Listed]} = file:consult("/usr/local/lib/integration-preload/modules"), '
            "{code:is_loaded(integration_preload), "
            "[M || {M, _} <- code:all_loaded(), not lists:member(M, Listed ++ erlang:pre_loaded())]}.",
        ]
    )
    assert "integration_preload.beam" in unlisted
    assert unlisted.replace("\n", "").replace(" ", "").endswith(",[integration_preload]}"), unlisted

    stopped, exit_code = timed_stop(container, grace=STOP_GRACE)
    figures("rabbitmq", ready, stopped, exit_code)
    assert exit_code == 0  # the broker is PID 1 and shuts down on SIGTERM; it was not killed


def test_python_has_ssl_venv_and_pip_and_trusts_the_host_bundle(run):
    started = time.monotonic()
    output = docker.run(OFFLINE_PYTHON_IMAGE, ["python", "-c", "import ssl, venv; print(1)"], remove=True)
    ready = time.monotonic() - started
    assert output.strip() == "1"

    pip = docker.run(OFFLINE_PYTHON_IMAGE, ["pip", "--version"], remove=True)
    assert pip.startswith("pip ")
    assert "(python 3.11)" in pip

    check = "import os, ssl; print(os.environ['PIP_CERT'], os.path.getsize(os.environ['PIP_CERT']) > 0)"
    cert = docker.run(OFFLINE_PYTHON_IMAGE, ["python", "-c", check], remove=True)
    assert cert.strip() == "/etc/ssl/certs/ca-certificates.crt True"

    # Like the registry's python image, a Python that is PID 1 ignores SIGTERM: `docker stop` kills it
    # when the grace period runs out (so a short one), and that ends it.
    server = run(OFFLINE_PYTHON_IMAGE, ["python", "-m", "http.server", "8000"])
    wait_until(lambda: docker.execute(server, ["python", "-c", "1"]), server, "python")
    stopped, exit_code = timed_stop(server, grace=1)
    figures("python", ready, stopped, exit_code)
    assert not server.state.running and exit_code in (0, 137, 143), server.state


def image_ids(images: BaseImages) -> dict[str, str]:
    return {
        image: docker.image.inspect(image).id for image in (images.postgres, images.broker, images.python)
    }


def expected_choice(configured: BaseImages, *, offline: bool) -> tuple[BaseImages, dict[str, str]]:
    """What resolve_base_images must choose on this machine, and the first call's action per kind: an
    image present locally is used ("present"); else one the registry gives ("pulled"), unless offline;
    else its stand-in ("reused" or "built")."""
    chosen, actions = {}, {}
    for kind in (f.name for f in fields(BaseImages)):
        image = getattr(configured, kind)
        if docker.image.exists(image):
            chosen[kind], actions[kind] = image, "present"
        elif not offline and registry_reachable():
            chosen[kind], actions[kind] = image, "pulled"
        else:
            chosen[kind], actions[kind] = standin_for(kind, image).image, "standin"
    return BaseImages(**chosen), actions


@pytest.mark.parametrize("offline", [False, True], ids=["registry-if-reachable", "offline"])
def test_resolve_base_images_uses_the_registry_or_the_standins_and_reuses_them(monkeypatch, offline):
    if offline:
        monkeypatch.setenv(OFFLINE_ENV, "1")
    else:
        monkeypatch.delenv(OFFLINE_ENV, raising=False)
    configured = BaseImages()
    standins = BaseImages(
        postgres=OFFLINE_POSTGRES_IMAGE, broker=OFFLINE_BROKER_IMAGE, python=OFFLINE_PYTHON_IMAGE
    )
    expected, actions = expected_choice(configured, offline=offline)
    print(f"\n[stand-in] registry reachable: {registry_reachable()}, offline: {offline}; expected {expected}")

    lines: list[str] = []
    started = time.monotonic()
    chosen, first = resolve_base_images(configured, report=lines.append)  # builds only a changed recipe
    first_seconds = time.monotonic() - started
    ids = image_ids(chosen)
    started = time.monotonic()
    again, second = resolve_base_images(configured, report=lines.append)
    second_seconds = time.monotonic() - started
    print(f"[stand-in] resolve_base_images: {first_seconds:.2f}s, then {second_seconds:.2f}s")

    assert chosen == again == expected
    assert [(o.kind, o.image) for o in second] == [
        ("postgres", expected.postgres),
        ("broker", expected.broker),
        ("python", expected.python),
    ]
    for outcome in first:
        wanted = ("reused", "built") if actions[outcome.kind] == "standin" else (actions[outcome.kind],)
        assert outcome.action in wanted, (outcome, actions)
    # The second call pulled and built nothing: the same images, found locally.
    assert all(o.action in ("reused", "present") for o in second), second
    assert image_ids(again) == ids
    for kind, action in actions.items():
        image = getattr(configured, kind)
        fallback = f"{image} cannot be pulled; using the offline stand-in {getattr(standins, kind)}"
        assert (fallback in lines) == (action == "standin"), lines

    # Asking for the stand-ins by name resolves to them as well, without a pull attempt.
    named, outcomes = resolve_base_images(standins, report=lines.append)
    assert named == standins
    assert all(o.action in ("reused", "built") for o in outcomes), outcomes
    assert all(o.action == "reused" for o in resolve_base_images(standins, report=lines.append)[1])
    for kind, action in actions.items():
        if action == "standin":
            assert getattr(named, kind) == getattr(chosen, kind)
            assert image_ids(named)[getattr(named, kind)] == ids[getattr(chosen, kind)]
