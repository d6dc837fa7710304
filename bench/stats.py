"""Small statistics shared by the benchmarks: nearest-rank percentiles and a one-line summary."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` in [0, 1]) of a non-empty sample.

    Nearest rank never interpolates, so p99 of 50 samples is the largest one: a small sample
    cannot hide its worst case.
    """
    if not values:
        raise ValueError("percentile of an empty sample")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class Summary:
    """Count, p50, p99 and max of one sample (in the sample's own unit)."""

    n: int
    p50: float
    p99: float
    max: float
    mean: float

    def scaled(self, factor: float) -> Summary:
        """The same summary in another unit (e.g. ``1000`` for seconds to milliseconds)."""
        return Summary(self.n, self.p50 * factor, self.p99 * factor, self.max * factor, self.mean * factor)


def summarize(values: Sequence[float]) -> Summary:
    """p50/p99/max/mean of a non-empty sample."""
    return Summary(
        n=len(values),
        p50=percentile(values, 0.5),
        p99=percentile(values, 0.99),
        max=max(values),
        mean=statistics.fmean(values),
    )
