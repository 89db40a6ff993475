"""Planning against statsmodels' power classes and Cohen's (1988) published tables."""

from __future__ import annotations

import math

import pytest
from statsmodels.stats.power import NormalIndPower, TTestIndPower
from statsmodels.stats.proportion import proportion_effectsize

from reports.power import PowerResult, plan_mean, plan_rate


def test_textbook_rate_example() -> None:
    # Baseline 10%, +20% relative (10% -> 12%), alpha .05 two-sided, power .8: about 3,835 per arm
    # with Cohen's h and the normal approximation (statsmodels NormalIndPower).
    h = proportion_effectsize(0.12, 0.10)
    expected = NormalIndPower().solve_power(effect_size=h, alpha=0.05, power=0.8, ratio=1.0)
    result = plan_rate(0.10, mde_relative=0.20)
    assert result.sample_size_per_arm == math.ceil(expected)
    assert 3800 <= result.sample_size_per_arm < 3900
    assert result.mde_absolute == pytest.approx(0.02)
    assert result.effect_size == pytest.approx(h)
    assert result.metric_type == "rate" and result.arms == 2 and result.duration_days is None


@pytest.mark.parametrize(
    ("baseline", "mde", "alpha", "power", "alternative", "sm_alternative", "lifted"),
    [
        (0.03, 0.10, 0.05, 0.8, "larger", "larger", 0.033),
        (0.05, 0.15, 0.10, 0.9, "greater", "larger", 0.0575),
        (0.20, 0.05, 0.05, 0.8, "smaller", "smaller", 0.19),
        (0.02, 0.30, 0.01, 0.95, "two-sided", "two-sided", 0.026),
    ],
)
def test_rate_sample_size_matches_normal_ind_power(
    baseline: float, mde: float, alpha: float, power: float, alternative: str, sm_alternative: str, lifted: float
) -> None:
    h = proportion_effectsize(lifted, baseline)
    expected = NormalIndPower().solve_power(
        effect_size=h, alpha=alpha, power=power, ratio=1.0, alternative=sm_alternative
    )
    result = plan_rate(baseline, mde_relative=mde, alpha=alpha, power=power, alternative=alternative)
    assert result.sample_size_per_arm == math.ceil(expected)


def test_rate_mde_round_trips_through_statsmodels_power() -> None:
    result = plan_rate(0.04, sample_size_per_arm=25_000, alpha=0.05, power=0.8, alternative="larger")
    assert result.mde_relative > 0
    h = proportion_effectsize(0.04 * (1 + result.mde_relative), 0.04)
    achieved = NormalIndPower().power(h, nobs1=25_000, alpha=0.05, ratio=1.0, alternative="larger")
    assert achieved == pytest.approx(0.8, abs=1e-8)
    # And planning for that MDE asks for (about) the same sample.
    again = plan_rate(0.04, mde_relative=result.mde_relative, alternative="larger")
    assert abs(again.sample_size_per_arm - 25_000) <= 1


def test_two_sided_rate_plan_covers_the_harder_direction() -> None:
    # Above a 50% baseline a fall has the smaller |h|, so it sets the sample size.
    rise = NormalIndPower().solve_power(effect_size=proportion_effectsize(0.77, 0.70), alpha=0.05, power=0.8)
    fall = NormalIndPower().solve_power(effect_size=proportion_effectsize(0.63, 0.70), alpha=0.05, power=0.8)
    assert fall > rise
    result = plan_rate(0.70, mde_relative=0.10)
    assert result.sample_size_per_arm == math.ceil(fall)
    assert result.effect_size < 0


def test_bonferroni_and_duration() -> None:
    # Four arms (three comparisons with control), Bonferroni alpha .05 / 3, 12,000 decisions a day.
    h = proportion_effectsize(0.055, 0.05)
    expected = math.ceil(NormalIndPower().solve_power(effect_size=h, alpha=0.05 / 3, power=0.8, ratio=1.0))
    result = plan_rate(0.05, mde_relative=0.10, arms=4, correction="bonferroni", daily_traffic=12_000)
    assert result.sample_size_per_arm == expected
    assert result.alpha == 0.05 and result.alpha_per_comparison == pytest.approx(0.05 / 3)
    assert result.duration_days == pytest.approx(expected * 4 / 12_000)
    uncorrected = plan_rate(0.05, mde_relative=0.10, arms=4)
    assert uncorrected.sample_size_per_arm < result.sample_size_per_arm


@pytest.mark.parametrize(("d", "n"), [(0.5, 64), (0.8, 26)])
def test_mean_matches_cohen_table(d: float, n: int) -> None:
    # Cohen (1988), Table 2.4.1: two-sided alpha .05, power .80 needs n = 64 per group for
    # d = .50 and n = 26 for d = .80.
    result = plan_mean(100.0, 10.0 / d, mde_relative=0.1)  # delta 10, sd 10 / d
    assert result.sample_size_per_arm == n
    assert result.effect_size == pytest.approx(d)


def test_mean_matches_ttest_ind_power() -> None:
    # Revenue per exposure: mean 1.42, sd 16, detect +8% with 3 arms and Bonferroni, one-sided.
    d = 1.42 * 0.08 / 16.0
    expected = TTestIndPower().solve_power(effect_size=d, alpha=0.025, power=0.8, ratio=1.0, alternative="larger")
    result = plan_mean(1.42, 16.0, mde_relative=0.08, arms=3, correction="bonferroni", alternative="larger")
    assert result.sample_size_per_arm == math.ceil(expected)
    assert result.mde_absolute == pytest.approx(1.42 * 0.08)

    solved = plan_mean(1.42, 16.0, sample_size_per_arm=50_000, alternative="smaller", daily_traffic=5_000)
    d_solved = TTestIndPower().solve_power(nobs1=50_000, alpha=0.05, power=0.8, ratio=1.0, alternative="larger")
    assert solved.mde_relative == pytest.approx(d_solved * 16.0 / 1.42, rel=1e-6)
    assert solved.effect_size == pytest.approx(-d_solved, rel=1e-6)
    assert solved.duration_days == pytest.approx(20.0)


def test_unreachable_mde_is_a_note_not_an_error() -> None:
    result = plan_rate(0.5, sample_size_per_arm=2)
    assert isinstance(result, PowerResult)
    assert result.mde_relative is None and result.mde_absolute is None
    assert any("increase the sample size" in note for note in result.notes)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: plan_rate(0.0, mde_relative=0.1), "baseline"),
        (lambda: plan_rate(1.2, mde_relative=0.1), "baseline"),
        (lambda: plan_rate(0.1), "exactly one of mde_relative and sample_size_per_arm"),
        (lambda: plan_rate(0.1, mde_relative=0.1, sample_size_per_arm=100), "exactly one"),
        (lambda: plan_rate(0.1, mde_relative=-0.1), "mde_relative"),
        (lambda: plan_rate(0.6, mde_relative=1.0, alternative="larger"), "mde_relative"),
        (lambda: plan_rate(0.1, sample_size_per_arm=0), "sample_size_per_arm"),
        (lambda: plan_rate(0.1, mde_relative=0.1, alpha=0.0), "alpha"),
        (lambda: plan_rate(0.1, mde_relative=0.1, power=1.0), "power"),
        (lambda: plan_rate(0.1, mde_relative=0.1, arms=1), "arms"),
        (lambda: plan_rate(0.1, mde_relative=0.1, daily_traffic=0), "daily_traffic"),
        (lambda: plan_rate(0.1, mde_relative=0.1, alternative="up"), "alternative"),
        (lambda: plan_rate(0.1, mde_relative=0.1, correction="holm"), "correction"),
        (lambda: plan_mean(0.0, 1.0, mde_relative=0.1), "baseline_mean"),
        (lambda: plan_mean(10.0, 0.0, mde_relative=0.1), "std_dev"),
        (lambda: plan_mean(10.0, 1.0, sample_size_per_arm=-5), "sample_size_per_arm"),
    ],
)
def test_bad_input_names_the_field(call, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        call()


# --- power for the test promotion runs: the always-valid interval ------------------------------


def test_sequential_plan_for_a_5_percent_base_and_10_percent_lift() -> None:
    result = plan_rate(0.05, mde_relative=0.10, daily_traffic=10_000)
    assert result.sample_size_per_arm == 31_218  # fixed horizon, statsmodels NormalIndPower
    assert result.sequential_multiplier_at_sample_size == pytest.approx(3.18, abs=0.005)
    assert result.sequential_power_at_sample_size == pytest.approx(0.35, abs=0.01)
    assert result.sequential_sample_size_per_arm > 2 * result.sample_size_per_arm
    assert result.sequential_duration_days == pytest.approx(result.sequential_sample_size_per_arm * 2 / 10_000)
    assert "always-valid rule needs" in result.notes[-1]


@pytest.mark.parametrize("metric_type", ["rate", "mean"])
def test_sequential_power_at_the_stated_n_holds_in_simulation(metric_type: str) -> None:
    """4,000 seeded experiments at the planned n per arm: the always-valid interval's lower bound clears 0
    about as often as the plan says (within 3 points), at the sequential n and at the fixed-horizon n."""
    import numpy as np

    from reports.sequential import always_valid_difference
    from reports.stats import MeanStats

    rng = np.random.default_rng(11 if metric_type == "rate" else 12)
    sims = 4_000
    if metric_type == "rate":
        plan = plan_rate(0.05, mde_relative=0.10)
    else:
        plan = plan_mean(3.0, 9.0, mde_relative=0.05)

    def achieved(n: int) -> float:
        hits = 0
        if metric_type == "rate":
            kc, kt = rng.binomial(n, 0.05, sims), rng.binomial(n, 0.055, sims)
            arms = [(MeanStats.proportion(n, int(c)), MeanStats.proportion(n, int(t))) for c, t in zip(kc, kt)]
        else:
            # Sample means and variances of n normal draws, as sufficient statistics.
            arms = []
            for mean in (3.0, 3.15):
                m = rng.normal(mean, 9.0 / np.sqrt(n), sims)
                v = 81.0 * rng.chisquare(n - 1, sims) / (n - 1)
                arms.append([MeanStats(n, n * mi, (n - 1) * vi + n * mi * mi) for mi, vi in zip(m, v)])
            arms = list(zip(*arms))
        for control, treatment in arms:
            seq = always_valid_difference(control, treatment, alpha=0.05, tuning_n=10_000)
            hits += seq.ci_low is not None and seq.ci_low > 0
        return hits / sims

    assert achieved(plan.sequential_sample_size_per_arm) == pytest.approx(0.80, abs=0.03)
    assert achieved(plan.sample_size_per_arm) == pytest.approx(plan.sequential_power_at_sample_size, abs=0.03)

