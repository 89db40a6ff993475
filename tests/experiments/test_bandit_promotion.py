"""Bandit promotion respects the allocation: IPS with always-valid intervals, never pooled totals.

Two seeded simulations from logged-propensity sufficient statistics, as the service's SQL hands them over:
a drifting click rate with traffic moving from the better arm to a worse one (pooled totals rank them
the wrong way round), and A/A bandits under Thompson sampling looked at every day.
"""

from __future__ import annotations

import numpy as np

from experiments.promotion import evaluate_promotion, ips_difference
from experiments.spec import PromotionRule
from reports import ArmSummary, MeanStats, ReportInput
from reports.bandit import IpwArmStats
from reports.inputs import BanditInput

DAY = 86_400
RULE = PromotionRule(metric="click_rate", confidence=0.95, min_decisions_per_arm=1000, min_runtime_seconds=0)


class _Log:
    """Cumulative per-arm sufficient statistics of a bandit's decision log."""

    def __init__(self, arms: list[str]) -> None:
        self.arms = arms
        self.n = dict.fromkeys(arms, 0)
        self.clicks = dict.fromkeys(arms, 0)
        self.sums = {a: dict.fromkeys(("sum_w", "sum_wr", "sum_w2", "sum_w2r", "sum_w2r2"), 0.0) for a in arms}
        self.total = 0

    def add_day(self, propensities: dict[str, float], decisions: dict[str, int], clicks: dict[str, int]) -> None:
        for arm in self.arms:
            n, k, p = decisions[arm], clicks[arm], propensities[arm]
            self.n[arm] += n
            self.clicks[arm] += k
            s = self.sums[arm]
            s["sum_w"] += n / p
            s["sum_w2"] += n / p**2
            s["sum_wr"] += k / p
            s["sum_w2r"] += k / p**2
            s["sum_w2r2"] += k / p**2  # binary reward: r^2 = r
        self.total += sum(decisions.values())

    def report_input(self, allocation: str = "bandit") -> ReportInput:
        arms = [
            ArmSummary(arm=a, is_control=i == 0, expected_share=self.n[a] / max(self.total, 1), decisions=self.n[a],
                       subjects=self.n[a], reached={"click": self.clicks[a]}, event_counts={"click": self.clicks[a]},
                       revenue=MeanStats(self.n[a], 0.0, 0.0), converter_revenue=MeanStats(0, 0.0, 0.0))
            for i, a in enumerate(self.arms)
        ]  # fmt: skip
        bandit = BanditInput(periods=(), ipw=[IpwArmStats(a, **self.sums[a]) for a in self.arms], n_total=self.total,
                             holdout=None, policy=None, metric="click_rate")  # fmt: skip
        return ReportInput("bandit", allocation, arms, bandit=bandit, decision_metric="click_rate")  # type: ignore[arg-type]


def _day(rng: np.random.Generator, log: _Log, propensities: dict[str, float], rates: dict[str, float],
         per_day: int) -> None:  # fmt: skip
    arms = list(propensities)
    counts = rng.multinomial(per_day, [propensities[a] for a in arms])
    decisions = dict(zip(arms, counts.tolist()))
    clicks = {a: int(rng.binomial(decisions[a], rates[a])) for a in arms}
    log.add_day(propensities, decisions, clicks)


def test_drifting_bandit_does_not_promote_the_arm_that_got_the_good_days() -> None:
    """Twenty days: the click rate drifts up from 10% to 20%, a beats c by one point every day, traffic moves a -> c."""
    rng = np.random.default_rng(20_261_205)
    log = _Log(["a", "c"])
    pooled_promoted_c = False
    for day in range(20):
        base = 0.10 + 0.10 * day / 19
        share_c = 0.05 + 0.90 * day / 19
        _day(rng, log, {"a": 1 - share_c, "c": share_c}, {"a": base + 0.01, "c": base}, per_day=5_000)
        inp = log.report_input()
        decision = evaluate_promotion(inp, RULE, [], (day + 1) * DAY, "running")
        assert decision.winner != "c", (day, decision.summary)
        assert decision.action in ("wait", "promote"), decision.summary
        # The same totals read as if the split were fixed: pooled totals crown c.
        naive = evaluate_promotion(inp, RULE, [], (day + 1) * DAY, "running", is_bandit=False)
        pooled_promoted_c = pooled_promoted_c or naive.winner == "c"
    assert pooled_promoted_c  # the trap is real: pooled totals would have promoted c
    # IPS sees a ahead of c, as the truth is (c is the control-less other arm here: a is the control).
    seq = ips_difference({s.arm: s for s in inp.bandit.ipw}, inp.bandit.n_total, "a", "c", 0.05, 10_000)
    assert seq.estimate < 0 and seq.ci_low < 0
    assert decision.statistics["estimator"] == "ips"
    # The report's bandit section shows the same always-valid IPS comparison promotion used.
    from reports.abtest import build_report

    row = next(r for r in build_report(inp).bandit.arms if r.arm == "c")
    beats = next(c for c in decision.conditions if c.name == "beats_control")
    assert (row.ips_diff_ci_low, row.ips_diff_ci_high) == (beats.values["ci_low"], beats.values["ci_high"])


def _thompson(rng: np.random.Generator, clicks: list[int], n: list[int], floor: float = 0.01) -> list[float]:
    """Thompson sampling's probability of each arm (Beta(1 + clicks, 1 + misses)), by 2,000 posterior draws."""
    draws = np.stack([rng.beta(1 + k, 1 + m - k, 2_000) for k, m in zip(clicks, n)])
    p = np.bincount(draws.argmax(axis=0), minlength=len(n)) / 2_000
    p = np.clip(p, floor, 1 - floor)
    return list(p / p.sum())


def test_aa_bandit_with_daily_looks_promotes_at_most_alpha_of_the_time() -> None:
    """200 two-arm A/A experiments (both arms click at 10%) under Thompson sampling refitted daily, 1,000 decisions
    a day, looked at every day for 30 days; an experiment counts once if any look promotes."""
    rng = np.random.default_rng(7)
    experiments, days, per_day = 200, 30, 1_000
    promoted = 0
    for _ in range(experiments):
        log = _Log(["a", "b"])
        for day in range(days):
            p = _thompson(rng, [log.clicks["a"], log.clicks["b"]], [log.n["a"], log.n["b"]])
            _day(rng, log, {"a": p[0], "b": p[1]}, {"a": 0.10, "b": 0.10}, per_day)
            if evaluate_promotion(log.report_input(), RULE, [], (day + 1) * DAY, "running").action == "promote":
                promoted += 1
                break
    assert promoted / experiments <= 0.05, promoted


def test_bandit_guardrail_is_read_by_ips_not_pooled_totals() -> None:
    """Unsubscribes drift from 0.5% to 3% in both arms alike while traffic moves to c: pooled totals show c
    doubling unsubscribes (a clear breach, stop); IPS sees no harm."""
    from experiments.spec import Guardrail

    rng = np.random.default_rng(3)
    clicks, unsubs = _Log(["a", "c"]), _Log(["a", "c"])
    for day in range(20):
        share_c = 0.05 + 0.90 * day / 19
        p = {"a": 1 - share_c, "c": share_c}
        decisions = dict(zip(p, rng.multinomial(5_000, list(p.values())).tolist()))
        unsub_rate = 0.005 + 0.025 * day / 19
        clicks.add_day(p, decisions, {a: int(rng.binomial(decisions[a], 0.10)) for a in p})
        unsubs.add_day(p, decisions, {a: int(rng.binomial(decisions[a], unsub_rate)) for a in p})
    inp = clicks.report_input()
    arms = [
        ArmSummary(**{**{f: getattr(a, f) for f in a.__slots__}, "reached": {"click": a.reached["click"],
                                                                            "unsubscribe": unsubs.clicks[a.arm]}})
        for a in inp.arms
    ]  # fmt: skip
    bandit = BanditInput(periods=(), ipw=inp.bandit.ipw, n_total=inp.bandit.n_total, holdout=None, policy=None,
                         metric="click_rate",
                         guardrail_ipw={"unsubscribe_rate": [IpwArmStats(a, **unsubs.sums[a]) for a in unsubs.arms]})
    guard = Guardrail(metric="unsubscribe_rate", max_relative_increase=0.10)
    pooled = evaluate_promotion(ReportInput("g", "bandit", arms, bandit=BanditInput(
        periods=(), ipw=inp.bandit.ipw, n_total=inp.bandit.n_total, holdout=None, policy=None, metric="click_rate"),
        decision_metric="click_rate"), RULE, [guard], 20 * DAY, "running")  # fmt: skip
    assert pooled.action == "stop" and "unsubscribe rate guardrail" in pooled.stop_reason
    ips = evaluate_promotion(ReportInput("g", "bandit", arms, bandit=bandit, decision_metric="click_rate"),
                             RULE, [guard], 20 * DAY, "running")  # fmt: skip
    check = next(c for c in ips.conditions if c.name == "guardrail:unsubscribe_rate")
    assert check.values["harm"] is False and ips.stop_reason is None
