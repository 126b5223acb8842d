"""pytest-xdist: `pytest --integration -n 2` on a copy of the example, in both modes.

Shared (the default): the controlling process starts one compose project, the serial stack plus a copy
of each service for the second worker (its own database and virtual host), and removes it at the end.
Per worker (`-o integration_xdist=per-worker`): each worker gets its own compose project (`<project>-gw0`,
`<project>-gw1`) and its own block of host ports. Either way the run passes, and afterwards no container,
network or volume of any of those projects is left. The copy lives in a temporary folder, so its project
names are its own and never touch a stack of this checkout.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xdist  # noqa: F401  a dev dependency (pyproject [dev]): missing, this module must fail, not skip
import yaml
from python_on_whales import DockerClient, docker
from python_on_whales.exceptions import DockerException, NoSuchContainer

from integration.discovery import load_system
from integration.stack import project_name
from tests.docker.example_copies import build, clean_env, copy_example

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "shortener"
WORKERS = 2
RUN_TIMEOUT = 600
# Variables of an outer run that must not reach the inner one.


def leftovers(prefix: str) -> list[str]:
    """Containers, networks and volumes of every compose project whose name starts with `prefix`."""
    found = []
    for container in docker.container.list(all=True, filters=[("label", "com.docker.compose.project")]):
        try:
            project = (container.config.labels or {}).get("com.docker.compose.project", "")
        except NoSuchContainer:
            continue  # removed between the listing and the inspection (a reaper ending, say)
        if project.startswith(prefix):
            found.append(f"container {container.name}")
    for network in docker.network.list():
        if (network.labels or {}).get("com.docker.compose.project", "").startswith(prefix):
            found.append(f"network {network.name}")
    for volume in docker.volume.list():
        if (volume.labels or {}).get("com.docker.compose.project", "").startswith(prefix):
            found.append(f"volume {volume.name}")
    return found


def host_ports(compose_file: Path) -> set[int]:
    document = yaml.safe_load(compose_file.read_text())
    ports = set()
    for service in document["services"].values():
        for mapping in service.get("ports", []):
            text = (
                mapping if isinstance(mapping, str) else f"{mapping.get('host_ip')}:{mapping['published']}:"
            )
            ports.add(int(text.split(":")[1]))
    return ports


def run_with_workers(
    root: Path, compose_dir: Path, *options: str
) -> tuple[subprocess.CompletedProcess, list]:
    """Build, run the example's tests with WORKERS workers, and return the run and what it left."""
    prefix = project_name(load_system(root))
    env = clean_env(INTEGRATION_COMPOSE_DIR=str(compose_dir))
    assert not leftovers(prefix)
    build(root, env)
    command = [sys.executable, "-m", "pytest", "--integration", "-n", str(WORKERS), "-p", "no:cacheprovider"]
    started = time.monotonic()
    try:
        result = subprocess.run(
            [*command, *options],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
    finally:
        seconds = time.monotonic() - started
        print(f"\n[xdist] pytest --integration -n {WORKERS} {' '.join(options)}: {seconds:.1f}s")
        left = leftovers(prefix)
        for compose_file in compose_dir.glob("*.yml"):  # whatever a failed run left, for the next run
            client = DockerClient(compose_files=[compose_file], compose_project_name=compose_file.stem)
            with contextlib.suppress(DockerException):
                client.compose.down(volumes=True, remove_orphans=True, timeout=0, quiet=True)
    return result, left


def test_two_workers_share_one_stack_and_leave_nothing(tmp_path):
    root = copy_example(EXAMPLE, tmp_path / "shortener")
    compose_dir = tmp_path / "compose"
    prefix = project_name(load_system(root))
    result, left = run_with_workers(root, compose_dir)
    output = result.stdout + result.stderr

    assert result.returncode == 0, output[-4000:]
    assert re.search(r"\b43 passed\b", output), output[-2000:]
    assert f"created: {WORKERS}/{WORKERS} workers" in output
    # One compose project, made by the controlling process: the serial stack and the second worker's
    # service copies; no project of a worker's own.
    assert sorted(p.name for p in compose_dir.glob("*.yml")) == [f"{prefix}.yml"]
    services = yaml.safe_load((compose_dir / f"{prefix}.yml").read_text())["services"]
    assert sorted(services) == sorted(
        ["broker", "links-db", "links", "analytics-db", "analytics", "links-gw1", "analytics-gw1"]
    )
    assert "worker gw1: links http://127.0.0.1:" in output
    assert re.search(r"stack up\s+\d+\.\d+s", output), output[-2000:]
    assert left == [], f"left behind after the run: {left}"
    assert not (compose_dir / "runs").exists(), "a failure folder was written"


def test_two_workers_with_a_stack_each_leave_nothing(tmp_path):
    root = copy_example(EXAMPLE, tmp_path / "shortener")
    compose_dir = tmp_path / "compose"
    prefix = project_name(load_system(root))
    worker_files = [compose_dir / f"{prefix}-gw{n}.yml" for n in range(WORKERS)]
    result, left = run_with_workers(root, compose_dir, "-o", "integration_xdist=per-worker")
    output = result.stdout + result.stderr

    assert result.returncode == 0, output[-4000:]
    assert re.search(r"\b43 passed\b", output), output[-2000:]
    assert f"created: {WORKERS}/{WORKERS} workers" in output
    # One compose project per worker, each on its own host ports; none for the controlling process.
    assert all(f.exists() for f in worker_files), sorted(p.name for p in compose_dir.glob("*.yml"))
    assert not (compose_dir / f"{prefix}.yml").exists()
    ports = [host_ports(f) for f in worker_files]
    assert all(ports) and not ports[0] & ports[1], ports
    # Each worker timed its own stack; the controlling process prints the figures.
    assert "integration: time per phase, per worker" in output, output[-3000:]
    for n in range(WORKERS):
        line = rf"^gw{n}\s+.*stack up \d+\.\d+s.*stack down \d+\.\d+s"
        assert re.search(line, output, re.M), output[-3000:]
    assert left == [], f"left behind after the run: {left}"
    assert not (compose_dir / "runs").exists(), "a failure folder was written"
