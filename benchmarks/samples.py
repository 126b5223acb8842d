"""The samples of a benchmark run: each measurement's seconds, their median and percentiles, and the JSON
form in which every sample is written (pure: no engine, no process)."""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


def median(values: Sequence[float]) -> float:
    """The median; NaN for no values (a measurement that did not run)."""
    return statistics.median(values) if values else math.nan


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100) with linear interpolation between ranks, as numpy's default."""
    if not values:
        return math.nan
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is outside 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Sample:
    """The runs of one measurement: seconds each, plus what else a run reported."""

    name: str
    seconds: list[float] = field(default_factory=list)
    details: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def median(self) -> float:
        return median(self.seconds)

    def add(self, seconds: float, **details: Any) -> None:
        self.seconds.append(seconds)
        self.details.append({"load": os.getloadavg()[0], **details})

    def detail_median(self, key: str) -> float:
        return median([d[key] for d in self.details if isinstance(d.get(key), int | float)])


class Results:
    """Every sample by name, and the machine they were taken on."""

    def __init__(self) -> None:
        self.samples: dict[str, Sample] = {}
        self.extra: dict[str, Any] = {}

    def sample(self, name: str) -> Sample:
        return self.samples.setdefault(name, Sample(name))

    def median(self, name: str) -> float:
        sample = self.samples.get(name)
        return sample.median if sample else math.nan

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": {
                name: {**asdict(sample), "median": None if math.isnan(sample.median) else sample.median}
                for name, sample in self.samples.items()
            },
            **self.extra,
        }
