"""integration.shard: parsing `K/N`, the partition of node ids, the durations file, a shard's stack.

The partition's properties are checked on a few hundred synthetic node ids for N = 1..5, and on random
suites (seeded, so a failure reproduces); the checker itself is shown to reject broken partitioners.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import random
import statistics
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

from integration.errors import ConfigError
from integration.shard import (
    HIGHEST_PORT_BASE,
    MAX_SHARDS,
    PORT_FLOOR,
    Plan,
    Shard,
    load_durations,
    merge_durations,
    parse_shard,
    plan,
    select,
    shard_port_base,
    shard_project,
    stable_hash,
    unit_of,
    write_durations,
)

REPO = Path(__file__).resolve().parents[2]


def suite(modules: int = 12, seed: int = 7) -> list[str]:
    """A few hundred node ids: plain functions, methods, and parametrized functions of 2 to 9 variants."""
    rng = random.Random(seed)
    ids = []
    for m in range(modules):
        path = f"tests/use_cases/test_mod{m:02d}.py"
        for f in range(rng.randint(8, 20)):
            base = f"{path}::TestCase{f % 3}::test_{f}" if f % 4 == 0 else f"{path}::test_{f}"
            variants = rng.choice([0, 0, 0, 2, 3, 9])
            ids += [base] if not variants else [f"{base}[{v}-x]" for v in range(variants)]
    return ids


SUITE = suite()
DURATIONS = {node: round(random.Random(node).lognormvariate(-1.5, 1.2), 4) for node in SUITE}


# --- parsing ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1/1", Shard(1, 1)), ("2/3", Shard(2, 3)), (" 3 / 3 ", Shard(3, 3)), ("64/64", Shard(64, 64))],
)
def test_a_valid_shard_parses(text, expected):
    assert parse_shard(text) == expected
    assert str(expected) == f"{expected.index}/{expected.total}"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "expected K/N"),
        ("2", "expected K/N"),
        ("a/b", "expected K/N"),
        ("1/2/3", "expected K/N"),
        ("-1/2", "expected K/N"),
        ("1.0/2", "expected K/N"),
        ("0/2", "the shard K must be 1..2"),
        ("3/2", "the shard K must be 1..2"),
        ("1/0", "the number of shards N must be 1..64"),
        ("1/65", "the number of shards N must be 1..64"),
    ],
)
def test_a_bad_shard_is_an_error_naming_the_option(text, says):
    with pytest.raises(ConfigError) as caught:
        parse_shard(text)
    assert str(caught.value).startswith("--shard: ")
    assert says in str(caught.value)
    assert caught.value.exit_status == 2


def test_the_unit_is_the_test_function():
    assert unit_of("t/test_a.py::test_x[1-2]") == "t/test_a.py::test_x"
    assert unit_of("t/test_a.py::TestC::test_m[a::b]") == "t/test_a.py::TestC::test_m"
    assert unit_of("t/dir[1]/test_a.py::test_y") == "t/dir[1]/test_a.py::test_y"
    assert unit_of("t/test_a.py::test_z") == "t/test_a.py::test_z"


def test_the_hash_is_stable():
    # sha256("t.py::test_a"), first 8 bytes: the same in every process, on every machine
    expected = int.from_bytes(hashlib.sha256(b"t.py::test_a").digest()[:8], "big")
    assert stable_hash("t.py::test_a") == expected == 0x75A2B72A2CCEBC6C


# --- the partition ------------------------------------------------------------------------------------


def partition_problems(
    ids: Sequence[str],
    total: int,
    shards: Sequence[Sequence[str]],
    weights: Mapping[str, float] | None = None,
) -> list[str]:
    """What is wrong with `shards` as a partition of `ids` into `total` shards (empty: nothing)."""
    problems = []
    if len(shards) != total:
        problems.append(f"{len(shards)} shards, not {total}")
    seen: dict[str, int] = {}
    for k, nodes in enumerate(shards):
        for node in nodes:
            if node in seen:
                problems.append(f"{node} in shards {seen[node] + 1} and {k + 1}")
            seen[node] = k
    if set(seen) != set(ids):
        missing, extra = sorted(set(ids) - set(seen))[:3], sorted(set(seen) - set(ids))[:3]
        problems.append(f"union differs: missing {missing}, extra {extra}")
    if weights is not None and shards:
        loads = [math.fsum(weights[n] for n in nodes) for nodes in shards]
        heaviest = max(weights[n] for n in ids) if ids else 0.0
        # units may be a whole function: bound by the heaviest unit, at most the fair share
        units: dict[str, float] = {}
        for node in ids:
            units[unit_of(node)] = units.get(unit_of(node), 0.0) + weights[node]
        fair = math.fsum(weights[n] for n in ids) / total
        bound = fair + max(heaviest, max((w for w in units.values() if w <= fair), default=0.0)) + 1e-9
        if max(loads) > bound:
            problems.append(f"greedy bound broken: max load {max(loads):.3f} > {bound:.3f}")
    return problems


@pytest.mark.parametrize("total", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("durations", [None, DURATIONS], ids=["by-count", "by-durations"])
def test_the_shards_are_disjoint_and_their_union_is_the_suite(total, durations):
    result = plan(SUITE, total, durations)
    assert len(SUITE) > 300
    assert partition_problems(SUITE, total, result.shards) == []
    assert result.by == ("durations" if durations else "count")
    # select() agrees with the plan, keeps the given order, and the N selections cover the suite once
    chosen = [select(SUITE, Shard(k, total), durations) for k in range(1, total + 1)]
    assert sorted(n for nodes in chosen for n in nodes) == sorted(SUITE)
    for k, nodes in enumerate(chosen, start=1):
        assert nodes == [n for n in SUITE if n in set(result.of(Shard(k, total)))]


@pytest.mark.parametrize("total", [2, 3, 5])
def test_the_partition_ignores_order_and_duplicates(total):
    shuffled = list(SUITE)
    random.Random(1).shuffle(shuffled)
    assert plan(shuffled + SUITE[:10], total) == plan(SUITE, total)
    assert plan(shuffled, total, DURATIONS) == plan(SUITE, total, DURATIONS)


def test_the_partition_is_the_same_in_another_process_with_another_hash_seed(tmp_path):
    ids = tmp_path / "ids.json"
    ids.write_text(json.dumps(SUITE))
    script = (
        "import json, sys; from integration.shard import plan; "
        "ids = json.load(open(sys.argv[1])); print(json.dumps(plan(ids, 3).shards))"
    )
    outputs = set()
    for seed in ("1", "2", "random"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        result = subprocess.run(
            [sys.executable, "-c", script, str(ids)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        )
        outputs.add(result.stdout)
    assert len(outputs) == 1
    assert json.loads(outputs.pop()) == [list(nodes) for nodes in plan(SUITE, 3).shards]


@pytest.mark.parametrize("total", [2, 3, 4, 5])
def test_without_durations_the_counts_differ_by_at_most_one_function(total):
    result = plan(SUITE, total)
    counts = [len(nodes) for nodes in result.shards]
    largest = max(sum(1 for n in SUITE if unit_of(n) == unit) for unit in {unit_of(n) for n in SUITE})
    assert max(counts) - min(counts) <= largest
    assert result.loads == tuple(float(c) for c in counts)
    # and exactly balanced where there is no parametrization
    plain = sorted({unit_of(n) for n in SUITE})
    flat = [len(nodes) for nodes in plan(plain, total).shards]
    assert max(flat) - min(flat) <= 1


def test_without_durations_the_order_is_a_hash_not_the_name():
    # 40 plain tests of one module, 2 shards: a name order would alternate test_00, test_01, ...
    ids = [f"t.py::test_{i:02d}" for i in range(40)]
    first = plan(ids, 2).shards[0]
    assert len(first) == 20
    assert list(first) != ids[0::2] and list(first) != ids[1::2]


@pytest.mark.parametrize("total", [2, 3, 4, 5])
def test_with_durations_the_loads_are_balanced(total):
    result = plan(SUITE, total, DURATIONS)
    assert result.by == "durations"
    loads = result.loads
    assert math.isclose(sum(loads), math.fsum(DURATIONS.values()))
    assert partition_problems(SUITE, total, result.shards, DURATIONS) == []
    mean = sum(loads) / total
    assert max(loads) <= mean * 1.05, loads
    # far better than the count-based split, measured with the same durations
    by_count = [math.fsum(DURATIONS[n] for n in nodes) for nodes in plan(SUITE, total).shards]
    assert max(loads) - min(loads) < (max(by_count) - min(by_count)) / 2


def test_greedy_longest_first_with_ties_by_node_id():
    durations = {"t.py::test_a": 1.0, "t.py::test_b": 1.0, "t.py::test_c": 1.0, "t.py::test_d": 3.0}
    result = plan(durations, 2, durations)
    # d (3.0) first onto shard 1; then a, b, c (ties: by node id) onto the least loaded: 2, 2, 2
    assert result.shards == (("t.py::test_d",), ("t.py::test_a", "t.py::test_b", "t.py::test_c"))
    assert result.loads == (3.0, 3.0)
    even = dict.fromkeys(["t.py::test_a", "t.py::test_b", "t.py::test_c", "t.py::test_d"], 1.0)
    # equal loads: the shard with fewer tests, then the lower index
    assert plan(even, 2, even).shards == (("t.py::test_a", "t.py::test_c"), ("t.py::test_b", "t.py::test_d"))


def test_zero_durations_still_spread_by_count():
    zeros = dict.fromkeys([f"t.py::test_{i}" for i in range(10)], 0.0)
    assert [len(nodes) for nodes in plan(zeros, 3, zeros).shards] == [4, 3, 3]


def test_parametrized_variants_stay_together():
    for total in (2, 3, 5):
        shard_of = plan(SUITE, total).shard_of()
        for unit in {unit_of(n) for n in SUITE}:
            assert len({shard_of[n] for n in SUITE if unit_of(n) == unit}) == 1, unit


def test_a_function_heavier_than_a_fair_share_is_spread():
    ids = [f"t.py::test_big[{i}]" for i in range(60)] + [f"t.py::test_{i}" for i in range(20)]
    result = plan(ids, 4)
    counts = [len(nodes) for nodes in result.shards]
    assert counts == [20, 20, 20, 20]
    assert partition_problems(ids, 4, result.shards, dict.fromkeys(ids, 1.0)) == []


def test_missing_durations_count_as_the_median_and_stale_ones_are_ignored():
    ids = ["t.py::test_a", "t.py::test_b", "t.py::test_c", "t.py::test_new"]
    durations = {"t.py::test_a": 1.0, "t.py::test_b": 2.0, "t.py::test_c": 9.0}
    result = plan(ids, 2, durations)
    assert result.estimated == 1
    assert math.isclose(sum(result.loads), 1.0 + 2.0 + 9.0 + 2.0)  # the new test at the median, 2.0
    stale = {**durations, "t.py::test_gone": 100.0, "other.py::test_x[1]": 5.0}
    assert plan(ids, 2, stale) == result
    # a file that knows none of the collected tests balances by count
    assert plan(ids, 2, {"gone.py::test": 3.0}).by == "count"


def test_plan_refuses_a_bad_count():
    with pytest.raises(ValueError):
        plan(SUITE, 0)
    with pytest.raises(ValueError):
        plan(SUITE, MAX_SHARDS + 1)
    assert plan([], 3).shards == ((), (), ())


# --- random suites, and the checker against broken partitioners ---------------------------------------


def random_case(rng: random.Random) -> tuple[list[str], int, dict[str, float] | None]:
    ids = []
    for m in range(rng.randint(1, 6)):
        for f in range(rng.randint(0, 30)):
            base = f"pkg/test_{m}.py::" + rng.choice(["", "TestA::", "TestB::"]) + f"test_{f}"
            variants = rng.choice([0, 0, 1, 2, 5, 40])
            ids += [base] if not variants else [f"{base}[{rng.random():.6f}]" for _ in range(variants)]
    total = rng.randint(1, 9)
    durations = None
    if rng.random() < 0.6:
        durations = {
            n: rng.choice([0.0, rng.expovariate(1.0), rng.uniform(0, 30)]) for n in ids if rng.random() < 0.9
        }
        durations.update({f"gone.py::test_{i}": rng.uniform(0, 10) for i in range(rng.randint(0, 5))})
    return ids, total, durations


def weights_of(ids: Sequence[str], durations: Mapping[str, float] | None) -> dict[str, float]:
    """The weights plan() balances: the known durations, the median of them for the others."""
    known = {n: durations[n] for n in ids if durations and n in durations}
    if not known:
        return dict.fromkeys(ids, 1.0)
    median = statistics.median(known.values())
    return {n: known.get(n, median) for n in ids}


Partitioner = Callable[[Sequence[str], int, Mapping[str, float] | None], Sequence[Sequence[str]]]


def violations(partitioner: Partitioner, cases: int = 150, seed: int = 20240611) -> list[str]:
    """Every property that `partitioner` breaks on `cases` random suites: partition, greedy bound,
    invariance under order, stale entries and a second process ("same input, same answer")."""
    rng = random.Random(seed)
    found = []
    for case in range(cases):
        ids, total, durations = random_case(rng)
        shards = partitioner(ids, total, durations)
        unique = sorted(set(ids))
        for problem in partition_problems(unique, total, shards, weights_of(unique, durations)):
            found.append(f"case {case}: {problem}")
        shuffled = list(ids)
        rng.shuffle(shuffled)
        if [sorted(s) for s in partitioner(shuffled, total, durations)] != [sorted(s) for s in shards]:
            found.append(f"case {case}: depends on the order of the node ids")
        if durations is not None:
            stale = {**durations, "never.py::collected": 1e6}
            if [sorted(s) for s in partitioner(ids, total, stale)] != [sorted(s) for s in shards]:
                found.append(f"case {case}: an entry of a test not collected changed the partition")
        if [sorted(s) for s in partitioner(list(ids), total, durations)] != [sorted(s) for s in shards]:
            found.append(f"case {case}: two calls disagree")
    return found


def the_plan(
    ids: Sequence[str], total: int, durations: Mapping[str, float] | None
) -> Sequence[Sequence[str]]:
    return plan(ids, total, durations).shards


def test_every_property_holds_on_random_suites():
    assert violations(the_plan) == []


def _mutant_drops_one(ids, total, durations):
    shards = [list(s) for s in the_plan(ids, total, durations)]
    for s in shards:
        if s:
            s.pop()
            break
    return shards


def _mutant_duplicates_one(ids, total, durations):
    shards = [list(s) for s in the_plan(ids, total, durations)]
    if total > 1 and shards[0]:
        shards[1].append(shards[0][0])
    return shards


def _mutant_by_position(ids, total, durations):
    shards: list[list[str]] = [[] for _ in range(total)]
    for i, node in enumerate(dict.fromkeys(ids)):
        shards[i % total].append(node)
    return shards


_SALT = random.Random()


def _mutant_salted_hash(ids, total, durations):
    # what Python's hash() of a str does across processes: another salt each time
    salt = str(_SALT.random())
    shards: list[list[str]] = [[] for _ in range(total)]
    for node in sorted(set(ids)):
        shards[stable_hash(salt + unit_of(node)) % total].append(node)
    return shards


def _mutant_first_come(ids, total, durations):
    # everything on the first shard: a partition, never balanced
    return [sorted(set(ids))] + [[] for _ in range(total - 1)]


def _mutant_stale_entries_count(ids, total, durations):
    weights = dict(durations or {})
    everything = sorted(set(ids) | set(weights))
    return [[n for n in s if n in set(ids)] for s in plan(everything, total, weights or None).shards]


@pytest.mark.parametrize(
    ("mutant", "caught"),
    [
        (_mutant_drops_one, "union differs"),
        (_mutant_duplicates_one, "in shards 1 and 2"),
        (_mutant_by_position, "depends on the order"),
        (_mutant_salted_hash, "two calls disagree"),
        (_mutant_first_come, "greedy bound broken"),
        (_mutant_stale_entries_count, "an entry of a test not collected changed the partition"),
    ],
    ids=lambda v: getattr(v, "__name__", str(v))[:40],
)
def test_the_checks_catch_a_broken_partitioner(mutant, caught):
    found = violations(mutant, cases=60)
    assert any(caught in problem for problem in found), found[:5]


# --- a shard's stack ----------------------------------------------------------------------------------


def test_each_shard_has_its_own_project():
    names = {shard_project("shortener-1a2b3c4d", Shard(k, 3)) for k in (1, 2, 3)}
    assert names == {f"shortener-1a2b3c4d-shard{k}of3" for k in (1, 2, 3)}


def test_each_shard_has_its_own_port_block():
    assert shard_port_base(47100, Shard(1, 4)) == 47100
    assert shard_port_base(47100, Shard(2, 4)) == 49100
    bases = [shard_port_base(47100, Shard(k, 9)) for k in range(1, 10)]
    # the blocks of up to 9 shards (each base..base+901, and one per-worker stack at +1000) never overlap
    assert all(b2 - b1 >= 2000 for b1, b2 in itertools.pairwise(bases))
    assert bases[-1] + 901 <= 65535
    for base in (1024, 10000, 47100, HIGHEST_PORT_BASE):
        wrapped = [shard_port_base(base, Shard(k, MAX_SHARDS)) for k in range(1, MAX_SHARDS + 1)]
        assert len(set(wrapped)) == MAX_SHARDS
        assert all(min(base, PORT_FLOOR) <= b <= HIGHEST_PORT_BASE for b in wrapped)


# --- the durations file -------------------------------------------------------------------------------


def test_durations_round_trip_and_merge(tmp_path):
    path = tmp_path / "sub" / "durations.json"
    assert load_durations(path) is None
    write_durations(path, {"t.py::test_b": 2.123456, "t.py::test_a": 1.0})
    assert json.loads(path.read_text()) == {"t.py::test_a": 1.0, "t.py::test_b": 2.1235}
    assert list(json.loads(path.read_text())) == ["t.py::test_a", "t.py::test_b"]  # sorted
    write_durations(path, {"t.py::test_b": 3.0, "t.py::test_c": 0.5})
    assert load_durations(path) == {"t.py::test_a": 1.0, "t.py::test_b": 3.0, "t.py::test_c": 0.5}
    write_durations(path, {"t.py::test_c": 0.25}, merge=False)
    assert load_durations(path) == {"t.py::test_c": 0.25}
    assert sorted(p.name for p in path.parent.iterdir()) == ["durations.json"]  # no temporary left
    assert merge_durations({"a": 1.0, "b": 1.0}, {"b": 2.0}) == {"a": 1.0, "b": 2.0}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{", "not JSON"),
        ("[1, 2]", "a JSON list, not an object"),
        ('{"t.py::test_a": "1.0"}', "not a number of seconds"),
        ('{"t.py::test_a": true}', "not a number of seconds"),
        ('{"t.py::test_a": NaN}', "not a number of seconds"),
        ('{"t.py::test_a": -1}', "a negative number of seconds"),
    ],
)
def test_a_malformed_durations_file_is_an_error_naming_the_option_and_the_file(tmp_path, text, says):
    path = tmp_path / "durations.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_durations(path)
    message = str(caught.value)
    assert message.startswith(f"--shard-durations: {path}: ")
    assert says in message


def test_pytest_splits_file_is_read_as_is(tmp_path):
    # pytest-split's .test_durations has the same shape: {node id: seconds}
    path = tmp_path / ".test_durations"
    path.write_text(json.dumps({"tests/test_a.py::test_x": 0.5, "tests/test_a.py::test_y[1]": 2}))
    assert load_durations(path) == {"tests/test_a.py::test_x": 0.5, "tests/test_a.py::test_y[1]": 2.0}
    assert isinstance(plan(load_durations(path) or {}, 2, load_durations(path)), Plan)
