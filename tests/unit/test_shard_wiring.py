"""`--shard` wired into the toolkit's entry points: the pytest plugin loads integration.shard_plugin
(no `-p` needed), `python -m integration run --shard K/N` checks the value before building and hands it
to pytest, and the nox sessions take the shard options' paths from the folder nox was started in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from integration import cli, sessions

OUTER = ("PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_CURRENT_TEST")


def test_the_toolkits_plugin_brings_the_shard_options(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if k not in OUTER}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--help", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for option in ("--shard=K/N", "--shard-durations=PATH", "--shard-record=PATH"):
        assert option in result.stdout


def test_run_takes_a_shard_and_checks_it_before_building(capsys):
    assert cli.parser().parse_args(["run", "--shard", "1/2", "--", "-k", "visit"]).shard == "1/2"
    assert cli.parser().parse_args(["run"]).shard is None
    # a bad value is one message and exit status 2, before any docker call (none answers in this test)
    assert cli.main(["run", "--shard", "3/2"]) == 2
    assert "error: --shard: 3/2: the shard K must be 1..2" in capsys.readouterr().err


def test_the_sessions_take_shard_paths_from_where_nox_was_started():
    assert {"--shard-durations", "--shard-record"} <= set(sessions.PATH_OPTIONS)
    args = sessions.pytest_args(
        ["--shard", "1/2", "--shard-durations=.github/d.json", "--shard-record", "compose/junit/r.json"],
        Path("/checkout"),
    )
    assert args == [
        "--shard",
        "1/2",
        "--shard-durations=/checkout/.github/d.json",
        "--shard-record",
        "/checkout/compose/junit/r.json",
    ]
