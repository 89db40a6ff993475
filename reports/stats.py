"""Sufficient statistics: what SQL hands the statistics code, per arm (and day).

The subject is the unit of analysis: a customer decided many times is one cluster. Each arm's
statistics may carry ``SubjectSums``, the per-subject sums of the metric's denominator n_i and
numerator y_i over the arm's subjects (GrowthBook's ratio-metric inputs). With them the variance
of the arm's mean is the delta-method (cluster-robust) one,

    Var(Y / N) ~ K / (K - 1) * sum_i (y_i - r n_i)^2 / N^2,   r = Y / N,

    = (s_y^2 - 2 r s_yn + r^2 s_n^2) / (K nbar^2)  with ddof-1 (co)variances over subjects,

(Deng, Knoblich & Lu 2018, "Applying the delta method in metric analytics", KDD), which is
statsmodels' cluster-robust (CR0) variance of the mean times K / (K - 1). When every subject has
one decision (sum n_i^2 == N), s_n^2 = s_yn = 0 and it is the plain variance / n: the numbers
are then exactly those of independent decisions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SubjectSums:
    """Per-subject sums of one metric over one arm: subjects K, sum n_i^2, sum y_i^2, sum n_i y_i.

    n_i is the subject's count in the metric's denominator (decisions; opens for click-to-open;
    converting decisions for revenue per converter) and y_i its numerator total. Additive over
    disjoint sets of subjects (arms, segments), not over days a subject spans.
    """

    subjects: int
    sum_n2: float
    sum_y2: float
    sum_ny: float

    def __add__(self, other: SubjectSums) -> SubjectSums:
        return SubjectSums(
            self.subjects + other.subjects,
            self.sum_n2 + other.sum_n2,
            self.sum_y2 + other.sum_y2,
            self.sum_ny + other.sum_ny,
        )


@dataclass(frozen=True, slots=True)
class MeanStats:
    """Count, sum and sum of squares of one metric over one arm's decisions.

    A rate is the special case of a 0/1 metric: sum == sum_squares == successes. ``clusters``
    (optional) are the per-subject sums that make every interval and test subject-clustered.
    """

    n: int
    sum: float
    sum_squares: float
    clusters: SubjectSums | None = None

    @classmethod
    def proportion(cls, n: int, successes: int, clusters: SubjectSums | None = None) -> MeanStats:
        return cls(n=n, sum=float(successes), sum_squares=float(successes), clusters=clusters)

    def with_clusters(self, clusters: SubjectSums | None) -> MeanStats:
        """The same statistics, clustered on the given per-subject sums."""
        return MeanStats(self.n, self.sum, self.sum_squares, clusters)

    @property
    def mean(self) -> float:
        return self.sum / self.n if self.n > 0 else 0.0

    @property
    def variance(self) -> float:
        """Sample variance (ddof=1) of the per-decision values; 0.0 when n < 2."""
        if self.n < 2:
            return 0.0
        value = (self.sum_squares - self.sum * self.sum / self.n) / (self.n - 1)
        return max(value, 0.0)

    @property
    def clustered(self) -> bool:
        """Whether some subject has more than one unit, so clustering changes the numbers."""
        c = self.clusters
        return c is not None and c.subjects >= 1 and c.sum_n2 > self.n * (1.0 + 1e-12)

    @property
    def units(self) -> int:
        """Independent units: subjects when clustered, else decisions."""
        return self.clusters.subjects if self.clustered and self.clusters is not None else self.n

    @property
    def variance_of_mean(self) -> float:
        """Variance of the mean: subject-clustered (delta method) when some subject repeats, else variance / n."""
        if self.n <= 0:
            return 0.0
        c = self.clusters
        if not self.clustered or c is None:
            return self.variance / self.n
        k = c.subjects
        if k < 2:
            return 0.0
        r = self.mean
        # Deng et al. (2018), eq. for the ratio of means; equal to sum (y_i - r n_i)^2 / ((K - 1) nbar^2 K).
        residual = c.sum_y2 - 2.0 * r * c.sum_ny + r * r * c.sum_n2
        scale = c.sum_y2 + r * r * c.sum_n2
        if residual <= 1e-12 * scale:
            return 0.0
        mean_n = self.n / k
        return residual / ((k - 1) * mean_n * mean_n * k)

    @property
    def design_effect(self) -> float:
        """Clustered over independent variance of the mean (1.0 when no subject repeats or nothing varies)."""
        if not self.clustered:
            return 1.0
        plain = self.variance / self.n if self.n > 0 else 0.0
        return self.variance_of_mean / plain if plain > 0.0 else 1.0

    @property
    def dof(self) -> int:
        """Degrees of freedom of the arm's variance: units - 1."""
        return self.units - 1

    @property
    def std_error(self) -> float:
        return math.sqrt(self.variance_of_mean) if self.n > 0 else 0.0

    def __add__(self, other: MeanStats) -> MeanStats:
        clusters = self.clusters + other.clusters if self.clusters is not None and other.clusters is not None else None
        return MeanStats(self.n + other.n, self.sum + other.sum, self.sum_squares + other.sum_squares, clusters)
