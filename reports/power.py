"""Experiment planning: sample size per arm, minimum detectable effect and duration.

Rates use Cohen's effect size h = 2 asin(sqrt(p1)) - 2 asin(sqrt(p0)) with the normal
power of statsmodels' ``NormalIndPower`` (Cohen 1988, ch. 6); means use d = delta / sd
with the two-sample t-test power of ``TTestIndPower`` (Cohen 1988, ch. 2). Arms are
planned with equal allocation; each non-control arm is compared with the control, and
``correction="bonferroni"`` splits alpha over those arms - 1 comparisons.

The minimum detectable effect is a positive magnitude relative to the baseline
(mde_absolute = mde_relative * baseline): a rise for "larger", a fall for "smaller",
either for "two-sided". For rates a rise and a fall of the same relative size differ
in h, so a two-sided plan covers the harder direction (reported in ``notes`` and the
sign of ``effect_size``); for means they are symmetric. Duration is the days needed
for sample_size_per_arm * arms decisions at ``daily_traffic`` decisions a day.

Power for the test that runs. Promotion does not use the fixed-horizon test: it waits for the
always-valid interval of ``reports.sequential`` (half-width m(N) standard errors, N the units of
the two arms compared, m(N) = 3.18 instead of 1.96 at the fixed-horizon n for a 5% base and +10%).
Every plan therefore also gives ``sequential_sample_size_per_arm``: the n per arm at which the
always-valid interval, looked at then, excludes 0 with the asked power for the same effect,
Phi(|delta| / SE(n) - m(2n)) = power, with SE(n) the standard error of the difference under the
alternative (rates: sqrt((p0 (1 - p0) + p1 (1 - p1)) / n); means: sd sqrt(2 / n)), the same
alpha per comparison and the promotion job's tuning (``sequential_tuning_n``).
``sequential_power_at_sample_size`` is the power the always-valid rule has at the fixed-horizon
n. Looking more often only adds chances to cross earlier, so a daily look has at least this
power by that n. Set the promotion rule's ``min_decisions_per_arm`` at or below
``sequential_sample_size_per_arm`` and its minimum runtime at ``sequential_duration_days``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

from scipy import stats as sps
from scipy.optimize import brentq
from statsmodels.stats.power import NormalIndPower, TTestIndPower
from statsmodels.stats.proportion import proportion_effectsize

__all__ = ["PowerResult", "plan_rate", "plan_mean", "Alternative", "Correction"]

Alternative = Literal["two-sided", "larger", "smaller"]
Correction = Literal["none", "bonferroni"]

# Accept the scipy spellings too; statsmodels' power classes use "larger" / "smaller".
_ALTERNATIVES: dict[str, str] = {
    "two-sided": "two-sided",
    "larger": "larger",
    "greater": "larger",
    "smaller": "smaller",
    "less": "smaller",
}
_CORRECTIONS = ("none", "bonferroni")
_MIN_NOBS = 2.0


@dataclass(frozen=True, slots=True)
class PowerResult:
    """A sample-size plan: the missing one of sample size and MDE, and how long it takes."""

    metric_type: Literal["rate", "mean"]
    sample_size_per_arm: int | None
    mde_absolute: float | None
    mde_relative: float | None
    duration_days: float | None
    alpha: float
    power: float
    arms: int
    notes: list[str] = field(default_factory=list)
    alpha_per_comparison: float | None = None
    effect_size: float | None = None
    baseline: float | None = None
    std_dev: float | None = None
    alternative: str = "two-sided"
    correction: str = "none"
    # The always-valid rule promotion uses (see the module docstring).
    sequential_sample_size_per_arm: int | None = None
    sequential_duration_days: float | None = None
    sequential_power_at_sample_size: float | None = None
    sequential_multiplier_at_sample_size: float | None = None  # half-width in standard errors (1.96 fixed)
    sequential_tuning_n: float = 10_000


def plan_rate(
    baseline: float,
    *,
    mde_relative: float | None = None,
    sample_size_per_arm: int | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
    arms: int = 2,
    daily_traffic: float | None = None,
    alternative: str = "two-sided",
    correction: Literal["none", "bonferroni"] = "none",
    sequential_tuning_n: float = 10_000,
) -> PowerResult:
    """Plan a rate metric (conversion, click, unsubscribe): sample size for an MDE, or the MDE for a sample size."""
    if not _is_number(baseline) or not 0.0 < baseline < 1.0:
        raise ValueError(f"baseline must be a rate strictly between 0 and 1, got {baseline!r}")
    sm_alternative, alpha_each, notes = _check_common(
        mde_relative, sample_size_per_arm, alpha, power, arms, daily_traffic, alternative, correction
    )
    analysis = NormalIndPower()
    # Two-sided plans must detect a rise and a fall of the same relative size, so the
    # harder of the two directions (the smaller |h|) governs.
    directions = {"two-sided": (1.0, -1.0), "larger": (1.0,), "smaller": (-1.0,)}[sm_alternative]

    def effect(relative: float, direction: float) -> float:
        return float(proportion_effectsize(baseline * (1.0 + direction * relative), baseline))

    def limit(direction: float) -> float:
        """Largest relative change in this direction that keeps the rate inside (0, 1)."""
        return (1.0 - baseline) / baseline if direction > 0 else 1.0

    plans: list[tuple[float, float, float]] = []  # (governing value, direction, h)
    if mde_relative is not None:
        for direction in directions:
            if mde_relative < limit(direction):
                h = effect(mde_relative, direction)
                plans.append((_solve_nobs(analysis, h, alpha_each, power, sm_alternative), direction, h))
        if not plans:
            raise ValueError(
                f"mde_relative must keep the rate inside (0, 1): baseline {baseline} "
                f"with mde_relative {mde_relative} leaves it"
            )
        n_float, direction, h = max(plans)
        n = math.ceil(n_float - 1e-9)
        relative = mde_relative
    else:
        assert sample_size_per_arm is not None
        n = sample_size_per_arm
        for direction in directions:

            def shortfall(rel: float, direction: float = direction) -> float:
                achieved = analysis.power(
                    effect(rel, direction), nobs1=n, alpha=alpha_each, ratio=1.0, alternative=sm_alternative
                )
                return float(achieved) - power

            upper = limit(direction) * (1.0 - 1e-9)
            if shortfall(upper) >= 0.0:
                rel = float(brentq(shortfall, 1e-12, upper, xtol=1e-12, rtol=1e-10))
                plans.append((rel, direction, effect(rel, direction)))
        if not plans:
            notes.append(
                f"No change the rate can take reaches power {power:g} with {n} per arm; increase the sample size."
            )
            return PowerResult(
                metric_type="rate", sample_size_per_arm=n, mde_absolute=None, mde_relative=None,
                duration_days=_duration(n, arms, daily_traffic), alpha=alpha, power=power, arms=arms,
                notes=notes, alpha_per_comparison=alpha_each, effect_size=None, baseline=baseline,
                alternative=alternative, correction=correction,
            )
        relative, direction, h = max(plans)

    change = "rise" if direction > 0 else "fall"
    notes.append(
        f"Cohen's h = {h:.5f} for a {change} from {baseline:g} to {baseline * (1.0 + direction * relative):g}; "
        "normal approximation (statsmodels NormalIndPower)."
    )
    if len(plans) < len(directions):
        notes.append(f"Only a {change} of this size is possible from this baseline.")
    elif len(plans) > 1:
        notes.append(f"Two-sided: planned for the {change}, the harder direction to detect.")
    p1 = baseline * (1.0 + direction * relative)
    spread = baseline * (1.0 - baseline) + p1 * (1.0 - p1)
    sequential = _sequential(relative * baseline, lambda m: math.sqrt(spread / m), n, alpha_each, power,
                             arms, daily_traffic, sequential_tuning_n, notes)  # fmt: skip
    return PowerResult(
        **sequential,
        metric_type="rate",
        sample_size_per_arm=n,
        mde_absolute=relative * baseline,
        mde_relative=relative,
        duration_days=_duration(n, arms, daily_traffic),
        alpha=alpha,
        power=power,
        arms=arms,
        notes=notes,
        alpha_per_comparison=alpha_each,
        effect_size=h,
        baseline=baseline,
        alternative=alternative,
        correction=correction,
    )


def plan_mean(
    baseline_mean: float,
    std_dev: float,
    *,
    mde_relative: float | None = None,
    sample_size_per_arm: int | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
    arms: int = 2,
    daily_traffic: float | None = None,
    alternative: str = "two-sided",
    correction: Literal["none", "bonferroni"] = "none",
    sequential_tuning_n: float = 10_000,
) -> PowerResult:
    """Plan a mean metric (revenue per exposure, order value): sample size for an MDE, or the MDE for a sample size."""
    if not _is_number(baseline_mean) or not baseline_mean > 0.0:
        raise ValueError(f"baseline_mean must be > 0 (the MDE is relative to it), got {baseline_mean!r}")
    if not _is_number(std_dev) or not std_dev > 0.0:
        raise ValueError(f"std_dev must be > 0, got {std_dev!r}")
    sm_alternative, alpha_each, notes = _check_common(
        mde_relative, sample_size_per_arm, alpha, power, arms, daily_traffic, alternative, correction
    )
    analysis = TTestIndPower()
    direction = -1.0 if sm_alternative == "smaller" else 1.0

    if mde_relative is not None:
        d = direction * mde_relative * baseline_mean / std_dev
        n = math.ceil(_solve_nobs(analysis, d, alpha_each, power, sm_alternative) - 1e-9)
        relative = mde_relative
        notes.append(f"Cohen's d = {d:.5f}; two-sample t-test (TTestIndPower).")
    else:
        assert sample_size_per_arm is not None
        n = sample_size_per_arm
        # The t-test power depends on |d| only, so solve the one-sided "larger" case for a fall.
        solve_alt = "larger" if sm_alternative == "smaller" else sm_alternative
        d_abs = float(
            analysis.solve_power(effect_size=None, nobs1=n, alpha=alpha_each, power=power, ratio=1.0, alternative=solve_alt)
        )
        d = direction * d_abs
        relative = d_abs * std_dev / baseline_mean
        notes.append(f"MDE solved for Cohen's d = {d:.5f}; two-sample t-test (TTestIndPower).")

    sequential = _sequential(relative * baseline_mean, lambda m: std_dev * math.sqrt(2.0 / m), n, alpha_each, power,
                             arms, daily_traffic, sequential_tuning_n, notes)  # fmt: skip
    return PowerResult(
        **sequential,
        metric_type="mean",
        sample_size_per_arm=n,
        mde_absolute=relative * baseline_mean,
        mde_relative=relative,
        duration_days=_duration(n, arms, daily_traffic),
        alpha=alpha,
        power=power,
        arms=arms,
        notes=notes,
        alpha_per_comparison=alpha_each,
        effect_size=d,
        baseline=baseline_mean,
        std_dev=std_dev,
        alternative=alternative,
        correction=correction,
    )


def _solve_nobs(analysis: NormalIndPower | TTestIndPower, effect: float, alpha: float, power: float, alternative: str) -> float:
    """Solve statsmodels' power equation for the sample size per arm (at least 2)."""

    def shortfall(nobs: float) -> float:
        achieved = float(analysis.power(effect, nobs1=nobs, alpha=alpha, ratio=1.0, alternative=alternative))
        if math.isnan(achieved):
            # The noncentral t fails only for extreme noncentrality, where the normal power is exact enough.
            achieved = float(NormalIndPower().power(effect, nobs1=nobs, alpha=alpha, ratio=1.0, alternative=alternative))
        return achieved - power

    if shortfall(_MIN_NOBS) >= 0.0:
        return _MIN_NOBS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nobs = float(
            analysis.solve_power(effect_size=effect, nobs1=None, alpha=alpha, power=power, ratio=1.0, alternative=alternative)
        )
    if not (math.isfinite(nobs) and abs(shortfall(nobs)) < 1e-6):
        # statsmodels' own root finder gave up (very large or very small effects); bracket it.
        nobs = float(brentq(shortfall, _MIN_NOBS, 1e15, xtol=1e-6, rtol=1e-12))
    return nobs


def sequential_power(delta: float, std_error: float, n_units: float, alpha: float, tuning_n: float) -> float:
    """Return the chance that the always-valid interval at N = n_units excludes 0 on the effect's side."""
    from reports.sequential import boundary_multiplier

    return float(sps.norm.cdf(abs(delta) / std_error - boundary_multiplier(n_units, alpha, tuning_n)))


def _sequential(
    delta: float,
    std_error_at: Any,
    n: int,
    alpha: float,
    power: float,
    arms: int,
    daily_traffic: float | None,
    tuning_n: float,
    notes: list[str],
) -> dict[str, Any]:
    """The always-valid rule's sample size for the same effect, and its power at the fixed-horizon n."""
    from reports.sequential import boundary_multiplier

    if not (_is_number(tuning_n) and tuning_n > 0):
        raise ValueError(f"sequential_tuning_n must be a positive number, got {tuning_n!r}")
    z_power = float(sps.norm.ppf(power))

    def shortfall(m: float) -> float:
        return abs(delta) / std_error_at(m) - boundary_multiplier(2.0 * m, alpha, tuning_n) - z_power

    if shortfall(_MIN_NOBS) >= 0.0:
        n_seq = int(_MIN_NOBS)
    else:
        n_seq = math.ceil(float(brentq(shortfall, _MIN_NOBS, 1e15, xtol=1e-6, rtol=1e-12)) - 1e-9)
    at_n = sequential_power(delta, std_error_at(n), 2.0 * n, alpha, tuning_n)
    multiplier = boundary_multiplier(2.0 * n, alpha, tuning_n)
    notes.append(
        f"Promotion's always-valid rule needs {n_seq:,} per arm for power {power:g} "
        f"({n_seq / n:.2f} x the fixed-horizon {n:,}); at {n:,} its half-width is {multiplier:.2f} standard errors "
        f"(fixed horizon {float(sps.norm.ppf(1 - alpha / 2)):.2f}) and its power {at_n:.0%}. Set the rule's "
        f"min_decisions_per_arm to at most {n_seq:,}."
    )
    return {
        "sequential_sample_size_per_arm": n_seq,
        "sequential_duration_days": _duration(n_seq, arms, daily_traffic),
        "sequential_power_at_sample_size": at_n,
        "sequential_multiplier_at_sample_size": multiplier,
        "sequential_tuning_n": tuning_n,
    }


def _duration(n: int, arms: int, daily_traffic: float | None) -> float | None:
    return None if daily_traffic is None else n * arms / daily_traffic


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_common(
    mde_relative: float | None,
    sample_size_per_arm: int | None,
    alpha: float,
    power: float,
    arms: int,
    daily_traffic: float | None,
    alternative: str,
    correction: str,
) -> tuple[str, float, list[str]]:
    """Validate the shared planning inputs; return statsmodels' alternative, alpha per comparison, notes."""
    if (mde_relative is None) == (sample_size_per_arm is None):
        raise ValueError(
            "give exactly one of mde_relative and sample_size_per_arm, got "
            f"mde_relative={mde_relative!r}, sample_size_per_arm={sample_size_per_arm!r}"
        )
    if mde_relative is not None and not (_is_number(mde_relative) and mde_relative > 0.0):
        raise ValueError(f"mde_relative must be > 0 (a relative change such as 0.1 for 10%), got {mde_relative!r}")
    if sample_size_per_arm is not None and not (
        isinstance(sample_size_per_arm, int) and not isinstance(sample_size_per_arm, bool) and sample_size_per_arm >= 2
    ):
        raise ValueError(f"sample_size_per_arm must be an integer >= 2, got {sample_size_per_arm!r}")
    if not (_is_number(alpha) and 0.0 < alpha < 1.0):
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if not (_is_number(power) and 0.0 < power < 1.0):
        raise ValueError(f"power must be in (0, 1), got {power!r}")
    if not (isinstance(arms, int) and not isinstance(arms, bool) and arms >= 2):
        raise ValueError(f"arms must be an integer >= 2 (control included), got {arms!r}")
    if daily_traffic is not None and not (_is_number(daily_traffic) and daily_traffic > 0.0):
        raise ValueError(f"daily_traffic must be > 0 decisions per day, got {daily_traffic!r}")
    if alternative not in _ALTERNATIVES:
        raise ValueError(f"alternative must be one of {sorted(_ALTERNATIVES)}, got {alternative!r}")
    if correction not in _CORRECTIONS:
        raise ValueError(f"correction must be one of {list(_CORRECTIONS)}, got {correction!r}")

    sm_alternative = _ALTERNATIVES[alternative]
    comparisons = arms - 1
    alpha_each = alpha / comparisons if correction == "bonferroni" else alpha
    tested = "two-sided" if sm_alternative == "two-sided" else "one-sided"
    notes = [f"{comparisons} comparison(s) against control, {tested} test at alpha {alpha_each:g} each."]
    if correction == "bonferroni" and comparisons > 1:
        notes.append(f"Bonferroni: alpha {alpha:g} split over {comparisons} comparisons.")
    if alpha_each >= power:
        raise ValueError(f"power must exceed alpha per comparison, got power {power} <= alpha {alpha_each}")
    return sm_alternative, alpha_each, notes
