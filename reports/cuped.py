"""CUPED: narrower intervals from a pre-period covariate (Deng, Xu, Kohavi & Walker 2013).

Each subject's metric y is replaced by y - theta * (x - mean_x), where x is the same
subject's pre-period value (e.g. spend in the weeks before the experiment). Because x
was fixed before assignment, the adjustment cannot bias the comparison, and with
theta = cov(x, y) / var(x) the variance of each arm's mean falls by corr(x, y)^2.

theta is pooled within arms: sum over arms of the centred cross-products divided by
the sum over arms of the centred squares of x. That is the x coefficient of the OLS
regression y ~ treatment + x, so the adjusted difference equals that regression's
treatment coefficient exactly, and a treatment effect on y does not leak into theta.
mean_x is the pooled mean of x over both arms.

Subjects are the unit: with per-subject totals (Y_i, X_i over the subject's n_i decisions) the
adjusted variance is the delta-method (cluster-robust) variance of the ratio of W_i = Y_i -
theta X_i to n_i, sum (W_i - r_w n_i)^2 / ((K - 1) nbar^2 K), and degrees of freedom count
subjects; with one decision per subject nothing changes. It matches statsmodels' OLS
y ~ treatment + x with ``cov_type="cluster"`` up to its small-sample factor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats as sps

__all__ = ["CovariateStats", "CupedComparison", "pooled_theta", "cuped_comparison"]


@dataclass(frozen=True, slots=True)
class CovariateStats:
    """Sums of a metric y and its pre-period covariate x over one arm's subjects."""

    n: int
    sum_x: float
    sum_x2: float
    sum_y: float
    sum_y2: float
    sum_xy: float
    # Per-subject totals (Y_i, X_i over n_i decisions): subjects K and sums over subjects. None: one decision each.
    subjects: int | None = None
    subject_n2: float = 0.0
    subject_y2: float = 0.0
    subject_x2: float = 0.0
    subject_xy: float = 0.0
    subject_ny: float = 0.0
    subject_nx: float = 0.0

    def __add__(self, other: CovariateStats) -> CovariateStats:
        clustered = self.subjects is not None and other.subjects is not None
        return CovariateStats(
            self.n + other.n,
            self.sum_x + other.sum_x,
            self.sum_x2 + other.sum_x2,
            self.sum_y + other.sum_y,
            self.sum_y2 + other.sum_y2,
            self.sum_xy + other.sum_xy,
            (self.subjects or 0) + (other.subjects or 0) if clustered else None,
            self.subject_n2 + other.subject_n2,
            self.subject_y2 + other.subject_y2,
            self.subject_x2 + other.subject_x2,
            self.subject_xy + other.subject_xy,
            self.subject_ny + other.subject_ny,
            self.subject_nx + other.subject_nx,
        )

    @property
    def clustered(self) -> bool:
        """Whether some subject has more than one decision."""
        return self.subjects is not None and self.subjects >= 1 and self.subject_n2 > self.n * (1.0 + 1e-12)

    @property
    def units(self) -> int:
        return self.subjects if self.clustered and self.subjects is not None else self.n


@dataclass(frozen=True, slots=True)
class CupedComparison:
    """Covariate-adjusted arm means and their difference (treatment - control)."""

    control_mean: float | None
    treatment_mean: float | None
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    variance_reduction: float | None
    error: str | None = None
    std_error: float | None = None
    theta: float = 0.0
    alpha: float = 0.05


def pooled_theta(arms: Sequence[CovariateStats]) -> float:
    """Return the within-arm pooled regression slope of y on x, the variance-minimising theta."""
    if len(arms) == 0:
        raise ValueError("arms must contain at least one CovariateStats, got none")
    sxx = 0.0
    sxy = 0.0
    for arm in arms:
        _check_stats(arm, "arm")
        if arm.n < 2:
            continue
        sxx += arm.sum_x2 - arm.sum_x * arm.sum_x / arm.n
        sxy += arm.sum_xy - arm.sum_x * arm.sum_y / arm.n
    # No spread in x: the covariate carries no information, so no adjustment.
    if not sxx > 0.0:
        return 0.0
    return sxy / sxx


def cuped_comparison(
    control: CovariateStats,
    treatment: CovariateStats,
    theta: float,
    alpha: float = 0.05,
) -> CupedComparison:
    """Compare arms on the covariate-adjusted metric to get a narrower, still unbiased interval."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not math.isfinite(theta):
        raise ValueError(f"theta must be a finite number, got {theta}")
    _check_stats(control, "control")
    _check_stats(treatment, "treatment")

    if control.n < 1 or treatment.n < 1:
        return CupedComparison(None, None, None, None, None, None, None, "NO_DATA", theta=theta, alpha=alpha)

    mean_x = (control.sum_x + treatment.sum_x) / (control.n + treatment.n)
    control_mean = _adjusted_mean(control, theta, mean_x)
    treatment_mean = _adjusted_mean(treatment, theta, mean_x)
    difference = treatment_mean - control_mean
    if control.units < 2 or treatment.units < 2:
        return CupedComparison(
            control_mean, treatment_mean, difference, None, None, None, None, "NOT_ENOUGH_DATA",
            theta=theta, alpha=alpha,
        )

    se2_control = _variance_of_mean(control, theta)
    se2_treatment = _variance_of_mean(treatment, theta)
    adjusted = se2_control + se2_treatment
    unadjusted = _variance_of_mean(control, 0.0) + _variance_of_mean(treatment, 0.0)
    if not (adjusted > 0.0 and unadjusted > 0.0):
        return CupedComparison(
            control_mean, treatment_mean, difference, None, None, None, None, "ZERO_VARIANCE",
            theta=theta, alpha=alpha,
        )

    std_error = math.sqrt(adjusted)
    # Welch-Satterthwaite degrees of freedom on the adjusted metric.
    df = adjusted**2 / (se2_control**2 / (control.units - 1) + se2_treatment**2 / (treatment.units - 1))
    t_crit = float(sps.t.ppf(1.0 - alpha / 2.0, df))
    p_value = float(2.0 * sps.t.sf(abs(difference) / std_error, df))
    return CupedComparison(
        control_mean=control_mean,
        treatment_mean=treatment_mean,
        difference=difference,
        ci_low=difference - t_crit * std_error,
        ci_high=difference + t_crit * std_error,
        p_value=p_value,
        variance_reduction=1.0 - adjusted / unadjusted,
        std_error=std_error,
        theta=theta,
        alpha=alpha,
    )


def _adjusted_mean(arm: CovariateStats, theta: float, mean_x: float) -> float:
    return arm.sum_y / arm.n - theta * (arm.sum_x / arm.n - mean_x)


def _variance_of_mean(arm: CovariateStats, theta: float) -> float:
    """Variance of the arm's adjusted mean: per decision, or subject-clustered when a subject repeats."""
    if not arm.clustered or arm.subjects is None:
        return _adjusted_variance(arm, theta) / arm.n
    k = arm.subjects
    r_w = (arm.sum_y - theta * arm.sum_x) / arm.n
    sum_w2 = arm.subject_y2 - 2.0 * theta * arm.subject_xy + theta * theta * arm.subject_x2
    sum_nw = arm.subject_ny - theta * arm.subject_nx
    residual = max(sum_w2 - 2.0 * r_w * sum_nw + r_w * r_w * arm.subject_n2, 0.0)
    mean_n = arm.n / k
    return residual / ((k - 1) * mean_n * mean_n * k)


def _adjusted_variance(arm: CovariateStats, theta: float) -> float:
    """Sample variance (ddof=1) of y - theta * x within the arm."""
    n = arm.n
    var_y = (arm.sum_y2 - arm.sum_y * arm.sum_y / n) / (n - 1)
    var_x = (arm.sum_x2 - arm.sum_x * arm.sum_x / n) / (n - 1)
    cov_xy = (arm.sum_xy - arm.sum_x * arm.sum_y / n) / (n - 1)
    return max(var_y - 2.0 * theta * cov_xy + theta * theta * var_x, 0.0)


def _check_stats(arm: CovariateStats, name: str) -> None:
    if arm.n < 0:
        raise ValueError(f"{name}.n must be >= 0, got {arm.n}")
    for field in ("sum_x", "sum_x2", "sum_y", "sum_y2", "sum_xy"):
        value = getattr(arm, field)
        if not math.isfinite(value):
            raise ValueError(f"{name}.{field} must be finite, got {value}")
    if arm.sum_x2 < 0 or arm.sum_y2 < 0:
        raise ValueError(f"{name}.sum_x2 and {name}.sum_y2 must be >= 0, got {arm.sum_x2}, {arm.sum_y2}")
