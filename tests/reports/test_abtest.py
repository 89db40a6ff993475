"""The A/B report builder: published Hillstrom figures, statsmodels/scipy numbers, degenerate input."""

import datetime
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint, proportions_ztest
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from reports import ArmSummary, DailyArmSummary, MeanStats, ReportInput, build_report, report_to_dict
from reports.bandit import IpwArmStats, PeriodArmStats
from reports.cuped import CovariateStats
from reports.inputs import BanditInput
from reports.intervals import NO_DATA, NO_EVENTS, NOT_COMPUTED, NOT_ENOUGH_DATA, ZERO_VARIANCE
from reports.sequential import always_valid_difference

HILLSTROM = Path(__file__).resolve().parents[3] / "shared" / "data" / "hillstrom.csv"
CONTROL = "No E-Mail"
ARMS = ("Mens E-Mail", "Womens E-Mail")


def _sums(values) -> MeanStats:
    values = np.asarray(values, dtype=float)
    return MeanStats(len(values), float(values.sum()), float((values**2).sum()))


@pytest.fixture(scope="module")
def hillstrom() -> pd.DataFrame:
    return pd.read_csv(HILLSTROM)


def _hillstrom_arm(segment: str, g: pd.DataFrame) -> ArmSummary:
    """Aggregate one segment as the service's SQL would: segment -> arm, visit -> click, spend -> revenue."""
    converters = g[g.conversion > 0]
    return ArmSummary(
        arm=segment,
        is_control=segment == CONTROL,
        expected_share=1 / 3,
        decisions=len(g),
        subjects=len(g),
        reached={"click": int((g.visit > 0).sum()), "conversion": int((g.conversion > 0).sum())},
        event_counts={"click": int(g.visit.sum()), "conversion": int(g.conversion.sum())},
        revenue=_sums(g.spend),
        converter_revenue=_sums(converters.spend),
        # CUPED inputs for the decision metric (conversion), pre-period covariate: past-year spend
        covariate=CovariateStats(
            n=len(g),
            sum_x=float(g.history.sum()),
            sum_x2=float((g.history**2).sum()),
            sum_y=float(g.conversion.sum()),
            sum_y2=float((g.conversion**2).sum()),
            sum_xy=float((g.history * g.conversion).sum()),
        ),
    )


@pytest.fixture(scope="module")
def report(hillstrom):
    arms = [_hillstrom_arm(segment, g) for segment, g in hillstrom.groupby("segment")]
    return build_report(ReportInput("hillstrom", "fixed", arms, metrics=("click_rate", "conversion_rate",
                                    "revenue_per_decision", "revenue_per_converter")))  # fmt: skip


def _rows(report, metric):
    return {r.arm: r for m in report.metrics if m.metric == metric for r in m.arms}


def test_hillstrom_published_figures(report):
    # MineThatData E-Mail Analytics challenge (Hillstrom 2008), per-arm results as published
    published = {
        "conversion_rate": {"Mens E-Mail": 0.0125, "Womens E-Mail": 0.0088, CONTROL: 0.0057},
        "click_rate": {"Mens E-Mail": 0.1828, "Womens E-Mail": 0.1514, CONTROL: 0.1062},
        "revenue_per_decision": {"Mens E-Mail": 1.42, "Womens E-Mail": 1.08, CONTROL: 0.65},
    }
    for metric, values in published.items():
        rows = _rows(report, metric)
        for arm, value in values.items():
            assert rows[arm].value == pytest.approx(value, abs=0.00005 if metric.endswith("rate") else 0.005)
    assert [a.decisions for a in report.arms] == [21307, 21306, 21387]
    assert report.srm.method == "chi_square"
    assert not report.srm.warning
    assert report.warnings == []


def test_hillstrom_rates_match_statsmodels(report, hillstrom):
    rows = _rows(report, "conversion_rate")
    counts = hillstrom.groupby("segment").conversion.agg(["sum", "count"])
    sc, nc = counts.loc[CONTROL]
    raw_p = []
    for arm in ARMS:
        st, nt = counts.loc[arm]
        row = rows[arm]
        low, high = proportion_confint(st, nt, alpha=0.05, method="wilson")
        assert (row.ci_low, row.ci_high) == pytest.approx((low, high))
        _, p = proportions_ztest([st, sc], [nt, nc])
        assert row.p_value == pytest.approx(p, rel=1e-9)
        low, high = confint_proportions_2indep(st, nt, sc, nc, method="wald", compare="diff")
        assert (row.diff_ci_low, row.diff_ci_high) == pytest.approx((low, high))
        raw_p.append(p)
    holm = multipletests(raw_p, method="holm")[1]
    assert [rows[a].p_value_holm for a in ARMS] == pytest.approx(list(holm))
    assert all(rows[a].significant for a in ARMS)
    assert rows[CONTROL].diff is None and rows[CONTROL].p_value_holm is None
    # Bayesian: both e-mails beat no e-mail almost surely; Mens is most likely best
    assert rows["Mens E-Mail"].chance_to_beat_control > 0.99
    assert rows["Mens E-Mail"].chance_to_be_best > 0.95


def test_hillstrom_revenue_matches_scipy_welch(report, hillstrom):
    rows = _rows(report, "revenue_per_decision")
    spend = {segment: g.spend.to_numpy() for segment, g in hillstrom.groupby("segment")}
    for arm in ARMS:
        row = rows[arm]
        # scipy.stats.ttest_ind(equal_var=False) and statsmodels' Welch interval on the raw spend
        assert row.p_value == pytest.approx(sps.ttest_ind(spend[arm], spend[CONTROL], equal_var=False).pvalue)
        low, high = CompareMeans(DescrStatsW(spend[arm]), DescrStatsW(spend[CONTROL])).tconfint_diff(usevar="unequal")
        assert (row.diff_ci_low, row.diff_ci_high) == pytest.approx((low, high))
        low, high = DescrStatsW(spend[arm]).tconfint_mean()
        assert (row.ci_low, row.ci_high) == pytest.approx((low, high))


def test_hillstrom_cuped_equals_the_ols_treatment_effect(report, hillstrom):
    cuped = {r.arm: r for r in report.cuped.arms}
    # y ~ arm + x with a common slope: the arm coefficients are the CUPED differences (pooled theta)
    fit = smf.ols("conversion ~ C(segment, Treatment(reference='No E-Mail')) + history", data=hillstrom).fit()
    assert report.cuped.theta == pytest.approx(fit.params["history"])
    raw = _rows(report, "conversion_rate")
    for arm in ARMS:
        coefficient = fit.params[f"C(segment, Treatment(reference='No E-Mail'))[T.{arm}]"]
        assert cuped[arm].diff == pytest.approx(coefficient)
        assert cuped[arm].variance_reduction > 0
        assert cuped[arm].diff_ci_high - cuped[arm].diff_ci_low < raw[arm].diff_ci_high - raw[arm].diff_ci_low
        assert (cuped[arm].raw_diff, cuped[arm].raw_p_value) == (raw[arm].diff, raw[arm].p_value)


def test_sequential_interval_beside_the_fixed_one(report, hillstrom):
    assert report.sequential.metric == "conversion_rate"
    conversions = {segment: g.conversion.to_numpy() for segment, g in hillstrom.groupby("segment")}
    for row in report.sequential.arms:
        expected = always_valid_difference(_sums(conversions[CONTROL]), _sums(conversions[row.arm]), 0.05, 10_000)
        assert (row.diff, row.ci_low, row.ci_high, row.p_value) == pytest.approx(
            (expected.estimate, expected.ci_low, expected.ci_high, expected.p_value)
        )
        # the always-valid interval is the price of peeking: wider than the fixed-horizon one
        assert row.ci_low < row.fixed_ci_low < row.fixed_ci_high < row.ci_high


# --- small synthetic experiments -------------------------------------------------------------


def _arm(name, decisions, reached=None, revenue=None, control=False, share=0.5, **extra) -> ArmSummary:
    revenue = _sums(revenue if revenue is not None else np.zeros(decisions))
    converters = (reached or {}).get("conversion", 0)
    return ArmSummary(
        arm=name,
        is_control=control,
        expected_share=share,
        decisions=decisions,
        subjects=decisions,
        reached=reached or {},
        event_counts=reached or {},
        revenue=revenue,
        converter_revenue=MeanStats(converters, revenue.sum, revenue.sum_squares),
        **extra,
    )


def _json(report):
    return json.loads(json.dumps(report_to_dict(report), allow_nan=False))


def test_degenerate_inputs_give_errors_not_exceptions():
    arms = [
        _arm("control", 1000, {"conversion": 0, "open": 0}, control=True, share=1 / 3),
        _arm("empty", 0, share=1 / 3),
        _arm("flat", 1000, {"conversion": 0, "open": 0}, revenue=np.full(1000, 0.0), share=1 / 3),
    ]
    report = build_report(ReportInput("degenerate", "fixed", arms))
    conversion = _rows(report, "conversion_rate")
    assert conversion["empty"].value is None and conversion["empty"].error == NO_DATA
    assert conversion["flat"].p_value is None and conversion["flat"].error == NO_EVENTS
    assert conversion["flat"].chance_to_beat_control is None
    assert conversion["control"].value == 0.0 and conversion["control"].error == NO_EVENTS
    revenue = _rows(report, "revenue_per_decision")
    assert revenue["flat"].value == 0.0 and revenue["flat"].ci_low is None and revenue["flat"].error == ZERO_VARIANCE
    assert _rows(report, "click_to_open_rate")["flat"].error == NO_DATA  # no opens: no denominator
    assert {r.arm: r.error for r in report.sequential.arms} == {"empty": NO_DATA, "flat": ZERO_VARIANCE}
    assert all(r.p_value is None and r.significant is None for r in report.sequential.arms)
    assert "ltv_adjusted_value" not in [m.metric for m in report.metrics]
    assert any("empty" in w for w in report.warnings)
    _json(report)  # no NaN or infinity anywhere


def test_an_arm_with_one_decision_and_a_control_without_any():
    arms = [_arm("control", 0, control=True), _arm("t", 1, {"conversion": 1}, revenue=[9.0])]
    report = build_report(ReportInput("tiny", "fixed", arms, daily=[
        DailyArmSummary(datetime.date(2026, 1, 1), "t", 1, {"conversion": 1}, _sums([9.0]))]))  # fmt: skip
    assert _rows(report, "conversion_rate")["t"].value == 1.0
    assert _rows(report, "conversion_rate")["t"].error == NO_DATA  # the control has none to compare with
    assert _rows(report, "revenue_per_decision")["t"].error == NOT_ENOUGH_DATA  # one value: no interval
    assert report.srm.error is None and not report.srm.warning  # 0 vs 1 at equal shares: p = 0.32
    assert report.daily[0].decisions == 0 and report.daily[0].metrics["conversion_rate"].error == NO_DATA
    assert report.daily[1].diff_vs_control.error == NO_DATA
    _json(report)


def test_bad_input_raises_naming_the_rule():
    control = _arm("c", 10, control=True)
    with pytest.raises(ValueError, match="exactly one arm must be the control"):
        build_report(ReportInput("x", "fixed", [_arm("a", 10), _arm("b", 10)]))
    with pytest.raises(ValueError, match="unique"):
        build_report(ReportInput("x", "fixed", [control, _arm("c", 10)]))
    with pytest.raises(ValueError, match=r"reached\['click'\] must be between 0 and decisions \(10\), got 11"):
        build_report(ReportInput("x", "fixed", [control, _arm("t", 10, {"click": 11})]))
    with pytest.raises(ValueError, match="unknown metric 'revenue'"):
        build_report(ReportInput("x", "fixed", [control, _arm("t", 10)], metrics=("revenue",)))
    with pytest.raises(ValueError, match="confidence"):
        build_report(ReportInput("x", "fixed", [control, _arm("t", 10)], confidence=95))


def test_srm_warning_is_the_first_thing_the_report_says():
    arms = [_arm("control", 10_000, control=True), _arm("t", 10_600)]
    report = build_report(ReportInput("srm", "fixed", arms, unattributed_events={"no_decision": 12, "late": 3}))
    assert report.srm.warning
    assert report.warnings[0] == report.srm.message
    assert "15 events could not be attributed" in report.warnings[1]
    assert report.unattributed_total == 15


def test_unsubscribes_custom_events_ltv_and_counts():
    rng = np.random.default_rng(3)
    ltv = {"unsubscribe_loss": -0.4, "revenue": 1.1}
    arms = [
        _arm("control", 4000, {"unsubscribe": 20, "add_to_cart": 300}, control=True,
             ltv_value=_sums(rng.normal(1.0, 2.0, 4000)), ltv_components=ltv),
        _arm("t", 4000, {"unsubscribe": 45, "add_to_cart": 360}, ltv_value=_sums(rng.normal(1.1, 2.0, 4000))),
    ]  # fmt: skip
    metrics = ("unsubscribe_rate", "add_to_cart_rate", "ltv_adjusted_value")
    report = build_report(ReportInput("ltv", "fixed", arms, metrics=metrics, suppressed={"quiet_hours": 7}))
    assert [m.metric for m in report.metrics] == [*metrics, "conversion_rate"]  # the decision metric always
    unsubscribe = _rows(report, "unsubscribe_rate")["t"]
    assert unsubscribe.value == pytest.approx(45 / 4000)
    assert unsubscribe.chance_to_beat_control < 0.01  # more unsubscribes is worse
    cart = _rows(report, "add_to_cart_rate")["t"]
    _, p = proportions_ztest([360, 300], [4000, 4000])
    assert cart.p_value == pytest.approx(p) and cart.chance_to_beat_control > 0.9
    assert _rows(report, "ltv_adjusted_value")["t"].diff is not None
    assert report.arms[0].ltv_components == ltv
    assert (report.suppressed, report.suppressed_total) == ({"quiet_hours": 7}, 7)


def test_daily_series_is_cumulative():
    day = [datetime.date(2026, 3, d) for d in (1, 2, 3)]
    daily = [
        DailyArmSummary(day[0], "control", 100, {"conversion": 5, "open": 40, "click": 10}, _sums([10.0] * 5 + [0] * 95)),
        DailyArmSummary(day[0], "t", 90, {"conversion": 9, "open": 45, "click": 15}, _sums([12.0] * 9 + [0] * 81)),
        DailyArmSummary(day[1], "control", 120, {"conversion": 4, "open": 50, "click": 12}, _sums([8.0] * 4 + [0] * 116)),
        DailyArmSummary(day[2], "control", 80, {"conversion": 3, "open": 30, "click": 9}, _sums([5.0] * 3 + [0] * 77)),
        DailyArmSummary(day[2], "t", 110, {"conversion": 8, "open": 60, "click": 20}, _sums([7.0] * 8 + [0] * 102)),
    ]  # fmt: skip
    arms = [_arm("control", 300, {"conversion": 12}, control=True), _arm("t", 200, {"conversion": 17})]
    report = build_report(ReportInput("daily", "fixed", arms, daily=daily))
    points = {(p.day, p.arm): p for p in report.daily}
    assert len(points) == 6
    assert points[(day[1], "t")].decisions == 90  # no decisions that day: carried forward
    assert points[(day[1], "t")].metrics["conversion_rate"] == points[(day[0], "t")].metrics["conversion_rate"]
    last_t, last_c = points[(day[2], "t")], points[(day[2], "control")]
    assert (last_t.decisions, last_c.decisions) == (200, 300)
    low, high = proportion_confint(17, 200, method="wilson")
    assert (last_t.metrics["conversion_rate"].ci_low, last_t.metrics["conversion_rate"].ci_high) == pytest.approx(
        (low, high)
    )
    low, high = proportion_confint(35, 105, method="wilson")  # click-to-open: clicks over opens
    assert last_t.metrics["click_to_open_rate"].value == pytest.approx(35 / 105)
    assert last_t.metrics["click_to_open_rate"].ci_low == pytest.approx(low)
    revenue_t = np.array([12.0] * 9 + [0] * 81 + [7.0] * 8 + [0] * 102)
    assert last_t.metrics["revenue_per_decision"].value == pytest.approx(revenue_t.mean())
    assert last_t.metrics["revenue_per_decision"].ci_low == pytest.approx(DescrStatsW(revenue_t).tconfint_mean()[0])
    low, high = confint_proportions_2indep(17, 200, 12, 300, method="wald", compare="diff")
    assert last_t.diff_vs_control.value == pytest.approx(17 / 200 - 12 / 300)
    assert (last_t.diff_vs_control.ci_low, last_t.diff_vs_control.ci_high) == pytest.approx((low, high))
    assert last_c.diff_vs_control is None


def test_daily_lift_on_a_mean_the_days_do_not_carry():
    daily = [DailyArmSummary(datetime.date(2026, 3, 1), a, 10, {}, _sums(range(10))) for a in ("control", "t")]
    arms = [_arm("control", 10, control=True), _arm("t", 10)]
    report = build_report(ReportInput("d", "fixed", arms, daily=daily, decision_metric="ltv_adjusted_value"))
    assert report.daily[1].diff_vs_control.error == NOT_COMPUTED
    assert report.sequential is None  # the control has no LTV value


# --- bandit ------------------------------------------------------------------------------------


def _bandit_log(seed=5):
    """Two periods; B is better in each, but the bandit played A in the good one: Simpson's paradox."""
    rng = np.random.default_rng(seed)
    frames = []
    for period, rates, p_a in (("p1", {"A": 0.10, "B": 0.12}, 0.9), ("p2", {"A": 0.03, "B": 0.05}, 0.1)):
        n = 4000
        holdout = rng.random(n) < 0.1
        prob_a = np.where(holdout, 0.5, p_a)
        arm = np.where(rng.random(n) < prob_a, "A", "B")
        propensity = 0.1 * 0.5 + 0.9 * np.where(arm == "A", p_a, 1 - p_a)  # the logged overall probability
        reward = (rng.random(n) < np.where(arm == "A", rates["A"], rates["B"])).astype(float)
        frames.append(pd.DataFrame({"period": period, "arm": arm, "propensity": propensity,
                                    "reward": reward, "holdout": holdout}))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def test_bandit_section_corrects_the_naive_means():
    log = _bandit_log()
    log["w"] = 1.0 / log.propensity
    ipw = [
        IpwArmStats(arm, g.w.sum(), (g.w * g.reward).sum(), (g.w**2).sum(), (g.w**2 * g.reward).sum(),
                    (g.w**2 * g.reward**2).sum())
        for arm, g in log.groupby("arm")
    ]  # fmt: skip
    periods = [PeriodArmStats(p, a, _sums(g.reward)) for (p, a), g in log.groupby(["period", "arm"])]
    bandit = BanditInput(periods, ipw, len(log), holdout=_sums(log.reward[log.holdout]),
                         policy=_sums(log.reward[~log.holdout]))  # fmt: skip
    arms = [
        _arm(a, len(g), {"conversion": int(g.reward.sum())}, control=a == "A", share=float(g.propensity.mean()))
        for a, g in log.groupby("arm")
    ]
    report = build_report(ReportInput("bandit", "bandit", arms, bandit=bandit))
    section = {a.arm: a for a in report.bandit.arms}
    naive = log.groupby("arm").reward.mean()
    assert section["A"].naive_mean == pytest.approx(naive["A"])
    assert section["A"].naive_mean > section["B"].naive_mean  # the naive comparison is the wrong way round
    assert section["B"].weighted_mean > section["A"].weighted_mean
    assert section["B"].snips > section["A"].snips
    # IPS of "always play B": mean over all logged decisions of 1[arm = B] * reward / propensity
    assert section["B"].ips == pytest.approx(np.mean((log.arm == "B") * log.reward / log.propensity))
    versus = report.bandit.policy_vs_holdout
    policy, holdout = log.reward[~log.holdout], log.reward[log.holdout]
    assert versus.comparison.p_value == pytest.approx(sps.ttest_ind(policy, holdout, equal_var=False).pvalue)
    assert versus.comparison.diff == pytest.approx(policy.mean() - holdout.mean())
    assert (versus.policy_decisions, versus.holdout_decisions) == (len(policy), len(holdout))
    assert report.srm.method == "propensity_balance" and not report.srm.warning
    assert any("Simpson" in note for note in report.bandit.notes)
    assert any("Bandit allocation" in w for w in report.warnings)
    _json(report)


def test_bandit_without_data_yet():
    empty = MeanStats(0, 0.0, 0.0)
    bandit = BanditInput(periods=[], ipw=[IpwArmStats("A", 0, 0, 0, 0, 0)], n_total=0, holdout=empty, policy=empty)
    arms = [_arm("A", 0, control=True), _arm("B", 0)]
    report = build_report(ReportInput("new", "bandit", arms, bandit=bandit))
    assert [(a.arm, a.ips, a.ipw_error) for a in report.bandit.arms] == [("A", None, NO_DATA)]
    assert report.bandit.policy_vs_holdout.comparison.error == NO_DATA
    assert report.srm.method == "propensity_balance" and report.srm.error == "NOT_ENOUGH_ARMS"
    assert not report.srm.warning
    _json(report)


# --- badges agree with the intervals shown; totals per arm --------------------------------------


def _few_events_arm(name: str, conversions: int, control: bool = False) -> ArmSummary:
    reached = {"conversion": conversions}
    return ArmSummary(
        arm=name, is_control=control, expected_share=0.5, decisions=1_000, subjects=1_000, reached=reached,
        event_counts={"conversion": conversions + 2}, revenue=MeanStats(1_000, 30.0 * conversions, 900.0 * conversions),
        converter_revenue=MeanStats(conversions, 30.0 * conversions, 900.0 * conversions),
    )  # fmt: skip


def test_significant_badge_never_sits_next_to_an_interval_that_contains_zero() -> None:
    # 3 against 12 conversions in 1,000: the pooled z-test says p = 0.019, but the delta-method lift
    # interval (about -200% to +800%) contains 0, so no badge.
    report = build_report(ReportInput("few", "fixed", [_few_events_arm("control", 3, control=True),
                                                       _few_events_arm("b", 12)], metrics=("conversion_rate",)))
    row = next(r for m in report.metrics if m.metric == "conversion_rate" for r in m.arms if r.arm == "b")
    assert row.p_value_holm < 0.05
    assert row.lift_ci_low < 0 < row.lift_ci_high
    assert row.significant is False
    # and with clear evidence the badge stays
    clear = build_report(ReportInput("clear", "fixed", [_few_events_arm("control", 30, control=True),
                                                        _few_events_arm("b", 90)], metrics=("conversion_rate",)))
    row = next(r for m in clear.metrics if m.metric == "conversion_rate" for r in m.arms if r.arm == "b")
    assert row.significant is True and row.lift_ci_low > 0


def test_report_has_totals_per_arm() -> None:
    report = build_report(ReportInput("few", "fixed", [_few_events_arm("control", 3, control=True),
                                                       _few_events_arm("b", 12)]))
    b = next(a for a in report.arms if a.arm == "b")
    assert b.revenue_total == pytest.approx(360.0) and b.event_counts == {"conversion": 14}
