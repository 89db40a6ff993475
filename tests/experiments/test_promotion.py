"""Auto-promotion: clear winners, guardrails, SRM, minimums, and an A/A simulation peeked daily."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from experiments.promotion import Condition, PromotionDecision, evaluate_promotion
from experiments.spec import Guardrail, PromotionRule
from reports import ArmSummary, MeanStats, ReportInput
from reports.comparison import compare
from reports.sequential import always_valid_difference

DAY = 86_400
RULE = PromotionRule(metric="conversion_rate", confidence=0.95, min_decisions_per_arm=1000,
                     min_runtime_seconds=7 * DAY, action="promote")  # fmt: skip
UNSUBSCRIBE = Guardrail(metric="unsubscribe_rate", max_relative_increase=0.10)


def _arm(name: str, decisions: int, conversions: int, *, control: bool = False, share: float = 1 / 3,
         unsubscribes: int = 0, revenue: MeanStats | None = None) -> ArmSummary:  # fmt: skip
    """One arm's totals as the service's SQL would hand them over; revenue 20 per conversion by default."""
    reached = {"conversion": conversions, "unsubscribe": unsubscribes}
    per_conversion = MeanStats(conversions, 20.0 * conversions, 400.0 * conversions)
    return ArmSummary(
        arm=name,
        is_control=control,
        expected_share=share,
        decisions=decisions,
        subjects=decisions,
        reached=reached,
        event_counts=dict(reached),
        revenue=revenue or MeanStats(decisions, per_conversion.sum, per_conversion.sum_squares),
        converter_revenue=per_conversion,
    )


def _hillstrom_like(womens_unsubscribes: int = 90, n: int = 30_000) -> ReportInput:
    """Three arms, 30,000 decisions each: womens converts at 6.5% against 5.0% (control) and 5.2% (mens)."""
    return ReportInput("spring-email", "fixed", [
        _arm("control", n, n * 50 // 1000, control=True, unsubscribes=90),
        _arm("mens", n, n * 52 // 1000, unsubscribes=92),
        _arm("womens", n, n * 65 // 1000, unsubscribes=womens_unsubscribes),
    ])  # fmt: skip


def _by_name(decision: PromotionDecision) -> dict[str, Condition]:
    return {c.name: c for c in decision.conditions}


def _failing(decision: PromotionDecision) -> list[str]:
    return [c.name for c in decision.conditions if not c.passed]


# --- a clear winner ----------------------------------------------------------------------------


def test_clear_winner_is_promoted() -> None:
    inp = _hillstrom_like()
    decision = evaluate_promotion(inp, RULE, [], runtime_seconds=9 * DAY, status="running")
    assert decision.action == "promote"
    assert decision.winner == "womens"
    assert [c.name for c in decision.conditions] == [
        "min_decisions", "min_runtime", "no_srm", "beats_control", "beats_every_arm"]
    assert all(c.passed for c in decision.conditions), [c.detail for c in decision.conditions]
    assert decision.summary.startswith("Promote womens")
    # The numbers are the report's always-valid interval (reports.sequential), not re-derived.
    control, womens = (MeanStats.proportion(30_000, k) for k in (1_500, 1_950))
    expected = always_valid_difference(control, womens, alpha=0.05, tuning_n=inp.sequential_tuning_n)
    beats = _by_name(decision)["beats_control"]
    assert beats.values["ci_low"] == pytest.approx(expected.ci_low)
    assert beats.values["ci_low"] > 0
    assert decision.statistics["candidate"] == "womens"


def test_holdback_is_named_in_the_summary() -> None:
    rule = RULE.model_copy(update={"holdback": 0.1})
    decision = evaluate_promotion(_hillstrom_like(), rule, [], 9 * DAY, "running")
    assert decision.action == "promote" and "10% holdback" in decision.summary


def test_notify_rule_notifies_instead_of_promoting() -> None:
    rule = RULE.model_copy(update={"action": "notify"})
    decision = evaluate_promotion(_hillstrom_like(), rule, [], 9 * DAY, "running")
    assert decision.action == "notify"
    assert decision.winner == "womens"
    assert "notify" in decision.summary


def test_leader_that_does_not_clearly_beat_another_arm_waits() -> None:
    # womens 6.5% beats control 5.0% clearly but mens (6.3%) only by a hair.
    inp = ReportInput("spring-email", "fixed", [
        _arm("control", 30_000, 1_500, control=True), _arm("mens", 30_000, 1_890), _arm("womens", 30_000, 1_950),
    ])  # fmt: skip
    decision = evaluate_promotion(inp, RULE, [], 9 * DAY, "running")
    assert decision.action == "wait" and decision.winner is None
    assert _failing(decision) == ["beats_every_arm"]
    detail = _by_name(decision)["beats_every_arm"].detail
    assert "does not yet clearly beat mens" in detail and "lower bound -" in detail and "need more data" in detail


# --- guardrails --------------------------------------------------------------------------------


def test_winner_that_breaks_the_unsubscribe_guardrail_is_not_promoted() -> None:
    # womens doubles unsubscribes: 0.60% against control's 0.30%.
    # The always-valid interval shows the harm and the estimate is beyond the bound: a clear breach, so stop.
    decision = evaluate_promotion(_hillstrom_like(womens_unsubscribes=180), RULE, [UNSUBSCRIBE], 9 * DAY, "running")
    assert decision.action == "stop" and decision.winner is None
    assert _failing(decision) == ["guardrail:unsubscribe_rate"]
    guard = _by_name(decision)["guardrail:unsubscribe_rate"]
    assert guard.detail.startswith(
        "unsubscribe rate (rule: harm, fails on evidence of harm): womens 0.60% vs control 0.30% (+100.0%)")
    assert "the point estimate is beyond the bound (+10%)" in guard.detail
    assert guard.values["relative_change"] == pytest.approx(1.0)
    assert decision.stop_reason is not None and "womens clearly breaches the unsubscribe rate guardrail" in (
        decision.stop_reason)
    assert decision.summary.startswith("Stop: womens clearly breaches") and "on_harm" in decision.summary


def test_non_inferiority_guardrail_fails_while_a_breach_cannot_be_ruled_out() -> None:
    # A 5.6% rise is within the 10% bound, but 30,000 decisions cannot rule out +10% at a 0.3% base
    # rate; a bound of +200% can be ruled out with the same data. The default mode sees no harm.
    inp = _hillstrom_like(womens_unsubscribes=95)
    non_inferiority = UNSUBSCRIBE.model_copy(update={"mode": "non_inferiority"})
    strict = evaluate_promotion(inp, RULE, [non_inferiority], 9 * DAY, "running")
    guard = _by_name(strict)["guardrail:unsubscribe_rate"]
    assert strict.action == "wait" and not guard.passed
    assert "cannot be ruled out yet" in guard.detail and "need more data" in guard.detail
    assert "rule: non-inferiority" in guard.detail
    assert guard.values["ci_high"] > 0.10 * guard.values["control_value"] > 0
    harm = evaluate_promotion(inp, RULE, [UNSUBSCRIBE], 9 * DAY, "running")
    assert harm.action == "promote" and "no evidence of harm" in _by_name(harm)["guardrail:unsubscribe_rate"].detail
    assert "rule: harm" in harm.summary
    loose = Guardrail(metric="unsubscribe_rate", max_relative_increase=2.0, mode="non_inferiority")
    relaxed = evaluate_promotion(inp, RULE, [loose], 9 * DAY, "running")
    assert relaxed.action == "promote" and _by_name(relaxed)["guardrail:unsubscribe_rate"].passed


def test_guardrail_on_a_decrease_uses_the_lower_bound() -> None:
    # Revenue per decision must not fall by more than 5%; womens' revenue per decision is 30% higher.
    revenue_floor = Guardrail(metric="revenue_per_decision", max_relative_decrease=0.05)
    up = evaluate_promotion(_hillstrom_like(), RULE, [revenue_floor], 9 * DAY, "running")
    assert up.action == "promote" and _by_name(up)["guardrail:revenue_per_decision"].passed
    # Same conversions, but womens' customers spend 2 a decision against control's 5.
    arms = list(_hillstrom_like().arms)
    cheap = MeanStats(30_000, 2.0 * 30_000, 4.0 * 30_000 * 2)
    arms[2] = _arm("womens", 30_000, 1_950, revenue=cheap)
    arms[0] = _arm("control", 30_000, 1_500, control=True, revenue=MeanStats(30_000, 5.0 * 30_000, 50.0 * 30_000))
    down = evaluate_promotion(ReportInput("spring-email", "fixed", arms), RULE, [revenue_floor], 9 * DAY, "running")
    guard = _by_name(down)["guardrail:revenue_per_decision"]
    assert down.action == "stop" and not guard.passed and "-60.0%" in guard.detail


# --- SRM, minimums, control leading ------------------------------------------------------------


def test_sample_ratio_mismatch_blocks_promotion() -> None:
    # The same conversion rates, but womens got 27,000 decisions where a third of 87,000 was due.
    inp = ReportInput("spring-email", "fixed", [
        _arm("control", 30_000, 1_500, control=True), _arm("mens", 30_000, 1_560), _arm("womens", 27_000, 1_755),
    ])  # fmt: skip
    decision = evaluate_promotion(inp, RULE, [], 9 * DAY, "running")
    assert decision.action == "wait"
    assert _failing(decision) == ["no_srm"]
    srm = _by_name(decision)["no_srm"]
    assert "Sample ratio mismatch" in srm.detail and srm.values["p_value"] < 0.001
    assert decision.statistics["srm"]["warning"] is True


def test_too_few_decisions_and_too_short_a_runtime_block_with_the_distance() -> None:
    inp = ReportInput("spring-email", "fixed", [
        _arm("control", 1_000, 50, control=True, share=0.5), _arm("womens", 812, 70, share=0.5),
    ])  # fmt: skip
    decision = evaluate_promotion(inp, RULE, [], runtime_seconds=3.2 * DAY, status="running")
    assert decision.action == "wait"
    conditions = _by_name(decision)
    assert not conditions["min_decisions"].passed
    assert "womens has 812 of 1,000 decisions needed (81%)" in conditions["min_decisions"].detail
    assert "needs 188 more decisions per arm" in conditions["min_decisions"].detail
    assert conditions["min_decisions"].values["max_shortfall"] == 188
    assert not conditions["min_runtime"].passed
    assert "runtime 3.2 of 7 days (46%)" in conditions["min_runtime"].detail
    assert "3.8 days to go" in conditions["min_runtime"].detail
    assert "812 of 1,000" in decision.summary and "3.2 of 7 days" in decision.summary


@pytest.mark.parametrize("runtime_days, min_decisions, blocked", [
    (3.2, 1_000, "min_runtime"),
    (9.0, 40_000, "min_decisions"),
])  # fmt: skip
def test_minimums_alone_hold_back_a_clear_winner(runtime_days: float, min_decisions: int, blocked: str) -> None:
    rule = RULE.model_copy(update={"min_decisions_per_arm": min_decisions})
    decision = evaluate_promotion(_hillstrom_like(), rule, [], runtime_days * DAY, "running")
    assert decision.action == "wait" and _failing(decision) == [blocked]


@pytest.mark.parametrize("control_conversions, head, action", [
    (1_950, "control is leading", "stop"), (1_560, "no arm leads control", "wait"),
])  # fmt: skip
def test_control_leading_waits_or_stops(control_conversions: int, head: str, action: str) -> None:
    inp = ReportInput("spring-email", "fixed", [
        _arm("control", 30_000, control_conversions, control=True),
        _arm("mens", 30_000, 1_500),
        _arm("womens", 30_000, 1_560),
    ])  # fmt: skip
    decision = evaluate_promotion(inp, RULE, [], 9 * DAY, "running")
    assert decision.action == action and decision.winner is None
    beats = _by_name(decision)["beats_control"]
    assert not beats.passed and beats.detail.startswith(f"{head} on conversion rate: the best other arm, womens")
    assert beats.values["leading"] == "control"
    if action == "stop":  # 6.5% control against 5.0% and 5.2%: every treatment clearly worse
        assert decision.summary.startswith("Stop: every treatment is clearly worse than control on conversion rate")
    else:
        assert head in decision.summary and decision.stop_reason is None


def test_leader_not_yet_clear_says_how_far_it_is() -> None:
    inp = ReportInput("spring-email", "fixed", [
        _arm("control", 3_000, 150, control=True, share=0.5), _arm("womens", 3_000, 170, share=0.5),
    ])  # fmt: skip
    decision = evaluate_promotion(inp, RULE, [], 9 * DAY, "running")
    beats = _by_name(decision)["beats_control"]
    assert decision.action == "wait" and not beats.passed
    assert beats.values["ci_low"] < 0 < beats.values["difference"]
    assert f"sequential lower bound {beats.values['ci_low']:+.3g} < 0; need more data" in beats.detail


# --- no rule, not running, bandits -------------------------------------------------------------


def test_no_rule_means_no_action() -> None:
    decision = evaluate_promotion(_hillstrom_like(), None, [], 9 * DAY, "running")
    assert decision.action == "none" and decision.winner is None and decision.conditions == ()


@pytest.mark.parametrize("status", ["paused", "concluded", "draft"])
def test_only_a_running_experiment_is_promoted(status: str) -> None:
    decision = evaluate_promotion(_hillstrom_like(), RULE, [], 9 * DAY, status)
    assert decision.action == "none" and decision.winner is None
    assert all(c.passed for c in decision.conditions)  # still explained
    assert status in decision.summary


def test_bandit_is_compared_by_ips_not_by_pooled_totals() -> None:
    # Pooled totals say 6.3% against 5.0% on 3,000 decisions each; without logged propensities a
    # bandit cannot be compared at all, and a Bayesian chance to be best is no longer a way in.
    inp = ReportInput("spring-email", "bandit", [
        _arm("control", 3_000, 150, control=True, share=0.5), _arm("womens", 3_000, 190, share=0.5),
    ])  # fmt: skip
    bandit = evaluate_promotion(inp, RULE, [], 9 * DAY, "running")
    assert bandit.action == "wait" and "chance_to_be_best" not in _by_name(bandit)
    assert "no logged propensities" in _by_name(bandit)["beats_control"].detail, bandit.conditions
    assert bandit.statistics["estimator"] == "ips"


def test_negative_runtime_is_refused() -> None:
    with pytest.raises(ValueError, match="runtime_seconds"):
        evaluate_promotion(_hillstrom_like(), RULE, [], -1.0, "running")


# --- the audit log -----------------------------------------------------------------------------


@pytest.mark.parametrize("inp", [
    _hillstrom_like(womens_unsubscribes=180),
    # No data at all, and no conversions anywhere: the degenerate cases that tempt NaN.
    ReportInput("empty", "fixed", [_arm("control", 0, 0, control=True, share=0.5),
                                   _arm("womens", 0, 0, share=0.5)]),
    ReportInput("flat", "bandit", [_arm("control", 5_000, 0, control=True, share=0.5),
                                   _arm("womens", 5_000, 0, share=0.5)]),
], ids=["guardrail", "empty", "no-events"])  # fmt: skip
def test_statistics_are_json_without_nan(inp: ReportInput) -> None:
    guardrails = [UNSUBSCRIBE, Guardrail(metric="revenue_per_decision", max_relative_decrease=0.05)]
    decision = evaluate_promotion(inp, RULE, guardrails, 9 * DAY, "running", is_bandit=True)
    text = json.dumps(decision.statistics, allow_nan=False)
    assert json.loads(text)["rule"]["min_decisions_per_arm"] == 1000
    assert len(decision.statistics["conditions"]) == len(decision.conditions)
    for c in decision.conditions:
        json.dumps(c.values, allow_nan=False)
        assert all(not (isinstance(v, float) and not math.isfinite(v)) for v in c.values.values())
    assert decision.action == ("stop" if inp.experiment == "spring-email" else "wait")


# --- A/A: peeking daily must not find winners -------------------------------------------------


def test_aa_experiments_peeked_daily_are_rarely_promoted_unlike_a_naive_z_test() -> None:
    """400 A/A experiments (both arms convert at 5%), 2,000 decisions a day, evaluated every day for 30 days.

    Each day's cumulative totals go through evaluate_promotion; an experiment counts as falsely
    promoted if any look promotes. The naive alternative promotes when the report's fixed-horizon
    z-test (statsmodels ``proportions_ztest``) gives p < 0.05 in the treatment's favour.
    """
    experiments, days, per_day, rate = 400, 30, 2_000, 0.05
    rng = np.random.default_rng(20_240_601)
    decisions = rng.binomial(per_day, 0.5, size=(experiments, days))  # control's share of each day
    daily = np.stack([decisions, per_day - decisions], axis=-1)
    conversions = rng.binomial(daily, rate)
    n, k = daily.cumsum(axis=1), conversions.cumsum(axis=1)
    rule = RULE.model_copy(update={"min_runtime_seconds": 0})  # every look counts from day one

    promoted = naive = 0
    for e in range(experiments):
        sequential_hit = naive_hit = False
        for d in range(days):
            (nc, nt), (kc, kt) = n[e, d].tolist(), k[e, d].tolist()
            if not sequential_hit:
                inp = ReportInput("aa", "fixed", [_arm("control", nc, kc, control=True, share=0.5),
                                                  _arm("treatment", nt, kt, share=0.5)])  # fmt: skip
                sequential_hit = evaluate_promotion(inp, rule, [], (d + 1) * DAY, "running").action == "promote"
            if not naive_hit:
                z = compare("rate", MeanStats.proportion(nc, kc), MeanStats.proportion(nt, kt))
                naive_hit = z.p_value is not None and z.p_value < 0.05 and z.diff > 0
            if sequential_hit and naive_hit:
                break
        promoted += sequential_hit
        naive += naive_hit
    promoted_rate, naive_rate = promoted / experiments, naive / experiments
    assert promoted_rate <= 0.06, promoted_rate
    assert naive_rate > 0.10 and naive_rate > 2 * max(promoted_rate, 0.05 / 2), naive_rate
