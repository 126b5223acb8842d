"""`-n 0` against `-n 2` (pytest-xdist): the example's tests as whole `pytest --integration` processes,
serially and with WORKER_COUNT workers in both ways of isolating them (one shared stack; a stack per
worker), alternating run by run so that the machine's drift hits each mode alike."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .processes import parse_phases

if TYPE_CHECKING:
    from .bench import Bench

WORKER_COUNT = 2
MODES = {
    "workers: -n 0": ["-n", "0"],
    f"workers: -n {WORKER_COUNT} shared": ["-n", str(WORKER_COUNT)],
    f"workers: -n {WORKER_COUNT} per-worker": ["-n", str(WORKER_COUNT), "-o", "integration_xdist=per-worker"],
}


def worker_projects(project: str) -> set[str]:
    """The compose projects the per-worker mode makes of `project`."""
    return {f"{project}-gw{n}" for n in range(WORKER_COUNT)}


def measure_workers(bench: Bench) -> None:
    bench.report(f"pytest-xdist: -n 0 against -n {WORKER_COUNT} (shared stack; a stack per worker)")
    for _ in range(bench.o.repeat):
        for name, args in MODES.items():
            bench.ours.down()
            run = bench.ours.pytest(*args)
            phases = parse_phases(run.output)
            if bench.record(name, run, phases=phases):
                for phase, seconds in phases.items():
                    bench.results.sample(f"{name} phase {phase}").add(seconds)
    bench.ours.down()
