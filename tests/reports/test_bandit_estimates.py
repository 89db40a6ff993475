"""Bandit-data estimates: Simpson's paradox, IPW identities and coverage, propensity balance."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from reports.bandit import (
    IpwArmStats,
    PeriodArmStats,
    WeightedMean,
    ipw_estimates,
    period_weighted_means,
    propensity_balance,
)
from reports.stats import MeanStats

HILLSTROM = Path(__file__).resolve().parents[3] / "shared" / "data" / "hillstrom.csv"


def _ipw_sums(arm: str, chosen: np.ndarray, weights: np.ndarray, rewards: np.ndarray) -> IpwArmStats:
    w = weights[chosen]
    r = rewards[chosen]
    return IpwArmStats(
        arm=arm,
        sum_w=float(w.sum()),
        sum_wr=float((w * r).sum()),
        sum_w2=float((w * w).sum()),
        sum_w2r=float((w * w * r).sum()),
        sum_w2r2=float((w * w * r * r).sum()),
    )


def _contains(low: float, high: float, value: float) -> bool:
    return low <= value <= high


class TestAllocationShiftWithTimeTrend:
    """Base rate rises over ten periods while the bandit moves traffic to arm B."""

    periods = 10
    per_period = 20_000
    base = 0.02 + 0.006 * np.arange(10)  # 2.0% .. 7.4%
    lift = 0.005  # B converts 0.5 points better than A in every period
    share_b = 0.1 + 0.08 * np.arange(10)  # 10% .. 82% of traffic to B

    def _simulate(self, seed: int):
        rng = np.random.default_rng(seed)
        n_b = rng.binomial(self.per_period, self.share_b)
        n_a = self.per_period - n_b
        conv_a = rng.binomial(n_a, self.base)
        conv_b = rng.binomial(n_b, self.base + self.lift)
        return n_a, conv_a, n_b, conv_b

    def _truth(self) -> dict[str, float]:
        # Every period has the same number of decisions, so the target is the plain average.
        return {"A": float(self.base.mean()), "B": float((self.base + self.lift).mean())}

    def test_naive_means_are_biased_and_period_weighting_recovers_truth(self) -> None:
        n_a, conv_a, n_b, conv_b = self._simulate(2021)
        truth = self._truth()
        naive = {"A": MeanStats.proportion(int(n_a.sum()), int(conv_a.sum())),
                 "B": MeanStats.proportion(int(n_b.sum()), int(conv_b.sum()))}
        # Naive pooled means: A looks worse and B better than they are, far beyond noise.
        assert naive["A"].mean < truth["A"] - 5 * naive["A"].std_error
        assert naive["B"].mean > truth["B"] + 5 * naive["B"].std_error
        naive_lift = naive["B"].mean - naive["A"].mean
        assert naive_lift > 3 * self.lift

        cells = [
            PeriodArmStats(f"day-{p:02d}", arm, MeanStats.proportion(int(n), int(c)))
            for p in range(self.periods)
            for arm, n, c in (("A", n_a[p], conv_a[p]), ("B", n_b[p], conv_b[p]))
        ]
        weighted = period_weighted_means(cells, alpha=0.001)
        for arm in ("A", "B"):
            est = weighted[arm]
            assert est.error is None and est.periods_used == 10 and est.decisions_covered == 1.0
            assert _contains(est.ci_low, est.ci_high, truth[arm])

    def test_ipw_recovers_truth(self) -> None:
        n_a, conv_a, n_b, conv_b = self._simulate(2022)
        truth = self._truth()
        w_a = 1.0 / (1.0 - self.share_b)
        w_b = 1.0 / self.share_b
        # Per period the weight is constant within an arm, so the sums follow from counts.
        stats = [
            IpwArmStats("A", *(float(v) for v in (
                (n_a * w_a).sum(), (conv_a * w_a).sum(), (n_a * w_a**2).sum(),
                (conv_a * w_a**2).sum(), (conv_a * w_a**2).sum()))),
            IpwArmStats("B", *(float(v) for v in (
                (n_b * w_b).sum(), (conv_b * w_b).sum(), (n_b * w_b**2).sum(),
                (conv_b * w_b**2).sum(), (conv_b * w_b**2).sum()))),
        ]
        n_total = self.periods * self.per_period
        estimates = ipw_estimates(stats, n_total, alpha=0.001)
        for arm in ("A", "B"):
            est = estimates[arm]
            assert est.error is None
            assert _contains(est.ips_ci_low, est.ips_ci_high, truth[arm])
            assert _contains(est.snips_ci_low, est.snips_ci_high, truth[arm])
            assert est.effective_sample_size < n_total
        assert not propensity_balance(stats, n_total).warning


def test_period_weighting_skips_periods_missing_an_arm() -> None:
    cells = [
        PeriodArmStats("d1", "A", MeanStats(100, 50.0, 40.0)),
        PeriodArmStats("d1", "B", MeanStats(300, 180.0, 150.0)),
        PeriodArmStats("d2", "A", MeanStats(200, 120.0, 100.0)),
        PeriodArmStats("d2", "B", MeanStats(200, 130.0, 110.0)),
        PeriodArmStats("d3", "A", MeanStats(500, 300.0, 250.0)),  # B has no data on d3
    ]
    result = period_weighted_means(cells)
    # Weights are the shares of decisions in the periods used: d1 400, d2 400.
    assert result["A"].mean == pytest.approx(0.5 * 0.5 + 0.5 * 0.6)
    assert result["B"].mean == pytest.approx(0.5 * 0.6 + 0.5 * 0.65)
    assert result["A"].periods_used == 2
    assert result["A"].decisions_covered == pytest.approx(800 / 1300)
    # Standard error: sum of w^2 var / n with each cell's ddof=1 variance.
    expected_var = 0.25 * MeanStats(100, 50.0, 40.0).variance / 100 + 0.25 * MeanStats(200, 120.0, 100.0).variance / 200
    assert result["A"].std_error == pytest.approx(np.sqrt(expected_var))
    z = sps.norm.ppf(0.975)
    assert result["A"].ci_high == pytest.approx(result["A"].mean + z * result["A"].std_error)


def test_period_weighting_without_common_periods() -> None:
    cells = [
        PeriodArmStats("d1", "A", MeanStats.proportion(100, 5)),
        PeriodArmStats("d2", "B", MeanStats.proportion(100, 7)),
    ]
    result = period_weighted_means(cells)
    assert result["A"] == WeightedMean(None, None, None, None, 0, "NO_COMMON_PERIODS", 0.0)
    assert period_weighted_means([]) == {}
    # An arm without any decision does not empty the others' common periods.
    with_idle = [
        PeriodArmStats("d1", "A", MeanStats.proportion(100, 5)),
        PeriodArmStats("d1", "B", MeanStats.proportion(100, 7)),
        PeriodArmStats("d1", "idle", MeanStats(0, 0.0, 0.0)),
    ]
    result = period_weighted_means(with_idle)
    assert result["idle"].error == "NO_DATA"
    assert result["A"].mean == pytest.approx(0.05) and result["B"].periods_used == 1


@pytest.mark.skipif(not HILLSTROM.exists(), reason="Hillstrom data set not available")
def test_ips_on_uniform_random_hillstrom_is_plain_mean_times_share() -> None:
    # Hillstrom (2008): each customer got one of three treatments with probability 1/3.
    spend: dict[str, list[float]] = {}
    with HILLSTROM.open(newline="") as fh:
        for row in csv.DictReader(fh):
            spend.setdefault(row["segment"], []).append(float(row["spend"]))
    n_total = sum(len(v) for v in spend.values())
    assert n_total == 64_000
    stats = []
    for arm, values in spend.items():
        r = np.asarray(values)
        stats.append(_ipw_sums(arm, np.ones(len(r), dtype=bool), np.full(len(r), 3.0), r))
    estimates = ipw_estimates(stats, n_total)
    for arm, values in spend.items():
        plain_mean = float(np.mean(values))
        share = len(values) / n_total
        assert estimates[arm].ips == pytest.approx(plain_mean * share / (1 / 3), rel=1e-12)
        assert estimates[arm].snips == pytest.approx(plain_mean, rel=1e-12)
        assert estimates[arm].effective_sample_size == pytest.approx(len(values))
    # MineThatData's published spend per customer: Mens $1.423, Womens $1.077, No E-Mail $0.653.
    assert estimates["Mens E-Mail"].snips == pytest.approx(1.423, abs=5e-4)
    assert estimates["Womens E-Mail"].snips == pytest.approx(1.077, abs=5e-4)
    assert estimates["No E-Mail"].snips == pytest.approx(0.653, abs=5e-4)

    # The logged 1/3 explains the split: with equal fixed propensities the check is scipy's
    # Pearson sample-ratio chi-square on the counts 21,307 / 21,387 / 21,306, 2 df.
    right = propensity_balance(stats, n_total)
    pearson = sps.chisquare([len(v) for v in spend.values()])
    assert not right.warning
    assert right.df == pytest.approx(2.0, rel=1e-9)
    assert right.statistic == pytest.approx(pearson.statistic, rel=1e-9)
    assert right.p_value == pytest.approx(pearson.pvalue, rel=1e-9)
    # Propensities logged as 1/2, 1/4, 1/4 do not explain it.
    wrong = []
    for arm, p in zip(spend, (0.5, 0.25, 0.25)):
        r = np.asarray(spend[arm])
        wrong.append(_ipw_sums(arm, np.ones(len(r), dtype=bool), np.full(len(r), 1 / p), r))
    check = propensity_balance(wrong, n_total)
    assert check.warning and check.p_value < 1e-6


def _logged_bandit(rng: np.random.Generator, n: int, reps: int, *, wrong: bool = False):
    """Three arms; propensities vary with a context x, and rewards depend on x and the arm."""
    x = rng.uniform(size=(reps, n))
    logits = np.stack([2.0 * x, np.zeros_like(x), 1.0 - 2.0 * x], axis=-1)
    prop = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    u = rng.uniform(size=(reps, n, 1))
    chosen = (u > prop.cumsum(axis=-1)).sum(axis=-1)
    chosen = np.minimum(chosen, 2)
    p_chosen = np.take_along_axis(prop, chosen[..., None], axis=-1)[..., 0]
    rate = np.stack([0.1 + 0.2 * x, 0.2 + 0.0 * x, 0.3 - 0.2 * x], axis=-1)
    reward = rng.uniform(size=(reps, n)) < np.take_along_axis(rate, chosen[..., None], axis=-1)[..., 0]
    logged = np.where(chosen == 0, 0.85 * p_chosen, p_chosen) if wrong else p_chosen
    truth = {"a0": 0.2, "a1": 0.2, "a2": 0.2}  # E over x ~ U(0, 1) of each arm's rate
    return chosen, 1.0 / logged, reward.astype(float), truth


def test_ipw_interval_coverage() -> None:
    rng = np.random.default_rng(31)
    reps, n = 600, 1500
    chosen, weights, reward, truth = _logged_bandit(rng, n, reps)
    hits = {"ips": 0, "snips": 0}
    for rep in range(reps):
        stats = [_ipw_sums(f"a{k}", chosen[rep] == k, weights[rep], reward[rep]) for k in range(3)]
        for arm, est in ipw_estimates(stats, n).items():
            hits["ips"] += _contains(est.ips_ci_low, est.ips_ci_high, truth[arm])
            hits["snips"] += _contains(est.snips_ci_low, est.snips_ci_high, truth[arm])
    # 1,800 intervals each; binomial SE of the coverage is about 0.005.
    assert hits["ips"] / (3 * reps) == pytest.approx(0.95, abs=0.02)
    assert hits["snips"] / (3 * reps) == pytest.approx(0.95, abs=0.02)


def test_propensity_balance_is_pearson_for_two_fixed_arms() -> None:
    # Fixed propensities 0.3 / 0.7 and counts 330 / 670 of 1,000: scipy's Pearson chi-square.
    stats = [
        IpwArmStats("a", 330 / 0.3, 0.0, 330 / 0.09, 0.0, 0.0),
        IpwArmStats("b", 670 / 0.7, 0.0, 670 / 0.49, 0.0, 0.0),
    ]
    check = propensity_balance(stats, 1000)
    pearson = sps.chisquare([330, 670], [300, 700])
    assert check.df == pytest.approx(1.0)
    assert check.statistic == pytest.approx(pearson.statistic)
    assert check.p_value == pytest.approx(pearson.pvalue)
    assert check.per_arm == pytest.approx({"a": 1.1, "b": 670 / 700})


def test_propensity_balance_calibration_and_detection() -> None:
    rng = np.random.default_rng(5)
    reps, n = 400, 3000
    chosen, weights, reward, _ = _logged_bandit(rng, n, reps)
    p_values = []
    for rep in range(reps):
        stats = [_ipw_sums(f"a{k}", chosen[rep] == k, weights[rep], reward[rep]) for k in range(3)]
        check = propensity_balance(stats, n)
        assert check.error is None
        p_values.append(check.p_value)
    p_values = np.asarray(p_values)
    # Right propensities: p-values near uniform, warnings (p < 0.001) essentially never.
    assert np.mean(p_values < 0.05) == pytest.approx(0.05, abs=0.03)
    assert np.mean(p_values < 0.001) <= 0.01
    assert sps.kstest(p_values, "uniform").pvalue > 0.001

    # Arm a0's propensities logged 15% too low: flagged every time.
    chosen, weights, reward, _ = _logged_bandit(np.random.default_rng(6), 20_000, 5, wrong=True)
    for rep in range(5):
        stats = [_ipw_sums(f"a{k}", chosen[rep] == k, weights[rep], reward[rep]) for k in range(3)]
        check = propensity_balance(stats, 20_000)
        assert check.warning
        assert check.per_arm["a0"] > 1.1 and abs(check.per_arm["a1"] - 1.0) < 0.05


def test_degenerate_ipw_data_gives_errors() -> None:
    never = IpwArmStats("never", 0.0, 0.0, 0.0, 0.0, 0.0)
    no_reward = IpwArmStats("quiet", 30.0, 0.0, 90.0, 0.0, 0.0)
    result = ipw_estimates([never, no_reward], n_total=100)
    assert result["never"].error == "NO_DATA" and result["never"].ips is None
    assert result["quiet"].error == "ZERO_VARIANCE" and result["quiet"].ips == 0.0
    assert propensity_balance([no_reward], 100).error == "NOT_ENOUGH_ARMS"
    assert propensity_balance([never, no_reward], 100).error == "ARM_NEVER_CHOSEN"
    certain = IpwArmStats("certain", 100.0, 5.0, 100.0, 5.0, 5.0)  # propensity 1 every time
    assert propensity_balance([certain, no_reward], 100).error == "ZERO_VARIANCE"
    assert ipw_estimates([no_reward], n_total=0)["quiet"].error == "NO_DATA"


def test_bad_ipw_input_raises() -> None:
    arm = IpwArmStats("a", 30.0, 3.0, 90.0, 9.0, 9.0)
    with pytest.raises(ValueError, match="n_total"):
        ipw_estimates([arm], n_total=-1)
    with pytest.raises(ValueError, match="unique"):
        ipw_estimates([arm, arm], n_total=100)
    with pytest.raises(ValueError, match="sum_w2 must be >= sum_w"):
        propensity_balance([IpwArmStats("b", 30.0, 3.0, 10.0, 1.0, 1.0), arm], 100)
    with pytest.raises(ValueError, match="alpha"):
        period_weighted_means([], alpha=0.0)
