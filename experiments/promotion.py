"""Auto-promotion: decide from an experiment's per-arm statistics whether it has a clear winner yet.

The periodic promotion job looks at every running experiment again and again, so every test
here must stay valid however often it is checked: the decision metric and the guardrails use
the always-valid confidence sequence of ``reports.sequential``, never a fixed-horizon p-value
(peeked daily for a month, a 5% test "finds" a winner in an A/A test several times as often).
Every comparison is clustered on subjects (``reports.stats``): a customer decided many times is
one unit.

An arm is promoted only when every condition holds, and each condition is reported whether it
holds or not, with how far it is from holding, so the decision endpoint can explain itself:

* ``min_decisions``: every arm has ``min_decisions_per_arm`` decisions; the sequential interval
  is asymptotic and the rule's owner asked for this much evidence before acting.
* ``min_runtime``: the experiment has run ``min_runtime_seconds``, so weekday and novelty
  effects have had time to show.
* ``no_srm``: the split matches the configured shares (or the bandit's logged propensities),
  checked as the report does, on the decisions made under the configured split (before a
  promotion changed it); a mismatch means assignment or logging is broken.
* ``beats_control`` and ``beats_every_arm``: the candidate (the best non-control arm on the
  decision metric) beats the control and every other treatment arm: the always-valid interval
  of each difference lies entirely on the good side of 0 at the rule's confidence.
* ``guardrail:<metric>``: the candidate passes each guardrail under the guardrail's mode.

Bandits. A bandit's pooled per-arm totals mix periods it allocated differently; when the
reward drifts they can rank arms the wrong way round (Simpson's paradox), and the i.i.d.
assumption of the confidence sequence does not hold for them. For a bandit every comparison of
the decision metric (the candidate's choice too) uses the inverse-propensity (IPS,
Horvitz-Thompson) estimate of "always play this arm" from the logged propensities: the
difference of two arms is the mean over all N logged decisions of z_i = 1[A_i = a] r_i / p_i -
1[A_i = b] r_i / p_i. Given the past, each z_i has mean mu_a(t_i) - mu_b(t_i) whatever the
allocation, so the sum is a martingale and the asymptotic confidence sequence of Waudby-Smith
et al. (2021), which covers martingale differences, applies with N decisions; the target is
the arms' difference averaged over the traffic the experiment saw. Assumptions: the logged
propensities are the true assignment probabilities (the SRM check tests that), and no arm's
propensity is so small that a few weights dominate (the effective sample size in the report
shows it). A Bayesian "chance to be best" is no longer a promotion path: it is not protected
against repeated looks (22% of two-arm A/A runs looked at daily were promoted by it).

Guardrails. ``mode="harm"`` (the default, as GrowthBook, Eppo and Statsig do it) fails on
evidence of harm: the point estimate of the relative change is beyond the bound, or the
always-valid interval shows the metric worse than control. ``mode="non_inferiority"`` passes
only once the always-valid interval rules out a breach of the bound (with a 1% unsubscribe rate
and a +10% bound that takes millions of decisions). A guardrail whose change cannot be measured
fails under non-inferiority and passes under harm (no evidence of harm).

Stop. ``action="stop"`` (with ``stop_reason``) when every treatment is clearly worse than control
on the decision metric (its always-valid interval lies entirely on the bad side of 0), or when a
treatment clearly breaches a guardrail (the always-valid interval shows harm and the point
estimate is beyond the bound). Stop needs at least ``STOP_MIN_DECISIONS`` decisions in every
arm compared (or the rule's minimum if lower), so an asymptotic interval on a handful of
decisions cannot end an experiment. A promotable winner is promoted rather than stopped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from experiments.spec import Guardrail, PromotionRule
from reports.bandit import IpwArmStats, ips_difference, propensity_balance
from reports.inputs import (
    LOWER_IS_BETTER,
    ArmSummary,
    MetricKind,
    ReportInput,
    arm_metric_stats,
    control_arm,
    metric_kind,
)
from reports.intervals import NO_DATA, NOT_ENOUGH_DATA, ZERO_VARIANCE, check_confidence
from reports.sequential import SequentialResult, always_valid_difference
from reports.srm import SrmResult, srm_check, srm_from_balance
from reports.stats import MeanStats

__all__ = ["Condition", "PromotionAction", "PromotionDecision", "STOP_MIN_DECISIONS", "evaluate_promotion",
           "ips_difference"]

PromotionAction = Literal["promote", "notify", "wait", "stop", "none"]
Estimator = Literal["pooled", "ips"]
Value = float | int | str | None

DAY = 86_400.0
STOP_MIN_DECISIONS = 100

# Error codes of reports.sequential in words, for a condition's detail.
_WHY_NOT_COMPARABLE = {
    NO_DATA: "an arm has no data yet",
    NOT_ENOUGH_DATA: "an arm has fewer than two observations",
    ZERO_VARIANCE: "every outcome is the same in both arms so far (e.g. no events yet)",
    "NO_PROPENSITIES": "no logged propensities to weight the bandit's decisions with",
}

_MODE_WORDS = {
    "harm": "rule: harm, fails on evidence of harm",
    "non_inferiority": "rule: non-inferiority, passes once a breach is ruled out",
}


@dataclass(frozen=True, slots=True)
class Condition:
    """One condition of promotion: whether it holds, in words and in numbers."""

    name: str  # "min_decisions", "min_runtime", "no_srm", "beats_control", "beats_every_arm", ...
    passed: bool
    detail: str  # what holds, what does not, and how far it is from holding
    values: dict[str, Value] = field(default_factory=dict)  # the numbers behind the detail


@dataclass(frozen=True, slots=True)
class PromotionDecision:
    """What the promotion job should do with one experiment now, and why."""

    action: PromotionAction  # promote/notify: every condition holds; stop: clear harm; wait; none: no rule/not running
    winner: str | None  # the arm to promote (or to notify about); None unless action is promote or notify
    conditions: tuple[Condition, ...]
    summary: str  # one paragraph in plain words
    statistics: dict[str, Any]  # JSON-serialisable numbers for the audit log (no NaN or infinities)
    stop_reason: str | None = None  # why stopping is recommended (the harm found), whatever the action


def evaluate_promotion(
    report_input: ReportInput,
    rule: PromotionRule | None,
    guardrails: Sequence[Guardrail],
    runtime_seconds: float,
    status: str,
    *,
    is_bandit: bool | None = None,
) -> PromotionDecision:
    """Decide whether an experiment's leading arm is a clear, safe winner that may be promoted now.

    ``report_input`` holds the per-arm statistics the report is built from (and, for a bandit,
    the logged-propensity sums); ``runtime_seconds`` is how long the experiment has been running;
    ``status`` is its lifecycle state. A bandit (``is_bandit``, by default the input's allocation
    type) is compared by IPS, never by pooled totals. Conditions are evaluated (and explained) for
    a paused or concluded experiment too, but only a running one is ever promoted or stopped.
    """
    if not (runtime_seconds >= 0.0 and math.isfinite(runtime_seconds)):
        raise ValueError(f"runtime_seconds must be a finite number >= 0, got {runtime_seconds}")
    if rule is None:
        return PromotionDecision(
            action="none",
            winner=None,
            conditions=(),
            summary="No promotion rule is set, so this experiment is never promoted automatically.",
            statistics={"status": status, "rule": None},
        )
    check_confidence(rule.confidence)
    if is_bandit is None:
        is_bandit = report_input.allocation_type == "bandit"
    control = control_arm(report_input.arms)
    metric = rule.metric
    kind = metric_kind(metric)
    higher_is_better = metric not in LOWER_IS_BETTER
    alpha = round(1.0 - rule.confidence, 12)  # 0.05, not 0.050000000000000044
    tuning_n = report_input.sequential_tuning_n
    stats = {a.arm: arm_metric_stats(a, metric) for a in report_input.arms}
    estimator: Estimator = "ips" if is_bandit else "pooled"
    values, compare_arms = _estimator(report_input, estimator, stats, alpha, tuning_n)
    candidate = _candidate(values, control.arm, higher_is_better)
    ctx = _Context(metric, kind, higher_is_better, rule.confidence, alpha, tuning_n, control.arm, candidate,
                   stats, values, compare_arms, estimator)  # fmt: skip

    conditions: list[Condition] = [
        _min_decisions(report_input.arms, rule.min_decisions_per_arm),
        _min_runtime(runtime_seconds, rule.min_runtime_seconds),
    ]
    srm = _srm(report_input)
    conditions.append(_no_srm(srm))
    conditions.append(_beats_control(ctx))
    conditions.append(_beats_every_arm(ctx))
    checks = {g: _guardrail_checks(ctx, g, report_input) for g in guardrails}
    conditions.extend(_guardrail(ctx, g, checks[g]) for g in guardrails)
    stop_reason = _stop_reason(ctx, report_input.arms, rule, checks)

    blocking = [c for c in conditions if not c.passed]
    blocking_ids = {id(c) for c in blocking}
    running = status == "running"
    action: PromotionAction
    if not running:
        action = "none"
    elif not blocking:
        action = rule.action
    elif stop_reason is not None:
        action = "stop"
    else:
        action = "wait"
    winner = candidate if action in ("promote", "notify") else None
    summary = _summary(ctx, rule, status, action, blocking, conditions, stop_reason)
    statistics = _json_safe(
        {
            "experiment": report_input.experiment,
            "status": status,
            "allocation_type": report_input.allocation_type,
            "is_bandit": is_bandit,
            "estimator": estimator,
            "rule": rule.model_dump(),
            "guardrails": [g.model_dump() for g in guardrails],
            "metric": metric,
            "higher_is_better": higher_is_better,
            "confidence": rule.confidence,
            "alpha": alpha,
            "sequential_tuning_n": tuning_n,
            "runtime_seconds": runtime_seconds,
            "control": control.arm,
            "candidate": candidate,
            "action": action,
            "winner": winner,
            "stop_reason": stop_reason,
            "arms": {
                a.arm: {
                    "is_control": a.is_control,
                    "decisions": a.decisions,
                    "subjects": a.subjects,
                    "expected_share": a.expected_share,
                    "n": s.n if (s := stats[a.arm]) is not None else None,
                    "value": values.get(a.arm),
                    "pooled_value": s.mean if s is not None and s.n > 0 else None,
                }
                for a in report_input.arms
            },
            "srm": {
                "method": srm.method,
                "statistic": srm.statistic,
                "p_value": srm.p_value,
                "threshold": srm.threshold,
                "warning": srm.warning,
                "error": srm.error,
                "counts": {a.arm: a.observed for a in srm.arms},
            },
            "conditions": [
                {
                    "name": c.name,
                    "passed": c.passed,
                    "blocking": id(c) in blocking_ids,
                    "detail": c.detail,
                    "values": c.values,
                }
                for c in conditions
            ],
        }
    )
    return PromotionDecision(action, winner, tuple(conditions), summary, statistics, stop_reason)


# ---------------------------------------------------------------------------------------------
# Inputs.

Compare = Callable[[str, str], SequentialResult]  # (reference, arm) -> arm minus reference


@dataclass(frozen=True, slots=True)
class _Context:
    """What every comparison of one evaluation shares."""

    metric: str
    kind: MetricKind
    higher_is_better: bool
    confidence: float
    alpha: float
    tuning_n: float
    control: str
    candidate: str | None
    stats: Mapping[str, MeanStats | None]  # pooled per-arm statistics (subject-clustered)
    values: Mapping[str, float | None]  # each arm's estimate on the decision metric, by the estimator
    compare: Compare
    estimator: Estimator


def _estimator(
    inp: ReportInput, estimator: Estimator, stats: Mapping[str, MeanStats | None], alpha: float, tuning_n: float
) -> tuple[dict[str, float | None], Compare]:
    """Each arm's value and the always-valid comparison of two arms, by pooled totals or (bandits) IPS."""
    if estimator == "pooled":
        values = {arm: (s.mean if s is not None and s.n > 0 else None) for arm, s in stats.items()}

        def pooled(reference: str, arm: str) -> SequentialResult:
            ref, mine = stats[reference], stats[arm]
            if ref is None or mine is None:
                return SequentialResult(None, None, None, None, alpha, tuning_n, error=NO_DATA)
            return always_valid_difference(ref, mine, alpha, tuning_n)

        return values, pooled
    measures = inp.bandit is not None and inp.bandit.metric in (None, inp.decision_metric)
    ipw = {s.arm: s for s in inp.bandit.ipw} if inp.bandit is not None and measures else {}
    n_total = inp.bandit.n_total if inp.bandit is not None else 0
    values = {
        arm: (ipw[arm].sum_wr / n_total if arm in ipw and ipw[arm].sum_w > 0 and n_total > 0 else None)
        for arm in stats
    }

    clusters = inp.bandit.ips_clusters if inp.bandit is not None else None

    def ips(reference: str, arm: str) -> SequentialResult:
        return ips_difference(ipw, n_total, reference, arm, alpha, tuning_n, clusters)

    return values, ips


def _candidate(values: Mapping[str, float | None], control: str, higher_is_better: bool) -> str | None:
    """Return the non-control arm with the best value on the decision metric (the first on ties)."""
    sign = 1.0 if higher_is_better else -1.0
    best: str | None = None
    best_value = -math.inf
    for arm, v in values.items():
        if arm != control and v is not None and sign * v > best_value:
            best, best_value = arm, sign * v
    return best


def _srm(inp: ReportInput) -> SrmResult:
    """Check the split as the report does: on decisions under the configured split, or the propensity balance."""
    observed = dict(inp.srm_counts) if inp.srm_counts is not None else {a.arm: a.decisions for a in inp.arms}
    shares = {a.arm: a.expected_share for a in inp.arms}
    if inp.allocation_type == "bandit" and inp.bandit is not None and inp.bandit.ipw:
        return srm_from_balance(propensity_balance(list(inp.bandit.ipw), inp.bandit.n_total), observed, shares)
    return srm_check(observed, shares)


# ---------------------------------------------------------------------------------------------
# Conditions.


def _min_decisions(arms: Sequence[ArmSummary], required: int) -> Condition:
    """Every arm needs the rule's minimum number of decisions."""
    short = sorted((a for a in arms if a.decisions < required), key=lambda a: a.decisions)
    fewest = min(arms, key=lambda a: a.decisions)  # ReportInput has at least its control arm
    values: dict[str, Value] = {
        "required_per_arm": required,
        "fewest_arm": fewest.arm,
        "fewest_decisions": fewest.decisions,
        "arms_short": len(short),
        "max_shortfall": required - short[0].decisions if short else 0,
    }
    if not short:
        detail = (
            f"every arm has at least the {required:,} decisions needed "
            f"(fewest: {fewest.arm} with {fewest.decisions:,})"
        )
        return Condition("min_decisions", True, detail, values)
    parts = [
        f"{a.arm} has {a.decisions:,} of {required:,} decisions needed ({a.decisions / required:.0%})" for a in short
    ]
    detail = "; ".join(parts) + f"; needs {required - short[0].decisions:,} more decisions per arm"
    return Condition("min_decisions", False, detail, values)


def _min_runtime(runtime_seconds: float, required_seconds: int) -> Condition:
    """The experiment must have run the rule's minimum time."""
    values: dict[str, Value] = {
        "runtime_seconds": runtime_seconds,
        "min_runtime_seconds": required_seconds,
        "remaining_seconds": max(0.0, required_seconds - runtime_seconds),
    }
    unit_name, unit = _time_unit(required_seconds or runtime_seconds)
    ran = f"{_round1(runtime_seconds / unit)} {unit_name}"
    if required_seconds == 0:
        return Condition("min_runtime", True, f"no minimum runtime; running for {ran}", values)
    of = f"runtime {_round1(runtime_seconds / unit)} of {_round1(required_seconds / unit)} {unit_name}"
    if runtime_seconds >= required_seconds:
        return Condition("min_runtime", True, f"{of} needed", values)
    remaining = f"{_round1((required_seconds - runtime_seconds) / unit)} {unit_name}"
    return Condition(
        "min_runtime", False, f"{of} ({runtime_seconds / required_seconds:.0%}); {remaining} to go", values
    )


def _no_srm(srm: SrmResult) -> Condition:
    """The arms' decision counts must match the split they were meant to get."""
    values: dict[str, Value] = {
        "method": srm.method,
        "statistic": srm.statistic,
        "p_value": srm.p_value,
        "threshold": srm.threshold,
        "error": srm.error,
    }
    against = "the logged propensities" if srm.method == "propensity_balance" else "the configured split"
    if srm.warning:
        return Condition("no_srm", False, srm.message or f"decisions do not match {against}", values)
    if srm.error is not None or srm.p_value is None:
        detail = f"the split cannot be checked against {against} yet ({srm.error or 'no test'})"
        return Condition("no_srm", False, detail, values)
    detail = f"decisions match {against} (p = {srm.p_value:.2g}, mismatch below {srm.threshold:g})"
    return Condition("no_srm", True, detail, values)


def _beats_control(ctx: _Context) -> Condition:
    """The candidate must beat control by the always-valid interval of the difference."""
    label = _label(ctx.metric)
    if ctx.candidate is None:
        detail = f"no treatment arm has data on {label} yet"
        if ctx.estimator == "ips":
            detail = f"no treatment arm has an IPS estimate on {label} yet (no logged propensities to weight by)"
        return Condition("beats_control", False, detail, {"candidate": None})
    seq = ctx.compare(ctx.control, ctx.candidate)
    values: dict[str, Value] = {"candidate": ctx.candidate, "control": ctx.control, "estimator": ctx.estimator,
                                **_sequential_values(seq)}  # fmt: skip
    values["control_value"] = ctx.values.get(ctx.control)
    values["candidate_value"] = ctx.values.get(ctx.candidate)
    lead = _lead(ctx, ctx.candidate, ctx.control, "control")
    interval = _usable(seq)
    if interval is None:
        why = _WHY_NOT_COMPARABLE.get(seq.error or "", seq.error)
        return Condition("beats_control", False, f"{ctx.candidate} cannot be compared with control yet: {why}", values)
    ahead = _better(ctx, interval.estimate)
    values["leading"] = "candidate" if ahead else "control"
    passed, bound = _clears(ctx, interval)
    spread = (
        f"always-valid {ctx.confidence:.0%} interval of {ctx.candidate} minus control{_by(ctx)} "
        f"{_signed(interval.low)} to {_signed(interval.high)}"
    )
    if not ahead:
        head = "control is leading" if _better(ctx, -interval.estimate) else "no arm leads control"
        detail = f"{head} on {label}: the best other arm, {ctx.candidate}, has {lead}; {spread}"
        return Condition("beats_control", False, detail, values)
    if passed:
        return Condition("beats_control", True, f"{ctx.candidate} beats control on {label} ({lead}); {spread}", values)
    detail = f"{ctx.candidate} leads control on {label} ({lead}) but not clearly yet: {_short_of(ctx, bound)}"
    return Condition("beats_control", False, detail, values)


def _beats_every_arm(ctx: _Context) -> Condition:
    """The candidate must also beat every other treatment arm the same way: a clear winner, not one of several."""
    label = _label(ctx.metric)
    if ctx.candidate is None:
        return Condition("beats_every_arm", False, f"no treatment arm has data on {label} yet", {"candidate": None})
    others = [arm for arm in ctx.values if arm not in (ctx.control, ctx.candidate)]
    values: dict[str, Value] = {"candidate": ctx.candidate, "other_arms": len(others), "estimator": ctx.estimator}
    if not others:
        return Condition("beats_every_arm", True, "no other treatment arm to beat", values)
    shortfalls: list[str] = []
    beaten: list[str] = []
    for arm in others:
        if ctx.values.get(arm) is None:
            # An arm without data cannot be shown worse (and min_decisions blocks promotion anyway).
            shortfalls.append(f"{arm} has no data on {label} to compare with")
            values[f"{arm}:error"] = NO_DATA
            continue
        seq = ctx.compare(arm, ctx.candidate)
        values.update({f"{arm}:{k}": v for k, v in _sequential_values(seq).items()})
        interval = _usable(seq)
        if interval is None:
            why = _WHY_NOT_COMPARABLE.get(seq.error or "", seq.error)
            shortfalls.append(f"{ctx.candidate} cannot be compared with {arm} yet: {why}")
            continue
        passed, bound = _clears(ctx, interval)
        if passed:
            beaten.append(f"{arm} (difference {_signed(interval.estimate)}, {_side(ctx)} bound {_signed(bound)})")
        else:
            lead = _lead(ctx, ctx.candidate, arm, arm)
            shortfalls.append(f"{ctx.candidate} does not yet clearly beat {arm} ({lead}): {_short_of(ctx, bound)}")
    values["arms_beaten"] = len(beaten)
    if not shortfalls:
        detail = (
            f"{ctx.candidate} beats every other arm on {label}{_by(ctx)} at {ctx.confidence:.0%}: " + ", ".join(beaten)
        )
        return Condition("beats_every_arm", True, detail, values)
    return Condition("beats_every_arm", False, "; ".join(shortfalls), values)


@dataclass(frozen=True, slots=True)
class _GuardrailCheck:
    """One treatment arm against control on one guardrail metric."""

    arm: str
    control_value: float | None
    arm_value: float | None
    relative: float | None  # arm / control - 1
    interval: _Interval | None  # always-valid interval of arm minus control
    seq: SequentialResult | None
    beyond: bool  # the point estimate is beyond a bound
    harm: bool  # the always-valid interval shows the metric worse than control
    ruled_out: bool  # the always-valid interval rules out every breach (non-inferiority holds)
    why: str | None  # why the change cannot be measured, when it cannot


def _guardrail_checks(ctx: _Context, guardrail: Guardrail, inp: ReportInput) -> dict[str, _GuardrailCheck]:
    """Check every treatment arm against control on one guardrail (a bandit's by IPS where its sums are logged)."""
    by_arm = {a.arm: a for a in inp.arms}
    ipw = _guardrail_ipw(ctx, guardrail.metric, inp)
    out = {}
    for arm in by_arm:
        if arm == ctx.control:
            continue
        if ipw is not None:
            sums, n_total = ipw
            seq = ips_difference(sums, n_total, ctx.control, arm, ctx.alpha, ctx.tuning_n)
            c, a = sums.get(ctx.control), sums.get(arm)
            c_value = c.sum_wr / n_total if c is not None and c.sum_w > 0 else None
            a_value = a.sum_wr / n_total if a is not None and a.sum_w > 0 else None
        else:
            control = arm_metric_stats(by_arm[ctx.control], guardrail.metric)
            mine = arm_metric_stats(by_arm[arm], guardrail.metric)
            if control is None or mine is None:
                out[arm] = _GuardrailCheck(arm, None, None, None, None, None, False, False, False, "it is not computed")
                continue
            seq = always_valid_difference(control, mine, ctx.alpha, ctx.tuning_n)
            c_value = control.mean if control.n else None
            a_value = mine.mean if mine.n else None
        out[arm] = _guardrail_check(guardrail, arm, c_value, a_value, seq)
    return out


def _guardrail_ipw(ctx: _Context, metric: str, inp: ReportInput) -> tuple[dict[str, IpwArmStats], int] | None:
    """A bandit's logged-propensity sums of a guardrail metric, when the SQL produced them."""
    if ctx.estimator != "ips" or inp.bandit is None or metric not in inp.bandit.guardrail_ipw:
        return None
    return {s.arm: s for s in inp.bandit.guardrail_ipw[metric]}, inp.bandit.n_total


def _guardrail_check(
    guardrail: Guardrail, arm: str, c_value: float | None, a_value: float | None, seq: SequentialResult
) -> _GuardrailCheck:
    interval = _usable(seq)
    if c_value is None or a_value is None:
        return _GuardrailCheck(arm, c_value, a_value, None, interval, seq, False, False, False, "an arm has no data yet")
    bounds = [(1.0, guardrail.max_relative_increase), (-1.0, guardrail.max_relative_decrease)]
    if c_value == 0.0:
        # No relative change from 0: a rise from nothing is beyond any bound; nothing can fall.
        beyond = a_value > 0.0 and guardrail.max_relative_increase is not None
        harm = interval is not None and interval.low > 0.0 and guardrail.max_relative_increase is not None
        return _GuardrailCheck(arm, c_value, a_value, None, interval, seq, beyond, harm, False,
                               "control's value is 0" if a_value > 0.0 else None)  # fmt: skip
    relative = a_value / c_value - 1.0
    beyond = harm = False
    ruled_out = interval is not None
    for sign, bound in bounds:
        if bound is None:
            continue
        beyond = beyond or sign * relative > bound
        if interval is not None:
            worse_edge = interval.low if sign > 0 else interval.high  # the edge nearest "no change" on the bad side
            far_edge = interval.high if sign > 0 else interval.low
            harm = harm or sign * worse_edge > 0.0
            ruled_out = ruled_out and sign * far_edge <= bound * c_value
    why = None if interval is not None else _WHY_NOT_COMPARABLE.get(seq.error or "", seq.error)
    return _GuardrailCheck(arm, c_value, a_value, relative, interval, seq, beyond, harm, ruled_out, why)


def _guardrail(ctx: _Context, guardrail: Guardrail, checks: Mapping[str, _GuardrailCheck]) -> Condition:
    """The candidate must pass the guardrail under its mode: no evidence of harm, or a breach ruled out."""
    metric = guardrail.metric
    name = f"guardrail:{metric}"
    label = _label(metric)
    rule_words = _MODE_WORDS[guardrail.mode]
    values: dict[str, Value] = {
        "metric": metric,
        "mode": guardrail.mode,
        "candidate": ctx.candidate,
        "max_relative_increase": guardrail.max_relative_increase,
        "max_relative_decrease": guardrail.max_relative_decrease,
    }
    if ctx.candidate is None:
        return Condition(name, False, f"{label} ({rule_words}): no treatment arm to check", values)
    check = checks[ctx.candidate]
    if check.seq is not None:
        values.update(_sequential_values(check.seq))
    values.update({"control_value": check.control_value, "candidate_value": check.arm_value,
                   "relative_change": check.relative, "harm": check.harm, "beyond_bound": check.beyond,
                   "breach_ruled_out": check.ruled_out})  # fmt: skip
    kind = metric_kind(metric)
    if check.control_value is None or check.arm_value is None:
        change = f"{check.why or 'not measurable yet'}"
    else:
        rel = f" ({check.relative:+.1%})" if check.relative is not None else ""
        change = (
            f"{ctx.candidate} {_value(kind, check.arm_value)} vs control {_value(kind, check.control_value)}{rel}"
        )
    head = f"{label} ({rule_words}): {change}"
    interval = check.interval
    spread = (
        f"always-valid {ctx.confidence:.0%} interval of the difference {_signed(interval.low)} to "
        f"{_signed(interval.high)}"
        if interval is not None
        else "no always-valid interval yet"
    )
    bounds = ", ".join(
        f"{sign}{b:.0%}"
        for sign, b in (("+", guardrail.max_relative_increase), ("-", guardrail.max_relative_decrease))
        if b is not None
    )
    if check.beyond:
        return Condition(name, False, f"{head}; the point estimate is beyond the bound ({bounds}); {spread}", values)
    if check.harm:
        return Condition(name, False, f"{head}; {spread}: the metric is worse than control", values)
    if guardrail.mode == "harm":
        return Condition(name, True, f"{head}; no evidence of harm (within {bounds}; {spread})", values)
    if check.ruled_out:
        return Condition(name, True, f"{head}; a breach of {bounds} is ruled out ({spread})", values)
    detail = f"{head}; a breach of {bounds} cannot be ruled out yet ({spread}); need more data"
    return Condition(name, False, detail, values)


def _stop_reason(
    ctx: _Context,
    arms: Sequence[ArmSummary],
    rule: PromotionRule,
    checks: Mapping[Guardrail, Mapping[str, _GuardrailCheck]],
) -> str | None:
    """Why the experiment should stop: every treatment clearly worse, or a guardrail clearly breached."""
    floor = min(STOP_MIN_DECISIONS, rule.min_decisions_per_arm)
    decisions = {a.arm: a.decisions for a in arms}
    if decisions[ctx.control] < floor:
        return None
    label = _label(ctx.metric)
    reasons = []
    treatments = [a.arm for a in arms if a.arm != ctx.control and decisions[a.arm] >= floor]
    worse = []
    for arm in treatments:
        interval = _usable(ctx.compare(ctx.control, arm))
        if interval is None:
            break
        clears, bound = _clears(ctx, _Interval(-interval.estimate, -interval.high, -interval.low))
        if not clears:
            break
        worse.append(f"{arm} {_signed(interval.estimate)} (always-valid interval {_signed(interval.low)} to "
                     f"{_signed(interval.high)})")  # fmt: skip
    else:
        if treatments and len(treatments) == len(decisions) - 1:
            reasons.append(f"every treatment is clearly worse than control on {label}{_by(ctx)}: " + ", ".join(worse))
    for guardrail, by_arm in checks.items():
        for arm, check in by_arm.items():
            if decisions[arm] < floor or not (check.harm and check.beyond) or check.interval is None:
                continue
            rel = f"{check.relative:+.1%}" if check.relative is not None else "from 0"
            reasons.append(
                f"{arm} clearly breaches the {_label(guardrail.metric)} guardrail: {rel} against control, and the "
                f"always-valid {ctx.confidence:.0%} interval of the difference {_signed(check.interval.low)} to "
                f"{_signed(check.interval.high)} shows it worse"
            )
    return "; ".join(reasons) if reasons else None


# ---------------------------------------------------------------------------------------------
# Summary.


def _summary(
    ctx: _Context,
    rule: PromotionRule,
    status: str,
    action: PromotionAction,
    blocking: list[Condition],
    conditions: list[Condition],
    stop_reason: str | None,
) -> str:
    label = _label(ctx.metric)
    if action in ("promote", "notify"):
        how = f"it beats control and every other arm on {label}{_by(ctx)} by always-valid {ctx.confidence:.0%} intervals"
        guards = [c for c in conditions if c.name.startswith("guardrail:")]
        modes = sorted({str(c.values.get("mode")) for c in guards})
        guard_words = f"every guardrail holds ({', '.join(_MODE_WORDS[m] for m in modes)})" if guards else (
            "no guardrail is set")
        rest = (
            f"every arm has enough decisions, the experiment has run long enough, the split matches "
            f"and {guard_words}"
        )
        if action == "promote":
            share = f"all traffic less a {rule.holdback:.0%} holdback on control" if rule.holdback else "all traffic"
            return f"Promote {ctx.candidate}: {how}; {rest}. It gets {share}."
        return (
            f"{ctx.candidate} is a clear winner: {how}; {rest}. The rule says notify, so subscribers are "
            f"told and traffic stays as it is."
        )
    if action == "stop":
        then = (
            "The rule says stop on harm, so the promotion job pauses the experiment."
            if rule.on_harm == "stop"
            else "Stopping is recommended; the rule leaves it to you (set \"on_harm\": \"stop\" to pause automatically)."
        )
        return f"Stop: {stop_reason}. {then}"
    if action == "none":
        head = f"The experiment is {status}; only a running experiment is promoted."
        if not blocking:
            return f"{head} Every condition for promoting {ctx.candidate} holds."
        failing = f"{len(blocking)} of {len(conditions)} conditions do not hold"
        return f"{head} As things stand, {failing}: {_listed(blocking)}"
    leader = f" The best treatment arm so far is {ctx.candidate}." if ctx.candidate else ""
    return f"Not promoted yet: {len(blocking)} of {len(conditions)} conditions do not hold: {_listed(blocking)}{leader}"


def _listed(conditions: list[Condition]) -> str:
    """Number the details, as one sentence: "(1) ...; (2) ..."."""
    return "; ".join(f"({i}) {c.detail.rstrip('.')}" for i, c in enumerate(conditions, 1)) + "."


# ---------------------------------------------------------------------------------------------
# Small helpers.


@dataclass(frozen=True, slots=True)
class _Interval:
    """A sequential comparison that could be computed: the difference and its always-valid bounds."""

    estimate: float
    low: float
    high: float


def _usable(seq: SequentialResult) -> _Interval | None:
    """Return the interval of a sequential result, or None when its data could not give one."""
    if seq.error is not None or seq.estimate is None or seq.ci_low is None or seq.ci_high is None:
        return None
    return _Interval(seq.estimate, seq.ci_low, seq.ci_high)


def _better(ctx: _Context, diff: float) -> bool:
    """Whether a difference (arm minus reference) is in the metric's good direction."""
    return diff > 0.0 if ctx.higher_is_better else diff < 0.0


def _clears(ctx: _Context, interval: _Interval) -> tuple[bool, float]:
    """Whether the interval lies on the good side of 0, and the bound that must clear it."""
    bound = interval.low if ctx.higher_is_better else interval.high
    return _better(ctx, bound), bound


def _side(ctx: _Context) -> str:
    return "lower" if ctx.higher_is_better else "upper"


def _short_of(ctx: _Context, bound: float) -> str:
    """How far a comparison is from clearing 0, e.g. "sequential lower bound -0.0012 < 0; need more data"."""
    return f"sequential {_side(ctx)} bound {_signed(bound)} {'<' if ctx.higher_is_better else '>'} 0; need more data"


def _lead(ctx: _Context, arm: str, reference: str, reference_label: str) -> str:
    mine, ref = ctx.values.get(arm), ctx.values.get(reference)
    if mine is None or ref is None:
        return "no value yet"
    return f"{_value(ctx.kind, mine)} vs {reference_label} {_value(ctx.kind, ref)}"


def _by(ctx: _Context) -> str:
    """How the bandit's arms are compared, in words; nothing for a fixed split."""
    return " (IPS, weighted by the logged propensities)" if ctx.estimator == "ips" else ""


def _sequential_values(seq: SequentialResult) -> dict[str, Value]:
    return {
        "difference": seq.estimate,
        "ci_low": seq.ci_low,
        "ci_high": seq.ci_high,
        "p_value_always_valid": seq.p_value,
        "std_error": seq.std_error,
        "n_total": seq.n_total,
        "error": seq.error,
    }


def _label(metric: str) -> str:
    return metric.replace("_", " ")


def _value(kind: str, x: float) -> str:
    return f"{x:.2%}" if kind == "rate" else f"{x:,.4g}"


def _signed(x: float) -> str:
    return f"{x:+.3g}"


def _round1(x: float) -> str:
    return f"{round(x, 1):g}"


def _time_unit(seconds: float) -> tuple[str, float]:
    if seconds >= 2 * DAY:
        return "days", DAY
    if seconds >= 2 * 3600:
        return "hours", 3600.0
    return "minutes", 60.0


def _json_safe(value: Any) -> Any:
    """Return the value with NaN and infinities as None, tuples as lists, keys as strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
