"""`--shard K/N` against the real stack: both shards of the example at the same time on this machine.

On a copy of examples/shortener (its images built once), `pytest --integration --shard 1/2` and
`--shard 2/2` start together, each with its JUnit report. Both pass; the node ids they ran are, together,
exactly the suite that `pytest --collect-only -q` lists (43 tests), and none ran in both; each shard ran
on a compose project and host ports of its own (`<project>-shard1of2`, `<project>-shard2of2`), and
afterwards nothing of either project, nor of the unsharded one, is left on the engine. A whole run before
them records the tests' durations (`--shard-record`), by which the shards balance (`--shard-durations`);
the stack's start and stop are in no test's record. The wall time of the two shards at once is printed
next to the whole run's.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml
from compose_projects import leftovers
from example_copies import build, clean_env, copy_example
from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException

from integration.discovery import load_system
from integration.shard import Shard, shard_project
from integration.stack import project_name

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "shortener"
SHARDS = 2
SUITE_SIZE = 43
RUN_TIMEOUT = 600
PLUGIN = ("-p", "integration.shard_plugin")
# Variables of an outer run that must not reach the inner ones.


def junit_address(node_id: str) -> tuple[str, str]:
    """The (classname, name) pytest's JUnit report gives a node id (`_pytest.junitxml`'s mangling)."""
    path, _, names = node_id.partition("::")
    parts = names.split("::")
    module = re.sub(r"\.py$", "", path).replace("/", ".")
    return ".".join([module, *parts[:-1]]), parts[-1]


def ran(junit: Path) -> list[tuple[str, str]]:
    return [(c.get("classname", ""), c.get("name", "")) for c in ET.parse(junit).getroot().iter("testcase")]


def host_ports(compose_file: Path) -> set[int]:
    ports = set()
    for service in yaml.safe_load(compose_file.read_text())["services"].values():
        for mapping in service.get("ports", []):
            text = (
                mapping if isinstance(mapping, str) else f"{mapping.get('host_ip')}:{mapping['published']}:"
            )
            ports.add(int(text.split(":")[1]))
    return ports


def test_two_shards_at_once_run_the_suite_once_on_stacks_of_their_own(tmp_path):
    root = copy_example(EXAMPLE, tmp_path / "shortener")
    compose_dir = tmp_path / "compose"
    env = clean_env(INTEGRATION_COMPOSE_DIR=str(compose_dir))
    base = project_name(load_system(root))
    projects = [shard_project(base, Shard(k, SHARDS)) for k in range(1, SHARDS + 1)]
    assert not any(leftovers(p) for p in [base, *projects])

    build(root, env)
    listing = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    suite = [line for line in listing.stdout.splitlines() if "::" in line]
    assert len(suite) == SUITE_SIZE, listing.stdout[-2000:]

    command = [sys.executable, "-m", "pytest", "--integration", "-p", "no:cacheprovider", *PLUGIN]
    durations = tmp_path / "durations.json"
    shards: list[tuple[subprocess.Popen[str], Any]] = []
    try:
        # One whole run first, for the comparison (and so that both shards find the engine warm).
        started = time.monotonic()
        whole = subprocess.run(
            [*command, f"--junitxml={tmp_path / 'whole.xml'}", f"--shard-record={durations}"],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        whole_seconds = time.monotonic() - started
        assert whole.returncode == 0, (whole.stdout + whole.stderr)[-4000:]
        assert len(ran(tmp_path / "whole.xml")) == SUITE_SIZE
        recorded = json.loads(durations.read_text())
        assert sorted(recorded) == sorted(suite)
        stack_up = re.search(r"stack up\s+(\d+\.\d+)s", whole.stdout)
        assert stack_up, whole.stdout[-2000:]
        # the stack's start (the first test's setup) and stop (the last one's teardown) are nobody's
        assert max(recorded.values()) < min(5.0, float(stack_up.group(1))), recorded

        # The shards, at the same time.
        started = time.monotonic()
        for k in range(1, SHARDS + 1):
            out = (tmp_path / f"shard{k}.out").open("w")
            process = subprocess.Popen(
                [
                    *command,
                    "--shard",
                    f"{k}/{SHARDS}",
                    f"--shard-durations={durations}",
                    f"--junitxml={tmp_path / f'shard{k}.xml'}",
                ],
                cwd=root,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
            shards.append((process, out))
        ended: dict[int, float] = {}
        while len(ended) < SHARDS and time.monotonic() - started < RUN_TIMEOUT:
            for k, (process, _) in enumerate(shards):
                if k not in ended and process.poll() is not None:
                    ended[k] = time.monotonic() - started
            time.sleep(0.1)
        both_seconds = time.monotonic() - started
        assert len(ended) == SHARDS, f"a shard still runs after {RUN_TIMEOUT}s"
    finally:
        for process, out in shards:
            if process.poll() is None:
                process.kill()
            out.close()
        left = {p: leftovers(p) for p in [base, *projects]}
        for compose_file in compose_dir.glob("*.yml"):  # whatever a failed run left, for the next run
            client = DockerClient(compose_files=[compose_file], compose_project_name=compose_file.stem)
            with contextlib.suppress(DockerException):
                client.compose.down(volumes=True, remove_orphans=True, timeout=0, quiet=True)

    outputs = [(tmp_path / f"shard{k}.out").read_text() for k in range(1, SHARDS + 1)]
    for k, (output, (process, _)) in enumerate(zip(outputs, shards, strict=True), start=1):
        assert process.returncode == 0, f"shard {k}/{SHARDS}:\n{output[-4000:]}"
        assert f"shard: {k}/{SHARDS} of the tests, balanced by the durations in {durations}" in output
        assert f"stack {projects[k - 1]}, host ports from" in output
        assert f"stack {projects[k - 1]} healthy in" in output, output[-3000:]

    # Together exactly the suite, and no test in both.
    by_shard = [ran(tmp_path / f"shard{k}.xml") for k in range(1, SHARDS + 1)]
    every = [case for cases in by_shard for case in cases]
    assert len(every) == len(set(every)), "a test ran in both shards"
    assert sorted(every) == sorted(junit_address(node) for node in suite)
    assert all(by_shard), [len(cases) for cases in by_shard]
    for k, output in enumerate(outputs, start=1):
        assert f"shard {k}/{SHARDS}: runs {len(by_shard[k - 1])} of {SUITE_SIZE} tests, about" in output
        assert re.search(rf"\b{len(by_shard[k - 1])} passed\b", output), output[-2000:]

    # A compose project and host ports of its own each; nothing left of any of them.
    files = [compose_dir / f"{p}.yml" for p in projects]
    assert all(f.exists() for f in files), sorted(p.name for p in compose_dir.glob("*.yml"))
    ports = [host_ports(f) for f in files]
    assert all(ports) and not ports[0] & ports[1], ports
    assert left == {p: [] for p in [base, *projects]}, f"left behind: {left}"
    assert not (compose_dir / "runs").exists(), "a failure folder was written"

    phases = [re.search(r"stack up\s+(\d+\.\d+)s", o) for o in [whole.stdout, *outputs]]
    addresses = {junit_address(node): node for node in suite}
    seconds = ", ".join(f"{sum(recorded[addresses[c]] for c in cases):.1f}s" for cases in by_shard)
    done = ", ".join(f"{ended[k]:.1f}s" for k in sorted(ended))
    ups = ", ".join(f"{float(m.group(1)):.1f}s" if m else "?" for m in phases)
    print(
        f"\n[shard] one whole run ({SUITE_SIZE} tests): {whole_seconds:.1f}s; "
        f"{SHARDS} shards at once ({', '.join(str(len(c)) for c in by_shard)} tests): {both_seconds:.1f}s "
        f"(shards done after {done}); stack up (whole, shards): {ups}; "
        f"recorded test seconds per shard: {seconds}; "
        f"{os.cpu_count()} CPUs"
    )
