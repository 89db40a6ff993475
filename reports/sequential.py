"""Peeking-safe inference: an always-valid confidence sequence for a difference in means.

A fixed-horizon interval is valid only at the one sample size planned in advance;
looked at every day, it excludes zero by chance far more often than alpha. A
confidence sequence holds at every sample size at once, so analysts and the
auto-promotion job may look as often as they like and stop whenever it excludes zero.

Method: the two-sided normal-mixture (mSPRT) asymptotic confidence sequence of
Waudby-Smith, Arnold, Wu, Howard & Ramdas (2021), "Time-uniform central limit theory
and asymptotic confidence sequences", built on the normal-mixture boundary of Howard,
Ramdas, McAuliffe & Sekhon (2021), "Time-uniform, nonparametric, nonasymptotic
confidence sequences", Ann. Statist. 49(2). GrowthBook and Eppo use the same
construction. With N the total sample size over both arms and
s^2 = N * (var_c / n_c + var_t / n_t) the per-unit variance of the difference,

    estimate +/- s * sqrt( 2 (N rho^2 + 1) / (N^2 rho^2) * log( sqrt(N rho^2 + 1) / alpha ) ).

Tuning: the mixture variance rho^2 sets where the sequence is tightest. Following
Waudby-Smith et al. (2021) and GrowthBook's ``sequential_tuning_parameter``,

    rho^2 = ( -2 log(alpha) + log(1 - 2 log(alpha)) ) / tuning_n,

the closed-form approximation to the rho^2 that minimises the width at N = tuning_n
total samples. A good tuning_n is the sample size the experiment expects to reach.

The always-valid p-value is the smallest alpha' at which this sequence (with the same
rho) excludes zero, i.e. 1 / the mSPRT mixture likelihood ratio of Johari, Koomen,
Pekelis & Walsh (2017) with mixing variance tau^2 = rho^2 s^2:

    p = min(1, sqrt(N rho^2 + 1) * exp( -N rho^2 z^2 / (2 (N rho^2 + 1)) )),  z = estimate / SE.

So p <= alpha exactly when the interval excludes zero.

The unit is the subject: with per-subject sums (``reports.stats.SubjectSums``) the variance is
the subject-clustered one and N counts subjects, so a customer decided many times is one
observation of the sequence; with one decision per subject nothing changes. Both are computed from the
current totals; a caller that keeps history may intersect intervals over time (take
the running minimum of p), which stays valid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from reports.stats import MeanStats

__all__ = [
    "SequentialResult", "always_valid_difference", "boundary_multiplier", "from_estimate", "mixture_rho_squared",
]


@dataclass(frozen=True, slots=True)
class SequentialResult:
    """Always-valid interval and p-value for treatment mean minus control mean."""

    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    alpha: float
    tuning_n: float
    error: str | None = None
    std_error: float | None = None
    n_total: int = 0


def mixture_rho_squared(alpha: float, tuning_n: float) -> float:
    """Return the normal-mixture variance that makes the sequence tightest near tuning_n."""
    _check_alpha(alpha)
    _check_tuning_n(tuning_n)
    # Waudby-Smith et al. (2021); GrowthBook gbstats uses the same formula.
    two_log = -2.0 * math.log(alpha)
    return (two_log + math.log(1.0 + two_log)) / tuning_n


def always_valid_difference(
    control: MeanStats,
    treatment: MeanStats,
    alpha: float = 0.05,
    tuning_n: float = 10_000,
) -> SequentialResult:
    """Give an interval and p-value for the lift that stay valid however often they are checked."""
    _check_alpha(alpha)
    _check_tuning_n(tuning_n)
    for name, arm in (("control", control), ("treatment", treatment)):
        if arm.n < 0:
            raise ValueError(f"{name}.n must be >= 0, got {arm.n}")

    n_total = control.units + treatment.units
    if control.n < 1 or treatment.n < 1:
        return SequentialResult(None, None, None, None, alpha, tuning_n, n_total=n_total, error="NO_DATA")
    estimate = treatment.mean - control.mean
    if control.units < 2 or treatment.units < 2:
        return SequentialResult(
            estimate, None, None, None, alpha, tuning_n, n_total=n_total, error="NOT_ENOUGH_DATA"
        )

    variance = control.variance_of_mean + treatment.variance_of_mean
    if not variance > 0.0:
        return SequentialResult(
            estimate, None, None, None, alpha, tuning_n, n_total=n_total, error="ZERO_VARIANCE"
        )
    std_error = math.sqrt(variance)
    return from_estimate(estimate, std_error, n_total, alpha, tuning_n)


def boundary_multiplier(n_total: float, alpha: float, tuning_n: float) -> float:
    """Return the always-valid half-width in standard errors at N = n_total units (1.96 is fixed-horizon)."""
    rho2 = mixture_rho_squared(alpha, tuning_n)
    n_rho2 = n_total * rho2
    # Waudby-Smith et al. (2021), two-sided normal mixture, with s^2 = N * variance, so s / N = SE / sqrt(N).
    return math.sqrt(2.0 * (n_rho2 + 1.0) / n_rho2 * math.log(math.sqrt(n_rho2 + 1.0) / alpha))


def from_estimate(
    estimate: float, std_error: float, n_total: int, alpha: float = 0.05, tuning_n: float = 10_000
) -> SequentialResult:
    """Give the always-valid interval and p-value of any asymptotically normal estimate of a difference.

    Used for estimators that are averages of (martingale) per-unit terms, such as the IPS
    difference of two arms under adaptive allocation, where N is the number of logged decisions.
    """
    _check_alpha(alpha)
    _check_tuning_n(tuning_n)
    if not (std_error > 0.0 and math.isfinite(std_error)) or n_total < 1:
        return SequentialResult(estimate, None, None, None, alpha, tuning_n, n_total=n_total, error="ZERO_VARIANCE")
    rho2 = mixture_rho_squared(alpha, tuning_n)
    n_rho2 = n_total * rho2
    multiplier = boundary_multiplier(n_total, alpha, tuning_n)
    half_width = std_error * multiplier

    # The same boundary solved for alpha (Johari et al. 2017, mSPRT with tau^2 = rho^2 s^2).
    z = estimate / std_error
    log_p = 0.5 * math.log(n_rho2 + 1.0) - n_rho2 * z * z / (2.0 * (n_rho2 + 1.0))
    p_value = min(1.0, math.exp(log_p))

    return SequentialResult(
        estimate=estimate,
        ci_low=estimate - half_width,
        ci_high=estimate + half_width,
        p_value=p_value,
        alpha=alpha,
        tuning_n=tuning_n,
        std_error=std_error,
        n_total=n_total,
    )


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def _check_tuning_n(tuning_n: float) -> None:
    if not (tuning_n > 0 and math.isfinite(tuning_n)):
        raise ValueError(f"tuning_n must be a positive finite number, got {tuning_n}")
