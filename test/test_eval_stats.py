"""Wilson 95% intervals against known values (Wilson 1927; Newcombe 1998 Table I)."""
from __future__ import annotations

import pytest

from vla3d_ros.evaluate.stats import SuccessRate, wilson_interval


@pytest.mark.parametrize("k, n, low, high", [
    (81, 263, 0.2553, 0.3662),     # Wikipedia's worked example
    (15, 148, 0.0624, 0.1605),     # Newcombe 1998, Table I, example (a)
    (0, 20, 0.0, 0.1611),          # Newcombe 1998, example (c)
    (1, 29, 0.0061, 0.1718),       # Newcombe 1998, example (d)
    (10, 10, 0.7225, 1.0),
])
def test_known_intervals(k, n, low, high):
    got = wilson_interval(k, n)
    assert got == pytest.approx((low, high), abs=1e-4)


def test_symmetry_and_bounds():
    for n in (1, 7, 50):
        for k in range(n + 1):
            low, high = wilson_interval(k, n)
            assert 0.0 <= low <= k / n <= high <= 1.0
            mirrored = wilson_interval(n - k, n)
            assert mirrored == pytest.approx((1 - high, 1 - low), abs=1e-12)


def test_interval_narrows_with_more_trials():
    widths = [wilson_interval(n // 2, n)[1] - wilson_interval(n // 2, n)[0] for n in (10, 40, 160)]
    assert widths[0] > widths[1] > widths[2]


def test_success_rate_record():
    record = SuccessRate.from_outcomes([True, False, True, True]).to_dict()
    assert record["successes"] == 3 and record["trials"] == 4 and record["rate"] == 0.75
    assert record["ci95_low"] < 0.75 < record["ci95_high"]


def test_bad_counts_are_quoted():
    with pytest.raises(ValueError, match="successes=5, trials=3"):
        wilson_interval(5, 3)
