"""Latency histograms that can be merged: the per-minute metrics keep one per (queue, type).

Buckets grow geometrically by 2^(1/8) (about 9 %), so a percentile read from a histogram is
within 9 % of the exact value, and a minute's worth of samples costs at most a few dozen
integers however many jobs ran. Pure functions; counts are keyed by the bucket index as a
string so that the histogram is plain JSON.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

_GROWTH = 2 ** (1 / 8)
_FLOOR_MS = 0.01
"""Samples below 10 µs all fall in bucket 0."""


def bucket(ms: float) -> int:
    """The bucket index of a sample in milliseconds."""
    if ms <= _FLOOR_MS:
        return 0
    return 1 + math.floor(math.log(ms / _FLOOR_MS, _GROWTH))


def upper_bound(index: int) -> float:
    """The (exclusive) upper edge of bucket ``index``, in milliseconds."""
    return _FLOOR_MS * _GROWTH**index


def record(histogram: dict[str, int], ms: float) -> None:
    """Add one sample."""
    key = str(bucket(ms))
    histogram[key] = histogram.get(key, 0) + 1


def merge(histograms: Iterable[Mapping[str, int]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for histogram in histograms:
        for key, count in histogram.items():
            merged[key] = merged.get(key, 0) + count
    return merged


def percentile(histogram: Mapping[str, int], q: float) -> float | None:
    """The ``q``-th percentile (0 < q <= 100) by nearest rank, as its bucket's upper bound;
    None for an empty histogram."""
    total = sum(histogram.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(q / 100 * total))
    seen = 0
    for index in sorted(int(k) for k in histogram):
        seen += histogram[str(index)]
        if seen >= rank:
            return round(upper_bound(index), 3)
    raise AssertionError("unreachable: ranks never exceed the total")
