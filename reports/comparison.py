"""Treatment against control: absolute difference, relative lift (delta method), p-value, Holm."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats as sps
from statsmodels.stats.proportion import proportions_ztest

from reports.inputs import MetricKind
from reports.intervals import (
    NOT_ENOUGH_DATA,
    NO_DATA,
    NO_EVENTS,
    ZERO_CONTROL_MEAN,
    ZERO_VARIANCE,
    Estimate,
    t_critical,
    z_critical,
)
from reports.stats import MeanStats


@dataclass(frozen=True, slots=True)
class Comparison:
    """Treatment minus control with intervals and a two-sided p-value; None where undefined."""

    diff: float | None
    diff_ci_low: float | None
    diff_ci_high: float | None
    lift: float | None  # treatment / control - 1
    lift_ci_low: float | None
    lift_ci_high: float | None
    p_value: float | None
    error: str | None = None


def proportion_difference(control: MeanStats, treatment: MeanStats, confidence: float = 0.95) -> Estimate:
    """Estimate the difference of two rates with the unpooled Wald interval.

    Same as statsmodels ``confint_proportions_2indep(..., compare="diff", method="wald")``;
    each arm's variance is multiplied by its subject-clustering design effect (1 when every
    subject has one decision).
    """
    if control.n == 0 or treatment.n == 0:
        return Estimate(None, None, None, None, NO_DATA)
    pc, pt = control.mean, treatment.mean
    se = math.sqrt(
        pc * (1.0 - pc) / control.n * control.design_effect + pt * (1.0 - pt) / treatment.n * treatment.design_effect
    )
    if se == 0.0:
        return Estimate(pt - pc, None, None, 0.0, NO_EVENTS if pc == pt == 0.0 else ZERO_VARIANCE)
    half = z_critical(confidence) * se
    return Estimate(pt - pc, pt - pc - half, pt - pc + half, se)


def mean_difference(control: MeanStats, treatment: MeanStats, confidence: float = 0.95) -> Estimate:
    """Estimate the difference of two means with the Welch interval (Welch-Satterthwaite df).

    Variances are subject-clustered and degrees of freedom count subjects when a subject repeats.
    """
    if control.n == 0 or treatment.n == 0:
        return Estimate(None, None, None, None, NO_DATA)
    diff = treatment.mean - control.mean
    if control.units < 2 or treatment.units < 2:
        return Estimate(diff, None, None, None, NOT_ENOUGH_DATA)
    vc, vt = control.variance_of_mean, treatment.variance_of_mean
    if vc + vt == 0.0:
        return Estimate(diff, None, None, 0.0, ZERO_VARIANCE)
    df = _welch_df(vc, vt, control, treatment)
    se = math.sqrt(vc + vt)
    half = t_critical(confidence, df) * se
    return Estimate(diff, diff - half, diff + half, se)


def _welch_df(vc: float, vt: float, control: MeanStats, treatment: MeanStats) -> float:
    """Welch-Satterthwaite degrees of freedom, with each arm's units (subjects when clustered)."""
    return (vc + vt) ** 2 / (vc**2 / control.dof + vt**2 / treatment.dof)


def difference(kind: MetricKind, control: MeanStats, treatment: MeanStats, confidence: float = 0.95) -> Estimate:
    """Estimate treatment minus control for a rate (Wald) or a mean (Welch)."""
    if kind == "rate":
        return proportion_difference(control, treatment, confidence)
    return mean_difference(control, treatment, confidence)


def relative_lift(
    control_mean: float, control_se: float, treatment_mean: float, treatment_se: float, confidence: float = 0.95
) -> tuple[float, float | None, float | None] | None:
    """Return treatment / control - 1 with its delta-method interval; None when the control mean is 0.

    Var(T/C) ~ se_T^2 / C^2 + T^2 se_C^2 / C^4 for independent arms (first-order Taylor expansion).
    """
    if control_mean == 0.0:
        return None
    lift = treatment_mean / control_mean - 1.0
    se = math.sqrt(treatment_se**2 / control_mean**2 + treatment_mean**2 * control_se**2 / control_mean**4)
    if se == 0.0:
        return lift, None, None
    half = z_critical(confidence) * se
    return lift, lift - half, lift + half


def _p_value(kind: MetricKind, control: MeanStats, treatment: MeanStats) -> float:
    if kind == "rate":
        dc, dt = control.design_effect, treatment.design_effect
        if dc == 1.0 and dt == 1.0:
            # statsmodels' default: pooled variance under the null of equal rates
            _, p = proportions_ztest([treatment.sum, control.sum], [treatment.n, control.n])
            return float(p)
        # The same pooled z-test with each arm's variance scaled by its subject-clustering design effect.
        pooled = (control.sum + treatment.sum) / (control.n + treatment.n)
        se = math.sqrt(pooled * (1.0 - pooled) * (dc / control.n + dt / treatment.n))
        z = (treatment.mean - control.mean) / se
        return float(2.0 * sps.norm.sf(abs(z)))
    if control.clustered or treatment.clustered:
        vc, vt = control.variance_of_mean, treatment.variance_of_mean
        t = (treatment.mean - control.mean) / math.sqrt(vc + vt)
        return float(2.0 * sps.t.sf(abs(t), _welch_df(vc, vt, control, treatment)))
    else:
        _, p = sps.ttest_ind_from_stats(
            treatment.mean, math.sqrt(treatment.variance), treatment.n,
            control.mean, math.sqrt(control.variance), control.n,
            equal_var=False,
        )  # fmt: skip
    return float(p)


def compare(kind: MetricKind, control: MeanStats, treatment: MeanStats, confidence: float = 0.95) -> Comparison:
    """Compare a treatment arm with the control on one metric.

    Rates: Wald interval, pooled two-proportion z-test (statsmodels ``proportions_ztest``).
    Means: Welch interval and Welch t-test (scipy ``ttest_ind_from_stats(equal_var=False)``).
    Relative lift: delta method, normal critical value.
    """
    diff = difference(kind, control, treatment, confidence)
    if diff.value is None:
        return Comparison(None, None, None, None, None, None, None, diff.error)
    if kind == "rate":
        se_c = math.sqrt(control.mean * (1.0 - control.mean) / control.n * control.design_effect)
        se_t = math.sqrt(treatment.mean * (1.0 - treatment.mean) / treatment.n * treatment.design_effect)
        pooled = (control.sum + treatment.sum) / (control.n + treatment.n)
        testable = 0.0 < pooled < 1.0
    else:
        se_c, se_t = control.std_error, treatment.std_error
        testable = diff.error is None
    error = diff.error
    lift: tuple[float, float | None, float | None] | None = None
    if control.mean == 0.0:
        error = error or ZERO_CONTROL_MEAN
    elif diff.error is None:
        lift = relative_lift(control.mean, se_c, treatment.mean, se_t, confidence)
    else:
        lift = (treatment.mean / control.mean - 1.0, None, None)
    return Comparison(
        diff=diff.value,
        diff_ci_low=diff.ci_low,
        diff_ci_high=diff.ci_high,
        lift=lift[0] if lift else None,
        lift_ci_low=lift[1] if lift else None,
        lift_ci_high=lift[2] if lift else None,
        p_value=_p_value(kind, control, treatment) if testable else None,
        error=error,
    )


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Adjust p-values for multiple comparisons with Holm's step-down method; None stays None.

    Same numbers as statsmodels ``multipletests(method="holm")``, which runs ``gc.collect()`` on
    every call (about 15 ms each, several per report).
    """
    present = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(present):
        running = max(running, min(1.0, (len(present) - rank) * p))
        adjusted[i] = running
    return adjusted
