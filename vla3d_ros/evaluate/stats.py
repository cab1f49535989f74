"""Success rates with 95% Wilson score intervals.

The Wilson interval stays inside [0, 1] and is sensible at 0/n and n/n, unlike the normal
approximation, which matters for the small per-cell episode counts of closed-loop evaluation.
For k successes in n trials, p = k/n and z the normal quantile:

    centre = (p + z^2 / (2n)) / (1 + z^2 / n)
    half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / (4 n^2))
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

Z_95 = 1.959963984540054  # two-sided 95% normal quantile, scipy.stats.norm.ppf(0.975)


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """(low, high) Wilson score interval of a binomial proportion; (0, 1) when trials == 0."""
    if trials < 0 or successes < 0 or successes > trials:
        raise ValueError(f"need 0 <= successes <= trials, got successes={successes}, trials={trials}")
    if not z > 0:
        raise ValueError(f"z must be > 0, got {z}")
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    # At k = 0 (k = n) the exact bound is 0 (1); set it so rounding never leaves [0, 1] or p.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class SuccessRate:
    """k successes out of n with its 95% Wilson interval."""

    successes: int
    trials: int

    @property
    def rate(self) -> float:
        return self.successes / self.trials if self.trials else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.successes, self.trials)

    def to_dict(self) -> dict:
        low, high = self.interval
        return {**asdict(self), "rate": self.rate, "ci95_low": low, "ci95_high": high}

    @classmethod
    def from_outcomes(cls, outcomes) -> "SuccessRate":
        outcomes = [bool(o) for o in outcomes]
        return cls(successes=sum(outcomes), trials=len(outcomes))
