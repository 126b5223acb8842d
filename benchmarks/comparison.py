"""The use-case tests as whole `pytest` processes, ours beside pytest-docker, run by run in turn so that
the machine's drift hits both alike: a cold stack with the images cached, a warm rerun (ours in reuse
mode; pytest-docker has none), and the images built from nothing; and the freshness check alone, in-process
and as `python -m integration check`."""

from __future__ import annotations

import sys
import time
import uuid
from typing import TYPE_CHECKING

from . import pytest_docker
from .cleanup import remove_project
from .processes import base_env, parse_build_seconds, parse_phases, run_timed, tail
from .systems import EXAMPLE, FRESH_PREFIX, copy_system, load
from .toolkit import Toolkit, measure_freshness

if TYPE_CHECKING:
    from .bench import Bench

FRESH_PORT_BASE = 25100


def measure_cold_and_cached(bench: Bench, ours: Toolkit | None = None, prefix: str = "") -> None:
    """Cold runs of `ours` (default: the bundled example's copy), each followed by pytest-docker's run
    on the bundled example when there is no `prefix` (the second example has no pytest-docker side)."""
    ours = ours or bench.ours
    bench.report(f"{prefix}cold stack, images cached (ours) / up --build -d with cache (pytest-docker)")
    for _ in range(bench.o.repeat):
        ours.down()
        run = ours.pytest()
        phases = parse_phases(run.output)
        bench.record(prefix + "ours: cold, images cached", run, phases=phases)
        for phase, seconds in phases.items():
            bench.results.sample(f"{prefix}ours: cold phase {phase}").add(seconds)
        if bench.o.pytest_docker and not prefix:
            remove_project("bench-pd")
            specs = pytest_docker.service_specs(bench.pd_system)
            run = bench.pd.pytest(bench.pd_copy, bench.pd_compose, "bench-pd", specs)
            bench.record("pytest-docker: images cached", run)


def measure_warm(bench: Bench, ours: Toolkit | None = None, prefix: str = "") -> None:
    """Reruns with nothing changed in reuse mode, each whole process and what it took beyond its test
    phase (the plugin's "tests" phase: from the first test's start to the last one's end)."""
    ours = ours or bench.ours
    bench.report(f"{prefix}warm rerun, no change (ours: reuse mode)")
    ours.down()
    prime = ours.pytest(reuse=True)
    if prime.returncode:
        bench.report(f"  priming the reused stack failed:\n{tail(prime.output, 15)}")
    for _ in range(bench.o.repeat):
        run = ours.pytest(reuse=True)
        phases = parse_phases(run.output)
        if bench.record(prefix + "ours: warm (reuse)", run, phases=phases) and "tests" in phases:
            beyond = run.seconds - phases["tests"]
            bench.results.sample(prefix + "ours: warm beyond tests").add(beyond)
            bench.report(f"    beyond the test phase: {beyond:.2f}s")
        for phase, seconds in phases.items():
            bench.results.sample(f"{prefix}ours: warm phase {phase}").add(seconds)
    ours.down()


def measure_freshness_check(bench: Bench, ours: Toolkit | None = None, prefix: str = "") -> None:
    ours = ours or bench.ours
    bench.report(f"{prefix}freshness check, nothing changed")
    runs = max(bench.o.repeat, 5)
    for seconds in measure_freshness(ours.root, runs):
        bench.results.sample(prefix + "freshness: in-process").add(seconds)
    for _ in range(runs):
        bench.record(prefix + "freshness: python -m integration check", ours.cli("check"))
    if prefix:
        return
    bare = run_timed([sys.executable, "-c", "pass"], cwd=bench.copy, env=base_env())
    bench.results.sample("python start (floor)").add(bare.seconds)


def measure_from_nothing(bench: Bench) -> None:
    bench.report("images built from nothing (a cache-busting token in every Dockerfile)")
    systems = bench.work / "systems"
    for index in range(bench.o.repeat):
        token = uuid.uuid4().hex[:10]
        root = copy_system(EXAMPLE, systems / "fresh-ours", image_prefix=FRESH_PREFIX, cache_bust=token)
        toolkit = Toolkit(root, bench.compose_dir, "bench-fresh-ours", FRESH_PORT_BASE)
        run = toolkit.cli("run")
        bench.record("ours: images from nothing", run, build=parse_build_seconds(run.output))
        bench.results.sample("ours: build from nothing").add(parse_build_seconds(run.output))
        toolkit.down()
        bench.drop_images(root)
        if bench.o.pytest_docker:
            token = uuid.uuid4().hex[:10]
            root = copy_system(EXAMPLE, systems / "fresh-pd", image_prefix=FRESH_PREFIX, cache_bust=token)
            bench.pd.install(root)
            system = load(root)
            compose = pytest_docker.write_compose_file(
                system, "bench-fresh-pd", bench.compose_dir, FRESH_PORT_BASE + 500
            )
            run = bench.pd.pytest(root, compose, "bench-fresh-pd", pytest_docker.service_specs(system))
            bench.record("pytest-docker: images from nothing", run)
            remove_project("bench-fresh-pd")
            bench.drop_images(root)
        bench.report(f"  repetition {index + 1} of {bench.o.repeat} done")
    started = time.perf_counter()
    run = bench.ours.cli("build")
    if run.returncode == 0:
        bench.results.sample("ours: build, images cached").add(time.perf_counter() - started)
