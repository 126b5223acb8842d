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


def measure_cold_and_cached(bench: Bench) -> None:
    bench.report("cold stack, images cached (ours) / up --build -d with cache (pytest-docker)")
    for _ in range(bench.o.repeat):
        bench.ours.down()
        run = bench.ours.pytest()
        phases = parse_phases(run.output)
        bench.record("ours: cold, images cached", run, phases=phases)
        for phase, seconds in phases.items():
            bench.results.sample(f"ours: cold phase {phase}").add(seconds)
        if bench.o.pytest_docker:
            remove_project("bench-pd")
            specs = pytest_docker.service_specs(bench.pd_system)
            run = bench.pd.pytest(bench.pd_copy, bench.pd_compose, "bench-pd", specs)
            bench.record("pytest-docker: images cached", run)


def measure_warm(bench: Bench) -> None:
    bench.report("warm rerun, no change (ours: reuse mode)")
    bench.ours.down()
    prime = bench.ours.pytest(reuse=True)
    if prime.returncode:
        bench.report(f"  priming the reused stack failed:\n{tail(prime.output, 15)}")
    for _ in range(bench.o.repeat):
        run = bench.ours.pytest(reuse=True)
        phases = parse_phases(run.output)
        bench.record("ours: warm (reuse)", run, phases=phases)
        for phase, seconds in phases.items():
            bench.results.sample(f"ours: warm phase {phase}").add(seconds)
    bench.ours.down()


def measure_freshness_check(bench: Bench) -> None:
    bench.report("freshness check, nothing changed")
    runs = max(bench.o.repeat, 5)
    for seconds in measure_freshness(bench.copy, runs):
        bench.results.sample("freshness: in-process").add(seconds)
    for _ in range(runs):
        bench.record("freshness: python -m integration check", bench.ours.cli("check"))
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
