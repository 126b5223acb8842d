"""The second example, `examples/shop` (orders calls inventory over HTTP; its own conventions, adopted
through its config): the measurements of issue 14's table on a copy of it, under the `shop: ` prefix
(`report.SHOP`). The freshness check, cold and warm runs as whole `pytest --integration` processes, then
in-process a cold `up` with its container timeline (inventory must answer before orders starts: the
critical path shows that wait), `reset()` latency and `down`. pytest-docker has no side here: its
conftest is written for the bundled example."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import comparison
from .processes import tail
from .report import SHOP
from .systems import REPO, copy_system, load
from .toolkit import Toolkit, measure_stack

if TYPE_CHECKING:
    from .bench import Bench

EXAMPLE = REPO / "examples" / "shop"
PROJECT = "bench-shop"
STACK_PROJECT = "bench-stack-shop"
PORT_BASE = 28100  # the copy's whole-process runs; STACK_PORT_BASE for the in-process stack
STACK_PORT_BASE = 29100
IMAGE_PREFIX = "bench-shop-"


def projects() -> set[str]:
    return {PROJECT, STACK_PROJECT}


def measure_shop(bench: Bench) -> None:
    root = copy_system(EXAMPLE, bench.work / "systems" / "shop", image_prefix=IMAGE_PREFIX)
    ours = Toolkit(root, bench.compose_dir, PROJECT, PORT_BASE)
    bench.report("examples/shop: building its images")
    build = ours.cli("build")
    if build.returncode:
        bench.report(f"  building the shop's images failed; no shop figures:\n{tail(build.output, 15)}")
        return
    comparison.measure_freshness_check(bench, ours, SHOP)
    comparison.measure_cold_and_cached(bench, ours, SHOP)
    comparison.measure_warm(bench, ours, SHOP)
    bench.report(f"{SHOP}in-process: cold up, reset latency, down")
    measured = measure_stack(
        load(root),
        STACK_PROJECT,
        bench.compose_dir,
        STACK_PORT_BASE,
        repeat=bench.o.repeat,
        resets=bench.o.resets,
        report=bench.report,
        timeline=True,
    )
    tag = "2 services"
    for seconds in measured["up"]:
        bench.results.sample(f"{SHOP}up, {tag}").add(seconds)
    for seconds in measured["down"]:
        bench.results.sample(f"{SHOP}down, {tag}").add(seconds)
    for kind in ("reset", "connect", "purge"):
        bench.results.sample(f"{SHOP}{kind}, {tag}").seconds.extend(measured.get(kind, []))
    bench.results.extra.setdefault("timelines", {})[f"examples/shop, {tag}"] = measured.get("timeline", [])
    bench.results.extra.setdefault("up_timings", {})[f"examples/shop, {tag}"] = measured.get("up_timings", [])
