"""`python -m benchmarks`: the command line (options, then one run, then the exit status)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from python_on_whales.exceptions import DockerException

from . import __doc__ as OVERVIEW
from .bench import Bench, Options
from .systems import REPO

DEFAULT_WORK = REPO / "compose" / "bench"


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m benchmarks", description=(OVERVIEW or "").split("\n\n")[0])
    top.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is shown (3)")
    top.add_argument("--resets", type=int, default=200, help="timed resets on the running stack (200)")
    top.add_argument("--scale", type=int, default=6, help="services of the bigger generated system (6)")
    top.add_argument("--work", type=Path, default=DEFAULT_WORK, help=f"work folder ({DEFAULT_WORK})")
    top.add_argument(
        "--venv", type=Path, default=None, help="pytest-docker's virtual environment (<work>/venv)"
    )
    top.add_argument("--out", type=Path, default=None, help="the JSON file (<work>/<timestamp>.json)")
    top.add_argument("--no-pytest-docker", action="store_true", help="measure the toolkit alone")
    top.add_argument("--no-from-nothing", action="store_true", help="skip the builds from nothing (slow)")
    top.add_argument("--no-scaling", action="store_true", help="skip the bigger generated system")
    top.add_argument("--no-workers", action="store_true", help="skip -n 0 against -n 2 (pytest-xdist)")
    top.add_argument("--no-shop", action="store_true", help="skip the second example, examples/shop")
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
        shop=not args.no_shop,
    )

    def report(line: str) -> None:
        print(line, flush=True)

    try:
        Bench(options, report).run()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, subprocess.CalledProcessError, DockerException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
