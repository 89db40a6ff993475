"""One arm's estimate with its confidence interval: Wilson for rates, Student t for means."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from scipy import stats as sps
from statsmodels.stats.proportion import proportion_confint

from reports.stats import MeanStats

# Error codes a result carries instead of raising (STYLE.md: degenerate data is a result).
NO_DATA = "NO_DATA"  # an arm (or the control) has no observations
NOT_ENOUGH_DATA = "NOT_ENOUGH_DATA"  # fewer than two observations: no variance estimate
ZERO_VARIANCE = "ZERO_VARIANCE"  # every observation equal: no interval, no test
NO_EVENTS = "NO_EVENTS"  # a rate is 0 (or 1) in every arm compared: no test
ZERO_CONTROL_MEAN = "ZERO_CONTROL_MEAN"  # relative lift undefined
NOT_COMPUTED = "NOT_COMPUTED"  # the input lacks what this number needs


@dataclass(frozen=True, slots=True)
class Estimate:
    """A point estimate with its two-sided interval; None where undefined, with the reason in ``error``."""

    value: float | None
    ci_low: float | None
    ci_high: float | None
    std_error: float | None
    error: str | None = None


def check_confidence(confidence: float) -> None:
    """Raise ValueError unless 0 < confidence < 1."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")


@lru_cache(maxsize=32)
def z_critical(confidence: float) -> float:
    """Return the two-sided standard normal critical value for a confidence level."""
    check_confidence(confidence)
    return float(sps.norm.ppf(0.5 + confidence / 2.0))


def t_critical(confidence: float, df: float) -> float:
    """Return the two-sided Student t critical value for a confidence level and degrees of freedom."""
    check_confidence(confidence)
    return float(sps.t.ppf(0.5 + confidence / 2.0, df))


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Estimate:
    """Estimate a proportion with its Wilson score interval (statsmodels ``proportion_confint``)."""
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"successes must be between 0 and n, got successes={successes}, n={n}")
    if n == 0:
        return Estimate(None, None, None, None, NO_DATA)
    low, high = proportion_confint(successes, n, alpha=1.0 - confidence, method="wilson")
    p = successes / n
    return Estimate(p, float(low), float(high), math.sqrt(p * (1.0 - p) / n))


def rate_interval(stats: MeanStats, confidence: float = 0.95) -> Estimate:
    """Estimate a rate given as 0/1 sufficient statistics with its Wilson interval.

    Clustered on subjects, the Wilson interval is taken at the effective sample size n / deff
    (Kish's design effect of the subject-clustered variance), the usual adjustment for
    clustered proportions; with one decision per subject it is the plain Wilson interval.
    """
    deff = stats.design_effect
    if deff == 1.0 or stats.n == 0:
        return wilson_interval(round(stats.sum), stats.n, confidence)
    n_eff = stats.n / deff
    p = stats.mean
    low, high = proportion_confint(p * n_eff, n_eff, alpha=1.0 - confidence, method="wilson")
    return Estimate(p, float(low), float(high), math.sqrt(p * (1.0 - p) / n_eff))


def mean_interval(stats: MeanStats, confidence: float = 0.95) -> Estimate:
    """Estimate a mean with its Student t interval (df = units - 1; subjects when clustered)."""
    if stats.n == 0:
        return Estimate(None, None, None, None, NO_DATA)
    if stats.n == 1 or stats.units < 2:
        return Estimate(stats.mean, None, None, None, NOT_ENOUGH_DATA)
    se = stats.std_error
    if se == 0.0:
        return Estimate(stats.mean, None, None, 0.0, ZERO_VARIANCE)
    half = t_critical(confidence, stats.dof) * se
    return Estimate(stats.mean, stats.mean - half, stats.mean + half, se)
