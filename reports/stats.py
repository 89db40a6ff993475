"""Sufficient statistics: what SQL hands the statistics code, per arm (and day)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MeanStats:
    """Count, sum and sum of squares of one metric over one arm's decisions.

    A rate is the special case of a 0/1 metric: sum == sum_squares == successes.
    """

    n: int
    sum: float
    sum_squares: float

    @classmethod
    def proportion(cls, n: int, successes: int) -> MeanStats:
        return cls(n=n, sum=float(successes), sum_squares=float(successes))

    @property
    def mean(self) -> float:
        return self.sum / self.n if self.n > 0 else 0.0

    @property
    def variance(self) -> float:
        """Sample variance (ddof=1); 0.0 when n < 2."""
        if self.n < 2:
            return 0.0
        value = (self.sum_squares - self.sum * self.sum / self.n) / (self.n - 1)
        return max(value, 0.0)

    @property
    def std_error(self) -> float:
        return math.sqrt(self.variance / self.n) if self.n > 0 else 0.0

    def __add__(self, other: MeanStats) -> MeanStats:
        return MeanStats(self.n + other.n, self.sum + other.sum, self.sum_squares + other.sum_squares)
