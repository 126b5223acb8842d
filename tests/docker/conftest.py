"""Throwaway PostgreSQL and RabbitMQ containers for the Docker tests, one of each per test module.

Fixtures: `pg_server` (a PgServer: `url(db)`, `create_database(name)`, `drop_database(name)`) and
`broker_server` (a BrokerServer: `management_url`, `amqp_port`). Containers are named `itest-...`,
publish on 127.0.0.1 to ports Docker picks, and are removed (force) when the module is done, also when
starting them failed halfway. The images default to the offline stand-ins; override with the
environment variables ITEST_POSTGRES_IMAGE and ITEST_BROKER_IMAGE.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from python_on_whales import Container, docker
from python_on_whales.exceptions import DockerException
from sqlalchemy.exc import SQLAlchemyError

from integration.broker import BrokerAdmin, BrokerError
from integration.database import make_engine
from integration.model import (
    BROKER_AMQP_PORT,
    BROKER_MANAGEMENT_PORT,
    BROKER_PASSWORD,
    BROKER_USER,
    OFFLINE_BROKER_IMAGE,
    OFFLINE_POSTGRES_IMAGE,
    POSTGRES_PASSWORD,
    POSTGRES_PORT,
    POSTGRES_USER,
)

PG_IMAGE = os.environ.get("ITEST_POSTGRES_IMAGE", OFFLINE_POSTGRES_IMAGE)
BROKER_IMAGE = os.environ.get("ITEST_BROKER_IMAGE", OFFLINE_BROKER_IMAGE)
START_TIMEOUT = 90.0
# The tests' broker updates its queue counters every second instead of every 5 s, so that tests which wait
# for the counters to catch up stay short: queues report every collect_statistics_interval, and the
# management plugin keeps samples at the granularity of its retention policies (5 s by default). The lag
# still exists (1 to 2 s); tests must not assume it away.
BROKER_FAST_STATS = (
    "-rabbit collect_statistics_interval 1000 "
    "-rabbitmq_management sample_retention_policies "
    "[{global,[{605,1}]},{basic,[{605,1}]},{detailed,[{10,1}]}]"
)


@dataclass(frozen=True)
class PgServer:
    container: str
    port: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://{POSTGRES_USER}:{POSTGRES_PASSWORD}@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        engine = make_engine(self.url(), application_name="itest-admin")
        try:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.exec_driver_sql(sql)
        finally:
            engine.dispose()

    def create_database(self, name: str) -> str:
        """A new empty database (dropped first if it exists); returns its URL."""
        self.drop_database(name)
        self._admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass(frozen=True)
class BrokerServer:
    container: str
    management_url: str
    amqp_port: int


def _host_port(container: Container, port: int) -> int:
    container.reload()
    bindings = container.network_settings.ports.get(f"{port}/tcp") or []
    for binding in bindings:
        host_port = (
            binding.get("HostPort") if isinstance(binding, dict) else getattr(binding, "host_port", None)
        )
        if host_port:
            return int(host_port)
    raise RuntimeError(f"container {container.name} publishes no host port for {port}/tcp: {bindings}")


def _ensure_running(container: Container, what: str) -> None:
    container.reload()
    if not container.state.running:
        logs = docker.container.logs(container, tail=30)
        raise RuntimeError(f"{what} container {container.name} exited ({container.state.exit_code}):\n{logs}")


def _remove(name: str) -> None:
    with contextlib.suppress(DockerException):  # never created, or already gone
        docker.container.remove(name, force=True, volumes=True)


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL server for the module, durability off, data on tmpfs."""
    name = f"itest-pg-{uuid.uuid4().hex[:8]}"
    try:
        container = docker.run(
            PG_IMAGE,
            ["postgres", "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
            name=name,
            detach=True,
            envs={"POSTGRES_USER": POSTGRES_USER, "POSTGRES_PASSWORD": POSTGRES_PASSWORD},
            publish=[("127.0.0.1:", POSTGRES_PORT)],
            tmpfs=["/var/lib/postgresql/data"],
        )
        server = PgServer(name, _host_port(container, POSTGRES_PORT))
        engine = make_engine(server.url(), application_name="itest-admin")
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with engine.connect() as connection:
                    connection.exec_driver_sql("SELECT 1")
                break
            except SQLAlchemyError:
                _ensure_running(container, "postgres")
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        engine.dispose()
        yield server
    finally:
        _remove(name)


@pytest.fixture(scope="module")
def broker_server() -> Iterator[BrokerServer]:
    """A RabbitMQ broker with the management API for the module, its stats interval shortened."""
    name = f"itest-broker-{uuid.uuid4().hex[:8]}"
    try:
        container = docker.run(
            BROKER_IMAGE,
            name=name,
            detach=True,
            envs={"RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": BROKER_FAST_STATS},
            publish=[("127.0.0.1:", BROKER_MANAGEMENT_PORT), ("127.0.0.1:", BROKER_AMQP_PORT)],
        )
        server = BrokerServer(
            name,
            f"http://127.0.0.1:{_host_port(container, BROKER_MANAGEMENT_PORT)}",
            _host_port(container, BROKER_AMQP_PORT),
        )
        with BrokerAdmin(server.management_url, BROKER_USER, BROKER_PASSWORD) as admin:
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                try:
                    admin.wait_until_ready(timeout=5)
                    break
                except BrokerError:
                    _ensure_running(container, "rabbitmq")
                    if time.monotonic() > deadline:
                        raise
        yield server
    finally:
        _remove(name)


@pytest.fixture(scope="session", autouse=True)
def _remove_images_of_copies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Service images are tagged per checkout: the copies the tests build in this session's temporary
    folders leave images of their own, removed at the end (only those: by their checkout-root label)."""
    yield
    from example_copies import remove_images_under

    with contextlib.suppress(DockerException):
        remove_images_under(tmp_path_factory.getbasetemp())
