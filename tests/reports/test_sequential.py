"""Always-valid confidence sequence: reference figures, fixed-horizon comparison, peeking."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from reports.sequential import SequentialResult, always_valid_difference, mixture_rho_squared
from reports.stats import MeanStats


def _stats(values: np.ndarray) -> MeanStats:
    return MeanStats(n=len(values), sum=float(values.sum()), sum_squares=float((values**2).sum()))


def test_matches_growthbook_published_figures() -> None:
    # GrowthBook gbstats tests/frequentist/test_tests.py: the same sufficient statistics give
    # an absolute difference 0.23437666666666668 with standard error 0.12983081254184736
    # (TestOneSidedGreaterTTest.test_one_sided_ttest_absolute), and the two-sided sequential
    # test with sequential_tuning_parameter=1000 at N=6461 has a half-width of
    # 1.56516 - 0.50336 = 1.0618 for a standard error of 0.33341 (test_sequential_test_runs),
    # i.e. a multiplier of 3.18467.
    control = MeanStats(n=3000, sum=1396.87, sum_squares=52377.9767)
    treatment = MeanStats(n=3461, sum=2422.7, sum_squares=134698.29)
    result = always_valid_difference(control, treatment, alpha=0.05, tuning_n=1000)
    assert result.error is None
    assert result.estimate == pytest.approx(0.23437666666666668, rel=1e-9)
    assert result.std_error == pytest.approx(0.12983081254184736, rel=1e-6)
    half_width = result.ci_high - result.estimate
    assert half_width / result.std_error == pytest.approx(1.0618 / 0.33341, abs=2e-4)
    assert result.estimate - result.ci_low == pytest.approx(half_width)
    # GrowthBook reports p = 1 for this comparison: the evidence is far from sequentially significant.
    assert result.p_value == 1.0


def test_wider_than_welch_and_contains_it() -> None:
    rng = np.random.default_rng(20240101)
    control = rng.gamma(2.0, 10.0, size=4000)
    treatment = rng.gamma(2.0, 10.5, size=3800)
    welch_low, welch_high = CompareMeans(DescrStatsW(treatment), DescrStatsW(control)).tconfint_diff(
        alpha=0.05, usevar="unequal"
    )
    result = always_valid_difference(_stats(control), _stats(treatment), alpha=0.05)
    assert result.estimate == pytest.approx(treatment.mean() - control.mean())
    assert result.ci_low < welch_low and result.ci_high > welch_high
    assert (result.ci_high - result.ci_low) > 1.3 * (welch_high - welch_low)


def test_p_value_agrees_with_interval() -> None:
    rng = np.random.default_rng(7)
    for shift in (0.0, 0.02, 0.05, 0.08, 0.12):
        c = rng.normal(1.0, 1.0, size=3000)
        t = rng.normal(1.0 + shift, 1.0, size=3000)
        result = always_valid_difference(_stats(c), _stats(t), alpha=0.05, tuning_n=6000)
        excludes_zero = result.ci_low > 0 or result.ci_high < 0
        assert (result.p_value <= 0.05) == excludes_zero


def test_tightest_near_tuning_n() -> None:
    # Per-unit variance held fixed, half-width * sqrt(N) is smallest near N = tuning_n.
    def scaled_width(n_per_arm: int) -> float:
        arm = MeanStats(n=n_per_arm, sum=0.0, sum_squares=float(n_per_arm - 1))  # variance 1
        result = always_valid_difference(arm, arm, tuning_n=20_000)
        return (result.ci_high - result.ci_low) * math.sqrt(2 * n_per_arm)

    at_tuning = scaled_width(10_000)
    assert at_tuning < scaled_width(5_000)
    assert at_tuning < scaled_width(20_000)
    assert mixture_rho_squared(0.05, 20_000) == pytest.approx(mixture_rho_squared(0.05, 10_000) / 2)


def test_aa_with_daily_peeking_keeps_false_positive_rate() -> None:
    # 2,000 A/A experiments, 30 daily looks, 200 decisions per arm per day, conversion rate 5%.
    rng = np.random.default_rng(12345)
    experiments, days, per_day, rate, alpha = 2000, 30, 200, 0.05, 0.05
    conversions = rng.binomial(per_day, rate, size=(experiments, days, 2)).cumsum(axis=1)
    n = per_day * np.arange(1, days + 1)

    # Fixed-horizon two-proportion z-test (unpooled SE) looked at every day.
    p = conversions / n[None, :, None]
    se = np.sqrt(p[..., 0] * (1 - p[..., 0]) / n + p[..., 1] * (1 - p[..., 1]) / n)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (p[..., 1] - p[..., 0]) / se
    fixed_p = 2 * sps.norm.sf(np.abs(np.nan_to_num(z)))
    fixed_fpr = np.mean((fixed_p < alpha).any(axis=1))

    ever = np.zeros(experiments, dtype=bool)
    for e in range(experiments):
        for d in range(days):
            c, t = conversions[e, d]
            result = always_valid_difference(
                MeanStats.proportion(int(n[d]), int(c)),
                MeanStats.proportion(int(n[d]), int(t)),
                alpha=alpha,
                tuning_n=12_000,
            )
            if result.p_value is not None and result.p_value <= alpha:
                ever[e] = True
                break
    sequential_fpr = ever.mean()

    assert fixed_fpr > 2 * alpha
    assert sequential_fpr <= alpha + 0.01


def test_detects_a_real_effect_with_enough_data() -> None:
    # 5% -> 6% conversion, 20,000 per arm: z is about 4.4, well past the sequential boundary.
    result = always_valid_difference(
        MeanStats.proportion(20_000, 1_000), MeanStats.proportion(20_000, 1_200)
    )
    assert result.ci_low > 0
    assert result.p_value < 0.05

    # Simulated power: 300 experiments with that effect, checked at the end.
    rng = np.random.default_rng(99)
    c = rng.binomial(20_000, 0.05, size=300)
    t = rng.binomial(20_000, 0.06, size=300)
    detected = [
        always_valid_difference(
            MeanStats.proportion(20_000, int(ci)), MeanStats.proportion(20_000, int(ti))
        ).ci_low
        > 0
        for ci, ti in zip(c, t)
    ]
    assert np.mean(detected) > 0.8


def test_degenerate_data_gives_error_not_exception() -> None:
    empty = always_valid_difference(MeanStats(0, 0.0, 0.0), MeanStats(10, 5.0, 5.0))
    assert empty.error == "NO_DATA" and empty.estimate is None and empty.ci_low is None
    single = always_valid_difference(MeanStats(1, 1.0, 1.0), MeanStats(10, 5.0, 5.0))
    assert single.error == "NOT_ENOUGH_DATA" and single.p_value is None
    flat = always_valid_difference(MeanStats.proportion(100, 0), MeanStats.proportion(100, 0))
    assert flat == SequentialResult(0.0, None, None, None, 0.05, 10_000, error="ZERO_VARIANCE", n_total=200)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"alpha": 0.0}, "alpha"), ({"alpha": 1.5}, "alpha"), ({"tuning_n": 0}, "tuning_n")],
)
def test_bad_input_raises(kwargs: dict, message: str) -> None:
    arm = MeanStats.proportion(100, 5)
    with pytest.raises(ValueError, match=message):
        always_valid_difference(arm, arm, **kwargs)
