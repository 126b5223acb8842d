"""The systems a benchmark measures: copies of the bundled example under the work folder, with their own
`bench-` image tags, optionally with every Dockerfile's cache busted so that its images build from
nothing; and loading a copy as the toolkit sees it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from integration.dockerfile import read as read_dockerfile

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "shortener"
IMAGE_PREFIX = "bench-"
FRESH_PREFIX = "bench-fresh-"
CACHE_BUST_ARG = "BENCH_CACHE_BUST"
CACHES = {"__pycache__", ".pytest_cache", ".integration", ".ruff_cache"}


def ignore_caches(folder: str, names: list[str]) -> set[str]:
    """For shutil.copytree: the caches a run leaves in a system are not copied."""
    return {n for n in names if n in CACHES}


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
    shutil.copytree(source, dest, ignore=ignore_caches)
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


def image_tags(root: Path) -> list[str]:
    """The service image tags a copy's services.yml names."""
    data = yaml.safe_load((root / "architecture" / "services.yml").read_text())
    return [settings["image"] for settings in data["services"].values()]


def load(root: Path) -> Any:
    """The system in `root`, with the base images this machine has (registry images or stand-ins)."""
    from integration.baseimages import locally_available
    from integration.discovery import load_system

    system = load_system(root)
    return system.with_base_images(locally_available(system.base_images))
