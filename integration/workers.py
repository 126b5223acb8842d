"""The later xdist workers' part of a shared stack: their databases and broker virtual hosts.

A shared stack starts the broker and the databases first; then each later worker gets a database of its
own in every service's PostgreSQL (`links_gw1`) and a virtual host of its own (`gw1`), before any
service starts (model.copy_suffix: the first worker uses the serial stack's). Creating what exists
already does nothing, so a reused stack passes through here unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

from .broker import BrokerAdmin, BrokerError
from .database import create_databases
from .endpoints import ContainerInfo, host, published_database_url
from .errors import HarnessError
from .model import (
    BROKER_MANAGEMENT_PORT,
    BROKER_PASSWORD,
    BROKER_SERVICE,
    BROKER_USER,
    SystemSpec,
    worker_database,
    worker_vhost,
)


class WorkerSetupError(Exception):
    """A later worker's database or virtual host could not be created."""


def prepare_workers(
    system: SystemSpec, workers: Sequence[str], infos: Sequence[ContainerInfo], broker_timeout: float
) -> None:
    """Create the databases and virtual hosts of every worker but the first."""
    by_service = {i.service: i for i in infos}
    later = workers[1:]
    for spec in system.services:
        if spec.database is None:
            continue
        url = published_database_url(system.credentials, by_service, spec.db_service, spec.database)
        try:
            create_databases(url, [worker_database(spec.database, worker) for worker in later])
        except HarnessError as exc:
            raise WorkerSetupError(
                f"creating the workers' databases in {spec.db_service} failed: {exc}"
            ) from exc
    if not system.needs_broker:
        return
    broker = by_service.get(BROKER_SERVICE)
    if broker is None or BROKER_MANAGEMENT_PORT not in broker.ports:
        raise WorkerSetupError("the broker has no published management port")
    url = f"http://{host()}:{broker.ports[BROKER_MANAGEMENT_PORT]}"
    with BrokerAdmin(url, BROKER_USER, BROKER_PASSWORD) as admin:
        try:
            admin.wait_until_ready(timeout=broker_timeout)
            for worker in later:
                admin.ensure_vhost(worker_vhost(worker), BROKER_USER)
        except BrokerError as exc:
            raise WorkerSetupError(f"creating the workers' virtual hosts failed: {exc}") from exc
