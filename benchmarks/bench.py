"""One benchmark run: the work folder and the copies of the example in it, the measurements in their
order, the removal of every compose project the run may have made, and the tables and JSON at the end."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from python_on_whales import docker
from python_on_whales.exceptions import DockerException

from . import comparison, pytest_docker, report, scaling, shop, workers
from .cleanup import remove_images, remove_project
from .processes import Run, tail
from .samples import Results
from .systems import EXAMPLE, copy_system, image_tags, load
from .toolkit import Toolkit

WORK_FOLDER_GITIGNORE = Path(__file__).resolve().parent / "work-folder.gitignore"
# Below Linux's ephemeral range (32768-60999), away from the default block 47100 other stacks use; the
# scaled and the from-nothing systems have theirs in their modules (24100, 25100).
PORT_BASES = {"ours": 22100, "pytest-docker": 23100}


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
    shop: bool = True


class Bench:
    """What the measurements share: the options, the report line printer, the samples, the copies of the
    example (ours and pytest-docker's) and the two sides that run on them."""

    def __init__(self, options: Options, report: Callable[[str], None] = print) -> None:
        self.o = options
        self.report = report
        self.results = Results()
        self.work = options.work
        self.compose_dir = self.work / "compose"
        self.copy = self.work / "systems" / "shortener"
        self.pd_copy = self.work / "systems" / "shortener-pytest-docker"
        self.ours = Toolkit(self.copy, self.compose_dir, "bench-ours", PORT_BASES["ours"])
        self.pd = pytest_docker.PytestDocker(options.venv, self.work / "pytest-docker")
        self.projects = {"bench-ours", "bench-pd", "bench-fresh-ours", "bench-fresh-pd", "bench-stack-2"}
        self.projects.add(f"bench-stack-{options.scale}")
        self.projects.update(workers.worker_projects("bench-ours"))
        self.projects.update(shop.projects())

    def prepare(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(WORK_FOLDER_GITIGNORE, self.work / ".gitignore")
        copy_system(EXAMPLE, self.copy)
        build = self.ours.cli("build")
        if build.returncode:
            raise RuntimeError(f"building the benchmark's images failed:\n{tail(build.output)}")
        self.system = load(self.copy)
        if self.o.pytest_docker and not self.o.only_workers:
            self.pd.ensure_venv(self.report)
            copy_system(EXAMPLE, self.pd_copy)
            self.pd.install(self.pd_copy)
            self.pd_system = load(self.pd_copy)
            self.pd_compose = pytest_docker.write_compose_file(
                self.pd_system, "bench-pd", self.compose_dir, PORT_BASES["pytest-docker"]
            )
            failed = pytest_docker.prebuild("bench-pd", self.pd_compose)
            if failed:
                self.report(f"  building pytest-docker's images beforehand failed: {failed}")

    def record(self, name: str, run: Run, **details: Any) -> bool:
        """A timed process as a sample of `name`, when it succeeded; its output's tail when it failed."""
        sample = self.results.sample(name)
        if run.returncode != 0:
            sample.failures.append(tail(run.output))
            self.report(
                f"  {name}: FAILED (exit {run.returncode}) after {run.seconds:.1f}s\n{tail(run.output, 15)}"
            )
            return False
        sample.add(run.seconds, **details)
        self.report(f"  {name}: {run.seconds:.2f}s")
        return True

    def drop_images(self, root: Path) -> None:
        """The images of a copy built from nothing, ours and pytest-docker's."""
        tags = image_tags(root)
        remove_images([*tags, *pytest_docker.image_tags(tags)])

    def cleanup(self) -> None:
        for project in sorted(self.projects):
            remove_project(project)

    def use_bytecode_cache(self) -> None:
        """Every timed process (ours, pytest-docker's, the floor) caches its bytecode, in the work folder
        (never in the repository), as Python does on a developer's machine: with PYTHONDONTWRITEBYTECODE,
        as some CI images set, each whole-process figure would include compiling the toolkit's modules
        anew every time."""
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        os.environ["PYTHONPYCACHEPREFIX"] = str(self.work / "pycache")

    def run(self) -> Path:
        started = datetime.now()
        self.results.extra["machine"] = machine_info()
        self.use_bytecode_cache()
        self.results.extra["bytecode"] = f"cached in {self.work / 'pycache'} for every timed process"
        try:
            self.prepare()
            if self.o.only_workers:
                workers.measure_workers(self)
            else:
                if self.o.pytest_docker:
                    self.results.extra["pytest_docker_version"] = self.pd.version()
                comparison.measure_freshness_check(self)
                comparison.measure_cold_and_cached(self)
                comparison.measure_warm(self)
                scaling.measure_sizes(self)
                if self.o.shop:
                    shop.measure_shop(self)
                if self.o.from_nothing:
                    comparison.measure_from_nothing(self)
                if self.o.workers:
                    workers.measure_workers(self)
        finally:
            self.cleanup()
        self.results.extra["started"] = started.isoformat(timespec="seconds")
        self.results.extra["minutes"] = round((datetime.now() - started).total_seconds() / 60, 1)
        self.results.extra["repeat"] = self.o.repeat
        self.results.extra["table"] = report.render(
            self.results, self.o.scale, only_workers=self.o.only_workers
        )
        out = report.write_json(self.results, self.o.out or self.work / f"{started:%Y%m%d-%H%M%S}.json")
        report.print_summary(self.results, out, self.report)
        from integration.timeline_svg import write_timeline_svgs

        for picture in write_timeline_svgs(out):
            self.report(f"timeline picture: {picture}")
        return out


def machine_info() -> dict[str, Any]:
    """The machine the samples were taken on: CPUs, load, Python, and the engine's and compose's versions
    (python-on-whales)."""
    engine = compose = "unknown"
    with contextlib.suppress(DockerException):
        server = docker.version().server
        engine = (server.version if server else None) or "unknown"
    with contextlib.suppress(DockerException):
        # "Docker Compose version v2.26.1": the last word, as `docker compose version --short` gives it.
        compose = docker.compose.version().split()[-1].removeprefix("v")
    return {
        "cpus": os.cpu_count(),
        "load_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "docker": engine,
        "compose": compose,
        "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE", ""),
    }
