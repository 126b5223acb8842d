"""`python -m integration.bench`: what a run costs on the bundled example, side by side with pytest-docker.

A benchmark, not a test: it prints a table and writes every sample as JSON (`compose/bench/<stamp>.json`,
path printed; the folder ignores itself in git). Each figure is the median of `--repeat` runs (default 3):

- the use-case tests from the command to the test summary (a whole `pytest --integration` process):
  with the images built from nothing, with the images cached (cold stack), and warm (reuse mode, no
  change); the same tests under pytest-docker in its usual setup for each of the three;
- the freshness check alone when nothing changed, timed in-process and as `python -m integration check`;
- `reset()` latency, p50 and p95 over `--resets` resets (default 200) of the running stack, with a few
  rows seeded into every table before each one; teardown; image builds from nothing and cached;
- a system of `--scale` services (default 8: copies of the example's two services) against the
  example's 2: build, up, reset and down.

Everything runs on copies under the work folder (default `compose/bench/`) with `bench-` image tags,
`bench-` compose projects and their own port blocks, so that a benchmark never touches the example's
images or a stack someone else is running. "From nothing" builds a copy whose Dockerfiles set a fresh
`ENV BENCH_CACHE_BUST=<token>` right after `FROM`, which invalidates every cached layer after the base
image for both tools alike; the base images themselves are local and are not counted.

pytest-docker runs in its own virtual environment (`<work>/venv`, made on first use: pytest,
pytest-docker, pytest-asyncio and the harness's libraries; never this toolkit's plugin). Its
`docker_compose_file` is the toolkit's generated compose file for the same system, with a `build:`
section added per service (context: the system root, the service's Dockerfile, `PYTHON_IMAGE`) and its
own image tags, so that its default `docker_setup` (`up --build -d`) really builds; it waits with
`docker_services.wait_until_responsive` on each service's health URL and builds the example's
RealServiceHarness from `docker_ip` and `port_for`. pytest-docker has no reuse mode: its warm rerun is
the same `up --build -d` as its cold one, so both are measured by the same runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from .dockerfile import read as read_dockerfile

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "shortener"
DEFAULT_WORK = REPO / "compose" / "bench"
IMAGE_PREFIX = "bench-"
FRESH_PREFIX = "bench-fresh-"
PYTEST_DOCKER_TAG = "pytest-docker"
CACHE_BUST_ARG = "BENCH_CACHE_BUST"
# Below Linux's ephemeral range (32768-60999), away from the default block 47100 other stacks use.
WORKER_COUNT = 2  # pytest-xdist workers of the -n measurement
PORT_BASES = {"ours": 22100, "pytest-docker": 23100, "scale": 24100, "fresh": 25100}
PYTEST_DOCKER_REQUIREMENTS = (
    "pytest>=8",
    "pytest-docker>=3.2,<4",
    "pytest-asyncio>=0.24",
    "httpx>=0.27",
    "sqlalchemy>=2.0",
    "psycopg2-binary>=2.9",
    "pydantic>=2.5",
)
HEALTH_TIMEOUT = 90.0

# Targets on the reference machine (2 cores): seconds, or the factor by which pytest-docker is slower.
TARGETS = {
    "cold": 10.0,
    "warm": 3.0,
    "freshness": 0.3,
    "reset_p50": 0.015,
    "teardown": 3.0,
    "speedup_nothing": 1.5,
    "speedup_cached": 2.0,
    "speedup_warm": 5.0,
}


# --- pure: statistics, ratios and the table ----------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    """The median; NaN for no values (a measurement that did not run)."""
    return statistics.median(values) if values else math.nan


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100) with linear interpolation between ranks, as numpy's default."""
    if not values:
        return math.nan
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is outside 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def speedup(ours: float, theirs: float) -> float:
    """How many times faster ours is: theirs / ours (NaN when either is missing or ours is 0)."""
    if math.isnan(ours) or math.isnan(theirs) or ours <= 0:
        return math.nan
    return theirs / ours


def fmt_seconds(value: float) -> str:
    """Seconds for a table cell: milliseconds below one second, "-" for a missing value."""
    if value is None or math.isnan(value):
        return "-"
    if value < 1:
        return f"{value * 1000:.1f} ms"
    return f"{value:.2f} s"


def fmt_factor(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}x"


def verdict(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: ""}[met]


def within(value: float, limit: float) -> bool | None:
    return None if math.isnan(value) else value <= limit


def at_least(value: float, limit: float) -> bool | None:
    return None if math.isnan(value) else value >= limit


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: left-aligned first column, the others right-aligned, a rule under the head."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        parts = [str(cells[0]).ljust(widths[0])]
        parts += [str(cell).rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def parse_phases(output: str) -> dict[str, float]:
    """The plugin's "integration: time per phase" section of a pytest run, as phase -> seconds."""
    phases: dict[str, float] = {}
    inside = False
    for raw in output.splitlines():
        if "integration: time per phase" in raw:
            inside = True
            continue
        if inside:
            match = re.match(r"^(\S.*?)\s+(\d+\.\d+)s$", raw.strip())
            if not match:
                break
            phases[match.group(1)] = float(match.group(2))
    return phases


def parse_build_seconds(output: str) -> float:
    """`build step done in 12.3s` of `python -m integration build`/`run`; NaN when absent."""
    match = re.search(r"build step done in (\d+(?:\.\d+)?)s", output)
    return float(match.group(1)) if match else math.nan


# --- samples -----------------------------------------------------------------------------------------------


@dataclass
class Sample:
    """The runs of one measurement: seconds each, plus what else a run reported."""

    name: str
    seconds: list[float] = field(default_factory=list)
    details: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def median(self) -> float:
        return median(self.seconds)

    def add(self, seconds: float, **details: Any) -> None:
        self.seconds.append(seconds)
        self.details.append({"load": os.getloadavg()[0], **details})

    def detail_median(self, key: str) -> float:
        return median([d[key] for d in self.details if isinstance(d.get(key), int | float)])


class Results:
    """Every sample by name, and the machine they were taken on."""

    def __init__(self) -> None:
        self.samples: dict[str, Sample] = {}
        self.extra: dict[str, Any] = {}

    def sample(self, name: str) -> Sample:
        return self.samples.setdefault(name, Sample(name))

    def median(self, name: str) -> float:
        sample = self.samples.get(name)
        return sample.median if sample else math.nan

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": {
                name: {**asdict(sample), "median": None if math.isnan(sample.median) else sample.median}
                for name, sample in self.samples.items()
            },
            **self.extra,
        }


# --- copies of the example ---------------------------------------------------------------------------------


def _ignore(folder: str, names: list[str]) -> set[str]:
    return {n for n in names if n in {"__pycache__", ".pytest_cache", ".integration", ".ruff_cache"}}


def copy_system(
    source: Path,
    dest: Path,
    *,
    image_prefix: str = IMAGE_PREFIX,
    cache_bust: str | None = None,
) -> Path:
    """A copy of a system with its images renamed `<prefix><name>:test`; with `cache_bust`, every
    Dockerfile sets `ENV BENCH_CACHE_BUST=<token>-<service>` after FROM, so nothing after the base image
    comes from the build cache."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(source, dest, ignore=_ignore)
    services_file = dest / "architecture" / "services.yml"
    data = yaml.safe_load(services_file.read_text())
    for name, settings in data["services"].items():
        settings["image"] = f"{image_prefix}{name}:test"
        if cache_bust:
            dockerfile = dest / settings.get(
                "dockerfile", f"{settings.get('build', f'services/{name}')}/Dockerfile"
            )
            bust_dockerfile(dockerfile, f"{cache_bust}-{name}")
    services_file.write_text(yaml.safe_dump(data, sort_keys=False))
    return dest


def bust_dockerfile(dockerfile: Path, token: str) -> None:
    """Insert `ENV BENCH_CACHE_BUST=<token>` after the first FROM (after its last line, when it is
    continued): every later layer misses the cache. ValueError when there is no FROM."""
    parsed = read_dockerfile(dockerfile)
    if not parsed.froms:
        raise ValueError(f"{dockerfile} has no FROM line")
    lines = parsed.text.splitlines()
    lines.insert(parsed.froms[0].end_line, f"ENV {CACHE_BUST_ARG}={token}")
    dockerfile.write_text("\n".join(lines) + "\n")


def scale_system(source: Path, dest: Path, count: int, *, image_prefix: str = IMAGE_PREFIX) -> Path:
    """A system of `count` services: the example's services, then copies of them named `<name>-2`,
    `<name>-3`, ... (each with its own folder, Dockerfile, contract module, database and queue), until
    there are `count`. Generated into `dest`, services.yml included."""
    copy_system(source, dest, image_prefix=image_prefix)
    services_file = dest / "architecture" / "services.yml"
    data = yaml.safe_load(services_file.read_text())
    originals = list(data["services"].items())
    services = dict(originals)
    copy_number = 2
    while len(services) < count:
        for name, settings in originals:
            if len(services) >= count:
                break
            new = f"{name}-{copy_number}"
            module = new.replace("-", "_")
            contract = settings.get("contract", name.replace("-", "_"))
            shutil.copytree(dest / "services" / name, dest / "services" / new, ignore=_ignore)
            dockerfile = dest / "services" / new / "Dockerfile"
            dockerfile.write_text(dockerfile.read_text().replace(f"services/{name}/", f"services/{new}/"))
            (dest / "architecture" / "contracts" / f"{module}.py").write_text(
                f'"""Contract of {new}: a copy of {contract} (generated by integration.bench)."""\n\n'
                f"from architecture.contracts.{contract} import *  # noqa: F403\n"
                f"from architecture.contracts.{contract} import (  # noqa: F401\n"
                "    EVENTS_CONSUMED,\n    EVENTS_PUBLISHED,\n)\n"
            )
            entry = dict(settings)
            entry["contract"] = module
            entry["image"] = f"{image_prefix}{new}:test"
            if "database" in entry:
                entry["database"] = module
            entry.pop("build", None)
            entry.pop("dockerfile", None)
            services[new] = entry
        copy_number += 1
    data["services"] = services
    services_file.write_text(yaml.safe_dump(data, sort_keys=False))
    return dest


# --- running things ----------------------------------------------------------------------------------------


@dataclass
class Run:
    seconds: float
    returncode: int
    output: str


def run_timed(command: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float = 1800) -> Run:
    started = time.perf_counter()
    try:
        done = subprocess.run(
            list(command),
            cwd=cwd,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
        output, code = done.stdout, done.returncode
    except subprocess.TimeoutExpired as exc:
        # On POSIX the output so far comes as bytes even with text=True.
        so_far = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        output, code = f"{so_far}\n(timed out after {timeout:.0f}s)", -1
    return Run(time.perf_counter() - started, code, output)


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _base_env() -> dict[str, str]:
    env = dict(os.environ)
    for key in list(env):
        if (
            key.startswith("INTEGRATION_")
            and key not in {"INTEGRATION_OFFLINE"}
            and not key.endswith("_IMAGE")
        ):
            env.pop(key)
    return env


def docker_compose(project: str, compose_file: Path, *args: str) -> None:
    subprocess.run(
        ["docker", "compose", "-p", project, "-f", str(compose_file), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )


def remove_project(project: str) -> None:
    """Every container and network of a compose project, whatever made it."""
    label = f"label=com.docker.compose.project={project}"
    ids = subprocess.run(
        ["docker", "ps", "-aq", "--filter", label], capture_output=True, text=True
    ).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-fv", *ids], capture_output=True, check=False)
    nets = subprocess.run(
        ["docker", "network", "ls", "-q", "--filter", label], capture_output=True, text=True
    )
    if nets.stdout.split():
        subprocess.run(["docker", "network", "rm", *nets.stdout.split()], capture_output=True, check=False)


def remove_images(tags: Sequence[str]) -> None:
    if tags:
        subprocess.run(["docker", "image", "rm", "-f", *tags], capture_output=True, check=False)


class Toolkit:
    """The toolkit's side: `pytest --integration` and `python -m integration` on a copy of a system."""

    def __init__(self, root: Path, compose_dir: Path, project: str, port_base: int) -> None:
        self.root = root
        self.compose_dir = compose_dir
        self.project = project
        self.port_base = port_base

    def env(self, *, reuse: bool = False) -> dict[str, str]:
        env = _base_env()
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
        self.cli("down")
        remove_project(self.project)


class PytestDocker:
    """The same use-case tests under pytest-docker, in its own virtual environment."""

    def __init__(self, venv: Path, lib_dir: Path) -> None:
        self.venv = venv
        self.lib_dir = lib_dir

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def ensure_venv(self, report: Callable[[str], None]) -> None:
        marker = self.venv / ".bench-requirements"
        wanted = "\n".join(PYTEST_DOCKER_REQUIREMENTS)
        if self.python.exists() and marker.exists() and marker.read_text() == wanted:
            return
        report(f"making pytest-docker's virtual environment in {self.venv}")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(self.venv)], check=True)
        subprocess.run(
            [str(self.python), "-m", "pip", "install", "-q", *PYTEST_DOCKER_REQUIREMENTS],
            check=True,
        )
        marker.write_text(wanted)

    def version(self) -> str:
        done = subprocess.run(
            [str(self.python), "-c", "import importlib.metadata as m; print(m.version('pytest-docker'))"],
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout.strip() or "unknown"

    def install(self, root: Path) -> None:
        """Its conftest.py in the root of a copy of the system, and a folder holding only a link to this
        toolkit's `integration` package: the harness is importable, while the toolkit's pytest plugin
        (an entry point of its distribution, whose metadata sits in the repository root) stays out."""
        (root / "conftest.py").write_text(PYTEST_DOCKER_CONFTEST)
        self.lib_dir.mkdir(parents=True, exist_ok=True)
        link = self.lib_dir / "integration"
        if not link.is_symlink():
            if link.exists():
                shutil.rmtree(link)
            link.symlink_to(REPO / "integration", target_is_directory=True)

    def pytest(self, root: Path, compose_file: Path, project: str, services: list[dict[str, Any]]) -> Run:
        env = _base_env()
        env.update(
            {
                "PYTHONPATH": str(self.lib_dir),
                "BENCH_COMPOSE_FILE": str(compose_file),
                "BENCH_PROJECT": project,
                "BENCH_SERVICES": json.dumps(services),
            }
        )
        command = [str(self.python), "-m", "pytest", "-p", "no:cacheprovider", "-q"]
        return run_timed(command, cwd=root, env=env)


# The conftest a pytest-docker user writes for these tests: its fixtures, its wait, the example's harness.
PYTEST_DOCKER_CONFTEST = '''\
"""pytest-docker's usual setup for the example's use-case tests (written by integration.bench)."""

import json
import os

import httpx
import pytest

from integration.model import ServiceEndpoint, StackEndpoints
from use_case_tests.real_harness import RealServiceHarness

SERVICES = json.loads(os.environ["BENCH_SERVICES"])


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
    services = {}
    for spec in SERVICES:
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
        queues={s["name"]: s["name"] + ".events" for s in SERVICES if s["consumed"]},
        consumed={s["name"]: tuple(s["consumed"]) for s in SERVICES if s["consumed"]},
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
'''


def pytest_docker_compose(generated: Path, dest: Path, system: Any, tag: str = PYTEST_DOCKER_TAG) -> Path:
    """pytest-docker's compose file: the toolkit's generated one plus a `build:` per service, so that
    its `up --build -d` builds the images (tagged `<image name>:<tag>`) as it would in a project."""
    data = yaml.safe_load(generated.read_text())
    for spec in system.services:
        entry = data["services"][spec.name]
        entry["image"] = f"{spec.image.rsplit(':', 1)[0]}:{tag}"
        entry["build"] = {
            "context": str(system.root),
            "dockerfile": str(spec.dockerfile.relative_to(system.root)),
            "args": {"PYTHON_IMAGE": system.base_images.python},
        }
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump(data, sort_keys=False, width=10_000))
    return dest


def service_specs(system: Any) -> list[dict[str, Any]]:
    return [
        {
            "name": s.name,
            "port": s.port,
            "health": s.health_path,
            "database": s.database,
            "consumed": list(s.events_consumed),
        }
        for s in system.services
    ]


# --- in-process measurements -------------------------------------------------------------------------------


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


@dataclass
class Timeline:
    started: float  # time.time() when the timeline began
    events: list[tuple[float, str, str]] = field(default_factory=list)


@contextlib.contextmanager
def event_timeline(project: str) -> Iterator[Timeline]:
    """Container events of a compose project while the block runs: (seconds since start, action, name)."""
    started = time.time()
    timeline = Timeline(started)
    events = timeline.events
    process = subprocess.Popen(
        [
            "docker",
            "events",
            "--filter",
            f"label=com.docker.compose.project={project}",
            "--filter",
            "type=container",
            "--format",
            "{{.TimeNano}} {{.Action}} {{.Actor.Attributes.name}}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            stamp, _, rest = line.strip().partition(" ")
            action, _, name = rest.rpartition(" ")
            if action.startswith("exec_"):
                continue
            with contextlib.suppress(ValueError):
                events.append((int(stamp) / 1e9 - started, action, name))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(0.3)  # `docker events` subscribes before the first container is created
    try:
        yield timeline
    finally:
        time.sleep(0.3)
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        reader.join(timeout=2)


def summarize_timeline(
    events: list[tuple[float, str, str]], answered: Mapping[str, float] | None = None
) -> list[str]:
    """One line per container: created, started, healthy (the engine's health check), and for a service
    when its health URL first answered the toolkit (seconds since the timeline began)."""
    by_name: dict[str, dict[str, float]] = {}
    for seconds, action, name in events:
        key = "healthy" if action == "health_status: healthy" else action
        if key in {"create", "start", "healthy"}:
            by_name.setdefault(name, {}).setdefault(key, seconds)
    for name, seconds in (answered or {}).items():
        container = next((c for c in by_name if c.rsplit("-", 1)[0].endswith(f"-{name}")), None)
        if container is not None:
            by_name[container]["answered"] = seconds
    lines = []
    for name, marks in sorted(by_name.items(), key=lambda item: item[1].get("start", 1e9)):
        keys = ("create", "start", "healthy", "answered")
        cells = [f"{key} {marks[key]:5.2f}s" for key in keys if key in marks]
        lines.append(f"{name:<36} " + "  ".join(cells))
    return lines


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
    """Cold `up` (to every service healthy), resets on the running stack, and `down`, in-process."""
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
        started = time.perf_counter()
        try:
            if timeline and index == 0:
                with event_timeline(project) as recorded:
                    stack.up()
                answered = {name: at - recorded.started for name, at in stack.answered.items()}
                result["timeline"] = summarize_timeline(recorded.events, answered)
            else:
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


def build_seconds(system: Any, *, report: Callable[[str], None]) -> float:
    from integration.images import build_images

    started = time.perf_counter()
    build_images(system, report=lambda line: None)
    return time.perf_counter() - started


def load(root: Path) -> Any:
    from integration.baseimages import locally_available
    from integration.discovery import load_system

    system = load_system(root)
    return system.with_base_images(locally_available(system.base_images))


# --- the benchmark -----------------------------------------------------------------------------------------


@dataclass
class Options:
    repeat: int
    resets: int
    scale: int
    work: Path
    venv: Path
    out: Path | None
    pytest_docker: bool
    from_nothing: bool
    scaling: bool
    workers: bool = True
    only_workers: bool = False


class Bench:
    def __init__(self, options: Options, report: Callable[[str], None] = print) -> None:
        self.o = options
        self.report = report
        self.results = Results()
        self.work = options.work
        self.compose_dir = self.work / "compose"
        self.copy = self.work / "systems" / "shortener"
        self.pd_copy = self.work / "systems" / "shortener-pytest-docker"
        self.ours = Toolkit(self.copy, self.compose_dir, "bench-ours", PORT_BASES["ours"])
        self.pd = PytestDocker(options.venv, self.work / "pytest-docker")
        self.projects = {"bench-ours", "bench-pd", "bench-fresh-ours", "bench-fresh-pd", "bench-stack-2"}
        self.projects.add(f"bench-stack-{options.scale}")
        self.projects.update(f"bench-ours-gw{n}" for n in range(WORKER_COUNT))
        self.fresh_tags: set[str] = set()

    # -- preparation --

    def prepare(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        (self.work / ".gitignore").write_text("# benchmark results and work files: never committed\n*\n")
        copy_system(EXAMPLE, self.copy)
        build = self.ours.cli("build")
        if build.returncode:
            raise RuntimeError(f"building the benchmark's images failed:\n{_tail(build.output)}")
        self.system = load(self.copy)
        if self.o.pytest_docker and not self.o.only_workers:
            self.pd.ensure_venv(self.report)
            copy_system(EXAMPLE, self.pd_copy)
            self.pd.install(self.pd_copy)
            self.pd_system = load(self.pd_copy)
            self.pd_compose = self._pytest_docker_compose(
                self.pd_system, "bench-pd", PORT_BASES["pytest-docker"]
            )
            # Build its images once, so that its first "cached" run is as cached as ours.
            subprocess.run(
                ["docker", "compose", "-p", "bench-pd", "-f", str(self.pd_compose), "build", "-q"],
                capture_output=True,
                check=False,
            )

    def _pytest_docker_compose(self, system: Any, project: str, port_base: int) -> Path:
        from integration.stack import Stack

        stack = Stack(system, project=project, compose_dir=self.compose_dir, port_base=port_base, reuse=False)
        generated = stack.write()
        return pytest_docker_compose(generated, self.compose_dir / f"{project}.pytest-docker.yml", system)

    # -- measurements --

    def record(self, name: str, run: Run, **details: Any) -> bool:
        sample = self.results.sample(name)
        if run.returncode != 0:
            sample.failures.append(_tail(run.output))
            self.report(
                f"  {name}: FAILED (exit {run.returncode}) after {run.seconds:.1f}s\n{_tail(run.output, 15)}"
            )
            return False
        sample.add(run.seconds, **details)
        self.report(f"  {name}: {run.seconds:.2f}s")
        return True

    def measure_cold_and_cached(self) -> None:
        self.report("cold stack, images cached (ours) / up --build -d with cache (pytest-docker)")
        for _ in range(self.o.repeat):
            self.ours.down()
            run = self.ours.pytest()
            phases = parse_phases(run.output)
            self.record("ours: cold, images cached", run, phases=phases)
            for phase, seconds in phases.items():
                self.results.sample(f"ours: cold phase {phase}").add(seconds)
            if self.o.pytest_docker:
                remove_project("bench-pd")
                run = self.pd.pytest(self.pd_copy, self.pd_compose, "bench-pd", service_specs(self.pd_system))
                self.record("pytest-docker: images cached", run)

    def measure_warm(self) -> None:
        self.report("warm rerun, no change (ours: reuse mode)")
        self.ours.down()
        prime = self.ours.pytest(reuse=True)
        if prime.returncode:
            self.report(f"  priming the reused stack failed:\n{_tail(prime.output, 15)}")
        for _ in range(self.o.repeat):
            run = self.ours.pytest(reuse=True)
            phases = parse_phases(run.output)
            self.record("ours: warm (reuse)", run, phases=phases)
            for phase, seconds in phases.items():
                self.results.sample(f"ours: warm phase {phase}").add(seconds)
        self.ours.down()

    def measure_freshness(self) -> None:
        self.report("freshness check, nothing changed")
        for seconds in measure_freshness(self.copy, max(self.o.repeat, 5)):
            self.results.sample("freshness: in-process").add(seconds)
        for _ in range(max(self.o.repeat, 5)):
            self.record("freshness: python -m integration check", self.ours.cli("check"))
        bare = run_timed([sys.executable, "-c", "pass"], cwd=self.copy, env=_base_env())
        self.results.sample("python start (floor)").add(bare.seconds)

    def measure_from_nothing(self) -> None:
        self.report("images built from nothing (a cache-busting token in every Dockerfile)")
        for index in range(self.o.repeat):
            token = uuid.uuid4().hex[:10]
            root = copy_system(
                EXAMPLE, self.work / "systems" / "fresh-ours", image_prefix=FRESH_PREFIX, cache_bust=token
            )
            toolkit = Toolkit(root, self.compose_dir, "bench-fresh-ours", PORT_BASES["fresh"])
            run = toolkit.cli("run")
            self.record("ours: images from nothing", run, build=parse_build_seconds(run.output))
            self.results.sample("ours: build from nothing").add(parse_build_seconds(run.output))
            toolkit.down()
            self._drop_fresh_images(root)
            if self.o.pytest_docker:
                token = uuid.uuid4().hex[:10]
                root = copy_system(
                    EXAMPLE, self.work / "systems" / "fresh-pd", image_prefix=FRESH_PREFIX, cache_bust=token
                )
                self.pd.install(root)
                system = load(root)
                compose = self._pytest_docker_compose(system, "bench-fresh-pd", PORT_BASES["fresh"] + 500)
                run = self.pd.pytest(root, compose, "bench-fresh-pd", service_specs(system))
                self.record("pytest-docker: images from nothing", run)
                remove_project("bench-fresh-pd")
                self._drop_fresh_images(root)
            self.report(f"  repetition {index + 1} of {self.o.repeat} done")
        started = time.perf_counter()
        run = self.ours.cli("build")
        if run.returncode == 0:
            self.results.sample("ours: build, images cached").add(time.perf_counter() - started)

    def _drop_fresh_images(self, root: Path) -> None:
        data = yaml.safe_load((root / "architecture" / "services.yml").read_text())
        tags = [s["image"] for s in data["services"].values()]
        tags += [f"{t.rsplit(':', 1)[0]}:{PYTEST_DOCKER_TAG}" for t in tags]
        remove_images(tags)

    def measure_stacks(self) -> None:
        self.report("in-process: cold up, reset latency, down")
        sizes = [(len(self.system.services), self.copy)]
        if self.o.scaling:
            # Its own image tags: its links and analytics images hold other contracts than the example's.
            root = scale_system(
                EXAMPLE,
                self.work / "systems" / f"scale-{self.o.scale}",
                self.o.scale,
                image_prefix=f"{IMAGE_PREFIX}s{self.o.scale}-",
            )
            sizes.append((self.o.scale, root))
        for size, root in sizes:
            system = load(root)
            tag = f"{size} services"
            if root != self.copy:
                self.report(f"  building the {size}-service system")
                build_seconds(system, report=self.report)
            if self.o.from_nothing:
                token = uuid.uuid4().hex[:10]
                fresh_root = self.work / "systems" / f"fresh-{size}"
                if root == self.copy:
                    copy_system(EXAMPLE, fresh_root, image_prefix=FRESH_PREFIX, cache_bust=token)
                else:
                    scale_system(EXAMPLE, fresh_root, size, image_prefix=f"{FRESH_PREFIX}s{size}-")
                    for dockerfile in sorted(fresh_root.glob("services/*/Dockerfile")):
                        bust_dockerfile(dockerfile, f"{token}-{dockerfile.parent.name}")
                fresh = load(fresh_root)
                self.results.sample(f"build from nothing, {tag}").add(
                    build_seconds(fresh, report=self.report)
                )
                self._drop_fresh_images(fresh_root)
            started = time.perf_counter()
            build_seconds(system, report=self.report)
            self.results.sample(f"build, images cached, {tag}").add(time.perf_counter() - started)
            measured = measure_stack(
                system,
                f"bench-stack-{size}",
                self.compose_dir,
                PORT_BASES["scale"],
                repeat=self.o.repeat,
                resets=self.o.resets,
                report=self.report,
                timeline=True,
            )
            for seconds in measured["up"]:
                self.results.sample(f"up, {tag}").add(seconds)
            for seconds in measured["down"]:
                self.results.sample(f"down, {tag}").add(seconds)
            for kind in ("reset", "connect", "purge"):
                self.results.sample(f"{kind}, {tag}").seconds.extend(measured.get(kind, []))
            self.results.extra.setdefault("timelines", {})[tag] = measured.get("timeline", [])
            self.results.extra.setdefault("up_timings", {})[tag] = measured.get("up_timings", [])

    def measure_workers(self) -> None:
        """The example's tests serially and with WORKER_COUNT xdist workers, both ways of isolating the
        workers, alternating run by run so that the machine's drift hits each mode alike."""
        self.report(f"pytest-xdist: -n 0 against -n {WORKER_COUNT} (shared stack; a stack per worker)")
        modes = {
            "workers: -n 0": ["-n", "0"],
            f"workers: -n {WORKER_COUNT} shared": ["-n", str(WORKER_COUNT)],
            f"workers: -n {WORKER_COUNT} per-worker": [
                "-n",
                str(WORKER_COUNT),
                "-o",
                "integration_xdist=per-worker",
            ],
        }
        for _ in range(self.o.repeat):
            for name, args in modes.items():
                self.ours.down()
                run = self.ours.pytest(*args)
                phases = parse_phases(run.output)
                if self.record(name, run, phases=phases):
                    for phase, seconds in phases.items():
                        self.results.sample(f"{name} phase {phase}").add(seconds)
        self.ours.down()

    def cleanup(self) -> None:
        for project in sorted(self.projects):
            remove_project(project)

    def run(self) -> Path:
        started = datetime.now()
        self.results.extra["machine"] = machine_info()
        try:
            self.prepare()
            if self.o.only_workers:
                self.measure_workers()
            else:
                if self.o.pytest_docker:
                    self.results.extra["pytest_docker_version"] = self.pd.version()
                self.measure_freshness()
                self.measure_cold_and_cached()
                self.measure_warm()
                self.measure_stacks()
                if self.o.from_nothing:
                    self.measure_from_nothing()
                if self.o.workers:
                    self.measure_workers()
        finally:
            self.cleanup()
        self.results.extra["started"] = started.isoformat(timespec="seconds")
        self.results.extra["minutes"] = round((datetime.now() - started).total_seconds() / 60, 1)
        self.results.extra["repeat"] = self.o.repeat
        rows, scaling = tables(self.results, self.o.scale)
        text = ""
        if not self.o.only_workers:
            text = render_table(["measurement", "ours", "pytest-docker", "speedup", "target", ""], rows)
            text += "\n\n" + render_table(
                ["grows with services", "2 services", f"{self.o.scale} services", "growth"], scaling
            )
        workers = worker_rows(self.results)
        if workers:
            text += ("\n\n" if text else "") + render_table(
                ["pytest-xdist (whole pytest)", "seconds", "vs -n 0", "stack up", "tests", "stack down"],
                workers,
            )
        self.results.extra["table"] = text
        out = self.o.out or self.work / f"{started:%Y%m%d-%H%M%S}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.results.to_json(), indent=2, default=str) + "\n")
        self.report("")
        self.report(text)
        for tag, lines in self.results.extra.get("timelines", {}).items():
            if lines:
                self.report(f"\ncold up timeline, {tag} (seconds since up began):")
                for line in lines:
                    self.report("  " + line)
        self.report(f"\nmachine: {self.results.extra['machine']}")
        self.report(f"results: {out}")
        return out


def tables(results: Results, scale: int) -> tuple[list[list[str]], list[list[str]]]:
    """The summary table's rows (measurement, ours, pytest-docker, speedup, target, verdict) and the
    scaling table's rows, from the samples."""
    m = results.median
    rows: list[list[str]] = []

    def compare(label: str, ours: str, theirs: str, target: float | None, factor: float) -> None:
        o, t = m(ours), m(theirs)
        s = speedup(o, t)
        checks = [c for c in (within(o, target) if target else None, at_least(s, factor)) if c is not None]
        goal = f"<= {target:g} s, >= {factor:g}x" if target else f">= {factor:g}x"
        rows.append(
            [
                label,
                fmt_seconds(o),
                fmt_seconds(t),
                fmt_factor(s),
                goal,
                verdict(all(checks) if checks else None),
            ]
        )

    def single(label: str, value: float, target: float | None = None, goal: str = "") -> None:
        met = within(value, target) if target is not None else None
        rows.append(
            [
                label,
                fmt_seconds(value),
                "",
                "",
                goal or (f"<= {fmt_seconds(target)}" if target else ""),
                verdict(met),
            ]
        )

    compare(
        "tests, images built from nothing",
        "ours: images from nothing",
        "pytest-docker: images from nothing",
        None,
        TARGETS["speedup_nothing"],
    )
    compare(
        "tests, cold stack, images cached",
        "ours: cold, images cached",
        "pytest-docker: images cached",
        TARGETS["cold"],
        TARGETS["speedup_cached"],
    )
    compare(
        "tests, warm rerun, no change",
        "ours: warm (reuse)",
        "pytest-docker: images cached",
        TARGETS["warm"],
        TARGETS["speedup_warm"],
    )
    for phase in ("freshness check", "stack up", "reset before tests", "tests", "stack down"):
        for mode in ("cold", "warm"):
            value = m(f"ours: {mode} phase {phase}")
            if not math.isnan(value):
                single(f"  {mode}: {phase}", value)
    single("freshness check, in-process", m("freshness: in-process"), TARGETS["freshness"])
    single("freshness check, whole process", m("freshness: python -m integration check"))
    single("  python start alone (floor)", m("python start (floor)"))
    reset = results.samples.get("reset, 2 services")
    resets = reset.seconds if reset else []
    single(f"reset() p50 ({len(resets)} resets)", percentile(resets, 50), TARGETS["reset_p50"])
    single("reset() p95", percentile(resets, 95))
    connect = results.samples.get("connect, 2 services")
    single("  of which: one database connection p50", percentile(connect.seconds if connect else [], 50))
    purge = results.samples.get("purge, 2 services")
    single("  of which: broker purge p50", percentile(purge.seconds if purge else [], 50))
    single("teardown (stack down, cold runs)", m("ours: cold phase stack down"), TARGETS["teardown"])
    single("image build from nothing (build step)", m("ours: build from nothing"))
    single("image build, cached (nothing stale)", m("ours: build, images cached"))

    scaling: list[list[str]] = []
    for label, key, as_p50 in (
        ("build from nothing", "build from nothing", False),
        ("build, images cached", "build, images cached", False),
        ("up (cold, to healthy)", "up", False),
        ("reset() p50", "reset", True),
        ("down", "down", False),
    ):
        values = []
        for size in (2, scale):
            sample = results.samples.get(f"{key}, {size} services")
            seconds = sample.seconds if sample else []
            values.append(percentile(seconds, 50) if as_p50 else median(seconds))
        growth = speedup(values[0], values[1])
        scaling.append([label, fmt_seconds(values[0]), fmt_seconds(values[1]), fmt_factor(growth)])
    return rows, scaling


def worker_rows(results: Results) -> list[list[str]]:
    """One row per xdist mode: the median whole pytest command, its ratio to the serial run (above 1:
    faster than -n 0), and its phases."""
    serial = results.median("workers: -n 0")
    rows = []
    for name in sorted(n for n in results.samples if n.startswith("workers: ") and " phase " not in n):
        seconds = results.median(name)
        phases = [
            fmt_seconds(results.median(f"{name} phase {phase}"))
            if f"{name} phase {phase}" in results.samples
            else "-"
            for phase in ("stack up", "tests", "stack down")
        ]
        rows.append(
            [
                name.removeprefix("workers: "),
                fmt_seconds(seconds),
                fmt_factor(speedup(seconds, serial)),
                *phases,
            ]
        )
    return rows


def machine_info() -> dict[str, Any]:
    def version(command: list[str]) -> str:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        return done.stdout.strip().splitlines()[0] if done.stdout.strip() else "unknown"

    return {
        "cpus": os.cpu_count(),
        "load_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "docker": version(["docker", "version", "--format", "{{.Server.Version}}"]),
        "compose": version(["docker", "compose", "version", "--short"]),
        "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE", ""),
    }


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m integration.bench", description=__doc__.split("\n\n")[0])
    top.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is shown (3)")
    top.add_argument("--resets", type=int, default=200, help="timed resets on the running stack (200)")
    top.add_argument("--scale", type=int, default=8, help="services of the bigger generated system (8)")
    top.add_argument("--work", type=Path, default=DEFAULT_WORK, help=f"work folder ({DEFAULT_WORK})")
    top.add_argument(
        "--venv", type=Path, default=None, help="pytest-docker's virtual environment (<work>/venv)"
    )
    top.add_argument("--out", type=Path, default=None, help="the JSON file (<work>/<timestamp>.json)")
    top.add_argument("--no-pytest-docker", action="store_true", help="measure the toolkit alone")
    top.add_argument("--no-from-nothing", action="store_true", help="skip the builds from nothing (slow)")
    top.add_argument("--no-scaling", action="store_true", help="skip the bigger generated system")
    top.add_argument("--no-workers", action="store_true", help="skip -n 0 against -n 2 (pytest-xdist)")
    top.add_argument(
        "--only-workers",
        action="store_true",
        help="measure -n 0 against -n 2 (pytest-xdist) and nothing else",
    )
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.repeat < 1 or args.resets < 0 or args.scale < 2:
        parser().error("--repeat must be at least 1, --resets at least 0, --scale at least 2")
    work = args.work.resolve()
    options = Options(
        repeat=args.repeat,
        resets=args.resets,
        scale=args.scale,
        work=work,
        venv=(args.venv or work / "venv").resolve(),
        out=args.out,
        pytest_docker=not args.no_pytest_docker,
        from_nothing=not args.no_from_nothing,
        scaling=not args.no_scaling,
        workers=not args.no_workers,
        only_workers=args.only_workers,
    )

    def report(line: str) -> None:
        print(line, flush=True)

    try:
        Bench(options, report).run()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
