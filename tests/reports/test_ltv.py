"""LTV-adjusted comparison: the seed question, interval coverage, reference numbers, value sources.

Sources:
- Cluster-robust standard errors: statsmodels ``OLS(values, 1).fit(cov_type="cluster", groups=subject)``
  (its small-sample factor G/(G-1) with K = 1 is exactly the delta method's n/(n-1); its t
  interval uses df = G - 1), and a subject-level bootstrap with a fixed seed.
- CLV model: BG/NBD + Gamma-Gamma fitted on Fader & Hardie's CDNOW 1/10 sample, 39-week calibration
  (see tests/reports/test_clv.py).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import statsmodels.api as sm

from reports import ArmSummary, MeanStats, ReportInput, build_report
from reports.clv import ClvModel, RfmSummary, fit_clv_model, summarise_transactions
from reports.comparison import relative_lift
from reports.intervals import NO_DATA, NOT_ENOUGH_DATA, ZERO_VARIANCE, mean_interval, t_critical
from reports.ltv import (
    COMPONENTS,
    NEGATIVE_CONTROL_MEAN,
    LtvArmStats,
    LtvSettings,
    ValueSums,
    arm_summary_ltv,
    compare_ltv,
    conversion_value_gain,
    conversion_value_gains,
    decision_components,
    ltv_arm_stats_from_arrays,
    subject_value,
)

CDNOW = Path(__file__).resolve().parents[3] / "shared" / "data" / "cdnow"


# ---------------------------------------------------------------------------------------------
# Simulation helpers


def _decisions(rng: np.random.Generator, n_subjects: int) -> np.ndarray:
    """Subject index of each decision: 1 to 3 decisions per subject, in order."""
    return np.repeat(np.arange(n_subjects), rng.integers(1, 4, n_subjects))


def _stop_after_unsubscribe(subject: np.ndarray, unsubscribed: np.ndarray) -> np.ndarray:
    """Keep each subject's decisions up to and including its first unsubscribe (no mail after it)."""
    before = np.cumsum(unsubscribed) - unsubscribed  # unsubscribes before this decision, all subjects
    starts = np.flatnonzero(np.r_[True, subject[1:] != subject[:-1]])
    at_start = np.repeat(before[starts], np.diff(np.r_[starts, subject.size]))
    return before - at_start == 0


def _seed_arm(
    rng: np.random.Generator, n_subjects: int, revenue_per_decision: float, unsubscribe_rate: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One arm of the seed scenario: subject ids, revenue and unsubscribes per decision.

    5% of decisions convert; a subject's basket is its own (Gamma, mean revenue_per_decision / 0.05),
    so a subject's decisions are correlated; an unsubscribe ends the subject's decisions.
    """
    subject = _decisions(rng, n_subjects)
    basket = rng.gamma(2.0, revenue_per_decision / 0.05 / 2.0, n_subjects)
    converted = rng.random(subject.size) < 0.05
    unsubscribed = rng.random(subject.size) < unsubscribe_rate
    keep = _stop_after_unsubscribe(subject, unsubscribed)
    subject, converted, unsubscribed = subject[keep], converted[keep], unsubscribed[keep]
    return subject, np.where(converted, basket[subject], 0.0), unsubscribed


def _stats(subject: np.ndarray, components: dict[str, np.ndarray]) -> LtvArmStats:
    return ltv_arm_stats_from_arrays(subject, sum(components.values(), np.zeros(len(subject))), components)


# ---------------------------------------------------------------------------------------------
# The seed question: twice the revenue, twice the unsubscribes


@pytest.fixture(scope="module")
def seed_experiment() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(20240611)
    return {
        "A": _seed_arm(rng, 40_000, revenue_per_decision=1.0, unsubscribe_rate=0.005),
        "B": _seed_arm(rng, 40_000, revenue_per_decision=2.0, unsubscribe_rate=0.010),
    }


def _seed_report(experiment, worth: float):
    settings = LtvSettings(unsubscribe_share=1.0)
    arms = {}
    for arm, (subject, revenue, unsubscribed) in experiment.items():
        parts = decision_components(revenue, unsubscribed, False, worth, settings)
        arms[arm] = _stats(subject, parts)
    return compare_ltv(arms, control="A")


def test_twice_the_revenue_and_twice_the_unsubscribes_loses_with_valuable_subjects(seed_experiment) -> None:
    report = _seed_report(seed_experiment, worth=500.0)
    b = report.arm("B")
    by_name = {c.name: c for c in b.components}
    # truth: +1.0 revenue, -0.005 * 500 = -2.5 more unsubscribe loss: -1.5 per decision
    assert b.diff.ci_high < 0
    assert abs(b.diff.value - -1.5) < 4 * b.diff.std_error
    assert by_name["revenue"].diff.ci_low > 0  # revenue up ...
    assert by_name["unsubscribe_loss"].diff.ci_high < 0  # ... and the unsubscribe loss up more
    assert by_name["conversion_gain"].estimate.value == 0.0
    assert b.verdict.startswith("B brings +")
    assert " but loses " in b.verdict and "to unsubscribes: worth " in b.verdict
    assert "less per decision than A (95% interval" in b.verdict
    assert "conversion" not in b.verdict  # no conversion gain without a CLV model
    # A is worth less than nothing per decision: a relative lift would read backwards
    assert report.arm("A").value.value < 0
    assert b.lift.value is None and b.lift.error == NEGATIVE_CONTROL_MEAN
    assert b.p_value < 0.001


def test_twice_the_revenue_and_twice_the_unsubscribes_wins_with_low_value_subjects(seed_experiment) -> None:
    report = _seed_report(seed_experiment, worth=20.0)
    b = report.arm("B")
    by_name = {c.name: c for c in b.components}
    # truth: +1.0 revenue, -0.005 * 20 = -0.1 more unsubscribe loss: +0.9 per decision
    assert b.diff.ci_low > 0
    assert abs(b.diff.value - 0.9) < 4 * b.diff.std_error
    assert by_name["revenue"].diff.ci_low > 0
    assert by_name["unsubscribe_loss"].diff.ci_high < 0  # still loses more to unsubscribes, but less than it gains
    assert by_name["unsubscribe_loss"].diff.value > -by_name["revenue"].diff.value
    assert " but loses " in b.verdict and "more per decision than A (95% interval" in b.verdict
    assert b.lift.ci_low > 0


def test_verdict_names_the_components_behind_the_result() -> None:
    # 1,000 subjects with one decision each; revenue 1.00 vs 1.41, unsubscribe loss 0.10 vs 1.05 per decision.
    subjects = np.arange(1000)
    control_rev = np.tile([0.0, 2.0], 500)
    womens_rev = np.tile([0.82, 2.0], 500)
    control_loss = np.where(subjects < 10, -10.0, 0.0)
    womens_loss = np.where(subjects < 105, -10.0, 0.0)
    arms = {
        "control": _stats(subjects, {"revenue": control_rev, "unsubscribe_loss": control_loss}),
        "womens": _stats(subjects, {"revenue": womens_rev, "unsubscribe_loss": womens_loss}),
    }
    report = compare_ltv(arms, "control")
    assert report.arm("womens").verdict.startswith(
        "womens brings +0.41 revenue per decision but loses 0.95 to unsubscribes: "
        "worth 0.54 less per decision than control (95% interval -0."
    )
    assert report.arm("control").verdict == (
        "control (control) is worth 0.90 per decision (revenue +1.00, unsubscribe loss -0.10)"
    )


def test_verdict_mentions_conversion_gain_only_when_there_is_one() -> None:
    subjects = np.arange(1000)
    revenue = np.tile([0.0, 2.0], 500)
    arms = {
        "control": _stats(subjects, {"revenue": revenue}),
        "loyal": _stats(subjects, {"revenue": revenue, "conversion_gain": np.where(subjects < 300, 2.0, 0.0)}),
    }
    verdict = compare_ltv(arms, "control").arm("loyal").verdict
    assert verdict.startswith(
        "loyal brings the same revenue per decision and adds 0.60 of future value through conversions: "
        "worth 0.60 more per decision than control (95% interval 0."
    )
    assert "unsubscribes" not in verdict


def test_inconclusive_verdict_says_the_interval_includes_no_difference() -> None:
    rng = np.random.default_rng(3)
    subjects = np.arange(500)
    arms = {
        "a": _stats(subjects, {"revenue": rng.exponential(1.0, 500)}),
        "b": _stats(subjects, {"revenue": rng.exponential(1.0, 500)}),
    }
    b = compare_ltv(arms, "a").arm("b")
    assert b.diff.ci_low < 0 < b.diff.ci_high
    assert b.verdict.endswith("includes no difference")


# ---------------------------------------------------------------------------------------------
# Coverage: the cluster-robust interval holds its level, the naive one does not


def _correlated_arm(rng: np.random.Generator, n_subjects: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Subjects with 1-3 decisions whose outcomes share the subject's propensities and values.

    A conversion adds a tenth of the subject's worth in future value. True value per decision:
    E[p] E[basket] - share E[q] E[worth] + E[p] 0.1 E[worth] = 0.3 * 10 - 1.0 * 0.05 * 20 + 0.3 * 2 = 2.6
    (propensities, baskets, worth and the number of decisions are independent across subjects).
    """
    subject = _decisions(rng, n_subjects)
    p = rng.beta(0.06, 0.14, n_subjects)  # conversion propensity, mean 0.3, within-subject correlation 0.83
    basket = rng.gamma(2.0, 5.0, n_subjects)  # mean 10
    q = rng.beta(0.05, 0.95, n_subjects)  # unsubscribe propensity, mean 0.05
    worth = rng.gamma(2.0, 10.0, n_subjects)  # mean 20
    converted = rng.random(subject.size) < p[subject]
    unsubscribed = rng.random(subject.size) < q[subject]
    parts = decision_components(
        np.where(converted, basket[subject], 0.0), unsubscribed, converted, worth[subject], LtvSettings(1.0),
        conversion_gain=0.1 * worth[subject],
    )
    return subject, parts


def test_cluster_robust_interval_covers_the_truth_and_the_naive_one_does_not() -> None:
    rng = np.random.default_rng(12345)
    truth, replications = 2.6, 300
    covered = naive_covered = 0
    for _ in range(replications):
        subject, parts = _correlated_arm(rng, 2000)
        values = sum(parts.values())
        est = compare_ltv({"a": ltv_arm_stats_from_arrays(subject, values, parts)}, "a").arm("a").value
        covered += est.ci_low <= truth <= est.ci_high
        # the naive interval treats every decision as independent
        naive = mean_interval(MeanStats(values.size, float(values.sum()), float(values @ values)))
        naive_covered += naive.ci_low <= truth <= naive.ci_high
    assert 0.92 <= covered / replications <= 0.98
    assert naive_covered / replications <= 0.90


# ---------------------------------------------------------------------------------------------
# Reference numbers


@pytest.fixture(scope="module")
def two_arms() -> dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]:
    rng = np.random.default_rng(99)
    return {"a": _correlated_arm(rng, 1500), "b": _correlated_arm(rng, 1200)}


def test_delta_method_matches_statsmodels_cluster_robust_ols(two_arms) -> None:
    subject, parts = two_arms["a"]
    values = sum(parts.values())
    stats = ltv_arm_stats_from_arrays(subject, values, parts)
    arm = compare_ltv({"a": stats}, "a").arm("a")
    for name, per_decision, est in [("value", values, arm.value)] + [
        (c.name, parts[c.name], c.estimate) for c in arm.components
    ]:
        fit = sm.OLS(per_decision, np.ones(per_decision.size)).fit(
            cov_type="cluster", cov_kwds={"groups": subject}, use_t=True
        )
        assert est.value == pytest.approx(fit.params[0], rel=1e-12), name
        assert est.std_error == pytest.approx(fit.bse[0], rel=1e-9), name
        low, high = fit.conf_int(alpha=0.05)[0]  # t with df = subjects - 1
        assert (est.ci_low, est.ci_high) == pytest.approx((low, high), rel=1e-9), name


def test_difference_and_lift_match_a_subject_bootstrap(two_arms) -> None:
    arms = {k: ltv_arm_stats_from_arrays(s, sum(p.values()), p) for k, (s, p) in two_arms.items()}
    b = compare_ltv(arms, "a").arm("b")
    rng = np.random.default_rng(2024)
    per_subject = {}
    for k, (s, p) in two_arms.items():
        per_subject[k] = (np.bincount(s, weights=sum(p.values())), np.bincount(s).astype(float))
    boot_diff, boot_lift = [], []
    for _ in range(2000):
        ratios = {}
        for k, (v, d) in per_subject.items():
            i = rng.integers(0, v.size, v.size)
            ratios[k] = v[i].sum() / d[i].sum()
        boot_diff.append(ratios["b"] - ratios["a"])
        boot_lift.append(ratios["b"] / ratios["a"] - 1.0)
    assert b.diff.std_error == pytest.approx(np.std(boot_diff, ddof=1), rel=0.08)
    assert b.lift.std_error == pytest.approx(np.std(boot_lift, ddof=1), rel=0.10)
    # lift and its interval: relative_lift (delta method) on the arms' ratio estimates and standard errors
    a = compare_ltv(arms, "a").arm("a")
    lift, low, high = relative_lift(a.value.value, a.value.std_error, b.value.value, b.value.std_error)
    assert (b.lift.value, b.lift.ci_low, b.lift.ci_high) == pytest.approx((lift, low, high), rel=1e-12)


def test_sums_match_a_per_subject_loop_and_pool_across_disjoint_subjects() -> None:
    subject = np.array(["s1", "s2", "s1", "s3", "s1", "s2"])
    revenue = np.array([1.0, 0.0, 3.0, 0.0, 0.0, 5.0])
    loss = np.array([0.0, 0.0, 0.0, -4.0, 0.0, 0.0])
    stats = _stats(subject, {"revenue": revenue, "unsubscribe_loss": loss})
    # s1: d=3, V=4; s2: d=2, V=5; s3: d=1, V=-4
    assert (stats.n_subjects, stats.n_decisions, stats.sum_decisions_squared) == (3, 6, 14.0)
    assert stats.value == ValueSums(5.0, 16.0 + 25.0 + 16.0, 12.0 + 10.0 - 4.0)
    assert stats.revenue == ValueSums(9.0, 16.0 + 25.0, 12.0 + 10.0)
    assert stats.unsubscribe_loss == ValueSums(-4.0, 16.0, -4.0)
    assert stats.conversion_gain == ValueSums(0.0, 0.0, 0.0)
    first, second = np.isin(subject, ["s1"]), np.isin(subject, ["s2", "s3"])
    pooled = _stats(subject[first], {"revenue": revenue[first], "unsubscribe_loss": loss[first]}) + _stats(
        subject[second], {"revenue": revenue[second], "unsubscribe_loss": loss[second]}
    )
    assert pooled == stats


# ---------------------------------------------------------------------------------------------
# The existing A/B report shows the LTV-adjusted value


def _arm_summary(name: str, is_control: bool, stats: LtvArmStats) -> ArmSummary:
    ltv_value, ltv_components = arm_summary_ltv(stats)
    return ArmSummary(
        arm=name, is_control=is_control, expected_share=0.5, decisions=stats.n_decisions,
        subjects=stats.n_subjects, reached={}, event_counts={},
        revenue=MeanStats(stats.n_decisions, stats.revenue.sum, stats.revenue.sum_squares),
        converter_revenue=MeanStats(0, 0.0, 0.0), ltv_value=ltv_value, ltv_components=ltv_components,
    )  # fmt: skip


def test_arm_summary_ltv_carries_the_cluster_robust_standard_error_into_the_report(two_arms) -> None:
    arms = {k: ltv_arm_stats_from_arrays(s, sum(p.values()), p) for k, (s, p) in two_arms.items()}
    ltv = compare_ltv(arms, "a")
    report = build_report(
        ReportInput(
            "ltv", "fixed", [_arm_summary("a", True, arms["a"]), _arm_summary("b", False, arms["b"])],
            metrics=("ltv_adjusted_value",), decision_metric="ltv_adjusted_value",
        )
    )  # fmt: skip
    rows = {r.arm: r for m in report.metrics if m.metric == "ltv_adjusted_value" for r in m.arms}
    for name in ("a", "b"):
        row, mine = rows[name], ltv.arm(name)
        assert row.n == arms[name].n_decisions
        assert row.value == pytest.approx(mine.value.value, rel=1e-12)
        # same standard error and the same degrees of freedom (subjects - 1): the subject is the unit
        report_se = (row.ci_high - row.ci_low) / (2 * t_critical(0.95, arms[name].n_subjects - 1))
        assert report_se == pytest.approx(mine.value.std_error, rel=1e-9)
    assert rows["b"].diff == pytest.approx(ltv.arm("b").diff.value, rel=1e-12)
    assert (rows["b"].diff_ci_low, rows["b"].diff_ci_high) == pytest.approx(
        (ltv.arm("b").diff.ci_low, ltv.arm("b").diff.ci_high), rel=1e-9
    )
    # one p-value per comparison: the metrics table and the LTV section agree
    assert rows["b"].p_value == pytest.approx(ltv.arm("b").p_value, rel=1e-9)
    components = report.arms[1].ltv_components
    assert set(components) == set(COMPONENTS)
    assert sum(components.values()) == pytest.approx(rows["b"].value, rel=1e-12)
    assert components["unsubscribe_loss"] < 0 < components["revenue"]


# ---------------------------------------------------------------------------------------------
# Degenerate data and bad input


def test_degenerate_arms_are_results_and_to_dict_is_json_safe() -> None:
    one = _stats(np.array([7, 7]), {"revenue": np.array([1.0, 2.0])})
    constant = _stats(np.arange(10), {"revenue": np.full(10, 3.0)})
    empty = _stats(np.array([], dtype=int), {})
    report = compare_ltv({"control": constant, "one": one, "empty": empty}, "control")
    assert report.arm("control").value.error == ZERO_VARIANCE
    assert report.arm("one").value.error == NOT_ENOUGH_DATA and report.arm("one").value.value == 1.5
    assert report.arm("one").diff.error == NOT_ENOUGH_DATA
    assert "fewer than two subjects" in report.arm("one").verdict
    assert report.arm("empty").value.error == NO_DATA and report.arm("empty").diff.value is None
    assert "cannot be compared" in report.arm("empty").verdict
    data = report.to_dict()
    json.dumps(data, allow_nan=False)
    assert data["arms"][2]["value"] == {
        "value": None, "ci_low": None, "ci_high": None, "std_error": None, "error": NO_DATA
    }  # fmt: skip
    assert arm_summary_ltv(empty) == (MeanStats(0, 0.0, 0.0), dict.fromkeys(COMPONENTS, 0.0))


def test_bad_input_names_the_rule() -> None:
    subject = np.arange(3)
    with pytest.raises(ValueError, match="components must add up to values"):
        ltv_arm_stats_from_arrays(subject, np.ones(3), {"revenue": np.zeros(3)})
    with pytest.raises(ValueError, match="components must be among"):
        ltv_arm_stats_from_arrays(subject, np.ones(3), {"basket": np.ones(3)})
    with pytest.raises(ValueError, match="n_decisions must be >= n_subjects"):
        LtvArmStats(5, 3, 3.0, ValueSums(0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="must add up to the value's sum"):
        LtvArmStats(1, 1, 1.0, ValueSums(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="control must be one of the arms"):
        compare_ltv({"a": _stats(subject, {"revenue": np.ones(3)})}, "b")
    with pytest.raises(ValueError, match="unsubscribe_share must be between 0 and 1, got 1.5"):
        LtvSettings(1.5)
    with pytest.raises(ValueError, match="confidence must be between 0 and 1"):
        compare_ltv({"a": _stats(subject, {"revenue": np.ones(3)})}, "a", confidence=95)


def test_decision_components_follow_the_definition() -> None:
    parts = decision_components(
        revenue=[10.0, 0.0, 0.0, 5.0],
        unsubscribed=[False, True, True, False],
        converted=[True, False, False, True],
        subject_values=[300.0, 300.0, 80.0, 40.0],
        settings=LtvSettings(unsubscribe_share=0.4, channel_value=0.5),
        conversion_gain=[12.0, 12.0, 0.0, 3.0],
    )
    assert parts["revenue"].tolist() == [10.0, 0.0, 0.0, 5.0]
    assert parts["unsubscribe_loss"].tolist() == [0.0, -60.0, -16.0, 0.0]  # 0.4 * 0.5 * value
    assert parts["conversion_gain"].tolist() == [12.0, 0.0, 0.0, 3.0]


# ---------------------------------------------------------------------------------------------
# Where the subject's value comes from


@pytest.mark.parametrize(
    ("profile", "context", "model", "expected"),
    [
        (250.0, 90.0, 40.0, (250.0, "profile")),
        (None, 90.0, 40.0, (90.0, "context")),
        (math.nan, 90, 40.0, (90.0, "context")),
        (-5.0, math.inf, 40.0, (40.0, "model")),
        ("high", True, np.float64(40.5), (40.5, "model")),
        (None, None, math.nan, (25.0, "experiment_default")),
        (None, -1.0, None, (25.0, "experiment_default")),
        (0.0, 90.0, 40.0, (0.0, "profile")),  # a known worthless subject is a value, not a gap
    ],
)
def test_subject_value_precedence(profile, context, model, expected) -> None:
    assert subject_value(profile, context, model, experiment_default=25.0) == expected


def test_subject_value_needs_a_usable_default() -> None:
    with pytest.raises(ValueError, match="experiment_default must be a finite number >= 0"):
        subject_value(None, None, None, experiment_default=math.nan)


# ---------------------------------------------------------------------------------------------
# What a conversion adds to future value, under the CDNOW model


def _days(yyyymmdd: np.ndarray) -> np.ndarray:
    d = yyyymmdd.astype(np.int64)
    months = (d // 10000 - 1970) * 12 + d // 100 % 100 - 1
    return months.astype("datetime64[M]").astype("datetime64[D]") + (d % 100 - 1)


@pytest.fixture(scope="module")
def cdnow() -> tuple[ClvModel, RfmSummary]:
    path = CDNOW / "CDNOW_sample.txt"
    if not path.exists():
        pytest.skip(f"{path} not available")
    # columns: master id, sample id (1..2357), date YYYYMMDD, number of CDs, dollars
    raw = np.loadtxt(path)
    _, summary = summarise_transactions(raw[:, 1].astype(np.int64), _days(raw[:, 2]), raw[:, 4], "1997-09-30", "W")
    return fit_clv_model(summary), summary


def test_conversion_value_gain_is_positive_and_grows_with_the_horizon(cdnow) -> None:
    model, summary = cdnow
    customer = summary.take([0])  # customer 1: x=2, t_x=30.43, T=38.86, two repeat purchases
    assert customer.frequency[0] == 2
    gains = [conversion_value_gain(model, customer, horizon, 0.01) for horizon in (13, 52, 104)]
    assert 0 < gains[0] < gains[1] < gains[2]
    assert conversion_value_gain(None, customer, 52, 0.01) == 0.0
    everyone = conversion_value_gains(model, summary, 52, 0.01)
    assert np.all(np.isfinite(everyone)) and np.all(everyone > 0)
    # a purchase from a lapsing customer (low P(alive)) tells the model more than one from an active one
    lapsing = summary.take(np.flatnonzero((summary.frequency == 2) & (summary.recency < 5) & (summary.T > 35))[:1])
    active = summary.take(np.flatnonzero((summary.frequency == 2) & (summary.recency > 30))[:1])
    assert conversion_value_gain(model, lapsing, 52, 0.01) > conversion_value_gain(model, active, 52, 0.01)
