"""Mergeable latency histograms: percentiles within one bucket (~9 %) of the exact value."""

from __future__ import annotations

import math
import random

import pytest

from ferrisqueue.domain import histogram


def exact(samples: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[math.ceil(q / 100 * len(ordered)) - 1]


@pytest.mark.parametrize("q", [50, 95, 99])
def test_percentile_is_within_one_bucket_of_the_exact_value(q: float) -> None:
    rng = random.Random(7)
    samples = [rng.lognormvariate(1.0, 1.2) for _ in range(5_000)]
    hist: dict[str, int] = {}
    for sample in samples:
        histogram.record(hist, sample)

    estimate = histogram.percentile(hist, q)

    truth = exact(samples, q)
    assert estimate is not None
    assert truth <= estimate <= truth * 2 ** (1 / 8) * 1.0001


def test_merging_equals_recording_everything_in_one() -> None:
    rng = random.Random(3)
    samples = [rng.uniform(0.001, 10_000) for _ in range(1_000)]
    whole: dict[str, int] = {}
    parts: list[dict[str, int]] = [{}, {}, {}]
    for i, sample in enumerate(samples):
        histogram.record(whole, sample)
        histogram.record(parts[i % 3], sample)

    assert histogram.merge(parts) == whole


def test_empty_histogram_has_no_percentile_and_tiny_samples_share_bucket_zero() -> None:
    assert histogram.percentile({}, 50) is None
    assert histogram.bucket(0.0) == histogram.bucket(0.005) == 0
    assert histogram.bucket(1.0) < histogram.bucket(1.1) < histogram.bucket(2.0)
