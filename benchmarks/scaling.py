"""How the costs grow with the services: the example's 2 services against a generated system of
`--scale` (the example's services, then copies of them), each measured in-process: image builds (from
nothing, cached), cold `up` with its container timeline, `reset()` latency, and `down`."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from .systems import EXAMPLE, FRESH_PREFIX, IMAGE_PREFIX, bust_dockerfile, copy_system, ignore_caches, load
from .toolkit import build_seconds, measure_stack

if TYPE_CHECKING:
    from .bench import Bench

CONTRACT = Path(__file__).resolve().parent / "scaled_system" / "contract.py"
CONTRACT_PLACEHOLDER = "architecture.contracts.original"
PORT_BASE = 24100


def scale_system(source: Path, dest: Path, count: int, *, image_prefix: str = IMAGE_PREFIX) -> Path:
    """A system of `count` services: the example's services, then copies of them named `<name>-2`,
    `<name>-3`, ... (each with its own folder, Dockerfile, contract module, database and queue), until
    there are `count`. Generated into `dest`, services.yml included; each copy's contract module is
    `scaled_system/contract.py` naming the contract it copies."""
    copy_system(source, dest, image_prefix=image_prefix)
    services_file = dest / "architecture" / "services.yml"
    data = yaml.safe_load(services_file.read_text())
    originals = list(data["services"].items())
    services = dict(originals)
    contract_template = CONTRACT.read_text()
    copy_number = 2
    while len(services) < count:
        for name, settings in originals:
            if len(services) >= count:
                break
            new = f"{name}-{copy_number}"
            module = new.replace("-", "_")
            contract = settings.get("contract", name.replace("-", "_"))
            shutil.copytree(dest / "services" / name, dest / "services" / new, ignore=ignore_caches)
            dockerfile = dest / "services" / new / "Dockerfile"
            dockerfile.write_text(dockerfile.read_text().replace(f"services/{name}/", f"services/{new}/"))
            (dest / "architecture" / "contracts" / f"{module}.py").write_text(
                contract_template.replace(CONTRACT_PLACEHOLDER, f"architecture.contracts.{contract}")
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


def measure_sizes(bench: Bench) -> None:
    """Each size (the example's copy; with scaling, the `--scale` system too): builds, then `--repeat`
    cold stacks, the first with its timeline and `--resets` resets."""
    o = bench.o
    bench.report("in-process: cold up, reset latency, down")
    sizes = [(len(bench.system.services), bench.copy)]
    if o.scaling:
        # Its own image tags: its links and analytics images hold other contracts than the example's.
        root = scale_system(
            EXAMPLE,
            bench.work / "systems" / f"scale-{o.scale}",
            o.scale,
            image_prefix=f"{IMAGE_PREFIX}s{o.scale}-",
        )
        sizes.append((o.scale, root))
    for size, root in sizes:
        system = load(root)
        tag = f"{size} services"
        if root != bench.copy:
            bench.report(f"  building the {size}-service system")
            build_seconds(system)
        if o.from_nothing:
            token = uuid.uuid4().hex[:10]
            fresh_root = bench.work / "systems" / f"fresh-{size}"
            if root == bench.copy:
                copy_system(EXAMPLE, fresh_root, image_prefix=FRESH_PREFIX, cache_bust=token)
            else:
                scale_system(EXAMPLE, fresh_root, size, image_prefix=f"{FRESH_PREFIX}s{size}-")
                for dockerfile in sorted(fresh_root.glob("services/*/Dockerfile")):
                    bust_dockerfile(dockerfile, f"{token}-{dockerfile.parent.name}")
            bench.results.sample(f"build from nothing, {tag}").add(build_seconds(load(fresh_root)))
            bench.drop_images(fresh_root)
        bench.results.sample(f"build, images cached, {tag}").add(build_seconds(system))
        measured = measure_stack(
            system,
            f"bench-stack-{size}",
            bench.compose_dir,
            PORT_BASE,
            repeat=o.repeat,
            resets=o.resets,
            report=bench.report,
            timeline=True,
        )
        for seconds in measured["up"]:
            bench.results.sample(f"up, {tag}").add(seconds)
        for seconds in measured["down"]:
            bench.results.sample(f"down, {tag}").add(seconds)
        for kind in ("reset", "connect", "purge"):
            bench.results.sample(f"{kind}, {tag}").seconds.extend(measured.get(kind, []))
        bench.results.extra.setdefault("timelines", {})[tag] = measured.get("timeline", [])
        bench.results.extra.setdefault("up_timings", {})[tag] = measured.get("up_timings", [])
