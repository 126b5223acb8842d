"""The offline stand-in images: each starts, does its job, and stops within 2 s; a second resolve reuses them.

Start-to-ready and stop times are printed (`pytest -s` shows them): they are the figures behind the
stack's start-up time. Containers are named `itest-standin-...`, publish on 127.0.0.1 to ports the
engine picks, and are removed (force) after each test.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress

import httpx
import psycopg2
import pytest
from python_on_whales import Container, docker
from python_on_whales.exceptions import DockerException

from integration.baseimages import resolve_base_images
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
STOP_LIMIT = 2.0

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


def figures(what: str, ready: float, stopped: float, exit_code: int) -> None:
    print(
        f"\n[stand-in] {what}: ready {ready:.2f}s after start, stopped in {stopped:.2f}s (exit {exit_code})"
    )


def test_postgres_accepts_the_configured_credentials_and_stops_fast(run):
    credentials = {
        "POSTGRES_USER": "itest_owner",
        "POSTGRES_PASSWORD": "itest-s3cret",
        "POSTGRES_DB": "orders",
    }
    started = time.monotonic()
    container = run(OFFLINE_POSTGRES_IMAGE, envs=credentials, publish=[("127.0.0.1:", POSTGRES_PORT)])
    port = host_port(container, POSTGRES_PORT)

    def connect(password: str = credentials["POSTGRES_PASSWORD"]) -> psycopg2.extensions.connection:
        return psycopg2.connect(
            host="127.0.0.1",
            port=port,
            user="itest_owner",
            password=password,
            dbname="orders",
            connect_timeout=2,
        )

    wait_until(lambda: connect().close(), container, "postgres")
    ready = time.monotonic() - started

    connection = connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_database(), current_user, current_setting('server_version_num')")
            database, user, version = cursor.fetchone()
    finally:
        connection.close()
    assert (database, user) == ("orders", "itest_owner")
    assert version.startswith("15")
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        connect(password="wrong")

    stopped, exit_code = timed_stop(container)  # the default grace period: SIGINT is a fast shutdown
    figures("postgres", ready, stopped, exit_code)
    assert stopped < STOP_LIMIT
    assert exit_code == 0  # it shut down on the signal, and was not killed when the grace period ran out


def test_rabbitmq_management_api_answers_guest_and_it_stops_fast(run):
    started = time.monotonic()
    container = run(
        OFFLINE_BROKER_IMAGE,
        publish=[("127.0.0.1:", BROKER_MANAGEMENT_PORT), ("127.0.0.1:", BROKER_AMQP_PORT)],
    )
    url = f"http://127.0.0.1:{host_port(container, BROKER_MANAGEMENT_PORT)}/api/overview"

    def overview() -> dict:
        response = httpx.get(url, auth=("guest", "guest"), timeout=2)
        response.raise_for_status()
        return response.json()

    wait_until(overview, container, "rabbitmq")
    ready = time.monotonic() - started

    answer = overview()
    assert answer["rabbitmq_version"].startswith("3.10")
    assert {"management_version", "node"} <= set(answer)
    assert httpx.get(url, auth=("guest", "wrong"), timeout=2).status_code == 401

    stopped, exit_code = timed_stop(container, grace=1)
    figures("rabbitmq", ready, stopped, exit_code)
    assert stopped < STOP_LIMIT


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

    server = run(OFFLINE_PYTHON_IMAGE, ["python", "-m", "http.server", "8000"])
    wait_until(lambda: docker.execute(server, ["python", "-c", "1"]), server, "python")
    stopped, exit_code = timed_stop(server, grace=1)
    figures("python", ready, stopped, exit_code)
    assert stopped < STOP_LIMIT


def image_ids(images: BaseImages) -> dict[str, str]:
    return {
        image: docker.image.inspect(image).id for image in (images.postgres, images.broker, images.python)
    }


def test_resolve_base_images_uses_the_standins_and_reuses_them(monkeypatch):
    monkeypatch.delenv("INTEGRATION_OFFLINE", raising=False)
    standins = BaseImages(
        postgres=OFFLINE_POSTGRES_IMAGE, broker=OFFLINE_BROKER_IMAGE, python=OFFLINE_PYTHON_IMAGE
    )

    lines: list[str] = []
    started = time.monotonic()
    chosen, _ = resolve_base_images(BaseImages(), report=lines.append)  # builds only a changed recipe
    first_seconds = time.monotonic() - started
    ids = image_ids(chosen)
    started = time.monotonic()
    again, second = resolve_base_images(BaseImages(), report=lines.append)
    second_seconds = time.monotonic() - started
    print(f"\n[stand-in] resolve_base_images: {first_seconds:.2f}s, then {second_seconds:.2f}s")

    assert chosen == again == standins
    assert [(o.kind, o.image) for o in second] == [
        ("postgres", OFFLINE_POSTGRES_IMAGE),
        ("broker", OFFLINE_BROKER_IMAGE),
        ("python", OFFLINE_PYTHON_IMAGE),
    ]
    assert all(o.action in ("reused", "present") for o in second), second
    assert image_ids(again) == ids  # the second call built nothing
    fallback = (
        f"{BaseImages().postgres} cannot be pulled; using the offline stand-in {OFFLINE_POSTGRES_IMAGE}"
    )
    assert fallback in lines
    assert second_seconds < 10

    # Asking for the stand-ins by name resolves to them as well, without a pull attempt.
    named, outcomes = resolve_base_images(standins, report=lines.append)
    assert named == standins
    assert all(o.action == "reused" for o in outcomes)
    assert image_ids(named) == ids
