"""Auto-promotion: decide from an experiment's per-arm totals whether it has a clear winner yet.

The periodic promotion job looks at every running experiment again and again, so every test
here must stay valid however often it is checked: the decision metric and the guardrails use
the always-valid confidence sequence of ``reports.sequential``, never a fixed-horizon p-value
(peeked daily for a month, a 5% test "finds" a winner in an A/A test several times as often).

An arm is promoted only when every condition holds, and each condition is reported whether it
holds or not, with how far it is from holding, so the decision endpoint can explain itself:

* ``min_decisions``: every arm has ``min_decisions_per_arm`` decisions; the sequential interval
  is asymptotic and the rule's owner asked for this much evidence before acting.
* ``min_runtime``: the experiment has run ``min_runtime_seconds``, so weekday and novelty
  effects have had time to show.
* ``no_srm``: the split matches the configured shares (or the bandit's logged propensities),
  checked as the report does; a mismatch means assignment or logging is broken and no
  comparison can be trusted.
* ``beats_control`` and ``beats_every_arm``: the candidate (the best non-control arm on the
  decision metric) beats the control and every other treatment arm: the always-valid interval
  of each difference lies entirely on the good side of 0 at the rule's confidence.
* ``chance_to_be_best`` (bandits only): the candidate's Bayesian chance to be best, as the
  report computes it, reaches the rule's confidence. For a bandit this is an alternative to the
  two sequential conditions above: a bandit starves the arms it believes worse, so their
  intervals narrow slowly even when the winner is plain. Unlike the sequential conditions, this
  probability is not protected against repeated looks (in a two-arm A/A simulation looked at
  daily for 30 days, "chance to be best >= 95%" picked a winner in about one experiment in
  five), and the per-arm totals it is computed from pool periods the bandit allocated
  differently (see ``reports.bandit``).
* ``guardrail:<metric>``: the candidate does not move the guardrail metric beyond its bound
  (see ``_guardrail``).

Guardrail rule (chosen to be conservative): a guardrail with ``max_relative_increase`` b
fails when the candidate's relative change against control is above b, OR when the upper end
of the always-valid interval of the absolute difference (candidate minus control) is above
b * control mean, i.e. when a breach cannot yet be ruled out; ``max_relative_decrease`` is the
mirror image with the lower end. The burden of proof is on the candidate: promotion moves all
traffic to it, and a harm such as a rise in unsubscribes destroys customers' future value
(DESIGN.md, "Lifetime value"), so "no significant harm" is not enough; the data must show that
any harm is within the bound. Using the always-valid interval keeps this honest under the
job's repeated looks. A guardrail that cannot be checked (no control events, metric not
computed) fails for the same reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from experiments.spec import Guardrail, PromotionRule
from reports.bandit import propensity_balance
from reports.bayes import bayes_compare
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

__all__ = ["Condition", "PromotionAction", "PromotionDecision", "evaluate_promotion"]

PromotionAction = Literal["promote", "notify", "wait", "none"]
Value = float | int | str | None

DAY = 86_400.0

# Error codes of reports.sequential in words, for a condition's detail.
_WHY_NOT_COMPARABLE = {
    NO_DATA: "an arm has no data yet",
    NOT_ENOUGH_DATA: "an arm has fewer than two observations",
    ZERO_VARIANCE: "every outcome is the same in both arms so far (e.g. no events yet)",
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

    action: PromotionAction  # promote/notify: every condition holds; wait: some do not; none: no rule or not running
    winner: str | None  # the arm to promote (or to notify about); None unless action is promote or notify
    conditions: tuple[Condition, ...]
    summary: str  # one paragraph in plain words
    statistics: dict[str, Any]  # JSON-serialisable numbers for the audit log (no NaN or infinities)


def evaluate_promotion(
    report_input: ReportInput,
    rule: PromotionRule | None,
    guardrails: Sequence[Guardrail],
    runtime_seconds: float,
    status: str,
    *,
    is_bandit: bool = False,
) -> PromotionDecision:
    """Decide whether an experiment's leading arm is a clear, safe winner that may be promoted now.

    ``report_input`` holds the cumulative per-arm totals (the same the report is built from);
    ``runtime_seconds`` is how long the experiment has been running; ``status`` is its
    lifecycle state. With ``is_bandit``, a Bayesian chance to be best at the rule's confidence
    may stand in for the sequential comparisons. Conditions are evaluated (and explained) for a
    paused or concluded experiment too, but only a running one is ever promoted.
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
    control = control_arm(report_input.arms)
    metric = rule.metric
    kind = metric_kind(metric)
    higher_is_better = metric not in LOWER_IS_BETTER
    alpha = round(1.0 - rule.confidence, 12)  # 0.05, not 0.050000000000000044
    tuning_n = report_input.sequential_tuning_n
    stats = {a.arm: arm_metric_stats(a, metric) for a in report_input.arms}
    candidate = _candidate(stats, control.arm, higher_is_better)
    ctx = _Context(metric, kind, higher_is_better, rule.confidence, alpha, tuning_n, control.arm, candidate, stats)

    conditions: list[Condition] = [
        _min_decisions(report_input.arms, rule.min_decisions_per_arm),
        _min_runtime(runtime_seconds, rule.min_runtime_seconds),
    ]
    srm = _srm(report_input)
    conditions.append(_no_srm(srm))
    beats_control = _beats_control(ctx)
    beats_every_arm = _beats_every_arm(ctx)
    evidence = [beats_control, beats_every_arm]
    chance = _chance_to_be_best(ctx) if is_bandit else None
    if chance is not None:
        evidence.append(chance)
    conditions.extend(evidence)
    conditions.extend(_guardrail(ctx, g, report_input.arms) for g in guardrails)

    # A clear winner: both sequential comparisons, or (bandits) its chance to be best.
    sequential_win = beats_control.passed and beats_every_arm.passed
    clear_winner = sequential_win or (chance is not None and chance.passed)
    optional = {id(c) for c in evidence} if clear_winner else set()
    blocking = [c for c in conditions if not c.passed and id(c) not in optional]
    blocking_ids = {id(c) for c in blocking}

    running = status == "running"
    action: PromotionAction
    if not running:
        action = "none"
    elif blocking:
        action = "wait"
    else:
        action = rule.action
    winner = candidate if action in ("promote", "notify") else None
    summary = _summary(ctx, rule, status, action, blocking, conditions, sequential_win)
    statistics = _json_safe(
        {
            "experiment": report_input.experiment,
            "status": status,
            "allocation_type": report_input.allocation_type,
            "is_bandit": is_bandit,
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
            "arms": {
                a.arm: {
                    "is_control": a.is_control,
                    "decisions": a.decisions,
                    "expected_share": a.expected_share,
                    "n": s.n if (s := stats[a.arm]) is not None else None,
                    "value": s.mean if s is not None and s.n > 0 else None,
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
    return PromotionDecision(action, winner, tuple(conditions), summary, statistics)


# ---------------------------------------------------------------------------------------------
# Inputs.


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
    stats: Mapping[str, MeanStats | None]


def _candidate(stats: Mapping[str, MeanStats | None], control: str, higher_is_better: bool) -> str | None:
    """Return the non-control arm with the best value on the decision metric (the first on ties)."""
    sign = 1.0 if higher_is_better else -1.0
    best: str | None = None
    best_value = -math.inf
    for arm, s in stats.items():
        if arm != control and s is not None and s.n > 0 and sign * s.mean > best_value:
            best, best_value = arm, sign * s.mean
    return best


def _srm(inp: ReportInput) -> SrmResult:
    """Check the split as the report does: chi-square on shares, or the bandit's propensity balance."""
    observed = {a.arm: a.decisions for a in inp.arms}
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
    control = ctx.stats[ctx.control]
    cand = ctx.stats[ctx.candidate] if ctx.candidate is not None else None
    if ctx.candidate is None:
        return Condition("beats_control", False, f"no treatment arm has data on {label} yet", {"candidate": None})
    if control is None or cand is None:
        detail = f"{label} is not computed for these arms"
        return Condition("beats_control", False, detail, {"candidate": ctx.candidate})
    seq = always_valid_difference(control, cand, ctx.alpha, ctx.tuning_n)
    values: dict[str, Value] = {"candidate": ctx.candidate, "control": ctx.control, **_sequential_values(seq)}
    values["control_value"] = control.mean if control.n else None
    values["candidate_value"] = cand.mean
    lead = _lead(ctx.kind, cand, control, "control")
    interval = _usable(seq)
    if interval is None:
        why = _WHY_NOT_COMPARABLE.get(seq.error or "", seq.error)
        return Condition("beats_control", False, f"{ctx.candidate} cannot be compared with control yet: {why}", values)
    ahead = _better(ctx, interval.estimate)
    values["leading"] = "candidate" if ahead else "control"
    passed, bound = _clears(ctx, interval)
    spread = (
        f"always-valid {ctx.confidence:.0%} interval of {ctx.candidate} minus control "
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
    cand = ctx.stats[ctx.candidate] if ctx.candidate is not None else None
    if ctx.candidate is None or cand is None:
        return Condition("beats_every_arm", False, f"no treatment arm has data on {label} yet", {"candidate": None})
    others = [arm for arm in ctx.stats if arm not in (ctx.control, ctx.candidate)]
    values: dict[str, Value] = {"candidate": ctx.candidate, "other_arms": len(others)}
    if not others:
        return Condition("beats_every_arm", True, "no other treatment arm to beat", values)
    shortfalls: list[str] = []
    beaten: list[str] = []
    for arm in others:
        other = ctx.stats[arm]
        if other is None or other.n == 0:
            # An arm without data cannot be shown worse (and min_decisions blocks promotion anyway).
            shortfalls.append(f"{arm} has no data on {label} to compare with")
            values[f"{arm}:error"] = NO_DATA
            continue
        seq = always_valid_difference(other, cand, ctx.alpha, ctx.tuning_n)
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
            lead = _lead(ctx.kind, cand, other, arm)
            shortfalls.append(f"{ctx.candidate} does not yet clearly beat {arm} ({lead}): {_short_of(ctx, bound)}")
    values["arms_beaten"] = len(beaten)
    if not shortfalls:
        detail = f"{ctx.candidate} beats every other arm on {label} at {ctx.confidence:.0%}: " + ", ".join(beaten)
        return Condition("beats_every_arm", True, detail, values)
    return Condition("beats_every_arm", False, "; ".join(shortfalls), values)


def _chance_to_be_best(ctx: _Context) -> Condition:
    """For a bandit: the candidate's Bayesian chance to be best, as the report computes it."""
    label = _label(ctx.metric)
    with_stats = {arm: s for arm, s in ctx.stats.items() if s is not None}
    values: dict[str, Value] = {"candidate": ctx.candidate, "required": ctx.confidence}
    if ctx.candidate is None or ctx.control not in with_stats:
        return Condition("chance_to_be_best", False, f"no treatment arm has data on {label} yet", values)
    if ctx.kind == "rate" and not any(s.sum for s in with_stats.values()):
        return Condition("chance_to_be_best", False, f"no arm has any {label} events yet", values)
    results = bayes_compare(ctx.kind, with_stats, ctx.control, ctx.higher_is_better)
    for arm, result in results.items():
        values[f"{arm}:chance_to_be_best"] = result.chance_to_be_best
    chance = results[ctx.candidate].chance_to_be_best
    values["chance_to_be_best"] = chance
    if chance is None:
        error = results[ctx.candidate].error
        return Condition("chance_to_be_best", False, f"chance to be best is undefined: {error}", values)
    if chance >= ctx.confidence:
        detail = f"{ctx.candidate} has a {chance:.1%} chance to be best on {label} (needs {ctx.confidence:.0%})"
        return Condition("chance_to_be_best", True, detail, values)
    detail = (
        f"{ctx.candidate} has a {chance:.1%} chance to be best on {label}; needs {ctx.confidence:.0%} "
        f"({(ctx.confidence - chance) * 100:.1f} points short)"
    )
    return Condition("chance_to_be_best", False, detail, values)


def _guardrail(ctx: _Context, guardrail: Guardrail, arms: Sequence[ArmSummary]) -> Condition:
    """The candidate must not move a guardrail metric beyond its bound, nor leave a breach plausible.

    Fails when the relative change (candidate / control - 1) is beyond the bound, or when the
    always-valid interval of the absolute difference reaches beyond bound * control mean.
    """
    metric = guardrail.metric
    name = f"guardrail:{metric}"
    label = _label(metric)
    values: dict[str, Value] = {
        "metric": metric,
        "candidate": ctx.candidate,
        "max_relative_increase": guardrail.max_relative_increase,
        "max_relative_decrease": guardrail.max_relative_decrease,
    }
    if ctx.candidate is None:
        return Condition(name, False, f"{label}: no treatment arm to check", values)
    by_arm = {a.arm: a for a in arms}
    control_stats = arm_metric_stats(by_arm[ctx.control], metric)
    cand_stats = arm_metric_stats(by_arm[ctx.candidate], metric)
    if control_stats is None or cand_stats is None:
        return Condition(name, False, f"{label} is not computed, so the guardrail cannot be checked", values)
    kind = metric_kind(metric)
    seq = always_valid_difference(control_stats, cand_stats, ctx.alpha, ctx.tuning_n)
    control_mean, cand_mean = control_stats.mean, cand_stats.mean
    values.update(_sequential_values(seq))
    values.update({"control_value": control_mean if control_stats.n else None,
                   "candidate_value": cand_mean if cand_stats.n else None})  # fmt: skip
    if control_stats.n == 0 or cand_stats.n == 0 or control_mean == 0.0:
        why = "an arm has no data yet" if control_stats.n == 0 or cand_stats.n == 0 else "control's value is 0"
        detail = f"{label}: the relative change cannot be measured yet ({why}), so a breach cannot be ruled out"
        return Condition(name, False, detail, values)
    relative = cand_mean / control_mean - 1.0
    values["relative_change"] = relative
    change = f"{ctx.candidate} {_value(kind, cand_mean)} vs control {_value(kind, control_mean)} ({relative:+.1%})"
    interval = _usable(seq)
    if interval is None:
        why = _WHY_NOT_COMPARABLE.get(seq.error or "", seq.error)
        return Condition(name, False, f"{label}: {change}; a breach cannot be ruled out yet: {why}", values)
    problems: list[str] = []
    checks: list[str] = []
    for direction, bound, edge in (
        ("increase", guardrail.max_relative_increase, interval.high),
        ("decrease", guardrail.max_relative_decrease, interval.low),
    ):
        if bound is None:
            continue
        sign = 1.0 if direction == "increase" else -1.0
        allowed = sign * bound * control_mean  # the largest absolute difference the bound allows
        values[f"allowed_{direction}"] = allowed
        edge_relative = edge / control_mean
        values[f"{direction}_bound_relative"] = edge_relative
        if sign * relative > bound:
            problems.append(f"a {relative:+.1%} change breaks the bound of {sign * bound:+.0%}")
        elif sign * edge > sign * allowed:
            article = "an" if direction == "increase" else "a"
            problems.append(
                f"{article} {direction} beyond {sign * bound:+.0%} cannot be ruled out yet: the always-valid "
                f"{ctx.confidence:.0%} {'upper' if sign > 0 else 'lower'} bound of the difference "
                f"{_signed(edge)} ({edge_relative:+.1%} of control) is beyond the allowed {_signed(allowed)}; "
                "need more data"
            )
        else:
            checks.append(
                f"the always-valid {'upper' if sign > 0 else 'lower'} bound {_signed(edge)} "
                f"({edge_relative:+.1%}) is {'below' if sign > 0 else 'above'} the allowed {sign * bound:+.0%}"
            )
    if problems:
        return Condition(name, False, f"{label}: {change}; " + "; ".join(problems), values)
    return Condition(name, True, f"{label}: {change}; " + "; ".join(checks), values)


# ---------------------------------------------------------------------------------------------
# Summary.


def _summary(
    ctx: _Context,
    rule: PromotionRule,
    status: str,
    action: PromotionAction,
    blocking: list[Condition],
    conditions: list[Condition],
    sequential_win: bool,
) -> str:
    label = _label(ctx.metric)
    if action in ("promote", "notify"):
        how = (
            f"it beats control and every other arm on {label} by always-valid {ctx.confidence:.0%} intervals"
            if sequential_win
            else f"its chance to be best on {label} is at least {ctx.confidence:.0%}"
        )
        guards = sum(c.name.startswith("guardrail:") for c in conditions)
        rest = (
            f"every arm has enough decisions, the experiment has run long enough, the split matches "
            f"and {'every guardrail holds' if guards else 'no guardrail is set'}"
        )
        if action == "promote":
            share = f"all traffic less a {rule.holdback:.0%} holdback on control" if rule.holdback else "all traffic"
            return f"Promote {ctx.candidate}: {how}; {rest}. It gets {share}."
        return (
            f"{ctx.candidate} is a clear winner: {how}; {rest}. The rule says notify, so subscribers are "
            f"told and traffic stays as it is."
        )
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


def _lead(kind: MetricKind, arm: MeanStats, reference: MeanStats, reference_label: str) -> str:
    return f"{_value(kind, arm.mean)} vs {reference_label} {_value(kind, reference.mean)}"


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
