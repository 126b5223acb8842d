"""integration.endpoints.container_info reads one `docker container inspect` document (the engine's
JSON, not python-on-whales' models): the fields a stack reads, and nothing that raises on a document
with parts missing or of another shape."""

from __future__ import annotations

import random

from integration.endpoints import ContainerInfo, container_info

RUNNING = {
    "Id": "4f1c0ffee",
    "Name": "/shop-ab12cd34-orders-db-1",
    "Image": "sha256:9e1f",
    "State": {"Status": "running", "ExitCode": 0, "Health": {"Status": "healthy"}},
    "Config": {"Labels": {"com.docker.compose.service": "orders-db", "com.docker.compose.project": "shop"}},
    "HostConfig": {"PortBindings": {"5432/tcp": [{"HostIp": "127.0.0.1", "HostPort": "47101"}]}},
    "NetworkSettings": {
        "Ports": {
            "5432/tcp": [{"HostIp": "127.0.0.1", "HostPort": "47101"}],
            "8080/tcp": None,  # exposed, not published
        }
    },
}


def test_a_running_container_with_its_health_and_published_port():
    assert container_info(RUNNING) == ContainerInfo(
        service="orders-db",
        name="shop-ab12cd34-orders-db-1",
        state="running",
        exit_code=0,
        health="healthy",
        image_id="sha256:9e1f",
        ports={5432: 47101},
        container_id="4f1c0ffee",
    )


def test_an_exited_container_keeps_its_exit_code_and_has_no_ports_or_health():
    document = {
        **RUNNING,
        "State": {"Status": "exited", "ExitCode": 3},
        "NetworkSettings": {"Ports": {}},
    }
    info = container_info(document)
    assert (info.state, info.exit_code, info.health, info.ports) == ("exited", 3, None, {})


def test_a_container_without_compose_labels_is_its_own_service():
    document = {**RUNNING, "Config": {"Labels": None}}
    assert container_info(document).service == "shop-ab12cd34-orders-db-1"


SEED = 20261202
KEYS = [
    "Id",
    "Name",
    "Image",
    "State",
    "Config",
    "NetworkSettings",
    "HostConfig",
    "Status",
    "Ports",
    "HostPort",
]
PORT_KEYS = ["5432/tcp", "8000/tcp", "15672/tcp", "53/udp"]


def random_value(rng: random.Random, depth: int = 0) -> object:
    """A JSON value of any shape; mappings use the document's own keys, so the reader meets them."""
    kind = rng.randrange(7 if depth < 3 else 4)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False, 0, -1, 47101])
    if kind == 2:
        return rng.choice(["", "running", "/x", "5432/tcp", "healthy", "47101"])
    if kind == 3:
        return rng.random()
    if kind == 4:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(3))]
    return {rng.choice(KEYS + PORT_KEYS): random_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def test_any_shape_of_document_reads_without_raising():
    rng = random.Random(SEED)
    for _ in range(3000):
        document = random_value(rng)
        if isinstance(document, dict):
            info = container_info(document)
            assert isinstance(info.state, str) and isinstance(info.ports, dict)


def test_each_published_port_maps_its_container_port_to_the_last_host_binding():
    rng = random.Random(SEED)
    for _ in range(500):
        ports = {
            key: None
            if rng.random() < 0.2
            else [
                {"HostIp": "127.0.0.1", "HostPort": str(rng.randrange(1, 65536))}
                for _ in range(rng.randrange(3))
            ]
            for key in rng.sample(PORT_KEYS, rng.randrange(len(PORT_KEYS) + 1))
        }
        info = container_info({"NetworkSettings": {"Ports": ports}})
        expected = {
            int(key.split("/")[0]): int(entries[-1]["HostPort"]) for key, entries in ports.items() if entries
        }
        assert info.ports == expected
