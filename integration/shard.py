"""Split a test suite into N deterministic, disjoint shards, one per CI job (`--shard K/N`).

Everything here is a function of its arguments (the durations file is read and written only by
`load_durations` and `write_durations`), so every job of a CI matrix that collects the same node ids
computes the same partition without talking to the others:

- `parse_shard("2/3")` is `Shard(2, 3)`; a malformed value is a ConfigError naming `--shard`.
- `plan(node_ids, n, durations)` assigns every node id to exactly one of the n shards:
    * the unit is a test function: the parametrized variants of one function (`test_x[a]`, `test_x[b]`)
      stay together, so "where did test_x run" has one answer. A function whose variants alone weigh more
      than a shard's fair share (total / n) is the exception: its variants are spread one by one, so no
      single function can unbalance the shards;
    * with durations (`{node id: seconds}`, as `--shard-record` writes): greedy longest-first, each unit
      onto the least-loaded shard; ties between units are broken by node id, between shards by the lower
      number of tests, then the lower index. A test missing from the file weighs the median of the
      recorded ones; entries of tests that no longer exist are ignored;
    * without (no file, or none of the collected tests in it): the same greedy by test count, units of
      equal size in the order of a stable hash of their node id (SHA-256, not Python's salted `hash()`),
      so the shards differ by at most one test, plus a function's variants.
  The greedy bound: no shard's load exceeds total / n + the heaviest unit.
- `shard_project` and `shard_port_base`: the compose project and the block of host ports of a shard's
  stack, so that shards running on one machine never share a stack or compete for the same ports.

Tests of one module- or class-scoped fixture may land on different shards (each shard then sets that
fixture up once): right for use-case tests, whose harness is function-scoped.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import statistics
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .ports import BROKER_AMQP_OFFSET

OPTION = "--shard"
DURATIONS_OPTION = "--shard-durations"
MAX_SHARDS = 64
_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")

# Shard K's stack prefers the host ports from base + SHARD_PORT_STRIDE * (K - 1): shard 1 keeps the base
# block. 2000 leaves room for the block of one per-worker xdist stack (+1000) inside each shard's stride.
# Past the highest possible base the blocks wrap around into PORT_FLOOR.. (ports are preferences: a taken
# one falls back to a free one, see integration.ports).
SHARD_PORT_STRIDE = 2000
PORT_FLOOR = 10000
HIGHEST_PORT_BASE = 65535 - BROKER_AMQP_OFFSET


@dataclass(frozen=True, order=True)
class Shard:
    """Shard `index` of `total`, both counted from 1."""

    index: int
    total: int

    def __str__(self) -> str:
        return f"{self.index}/{self.total}"

    @property
    def suffix(self) -> str:
        """What a shard adds to its stack's compose project: `shard2of3`."""
        return f"shard{self.index}of{self.total}"


def parse_shard(text: str, option: str = OPTION) -> Shard:
    """`K/N` as a Shard: whole numbers, 1 <= K <= N <= 64; anything else a ConfigError naming `option`."""
    match = _SHARD.fullmatch(text or "")
    if match is None:
        raise ConfigError(option, None, f"expected K/N, shard K of N counted from 1 (e.g. 1/2), not {text!r}")
    index, total = int(match.group(1)), int(match.group(2))
    if not 1 <= total <= MAX_SHARDS:
        raise ConfigError(option, None, f"{text.strip()}: the number of shards N must be 1..{MAX_SHARDS}")
    if not 1 <= index <= total:
        raise ConfigError(option, None, f"{text.strip()}: the shard K must be 1..{total} (1 <= K <= N)")
    return Shard(index, total)


# --- the partition ------------------------------------------------------------------------------------


def unit_of(node_id: str) -> str:
    """The test function a node id belongs to: its parametrization removed (`[...]`, from the first `[`
    after the file's path: class and function names hold none, the parameters' ids may hold `::`)."""
    path, sep, names = node_id.partition("::")
    return path + sep + names.split("[", 1)[0]


def stable_hash(text: str) -> int:
    """The same number for the same text in every process and on every machine."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


@dataclass(frozen=True)
class Plan:
    """A partition: `shards[k - 1]` holds shard k's node ids (sorted), `loads[k - 1]` their weight
    (seconds with durations, else the number of tests), `by` is "durations" or "count"."""

    shards: tuple[tuple[str, ...], ...]
    loads: tuple[float, ...]
    by: str
    estimated: int = 0  # collected tests the durations did not know (weighted with the median)

    def of(self, shard: Shard) -> tuple[str, ...]:
        return self.shards[shard.index - 1]

    def shard_of(self) -> dict[str, int]:
        """node id -> the index of its shard (from 1)."""
        return {node: k for k, nodes in enumerate(self.shards, start=1) for node in nodes}


def plan(node_ids: Iterable[str], total: int, durations: Mapping[str, float] | None = None) -> Plan:
    """Assign each of `node_ids` (duplicates count once; their order does not matter) to one of `total`
    shards, balanced by `durations` when it knows any of them, else by count."""
    if not 1 <= total <= MAX_SHARDS:
        raise ValueError(f"the number of shards must be 1..{MAX_SHARDS}, not {total}")
    ids = sorted(set(node_ids))
    known = {node: float(durations[node]) for node in ids if durations and node in durations}
    by = "durations" if known else "count"
    default = statistics.median(known.values()) if known else 1.0
    weight = {node: known.get(node, default) for node in ids} if known else dict.fromkeys(ids, 1.0)

    groups: dict[str, list[str]] = {}
    for node in ids:
        groups.setdefault(unit_of(node), []).append(node)
    fair = math.fsum(weight.values()) / total
    units: list[tuple[float, str, list[str]]] = []
    for key, members in groups.items():
        heavy = math.fsum(weight[node] for node in members)
        if len(members) > 1 and heavy > fair:
            units += [(weight[node], node, [node]) for node in members]
        else:
            units.append((heavy, key, members))
    if by == "durations":
        units.sort(key=lambda unit: (-unit[0], unit[1]))
    else:
        units.sort(key=lambda unit: (-unit[0], stable_hash(unit[1]), unit[1]))

    loads = [0.0] * total
    counts = [0] * total
    members_of: list[list[str]] = [[] for _ in range(total)]
    for heavy, _, members in units:
        k = min(range(total), key=lambda i: (loads[i], counts[i], i))
        loads[k] += heavy
        counts[k] += len(members)
        members_of[k] += members
    return Plan(
        shards=tuple(tuple(sorted(nodes)) for nodes in members_of),
        loads=tuple(loads),
        by=by,
        estimated=len(ids) - len(known) if known else 0,
    )


def select(node_ids: Sequence[str], shard: Shard, durations: Mapping[str, float] | None = None) -> list[str]:
    """The node ids of `shard`, in the order given."""
    mine = set(plan(node_ids, shard.total, durations).of(shard))
    return [node for node in node_ids if node in mine]


# --- the stack of a shard -----------------------------------------------------------------------------


def shard_project(project: str, shard: Shard) -> str:
    """The compose project of a shard's stack: `<project>-shard2of3`."""
    return f"{project}-{shard.suffix}"


def shard_port_base(base: int, shard: Shard) -> int:
    """The first preferred host port of a shard's stack: base + 2000 * (K - 1), wrapped into
    PORT_FLOOR..HIGHEST_PORT_BASE once it would pass the highest possible base."""
    candidate = base + SHARD_PORT_STRIDE * (shard.index - 1)
    if candidate <= HIGHEST_PORT_BASE:
        return candidate
    floor = min(PORT_FLOOR, base)
    return floor + (candidate - floor) % (HIGHEST_PORT_BASE + 1 - floor)


# --- the durations file -------------------------------------------------------------------------------
#
# A JSON object, one entry per test: {"<pytest node id>": <seconds>, ...}, seconds a number >= 0, keys
# sorted (pytest-split's `.test_durations` has the same shape, so either tool reads the other's file).
# The seconds of a test are its setup, call and teardown, without the fixtures of a wider scope than the
# function (a session's stack start lands in whichever test comes first and says nothing about that test).


def load_durations(path: str | Path, option: str = DURATIONS_OPTION) -> dict[str, float] | None:
    """The durations in `path`, or None when there is no such file; a malformed file is a ConfigError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(option, None, f"{path}: cannot be read: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(option, None, f"{path}: not JSON ({exc}); {_FORMAT}") from None
    if not isinstance(data, dict):
        raise ConfigError(option, None, f"{path}: a JSON {type(data).__name__}, not an object; {_FORMAT}")
    durations: dict[str, float] = {}
    for node, seconds in data.items():
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds):
            raise ConfigError(option, None, f"{path}: {node!r} has {seconds!r}, not a number of seconds")
        if seconds < 0:
            raise ConfigError(option, None, f"{path}: {node!r} has {seconds}, a negative number of seconds")
        durations[node] = float(seconds)
    return durations


_FORMAT = 'expected {"<node id>": <seconds>, ...} as --shard-record writes it'


def merge_durations(*maps: Mapping[str, float]) -> dict[str, float]:
    """One durations map from several (e.g. every shard's record); a later map's entry wins."""
    merged: dict[str, float] = {}
    for durations in maps:
        merged.update(durations)
    return merged


def dump_durations(durations: Mapping[str, float]) -> str:
    return json.dumps({node: round(durations[node], 4) for node in sorted(durations)}, indent=1) + "\n"


def write_durations(path: str | Path, durations: Mapping[str, float], *, merge: bool = True) -> Path:
    """Write `durations` to `path` atomically; with `merge`, the entries of other tests already in the
    file are kept (a run of one shard updates its own tests only)."""
    path = Path(path)
    if merge:
        durations = merge_durations(load_durations(path) or {}, durations)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(dump_durations(durations))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
