"""Measuring the toolkit: its commands on a copy of a system as whole processes (`Toolkit`), and what it
does in-process: the freshness check, an image build, and a stack's cold `up`, `reset()` latency and
`down` (`measure_stack`, the cold `up`'s container timeline included)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .cleanup import remove_project
from .processes import Run, base_env, run_timed
from .timeline import event_timeline


class Toolkit:
    """The toolkit's side: `pytest --integration` and `python -m integration` on a copy of a system."""

    def __init__(self, root: Path, compose_dir: Path, project: str, port_base: int) -> None:
        self.root = root
        self.compose_dir = compose_dir
        self.project = project
        self.port_base = port_base

    def env(self, *, reuse: bool = False) -> dict[str, str]:
        env = base_env()
        env.update(
            {
                "INTEGRATION_ROOT": str(self.root),
                "INTEGRATION_COMPOSE_DIR": str(self.compose_dir),
                "INTEGRATION_PROJECT": self.project,
                "INTEGRATION_PORT_BASE": str(self.port_base),
            }
        )
        if reuse:
            env["INTEGRATION_REUSE"] = "1"
        return env

    def pytest(self, *args: str, reuse: bool = False) -> Run:
        command = [sys.executable, "-m", "pytest", "--integration", "-p", "no:cacheprovider", "-q", *args]
        return run_timed(command, cwd=self.root, env=self.env(reuse=reuse))

    def cli(self, *args: str) -> Run:
        return run_timed([sys.executable, "-m", "integration", *args], cwd=self.root, env=self.env())

    def down(self) -> None:
        """`python -m integration down`, then whatever of the project is still there (a failed run's)."""
        self.cli("down")
        remove_project(self.project)


SEED_SQL = {
    # A few rows in each of the example's tables; outbox rows are already published, so that no service
    # picks them up while the benchmark resets.
    "links": (
        "INSERT INTO links (code, url, created_at) "
        "SELECT 'seed' || g || '-' || left(md5(random()::text), 16), 'https://example.com/' || g, now() "
        "FROM generate_series(1, 3) g"
    ),
    "outbox_events": (
        "INSERT INTO outbox_events (event_id, event_type, payload, occurred_at, published_at) "
        "SELECT md5(random()::text || g), 'LinkCreated', '{}'::jsonb, now(), now() "
        "FROM generate_series(1, 3) g"
    ),
    "link_stats": (
        "INSERT INTO link_stats (code, url, visits, created_at, deleted) "
        "SELECT 'seed' || g || '-' || left(md5(random()::text), 16), 'https://example.com', g, now(), false "
        "FROM generate_series(1, 3) g"
    ),
    "processed_events": (
        "INSERT INTO processed_events (event_id, event_type, processed_at) "
        "SELECT md5(random()::text || g), 'LinkCreated', now() FROM generate_series(1, 3) g"
    ),
}


def seed(harness: Any) -> int:
    """Insert a few rows into every known table of every service database; returns the rows added."""
    from integration.database import table_delete_order

    added = 0
    for service in harness.database_services():
        engine = harness.engine(service)
        tables = [t for t in reversed(table_delete_order(engine)) if t in SEED_SQL]
        if not tables:
            continue
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql(";\n".join(SEED_SQL[t] for t in tables))
        added += 3 * len(tables)
    return added


def measure_resets(harness: Any, count: int) -> dict[str, list[float]]:
    """`count` timed `reset_sync()` calls, each after seeding; plus what a reset is made of: opening a
    database connection, and the broker purge alone."""
    from integration.database import table_delete_order

    resets: list[float] = []
    connects: list[float] = []
    purges: list[float] = []
    for service in harness.database_services():  # the tables exist once a service has started
        table_delete_order(harness.engine(service))
    harness.reset_sync()  # the first reset reads the foreign keys; every later one uses the cached order
    for _ in range(count):
        seed(harness)
        started = time.perf_counter()
        harness.reset_sync()
        resets.append(time.perf_counter() - started)
    for _ in range(min(count, 50)):
        for service in harness.database_services():
            started = time.perf_counter()
            harness.engine(service).connect().close()
            connects.append(time.perf_counter() - started)
        if harness.broker is not None:
            started = time.perf_counter()
            harness.broker.purge_all()
            purges.append(time.perf_counter() - started)
    return {"reset": resets, "connect": connects, "purge": purges}


def measure_stack(
    system: Any,
    project: str,
    compose_dir: Path,
    port_base: int,
    *,
    repeat: int,
    resets: int,
    report: Callable[[str], None],
    timeline: bool = False,
) -> dict[str, Any]:
    """Cold `up` (to every service healthy), resets on the running stack, and `down`, in-process; with
    `timeline`, the first `up`'s container events (the reading of events is not timed)."""
    from integration.harness import RealServiceHarness
    from integration.images import require_fresh
    from integration.stack import Stack

    ids = require_fresh(system)
    ups: list[float] = []
    downs: list[float] = []
    result: dict[str, Any] = {}
    for index in range(repeat):
        stack = Stack(
            system,
            project=project,
            compose_dir=compose_dir,
            expected_images=ids,
            report=lambda line: None,
            port_base=port_base,
            reuse=False,
        )
        stack.down()
        try:
            if timeline and index == 0:
                with event_timeline(project) as recorded:
                    started = time.perf_counter()
                    stack.up()
                    ups.append(time.perf_counter() - started)
                result["timeline"] = recorded.lines(stack.answered)
                if recorded.error:
                    report(f"  {project}: no container events ({recorded.error})")
            else:
                started = time.perf_counter()
                stack.up()
                ups.append(time.perf_counter() - started)
            result.setdefault("up_timings", []).append(dict(stack.timings))
            if index == 0 and resets:
                assert stack.endpoints is not None
                with RealServiceHarness(stack.endpoints) as harness:
                    result.update(measure_resets(harness, resets))
        finally:
            started = time.perf_counter()
            stack.down()
            downs.append(time.perf_counter() - started)
        report(f"  {project}: up {ups[-1]:.1f}s, down {downs[-1]:.1f}s")
    result["up"] = ups
    result["down"] = downs
    return result


def measure_freshness(root: Path, repeat: int) -> list[float]:
    """What the plugin does before collection, in-process and cold (file hashes not cached): discovery,
    the base images, and the freshness of every service image."""
    from integration import buildinputs
    from integration.baseimages import locally_available
    from integration.discovery import load_system
    from integration.images import require_fresh

    samples = []
    for _ in range(repeat):
        buildinputs._file_hash.cache_clear()
        started = time.perf_counter()
        system = load_system(root)
        system = system.with_base_images(locally_available(system.base_images))
        require_fresh(system)
        samples.append(time.perf_counter() - started)
    return samples


def build_seconds(system: Any) -> float:
    """An in-process build of every stale image of `system` (`build_images`), timed."""
    from integration.images import build_images

    started = time.perf_counter()
    build_images(system, report=lambda line: None)
    return time.perf_counter() - started
