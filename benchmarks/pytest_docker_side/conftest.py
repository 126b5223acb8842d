"""pytest-docker's usual setup for the example's use-case tests.

Not a conftest of this repository: `benchmarks/pytest_docker.py` copies it into the root of a copy of
the example, where pytest-docker runs in its own virtual environment. What it runs against comes from
the environment: BENCH_COMPOSE_FILE (its compose file: the toolkit's, with a `build:` per service),
BENCH_PROJECT (the compose project) and BENCH_SERVICES (JSON: per service its name, container port,
health path, database and consumed events).
"""

import json
import os

import httpx
import pytest

from integration.model import ServiceEndpoint, StackEndpoints
from use_case_tests.real_harness import RealServiceHarness


@pytest.fixture(scope="session")
def docker_compose_file():
    return os.environ["BENCH_COMPOSE_FILE"]


@pytest.fixture(scope="session")
def docker_compose_project_name():
    return os.environ["BENCH_PROJECT"]


def is_responsive(url):
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="session")
def endpoints(docker_ip, docker_services):
    specs = json.loads(os.environ["BENCH_SERVICES"])
    services = {}
    for spec in specs:
        url = f"http://{docker_ip}:{docker_services.port_for(spec['name'], spec['port'])}"
        docker_services.wait_until_responsive(
            check=lambda url=url, spec=spec: is_responsive(url + spec["health"]), timeout=90.0, pause=0.1
        )
        database_url = None
        if spec["database"]:
            db_port = docker_services.port_for(spec["name"] + "-db", 5432)
            database_url = f"postgresql+psycopg2://postgres:postgres@{docker_ip}:{db_port}/{spec['database']}"
        services[spec["name"]] = ServiceEndpoint(spec["name"], url, database_url)
    broker = f"http://{docker_ip}:{docker_services.port_for('broker', 15672)}"
    return StackEndpoints(
        project=os.environ["BENCH_PROJECT"],
        services=services,
        broker_management_url=broker,
        exchange="events",
        queues={s["name"]: s["name"] + ".events" for s in specs if s["consumed"]},
        consumed={s["name"]: tuple(s["consumed"]) for s in specs if s["consumed"]},
    )


@pytest.fixture
def test_harness(endpoints):
    harness = RealServiceHarness(endpoints)
    try:
        yield harness
    finally:
        try:
            harness.reset_sync()
        finally:
            harness.close()
