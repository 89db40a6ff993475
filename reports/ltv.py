"""Compare offers on lifetime-value-adjusted value: revenue now, less the future value it costs.

Why: an offer that doubles revenue but also doubles unsubscribes can be worth less, because an
unsubscribe destroys the future value the subject would have brought through the channel. Which
effect wins depends on how much the subjects are worth, so the comparison needs their value.

Definitions
-----------
LTV-adjusted value of one decision (exposure)::

    value = revenue
            - unsubscribe_share * channel_value * subject_value * [unsubscribed]
            + conversion_gain * [converted]

- ``revenue``: the revenue attributed to the decision.
- ``subject_value``: the subject's expected future value (CLV), from :func:`subject_value`.
- ``unsubscribe_share`` (per experiment, 0..1): the share of that value that flows through the
  channel and is destroyed by an unsubscribe (e.g. 0.3 when e-mail drives 30% of purchases).
- ``channel_value`` (>= 0, default 1): a multiplier for channels whose unsubscribe costs more or
  less than the experiment's share says, e.g. 0.5 for a list the subject can leave without
  leaving marketing altogether. With the default the loss is ``unsubscribe_share * subject_value``.
- ``conversion_gain`` (optional, default 0): the change in expected future value a conversion
  implies under the CLV model; :func:`conversion_value_gain` computes it from a BG/NBD +
  Gamma-Gamma model as the expected discounted value after one more repeat purchase, now, less
  the value with none. The conversion's own basket is already in ``revenue``.

The value splits into three signed components that add up to it: ``revenue`` (>= 0 in practice),
``unsubscribe_loss`` (<= 0) and ``conversion_gain``. Reports show each with its interval, so a
verdict says *why* an arm wins or loses.

Subject value sources, first usable one wins (:func:`subject_value`): the caller's profile, then a
context field, then the service's CLV model estimate, then the experiment's default. A supplied
value that is not a finite number >= 0 is skipped, not trusted.

Statistics
----------
A subject may get several decisions in an arm, and its outcomes are correlated (an unsubscribe
ends them; a loyal buyer buys again), so decisions are not independent. The unit is the subject:
with ``V_s`` its total value and ``d_s`` its decisions in the arm, value per decision is the ratio
estimator ``R = sum V_s / sum d_s`` and its delta-method (cluster-robust) variance is::

    var(R) = sum_s (V_s - R d_s)^2 / (n (n - 1) dbar^2),      dbar = sum d_s / n
           = (SVV - 2 R SVD + R^2 SDD) / (n (n - 1) dbar^2)

(Cochran 1977, "Sampling Techniques", sec. 6.4; the same number as statsmodels OLS of per-decision
values on a constant with ``cov_type="cluster"`` by subject). So per arm the report needs only
``n`` (subjects), ``SD = sum d``, ``SDD = sum d^2`` and, for the value and for each component,
``SV = sum V``, ``SVV = sum V^2``, ``SVD = sum V d`` (:class:`LtvArmStats`). Arms are independent
(a subject stays in one arm), so a difference's variance is the sum of the arms' variances.

The service's SQL produces the same sums in two GROUP BYs, per (arm, subject) then per arm::

    WITH per_subject AS (
        SELECT v.arm_key,
               v.subject_id,
               COUNT(*)                                             AS d,
               SUM(v.revenue)                                       AS rev,
               SUM(v.unsubscribe_loss)                              AS unsub,
               SUM(v.conversion_gain)                               AS gain,
               SUM(v.revenue + v.unsubscribe_loss + v.conversion_gain) AS val
        FROM decision_values v     -- one row per decision, components COALESCEd to 0
        WHERE v.experiment_id = :experiment_id
        GROUP BY v.arm_key, v.subject_id
    )
    SELECT arm_key,
           COUNT(*)        AS n_subjects,   SUM(d)          AS n_decisions,  SUM(d * d) AS sum_d2,
           SUM(val)        AS val_sum,      SUM(val * val)  AS val_sum2,     SUM(val * d) AS val_sum_d,
           SUM(rev)        AS rev_sum,      SUM(rev * rev)  AS rev_sum2,     SUM(rev * d) AS rev_sum_d,
           SUM(unsub)      AS unsub_sum,    SUM(unsub*unsub) AS unsub_sum2,  SUM(unsub * d) AS unsub_sum_d,
           SUM(gain)       AS gain_sum,     SUM(gain*gain)  AS gain_sum2,    SUM(gain * d) AS gain_sum_d
    FROM per_subject
    GROUP BY arm_key

Every decision must appear (a decision without events has value 0), or ``d`` and the ratio are
wrong. :func:`ltv_arm_stats_from_arrays` is the same reduction in numpy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Real
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from reports.clv import ClvModel, RfmSummary, customer_lifetime_value, expected_average_value
from reports.comparison import compare, mean_difference
from reports.intervals import (
    NO_DATA,
    NOT_ENOUGH_DATA,
    ZERO_CONTROL_MEAN,
    ZERO_VARIANCE,
    Estimate,
    check_confidence,
    mean_interval,
    z_critical,
)
from reports.stats import MeanStats, SubjectSums

__all__ = [
    "COMPONENTS",
    "NEGATIVE_CONTROL_MEAN",
    "ComponentResult",
    "LtvArmResult",
    "LtvArmStats",
    "LtvReport",
    "LtvSettings",
    "ValueSource",
    "ValueSums",
    "arm_summary_ltv",
    "compare_ltv",
    "conversion_value_gain",
    "conversion_value_gains",
    "decision_components",
    "ltv_arm_stats_from_arrays",
    "subject_value",
]

# The value's components, in the order reports show them; they add up to the value.
COMPONENTS = ("revenue", "unsubscribe_loss", "conversion_gain")
# Relative lift of a control worth less than nothing has no meaning (a smaller loss is a "negative lift").
NEGATIVE_CONTROL_MEAN = "NEGATIVE_CONTROL_MEAN"

ValueSource = Literal["profile", "context", "model", "experiment_default"]
FloatArray = NDArray[np.float64]

# Residual sums of squares below this fraction of the terms they come from are rounding, not variance.
_ROUNDING = 1e-12


# ---------------------------------------------------------------------------------------------
# The value of one decision


@dataclass(frozen=True, slots=True)
class LtvSettings:
    """An experiment's LTV settings, validated once: what an unsubscribe destroys and the fallback value."""

    unsubscribe_share: float
    channel_value: float = 1.0
    default_subject_value: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.unsubscribe_share <= 1.0:
            raise ValueError(f"unsubscribe_share must be between 0 and 1, got {self.unsubscribe_share}")
        if not (self.channel_value >= 0.0 and math.isfinite(self.channel_value)):
            raise ValueError(f"channel_value must be a finite number >= 0, got {self.channel_value}")
        if not _usable(self.default_subject_value):
            raise ValueError(f"default_subject_value must be a finite number >= 0, got {self.default_subject_value}")


def _usable(value: object) -> bool:
    """True for a finite real number >= 0 (bools and text are not values)."""
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def subject_value(
    supplied_profile: object,
    supplied_context: object,
    model_estimate: object,
    experiment_default: float,
) -> tuple[float, ValueSource]:
    """Pick a subject's expected future value and say where it came from.

    The caller knows its customers best, so a profile value wins, then a context field, then the
    service's CLV model, then the experiment's default. None, NaN, infinities, negative numbers,
    bools and text are skipped, because a bad value would silently price every unsubscribe wrong;
    the default must be usable, so there is always an answer.
    """
    if not _usable(experiment_default):
        raise ValueError(f"experiment_default must be a finite number >= 0, got {experiment_default!r}")
    candidates: tuple[tuple[object, ValueSource], ...] = (
        (supplied_profile, "profile"),
        (supplied_context, "context"),
        (model_estimate, "model"),
    )
    for value, source in candidates:
        if _usable(value):
            return float(value), source  # type: ignore[arg-type]  # _usable checked it is Real
    return float(experiment_default), "experiment_default"


def decision_components(
    revenue: ArrayLike,
    unsubscribed: ArrayLike,
    converted: ArrayLike,
    subject_values: ArrayLike,
    settings: LtvSettings,
    conversion_gain: ArrayLike = 0.0,
) -> dict[str, FloatArray]:
    """Split decisions' LTV-adjusted values into revenue, unsubscribe loss (<= 0) and conversion gain.

    Arrays (or scalars) broadcast against each other; the value is the sum of the three.
    """
    rev = np.asarray(revenue, dtype=np.float64)
    unsub = np.asarray(unsubscribed, dtype=bool)
    conv = np.asarray(converted, dtype=bool)
    worth = np.asarray(subject_values, dtype=np.float64)
    gain = np.asarray(conversion_gain, dtype=np.float64)
    bad = ~((worth >= 0) & np.isfinite(worth))
    if np.any(bad):
        raise ValueError(f"subject_values must be finite and >= 0, got {worth[bad].ravel()[0]}")
    if not np.all(np.isfinite(rev)):
        raise ValueError(f"revenue must be finite, got {rev[~np.isfinite(rev)].ravel()[0]}")
    if not np.all(np.isfinite(gain)):
        raise ValueError(f"conversion_gain must be finite, got {gain[~np.isfinite(gain)].ravel()[0]}")
    rev, unsub, conv, worth, gain = np.broadcast_arrays(rev, unsub, conv, worth, gain)
    loss = np.where(unsub, -settings.unsubscribe_share * settings.channel_value * worth, 0.0)
    return {
        "revenue": rev.astype(np.float64, copy=True),
        "unsubscribe_loss": loss + 0.0,  # + 0.0 turns -0.0 into 0.0
        "conversion_gain": np.where(conv, gain, 0.0),
    }


# ---------------------------------------------------------------------------------------------
# What a conversion is worth beyond its basket


def conversion_value_gains(
    clv_model: ClvModel | None,
    summary: RfmSummary,
    horizon: int,
    discount: float,
    period_length: float = 1.0,
) -> FloatArray:
    """Value what a conversion now adds to each customer's expected future value, beyond its basket.

    A purchase now tells the BG/NBD model the customer is alive and buys more often than thought,
    so their expected future purchases rise. The gain is the customer's discounted value over
    ``horizon`` periods after one more repeat purchase at their current age (x + 1, t_x = T, T,
    spend at their expected spend) less the value with none (x, t_x, T). Adding a purchase at the
    expected spend leaves the Gamma-Gamma expected spend unchanged, so the gain is that spend times
    the rise in discounted expected purchases. ``summary`` describes each customer's history up to
    the decision. 0 without a model, with a model that could not be fitted, or where the model
    gives no finite value: no evidence of a gain is no gain.
    """
    n = len(summary)
    if clv_model is None or clv_model.bgnbd.error is not None or clv_model.gamma_gamma.error is not None:
        return np.zeros(n)
    if summary.time_unit != clv_model.time_unit:
        raise ValueError(f"summary time_unit must be the model's {clv_model.time_unit!r}, got {summary.time_unit!r}")
    x = summary.frequency
    spend = expected_average_value(clv_model.gamma_gamma, x, summary.monetary_value)
    past = x * np.where(x > 0, np.maximum(summary.monetary_value, 0.0), 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        spend_after = np.nan_to_num((past + spend) / (x + 1))
    after = RfmSummary(x + 1, summary.T.copy(), summary.T, spend_after, summary.time_unit)
    bg, gg = clv_model.bgnbd, clv_model.gamma_gamma
    with np.errstate(invalid="ignore", over="ignore"):
        gain = customer_lifetime_value(bg, gg, after, horizon, discount, period_length) - customer_lifetime_value(
            bg, gg, summary, horizon, discount, period_length
        )
    return np.where(np.isfinite(gain) & np.isfinite(spend), gain, 0.0)


def conversion_value_gain(
    clv_model: ClvModel | None,
    summary_row: RfmSummary,
    horizon: int,
    discount: float,
    period_length: float = 1.0,
) -> float:
    """Value what a conversion now adds to one customer's expected future value (see conversion_value_gains)."""
    if len(summary_row) != 1:
        raise ValueError(f"summary_row must hold exactly one customer, got {len(summary_row)}")
    return float(conversion_value_gains(clv_model, summary_row, horizon, discount, period_length)[0])


# ---------------------------------------------------------------------------------------------
# Sufficient statistics


@dataclass(frozen=True, slots=True)
class ValueSums:
    """Sums over an arm's subjects of one quantity's per-subject total V_s: sum V, sum V^2, sum V d."""

    sum: float
    sum_squares: float
    sum_cross: float  # sum of V_s * d_s

    def __add__(self, other: ValueSums) -> ValueSums:
        return ValueSums(self.sum + other.sum, self.sum_squares + other.sum_squares, self.sum_cross + other.sum_cross)


_ZERO = ValueSums(0.0, 0.0, 0.0)


@dataclass(frozen=True, slots=True)
class LtvArmStats:
    """One arm's per-subject sufficient statistics for LTV-adjusted value and its components.

    n_decisions is sum d_s, sum_decisions_squared sum d_s^2; every subject counted has at least
    one decision. The components' sums add up to the value's sums (their squares do not).
    """

    n_subjects: int
    n_decisions: int
    sum_decisions_squared: float
    value: ValueSums
    revenue: ValueSums = _ZERO
    unsubscribe_loss: ValueSums = _ZERO
    conversion_gain: ValueSums = _ZERO

    def __post_init__(self) -> None:
        if self.n_subjects < 0:
            raise ValueError(f"n_subjects must be >= 0, got {self.n_subjects}")
        if self.n_decisions < self.n_subjects or (self.n_subjects == 0 and self.n_decisions != 0):
            raise ValueError(
                f"n_decisions must be >= n_subjects (each subject has a decision), got {self.n_decisions} "
                f"decisions for {self.n_subjects} subjects"
            )
        # sum d^2 lies between sum d (every d_s = 1) and (sum d)^2 (one subject has them all).
        if not self.n_decisions - 1e-9 <= self.sum_decisions_squared <= float(self.n_decisions) ** 2 * (1 + 1e-12):
            raise ValueError(
                f"sum_decisions_squared must lie between n_decisions and n_decisions^2 "
                f"({self.n_decisions}..{self.n_decisions**2}), got {self.sum_decisions_squared}"
            )
        for name in ("value", *COMPONENTS):
            sums: ValueSums = getattr(self, name)
            if not all(math.isfinite(s) for s in (sums.sum, sums.sum_squares, sums.sum_cross)):
                raise ValueError(f"{name} sums must be finite, got {sums}")
            if sums.sum_squares < 0:
                raise ValueError(f"{name}.sum_squares must be >= 0, got {sums.sum_squares}")
        parts = sum(getattr(self, name).sum for name in COMPONENTS)
        scale = max(abs(self.value.sum), *(abs(getattr(self, name).sum) for name in COMPONENTS), 1.0)
        if abs(parts - self.value.sum) > 1e-9 * scale:
            raise ValueError(f"the components' sums must add up to the value's sum {self.value.sum}, got {parts}")

    def component(self, name: str) -> ValueSums:
        """Return the sums of one component, "value" for the total."""
        if name not in ("value", *COMPONENTS):
            raise ValueError(f"component must be 'value' or one of {', '.join(COMPONENTS)}, got {name!r}")
        return getattr(self, name)

    def __add__(self, other: LtvArmStats) -> LtvArmStats:
        """Pool two disjoint sets of subjects (e.g. shards by subject); the same subject in both would be wrong."""
        return LtvArmStats(
            self.n_subjects + other.n_subjects,
            self.n_decisions + other.n_decisions,
            self.sum_decisions_squared + other.sum_decisions_squared,
            self.value + other.value,
            self.revenue + other.revenue,
            self.unsubscribe_loss + other.unsubscribe_loss,
            self.conversion_gain + other.conversion_gain,
        )


def ltv_arm_stats_from_arrays(
    subject_ids: ArrayLike,
    values: ArrayLike,
    components: Mapping[str, ArrayLike],
) -> LtvArmStats:
    """Reduce one arm's decisions (one row each) to per-subject sufficient statistics.

    ``components`` maps names from COMPONENTS to per-decision arrays (a missing one is all 0);
    they must add up to ``values``. Same numbers as the SQL in the module docstring.
    """
    ids = np.asarray(subject_ids)
    vals = np.asarray(values, dtype=np.float64)
    if ids.ndim != 1 or vals.shape != ids.shape:
        raise ValueError(
            f"subject_ids and values must be one-dimensional of equal length, got shapes {ids.shape}, {vals.shape}"
        )
    unknown = set(components) - set(COMPONENTS)
    if unknown:
        raise ValueError(f"components must be among {', '.join(COMPONENTS)}, got {sorted(unknown)}")
    parts: dict[str, FloatArray] = {}
    for name in COMPONENTS:
        arr = np.asarray(components.get(name, np.zeros(ids.shape)), dtype=np.float64)
        if arr.shape != ids.shape:
            raise ValueError(f"component {name!r} must have the values' length {ids.shape[0]}, got shape {arr.shape}")
        parts[name] = arr
    for name, arr in (("values", vals), *parts.items()):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be finite, got {arr[~np.isfinite(arr)][0]}")
    total = parts["revenue"] + parts["unsubscribe_loss"] + parts["conversion_gain"]
    if not np.allclose(total, vals, rtol=1e-9, atol=1e-9):
        i = int(np.flatnonzero(~np.isclose(total, vals, rtol=1e-9, atol=1e-9))[0])
        raise ValueError(f"components must add up to values, got {total[i]} against {vals[i]} at index {i}")
    if ids.size == 0:
        return LtvArmStats(0, 0, 0.0, _ZERO)
    _, subject = np.unique(ids, return_inverse=True)
    subject = subject.ravel()
    d = np.bincount(subject).astype(np.float64)

    def sums(per_decision: FloatArray) -> ValueSums:
        v = np.bincount(subject, weights=per_decision, minlength=d.size)
        return ValueSums(float(v.sum()), float(v @ v), float(v @ d))

    return LtvArmStats(
        n_subjects=int(d.size),
        n_decisions=int(ids.size),
        sum_decisions_squared=float(d @ d),
        value=sums(vals),
        revenue=sums(parts["revenue"]),
        unsubscribe_loss=sums(parts["unsubscribe_loss"]),
        conversion_gain=sums(parts["conversion_gain"]),
    )


def _linearized(stats: LtvArmStats, sums: ValueSums) -> MeanStats:
    """Per-subject linearized values z_s = R + (V_s - R d_s) / dbar as sufficient statistics.

    Their mean is R exactly and their sample variance over n is the delta-method variance of R,
    so the t interval and Welch comparison for means (df from subjects) apply unchanged.
    """
    n = stats.n_subjects
    if n == 0:
        return MeanStats(0, 0.0, 0.0)
    ratio = sums.sum / stats.n_decisions
    mean_d = stats.n_decisions / n
    sdd = stats.sum_decisions_squared
    residual = sums.sum_squares - 2.0 * ratio * sums.sum_cross + ratio * ratio * sdd
    if residual <= _ROUNDING * (sums.sum_squares + ratio * ratio * sdd):
        residual = 0.0
    total = n * ratio
    if n < 2:
        return MeanStats(n, total, total * total / n)
    variance = residual / ((n - 1) * mean_d * mean_d)  # sample variance of z_s
    return MeanStats(n, total, total * total / n + (n - 1) * variance)


def arm_summary_ltv(stats: LtvArmStats) -> tuple[MeanStats, dict[str, float]]:
    """Return the ``ltv_value`` and ``ltv_components`` an ``ArmSummary`` takes, so the A/B report shows LTV.

    The report treats ``ltv_value`` as per-decision statistics (n = decisions). Its mean is exact
    (sum V / sum d); its sum of squares is synthetic, chosen so that the report's standard error,
    sqrt(variance / n), equals the cluster-robust one computed per subject. What stays approximate
    is the report's degrees of freedom (decisions - 1 instead of subjects - 1, no matter with
    hundreds of subjects) and that these MeanStats must not be pooled with ``+``. With fewer than
    two subjects there is no variance, and the report shows ZERO_VARIANCE. Components are the
    signed per-decision means, adding up to the value.
    """
    n = stats.n_decisions
    if n == 0:
        return MeanStats(0, 0.0, 0.0), {name: 0.0 for name in COMPONENTS}
    lin = _linearized(stats, stats.value)
    var_ratio = lin.variance / lin.n  # delta-method variance of value per decision
    total = stats.value.sum
    clusters = SubjectSums(stats.n_subjects, stats.sum_decisions_squared, stats.value.sum_squares,
                           stats.value.sum_cross)
    ltv_value = MeanStats(n, total, total * total / n + (n - 1) * n * var_ratio, clusters)
    return ltv_value, {name: stats.component(name).sum / n for name in COMPONENTS}


# ---------------------------------------------------------------------------------------------
# Comparison


@dataclass(frozen=True, slots=True)
class ComponentResult:
    """One component per decision with its interval, and (non-control arms) minus control."""

    name: str
    estimate: Estimate
    diff: Estimate | None


@dataclass(frozen=True, slots=True)
class LtvArmResult:
    """One arm's LTV-adjusted value per decision, why, and how it compares with the control."""

    arm: str
    is_control: bool
    n_subjects: int
    n_decisions: int
    value: Estimate
    components: tuple[ComponentResult, ...]
    diff: Estimate | None  # arm minus control; None for the control
    lift: Estimate | None  # arm / control - 1 (delta method); None for the control
    p_value: float | None  # Welch t-test on the linearized per-subject values
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        """Return JSON-safe data (NaN and infinities become null)."""
        return {
            "arm": self.arm,
            "is_control": self.is_control,
            "n_subjects": self.n_subjects,
            "n_decisions": self.n_decisions,
            "value": _estimate_dict(self.value),
            "components": {
                c.name: {"estimate": _estimate_dict(c.estimate), "diff": _estimate_dict(c.diff)}
                for c in self.components
            },
            "diff": _estimate_dict(self.diff),
            "lift": _estimate_dict(self.lift),
            "p_value": _json_float(self.p_value),
            "verdict": self.verdict,
        }


@dataclass(frozen=True, slots=True)
class LtvReport:
    """Every arm on LTV-adjusted value per decision against one control."""

    control: str
    confidence: float
    arms: tuple[LtvArmResult, ...]

    def arm(self, name: str) -> LtvArmResult:
        """Return one arm's result by name."""
        for result in self.arms:
            if result.arm == name:
                return result
        raise KeyError(f"no arm {name!r} in this report; arms are {[a.arm for a in self.arms]}")

    def to_dict(self) -> dict[str, Any]:
        """Return JSON-safe data (NaN and infinities become null)."""
        return {
            "control": self.control,
            "confidence": self.confidence,
            "arms": [a.to_dict() for a in self.arms],
        }


def _json_float(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _estimate_dict(est: Estimate | None) -> dict[str, Any] | None:
    if est is None:
        return None
    return {
        "value": _json_float(est.value),
        "ci_low": _json_float(est.ci_low),
        "ci_high": _json_float(est.ci_high),
        "std_error": _json_float(est.std_error),
        "error": est.error,
    }


def compare_ltv(arms: Mapping[str, LtvArmStats], control: str, confidence: float = 0.95) -> LtvReport:
    """Compare arms on LTV-adjusted value per decision, with intervals for the value and its components.

    Per arm: the ratio estimate with its cluster-robust t interval (df = subjects - 1); against
    the control: the Welch difference, the delta-method relative lift and a Welch p-value, all on
    the linearized per-subject values; and a verdict that names the components behind the result.
    """
    check_confidence(confidence)
    if control not in arms:
        raise ValueError(f"control must be one of the arms {list(arms)}, got {control!r}")
    lin = {
        arm: {name: _linearized(s, s.component(name)) for name in ("value", *COMPONENTS)} for arm, s in arms.items()
    }
    base = lin[control]
    results = []
    for arm, stats in arms.items():
        mine = lin[arm]
        value = mean_interval(mine["value"], confidence)
        is_control = arm == control
        diff = lift = None
        p_value = None
        component_diffs: dict[str, Estimate | None] = {name: None for name in COMPONENTS}
        if not is_control:
            diff = mean_difference(base["value"], mine["value"], confidence)
            lift, p_value = _lift_and_p(base["value"], mine["value"], confidence)
            component_diffs = {name: mean_difference(base[name], mine[name], confidence) for name in COMPONENTS}
        components = tuple(
            ComponentResult(name, mean_interval(mine[name], confidence), component_diffs[name]) for name in COMPONENTS
        )
        verdict = _verdict(arm, control, confidence, stats, value, diff, components, arms[control])
        results.append(
            LtvArmResult(
                arm, is_control, stats.n_subjects, stats.n_decisions, value, components, diff, lift, p_value, verdict
            )
        )
    return LtvReport(control, confidence, tuple(results))


def _lift_and_p(control: MeanStats, treatment: MeanStats, confidence: float) -> tuple[Estimate, float | None]:
    """Relative lift (None below a control worth <= 0) and the Welch p-value, via ``compare``."""
    result = compare("mean", control, treatment, confidence)
    if control.n == 0 or treatment.n == 0:
        return Estimate(None, None, None, None, result.error or NO_DATA), None
    if control.mean < 0:
        return Estimate(None, None, None, None, NEGATIVE_CONTROL_MEAN), result.p_value
    if control.mean == 0:
        return Estimate(None, None, None, None, ZERO_CONTROL_MEAN), result.p_value
    se = None
    if result.lift_ci_low is not None and result.lift_ci_high is not None and result.lift is not None:
        se = (result.lift_ci_high - result.lift_ci_low) / (2.0 * z_critical(confidence))
    return Estimate(result.lift, result.lift_ci_low, result.lift_ci_high, se, result.error), result.p_value


# ---------------------------------------------------------------------------------------------
# Verdicts: one sentence that says why


def _fmt(x: float) -> str:
    """Magnitude with two decimals, or two significant digits when two decimals would show 0.00."""
    a = abs(x)
    if a >= 0.005 or a == 0.0:
        return f"{a:.2f}"
    return str(np.format_float_positional(a, precision=2, fractional=False, trim="-"))


_REASONS = {
    NO_DATA: "one of the arms has no decisions",
    NOT_ENOUGH_DATA: "one of the arms has fewer than two subjects",
    ZERO_VARIANCE: "every subject's value per decision is the same",
}


def _verdict(
    arm: str,
    control: str,
    confidence: float,
    stats: LtvArmStats,
    value: Estimate,
    diff: Estimate | None,
    components: tuple[ComponentResult, ...],
    control_stats: LtvArmStats,
) -> str:
    level = f"{round(confidence * 100, 6):g}%"
    by_name = {c.name: c for c in components}
    if diff is None:  # the control: describe it
        if value.value is None:
            return f"{arm} (control) has no decisions yet"
        parts = ", ".join(
            f"{name.replace('_', ' ')} {by_name[name].estimate.value:+.2f}"
            for name in COMPONENTS
            if by_name[name].estimate.value
        )
        return f"{arm} (control) is worth {value.value:.2f} per decision" + (f" ({parts})" if parts else "")
    if diff.value is None:
        return f"{arm} cannot be compared with {control} yet: {_REASONS.get(diff.error or '', diff.error)}"

    def dv(name: str) -> float:
        """The component's difference, with rounding residue (|d| < 1e-9 per decision) read as none."""
        est = by_name[name].diff
        value = est.value if est is not None and est.value is not None else 0.0
        return value if abs(value) >= 1e-9 else 0.0

    def present(name: str) -> bool:
        return stats.component(name).sum != 0.0 or control_stats.component(name).sum != 0.0

    # (text, +1 good for the arm / -1 bad / 0 neutral)
    clauses: list[tuple[str, int]] = []
    d_rev = dv("revenue")
    if d_rev > 0:
        clauses.append((f"brings +{_fmt(d_rev)} revenue per decision", 1))
    elif d_rev < 0:
        clauses.append((f"brings {_fmt(d_rev)} less revenue per decision", -1))
    else:
        clauses.append(("brings the same revenue per decision", 0))
    if present("unsubscribe_loss"):
        extra = -dv("unsubscribe_loss")  # the loss component is <= 0: more loss is a negative difference
        if extra > 0:
            clauses.append((f"loses {_fmt(extra)} to unsubscribes", -1))
        elif extra < 0:
            clauses.append((f"saves {_fmt(extra)} on unsubscribes", 1))
        else:
            clauses.append(("loses no more to unsubscribes", 0))
    if present("conversion_gain"):
        d_gain = dv("conversion_gain")
        if d_gain > 0:
            clauses.append((f"adds {_fmt(d_gain)} of future value through conversions", 1))
        elif d_gain < 0:
            clauses.append((f"adds {_fmt(d_gain)} less future value through conversions", -1))
    text, lead = clauses[0]
    for clause, sign in clauses[1:]:
        text += (" but " if sign * lead < 0 else " and ") + clause
    amount = f"{_fmt(diff.value)} {'more' if diff.value >= 0 else 'less'} per decision than {control}"
    if diff.ci_low is None or diff.ci_high is None:
        why = _REASONS.get(diff.error or "", diff.error)
        return f"{arm} {text}: {amount}, with no interval because {why}"
    interval = f"{level} interval {diff.ci_low:.2f} to {diff.ci_high:.2f}"
    if diff.ci_low > 0 or diff.ci_high < 0:
        return f"{arm} {text}: worth {amount} ({interval})"
    return f"{arm} {text}: {amount}, but the {interval} includes no difference"
