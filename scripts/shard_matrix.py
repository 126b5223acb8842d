#!/usr/bin/env python3
"""The CI matrix of sharded sessions: each entry of `nox --list --json` (stdin) once per shard.

    nox --list --json --tags integration | python3 scripts/shard_matrix.py 2

prints the same JSON list with every session repeated N times, each copy with `"shard": "K/N"` (K from
1 to N), session by session. A GitHub matrix cannot cross an `include` list with an axis of its own (each
include entry would overwrite the previous one in every combination), so the cross product is made here.
Standard library only: the job that runs it has nothing but Python and nox.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

MAX_SHARDS = 64  # integration.shard.MAX_SHARDS


def sharded(entries: Sequence[dict[str, Any]], total: int) -> list[dict[str, Any]]:
    if not 1 <= total <= MAX_SHARDS:
        raise ValueError(f"the number of shards must be 1..{MAX_SHARDS}, not {total}")
    return [{**entry, "shard": f"{k}/{total}"} for entry in entries for k in range(1, total + 1)]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or not args[0].strip().isdigit():
        print("usage: nox --list --json --tags TAG | shard_matrix.py N   (N: 1..64)", file=sys.stderr)
        return 2
    entries = json.load(sys.stdin)
    if not isinstance(entries, list):
        print("error: stdin is not the JSON list of `nox --list --json`", file=sys.stderr)
        return 2
    try:
        print(json.dumps(sharded(entries, int(args[0]))))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
