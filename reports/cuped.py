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

    def __add__(self, other: CovariateStats) -> CovariateStats:
        return CovariateStats(
            self.n + other.n,
            self.sum_x + other.sum_x,
            self.sum_x2 + other.sum_x2,
            self.sum_y + other.sum_y,
            self.sum_y2 + other.sum_y2,
            self.sum_xy + other.sum_xy,
        )


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
    if control.n < 2 or treatment.n < 2:
        return CupedComparison(
            control_mean, treatment_mean, difference, None, None, None, None, "NOT_ENOUGH_DATA",
            theta=theta, alpha=alpha,
        )

    se2_control = _adjusted_variance(control, theta) / control.n
    se2_treatment = _adjusted_variance(treatment, theta) / treatment.n
    adjusted = se2_control + se2_treatment
    unadjusted = _adjusted_variance(control, 0.0) / control.n + _adjusted_variance(treatment, 0.0) / treatment.n
    if not (adjusted > 0.0 and unadjusted > 0.0):
        return CupedComparison(
            control_mean, treatment_mean, difference, None, None, None, None, "ZERO_VARIANCE",
            theta=theta, alpha=alpha,
        )

    std_error = math.sqrt(adjusted)
    # Welch-Satterthwaite degrees of freedom on the adjusted metric.
    df = adjusted**2 / (se2_control**2 / (control.n - 1) + se2_treatment**2 / (treatment.n - 1))
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
