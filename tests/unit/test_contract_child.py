"""Contract modules are imported in a child process with a time limit, and its answer is cached.

A contract that loops (in Python or in C code), calls os._exit, raises or prints cannot stop or disturb
the toolkit's process: each ends as one ConfigError naming the contract file (and the line where one is
known) and the fix. An unchanged repository starts no child: the answer is cached under the user's cache
folder (here a temporary one), keyed by the content of the files the contracts were read from. Every
call runs under a hard timeout (`bounded`), so a hang fails the test instead of the suite.
"""

from __future__ import annotations

import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from bounded import bounded

import integration.discovery as discovery
from integration.discovery import load_system
from integration.model import BaseImages

SERVICES = """\
system: contracts
services:
  maker:
    port: 8000
    contract: maker
  taker:
    port: 8001
    contract: taker
"""
EVENTS = """\
from typing import ClassVar

from pydantic import BaseModel


class ThingMade(BaseModel):
    routing_key: ClassVar[str] = "thing.made"
    thing_id: str
"""
MAKER = """\
from architecture.contracts.events import ThingMade

EVENTS_PUBLISHED = [ThingMade]
"""
TAKER = """\
from architecture.contracts.events import ThingMade

EVENTS_CONSUMED = [ThingMade]
"""
LIMIT = 4.0  # seconds a contract import may take in these tests (pydantic's import on a loaded machine)
HARD = 60.0  # the hard timeout of every call: far above LIMIT plus a child's start on a loaded machine


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The cache in a temporary folder, and a short import limit."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setattr(discovery, "CONTRACT_IMPORT_SECONDS", LIMIT)
    return cache


def system_at(root: Path, maker: str = MAKER) -> Path:
    files = {
        "architecture/__init__.py": "",
        "architecture/contracts/__init__.py": "",
        "architecture/contracts/events.py": EVENTS,
        "architecture/contracts/maker.py": maker,
        "architecture/contracts/taker.py": TAKER,
        "architecture/services.yml": SERVICES,
        "services/maker/Dockerfile": "FROM python:3.11-slim\n",
        "services/taker/Dockerfile": "FROM python:3.11-slim\n",
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def load(root: Path) -> object:
    return load_system(root, BaseImages())


def children_started(root: Path, calls: int) -> int:
    """Load the system `calls` times; how many contract children that started."""
    started = 0
    real_run = subprocess.run

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal started
        started += 1
        return real_run(*args, **kwargs)

    discovery.subprocess.run = counting  # type: ignore[assignment]  (only in the forked child)
    for _ in range(calls):
        load(root)
    return started


def test_a_normal_contract_is_read_in_a_child(tmp_path: Path) -> None:
    root = system_at(tmp_path / "repo")
    outcome = bounded(lambda: load(root), HARD)
    assert outcome.kind == "result", outcome.value
    system = outcome.value
    assert system.service("maker").events_published == ("ThingMade",)
    assert system.service("taker").events_consumed == ("ThingMade",)
    assert system.routing_keys == {"ThingMade": "thing.made"}
    assert system.event_classes == {"ThingMade": "architecture.contracts.events:ThingMade"}
    assert not list(root.rglob("__pycache__"))  # the child writes no bytecode into the repository


def test_a_contract_that_loops_forever_is_one_message_naming_its_line(tmp_path: Path) -> None:
    root = system_at(tmp_path / "repo", maker="import time\nwhile True:\n    time.sleep(0.01)\n")
    outcome = bounded(lambda: load(root), HARD)
    assert outcome.kind == "config-error", outcome.value
    message, path, _line = outcome.value
    assert path == str(root / "architecture" / "contracts" / "maker.py")
    assert f"did not finish within {LIMIT:g} s" in message
    assert "maker.py:3" in message or "maker.py:2" in message
    assert "into a function" in message


def test_a_contract_stuck_in_c_code_is_ended_too(tmp_path: Path) -> None:
    # A catastrophic regular expression: the match runs in C and holds the GIL, which no signal handler
    # in the importing process would ever interrupt.
    stuck = "import re\nre.match(r'(a+)+$', 'a' * 64 + 'b')\n"
    root = system_at(tmp_path / "repo", maker=stuck)
    outcome = bounded(lambda: load(root), HARD)
    assert outcome.kind == "config-error", outcome.value
    message, path, line = outcome.value
    assert path.endswith("maker.py")
    assert f"did not finish within {LIMIT:g} s" in message
    assert "maker.py:2" in message and line == 2


def test_a_contract_that_calls_os_exit_is_one_message_with_its_status(tmp_path: Path) -> None:
    root = system_at(tmp_path / "repo", maker="import os\nos._exit(3)\n")
    started = time.monotonic()
    outcome = bounded(lambda: load(root), HARD)
    assert outcome.kind == "config-error", outcome.value
    message, path, _line = outcome.value
    assert path.endswith("maker.py")
    assert "exit status 3" in message
    assert "architecture.contracts.maker" in message
    assert time.monotonic() - started < HARD


def test_a_contract_that_raises_names_the_line_and_the_exception(tmp_path: Path) -> None:
    root = system_at(tmp_path / "repo", maker="x = 1\nraise ValueError('no such thing')\n")
    outcome = bounded(lambda: load(root), HARD)
    assert outcome.kind == "config-error", outcome.value
    message, path, line = outcome.value
    assert path.endswith("maker.py") and line == 2
    assert "failed at " in message and "maker.py:2: ValueError: no such thing" in message


def test_a_contract_that_raises_system_exit_is_one_message(tmp_path: Path) -> None:
    root = system_at(tmp_path / "repo", maker="raise SystemExit(3)\n")
    outcome = bounded(lambda: load(root), HARD)
    assert outcome.kind == "config-error", outcome.value
    assert "SystemExit: 3" in outcome.message


def test_what_a_contract_prints_does_not_reach_the_toolkits_output(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    printing = "print('hello from the contract')\n" + MAKER
    root = system_at(tmp_path / "repo", maker=printing)
    outcome = bounded(lambda: load(root), HARD)
    assert outcome.kind == "result", outcome.value
    assert outcome.value.service("maker").events_published == ("ThingMade",)
    assert "hello from the contract" not in capfd.readouterr().out


def test_the_answer_is_cached_until_a_contract_file_changes(tmp_path: Path, own_cache: Path) -> None:
    root = system_at(tmp_path / "repo")
    outcome = bounded(lambda: children_started(root, 3), HARD)
    assert outcome.value == 1, outcome.value  # the first call starts the child, the next two do not
    assert list(own_cache.rglob("*.json")) and not list(root.rglob("*.json"))

    # An edit of a module the contracts import (not one services.yml names) misses the cache.
    events = root / "architecture" / "contracts" / "events.py"
    events.write_text(events.read_text().replace('"thing.made"', '"thing.created"'))
    outcome = bounded(lambda: (children_started(root, 2), load(root)), HARD)
    assert outcome.kind == "result", outcome.value
    started, system = outcome.value
    assert started == 1
    assert system.routing_keys == {"ThingMade": "thing.created"}  # read anew, not the cached answer


def test_a_failure_is_not_cached(tmp_path: Path) -> None:
    root = system_at(tmp_path / "repo", maker="raise ValueError('not yet')\n")
    assert bounded(lambda: load(root), HARD).kind == "config-error"
    (root / "architecture" / "contracts" / "maker.py").write_text(MAKER)
    outcome = bounded(lambda: load(root), HARD)
    assert outcome.kind == "result", outcome.value
    assert outcome.value.service("maker").events_published == ("ThingMade",)


def test_the_cache_keeps_only_the_newest_answers(
    tmp_path: Path, own_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(discovery, "CACHE_ENTRIES", 2)
    roots = [system_at(tmp_path / f"checkout-{i}") for i in range(3)]
    for root in roots:
        assert bounded(lambda root=root: load(root), HARD).kind == "result"
    assert len(list(own_cache.rglob("*.json"))) == 2
