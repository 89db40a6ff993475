"""Build the A/B report: per-arm sufficient statistics in, one ``Report`` value out.

Every number that cannot be computed (an arm without decisions, no conversions anywhere,
zero variance) is None, with the reason as an error code on its row (see
``reports.intervals``); bad input (no control arm, counts that contradict each other)
raises ValueError naming the rule and the value.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from reports.bandit import ips_difference, ipw_estimates, period_weighted_means, propensity_balance
from reports.bayes import BayesResult, bayes_compare
from reports.comparison import Comparison, compare, difference, holm
from reports.cuped import cuped_comparison, pooled_theta
from reports.inputs import (
    LOWER_IS_BETTER,
    ArmSummary,
    BanditInput,
    DailyArmSummary,
    MetricKind,
    ReportInput,
    arm_metric_stats,
    control_arm,
    metric_kind,
    rate_stats,
)
from reports.intervals import NO_EVENTS, NOT_COMPUTED, Estimate, check_confidence, mean_interval, rate_interval
from reports.sequential import always_valid_difference
from reports.srm import SrmResult, srm_check, srm_from_balance
from reports.stats import MeanStats

# ---------------------------------------------------------------------------------------------
# Result types: plain dataclasses, so pydantic can describe them in the OpenAPI document.


@dataclass(frozen=True, slots=True)
class ArmOverview:
    arm: str
    is_control: bool
    decisions: int
    subjects: int
    observed_share: float | None  # share of all decisions; None when there are none
    expected_share: float
    reached: dict[str, int]
    event_counts: dict[str, int]  # totals per event type over the arm (all events, not decisions reached)
    ltv_components: dict[str, float] | None
    revenue_total: float = 0.0  # revenue summed over the arm's decisions


@dataclass(frozen=True, slots=True)
class ArmMetricResult:
    """One arm on one metric, and (for a non-control arm) its comparison with the control."""

    arm: str
    metric: str
    is_control: bool
    n: int  # denominator: decisions; opens for click-to-open; converters for revenue per converter
    successes: int | None  # rates only
    value: float | None
    ci_low: float | None
    ci_high: float | None
    diff: float | None  # arm minus control
    diff_ci_low: float | None
    diff_ci_high: float | None
    lift: float | None  # arm / control - 1
    lift_ci_low: float | None
    lift_ci_high: float | None
    p_value: float | None
    p_value_holm: float | None  # adjusted across the non-control arms of this metric
    # p_value_holm below 1 - confidence AND every interval shown (difference, lift) excludes 0, so the badge
    # never sits next to an interval that contains no change
    significant: bool | None
    chance_to_beat_control: float | None
    chance_to_be_best: float | None
    expected_loss: float | None
    error: str | None


@dataclass(frozen=True, slots=True)
class MetricResult:
    metric: str
    kind: MetricKind
    higher_is_better: bool
    arms: list[ArmMetricResult]


@dataclass(frozen=True, slots=True)
class SequentialRow:
    """Always-valid numbers for one arm against control, beside the fixed-horizon ones."""

    arm: str
    diff: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    significant: bool | None
    fixed_ci_low: float | None
    fixed_ci_high: float | None
    fixed_p_value: float | None
    error: str | None


@dataclass(frozen=True, slots=True)
class SequentialSection:
    metric: str
    alpha: float
    tuning_n: float
    arms: list[SequentialRow]


@dataclass(frozen=True, slots=True)
class CupedRow:
    """CUPED-adjusted comparison for one arm against control, beside the raw one."""

    arm: str
    control_mean: float | None
    treatment_mean: float | None
    diff: float | None
    diff_ci_low: float | None
    diff_ci_high: float | None
    p_value: float | None
    p_value_holm: float | None
    significant: bool | None
    variance_reduction: float | None
    raw_diff: float | None
    raw_diff_ci_low: float | None
    raw_diff_ci_high: float | None
    raw_p_value: float | None
    error: str | None


@dataclass(frozen=True, slots=True)
class CupedSection:
    metric: str
    theta: float | None
    arms: list[CupedRow]


@dataclass(frozen=True, slots=True)
class SeriesValue:
    value: float | None
    ci_low: float | None
    ci_high: float | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class DailyPoint:
    """Cumulative numbers of one arm up to and including one day."""

    day: datetime.date
    arm: str
    decisions: int
    metrics: dict[str, SeriesValue]  # each rate metric and revenue_per_decision
    diff_vs_control: SeriesValue | None  # decision metric, arm minus control; None for the control


@dataclass(frozen=True, slots=True)
class BanditArm:
    arm: str
    decisions: int
    naive_mean: float | None  # all of the arm's decisions pooled: biased under adaptive allocation
    weighted_mean: float | None  # periods weighted equally across arms
    weighted_std_error: float | None
    weighted_ci_low: float | None
    weighted_ci_high: float | None
    ips: float | None
    ips_ci_low: float | None
    ips_ci_high: float | None
    snips: float | None
    snips_ci_low: float | None
    snips_ci_high: float | None
    effective_sample_size: float | None
    weighted_error: str | None
    ipw_error: str | None
    # IPS difference against control with its always-valid interval: what promotion of a bandit arm uses
    ips_diff: float | None = None
    ips_diff_ci_low: float | None = None
    ips_diff_ci_high: float | None = None
    ips_diff_p_value: float | None = None
    ips_diff_error: str | None = None


@dataclass(frozen=True, slots=True)
class PolicyVsHoldout:
    """The bandit's own decisions against its uniform-random holdout (Welch)."""

    policy_decisions: int
    policy_mean: float | None
    holdout_decisions: int
    holdout_mean: float | None
    comparison: Comparison  # policy minus holdout


@dataclass(frozen=True, slots=True)
class BanditSection:
    metric: str
    arms: list[BanditArm]
    policy_vs_holdout: PolicyVsHoldout | None
    notes: list[str]
    pending: int = 0  # decisions younger than the reward wait: not yet counted here


@dataclass(frozen=True, slots=True)
class Report:
    experiment: str
    allocation_type: Literal["fixed", "bandit"]
    generated_at: datetime.datetime | None
    confidence: float
    decision_metric: str
    arms: list[ArmOverview]
    metrics: list[MetricResult]
    srm: SrmResult
    sequential: SequentialSection | None
    cuped: CupedSection | None
    daily: list[DailyPoint]
    bandit: BanditSection | None
    unattributed_events: dict[str, int]  # reason -> events kept but not attributed to a decision
    unattributed_total: int
    suppressed: dict[str, int]  # reason -> requests answered with no offer
    suppressed_total: int
    warnings: list[str]  # what the analyst must see first (SRM, unattributed events, ...)
    ltv: dict[str, Any] | None = None  # lifetime-value-adjusted comparison with its decomposition


# ---------------------------------------------------------------------------------------------
# The builder.


def build_report(report_input: ReportInput) -> Report:
    """Build the A/B report of one experiment from its per-arm sufficient statistics."""
    inp = report_input
    control = _validate(inp)
    metrics = _resolve_metrics(inp)
    metric_results = [_metric_result(m, inp.arms, control, inp.confidence) for m in metrics]
    srm = _srm(inp)
    fixed = next((m.arms for m in metric_results if m.metric == inp.decision_metric), [])
    sequential = _sequential(inp, control, fixed)
    cuped = _cuped(inp, control, fixed)
    bandit = None
    if inp.allocation_type == "bandit" and inp.bandit is not None:
        bandit = _bandit(inp.bandit, inp.decision_metric, inp.confidence, control.arm, inp.sequential_tuning_n)
    total = sum(a.decisions for a in inp.arms)
    arms = [
        ArmOverview(
            arm=a.arm,
            is_control=a.is_control,
            decisions=a.decisions,
            subjects=a.subjects,
            observed_share=a.decisions / total if total else None,
            expected_share=a.expected_share,
            reached=dict(a.reached),
            event_counts=dict(a.event_counts),
            ltv_components=dict(a.ltv_components) if a.ltv_components is not None else None,
            revenue_total=a.revenue.sum,
        )
        for a in inp.arms
    ]
    return Report(
        experiment=inp.experiment,
        allocation_type=inp.allocation_type,
        generated_at=inp.generated_at,
        confidence=inp.confidence,
        decision_metric=inp.decision_metric,
        arms=arms,
        metrics=metric_results,
        srm=srm,
        sequential=sequential,
        cuped=cuped,
        daily=_daily(inp, metrics, control),
        bandit=bandit,
        unattributed_events=dict(inp.unattributed_events),
        unattributed_total=sum(inp.unattributed_events.values()),
        suppressed=dict(inp.suppressed),
        suppressed_total=sum(inp.suppressed.values()),
        warnings=_warnings(inp, srm),
        ltv=dict(inp.ltv) if inp.ltv is not None else None,
    )


def _validate(inp: ReportInput) -> ArmSummary:
    """Check the input's rules; return the control arm."""
    check_confidence(inp.confidence)
    if inp.allocation_type not in ("fixed", "bandit"):
        raise ValueError(f"allocation_type must be 'fixed' or 'bandit', got {inp.allocation_type!r}")
    control = control_arm(inp.arms)
    metric_kind(inp.decision_metric)
    for a in inp.arms:
        _check_counts(f"arm {a.arm!r}", a.decisions, a.reached)
    for d in inp.daily:
        _check_counts(f"arm {d.arm!r} on {d.day}", d.decisions, d.reached)
    return control


def _check_counts(where: str, decisions: int, reached: Mapping[str, int]) -> None:
    if decisions < 0:
        raise ValueError(f"{where}: decisions must be >= 0, got {decisions}")
    for event, count in reached.items():
        if not 0 <= count <= decisions:
            raise ValueError(f"{where}: reached[{event!r}] must be between 0 and decisions ({decisions}), got {count}")


def _resolve_metrics(inp: ReportInput) -> list[str]:
    """Return the requested metrics in order, once each, the decision metric always; LTV only where computed."""
    metrics = list(dict.fromkeys([*inp.metrics, inp.decision_metric]))
    for metric in metrics:
        metric_kind(metric)
    if all(a.ltv_value is None for a in inp.arms) and "ltv_adjusted_value" in metrics:
        metrics.remove("ltv_adjusted_value")
    return metrics


def _alpha(confidence: float) -> float:
    """Return 1 - confidence without the float residue (0.05, not 0.050000000000000044)."""
    return round(1.0 - confidence, 12)


def _significant(p_value: float | None, alpha: float) -> bool | None:
    return None if p_value is None else p_value < alpha


def _excludes_zero(low: float | None, high: float | None) -> bool:
    return bool(low is None or high is None or low > 0.0 or high < 0.0)


def _agrees(significant: bool | None, cmp: Comparison | None) -> bool | None:
    """Keep a significant badge only where the difference and lift intervals shown also exclude 0."""
    if not significant or cmp is None:
        return significant
    return _excludes_zero(cmp.diff_ci_low, cmp.diff_ci_high) and _excludes_zero(cmp.lift_ci_low, cmp.lift_ci_high)


def _estimate(kind: MetricKind, stats: MeanStats, confidence: float) -> Estimate:
    return rate_interval(stats, confidence) if kind == "rate" else mean_interval(stats, confidence)


def _metric_result(metric: str, arms: Sequence[ArmSummary], control: ArmSummary, confidence: float) -> MetricResult:
    kind = metric_kind(metric)
    higher_is_better = metric not in LOWER_IS_BETTER
    stats = {a.arm: arm_metric_stats(a, metric) for a in arms}
    control_stats = stats[control.arm]
    comparisons: dict[str, Comparison] = {}
    if control_stats is not None:
        for arm, s in stats.items():
            if arm != control.arm and s is not None:
                comparisons[arm] = compare(kind, control_stats, s, confidence)
    adjusted = dict(zip(comparisons, holm([c.p_value for c in comparisons.values()]), strict=True))
    with_stats = {arm: s for arm, s in stats.items() if s is not None}
    # No events in any arm: every posterior is the prior, so Bayesian numbers would only echo it.
    no_events = kind == "rate" and not any(s.sum for s in with_stats.values())
    bayes: dict[str, BayesResult] = {}
    if control_stats is not None and not no_events:
        bayes = bayes_compare(kind, with_stats, control.arm, higher_is_better)
    rows = []
    for a in arms:
        s = stats[a.arm]
        est = _estimate(kind, s, confidence) if s is not None else Estimate(None, None, None, None, NOT_COMPUTED)
        cmp = comparisons.get(a.arm)
        b = bayes.get(a.arm)
        missing_control = not a.is_control and control_stats is None
        rows.append(
            ArmMetricResult(
                arm=a.arm,
                metric=metric,
                is_control=a.is_control,
                n=s.n if s is not None else 0,
                successes=round(s.sum) if s is not None and kind == "rate" else None,
                value=est.value,
                ci_low=est.ci_low,
                ci_high=est.ci_high,
                diff=cmp.diff if cmp else None,
                diff_ci_low=cmp.diff_ci_low if cmp else None,
                diff_ci_high=cmp.diff_ci_high if cmp else None,
                lift=cmp.lift if cmp else None,
                lift_ci_low=cmp.lift_ci_low if cmp else None,
                lift_ci_high=cmp.lift_ci_high if cmp else None,
                p_value=cmp.p_value if cmp else None,
                p_value_holm=adjusted.get(a.arm),
                significant=_agrees(_significant(adjusted.get(a.arm), _alpha(confidence)), cmp),
                chance_to_beat_control=b.chance_to_beat_control if b else None,
                chance_to_be_best=b.chance_to_be_best if b else None,
                expected_loss=b.expected_loss if b else None,
                error=est.error
                or (cmp.error if cmp else None)
                or (b.error if b else None)
                or (NOT_COMPUTED if missing_control else None)
                or (NO_EVENTS if no_events else None),
            )
        )
    return MetricResult(metric, kind, higher_is_better, rows)


def _srm(inp: ReportInput) -> SrmResult:
    observed = dict(inp.srm_counts) if inp.srm_counts is not None else {a.arm: a.decisions for a in inp.arms}
    shares = {a.arm: a.expected_share for a in inp.arms}
    if inp.allocation_type == "bandit" and inp.bandit is not None and inp.bandit.ipw:
        check = propensity_balance(list(inp.bandit.ipw), inp.bandit.n_total)
        return srm_from_balance(check, observed, shares)
    return srm_check(observed, shares)


def _sequential(inp: ReportInput, control: ArmSummary, fixed: list[ArmMetricResult]) -> SequentialSection | None:
    """Always-valid intervals for the decision metric, next to the fixed-horizon ones."""
    control_stats = arm_metric_stats(control, inp.decision_metric)
    if control_stats is None:
        return None
    alpha = _alpha(inp.confidence)
    fixed_rows = {r.arm: r for r in fixed}
    rows = []
    for a in inp.arms:
        s = arm_metric_stats(a, inp.decision_metric)
        if a.is_control or s is None:
            continue
        seq = always_valid_difference(control_stats, s, alpha=alpha, tuning_n=inp.sequential_tuning_n)
        f = fixed_rows[a.arm]
        rows.append(
            SequentialRow(
                arm=a.arm,
                diff=seq.estimate,
                ci_low=seq.ci_low,
                ci_high=seq.ci_high,
                p_value=seq.p_value,
                significant=_significant(seq.p_value, alpha),
                fixed_ci_low=f.diff_ci_low,
                fixed_ci_high=f.diff_ci_high,
                fixed_p_value=f.p_value,
                error=seq.error,
            )
        )
    return SequentialSection(inp.decision_metric, alpha, inp.sequential_tuning_n, rows)


def _cuped(inp: ReportInput, control: ArmSummary, fixed: list[ArmMetricResult]) -> CupedSection | None:
    """CUPED-adjusted comparisons of the decision metric, when every arm has its covariate."""
    covariates = {a.arm: a.covariate for a in inp.arms if a.covariate is not None}
    if len(covariates) < len(inp.arms):
        return None
    alpha = _alpha(inp.confidence)
    theta = pooled_theta(list(covariates.values()))
    adjusted = {
        arm: cuped_comparison(covariates[control.arm], cov, theta, alpha=alpha)
        for arm, cov in covariates.items()
        if arm != control.arm
    }
    holm_p = dict(zip(adjusted, holm([c.p_value for c in adjusted.values()]), strict=True))
    rows = []
    for r in fixed:
        if r.is_control:
            continue
        c = adjusted[r.arm]
        rows.append(
            CupedRow(
                arm=r.arm,
                control_mean=c.control_mean,
                treatment_mean=c.treatment_mean,
                diff=c.difference,
                diff_ci_low=c.ci_low,
                diff_ci_high=c.ci_high,
                p_value=c.p_value,
                p_value_holm=holm_p[r.arm],
                significant=bool(_significant(holm_p[r.arm], alpha)) and _excludes_zero(c.ci_low, c.ci_high)
                if holm_p[r.arm] is not None else None,
                variance_reduction=c.variance_reduction,
                raw_diff=r.diff,
                raw_diff_ci_low=r.diff_ci_low,
                raw_diff_ci_high=r.diff_ci_high,
                raw_p_value=r.p_value,
                error=c.error,
            )
        )
    return CupedSection(inp.decision_metric, theta, rows)


def _daily(inp: ReportInput, metrics: list[str], control: ArmSummary) -> list[DailyPoint]:
    """Cumulative per-arm series for charts: rates with Wilson bands, revenue, lift on the decision metric."""
    if not inp.daily:
        return []
    rates = [m for m in metrics if metric_kind(m) == "rate"]
    arms = [a.arm for a in inp.arms] + sorted({d.arm for d in inp.daily} - {a.arm for a in inp.arms})
    by_day: dict[datetime.date, list[DailyArmSummary]] = {}
    for d in inp.daily:
        by_day.setdefault(d.day, []).append(d)
    totals = {arm: DailyArmSummary(datetime.date.min, arm, 0, {}, MeanStats(0, 0.0, 0.0)) for arm in arms}
    decision_kind = metric_kind(inp.decision_metric)
    points = []
    for day in sorted(by_day):
        for d in by_day[day]:
            t = totals[d.arm]
            reached = dict(t.reached)
            for event, count in d.reached.items():
                reached[event] = reached.get(event, 0) + count
            totals[d.arm] = DailyArmSummary(day, d.arm, t.decisions + d.decisions, reached, t.revenue + d.revenue)
        control_stats = _daily_stats(totals[control.arm], inp.decision_metric)
        for arm in arms:
            t = totals[arm]
            series = {m: _series(rate_interval(rate_stats(m, t.decisions, t.reached), inp.confidence)) for m in rates}
            series["revenue_per_decision"] = _series(mean_interval(t.revenue, inp.confidence))
            diff = None
            if arm != control.arm:
                arm_stats = _daily_stats(t, inp.decision_metric)
                if control_stats is None or arm_stats is None:
                    diff = SeriesValue(None, None, None, NOT_COMPUTED)
                else:
                    diff = _series(difference(decision_kind, control_stats, arm_stats, inp.confidence))
            points.append(DailyPoint(day, arm, t.decisions, series, diff))
    return points


def _daily_stats(totals: DailyArmSummary, metric: str) -> MeanStats | None:
    """Return a metric's statistics from daily totals; None for the means days do not carry."""
    if metric_kind(metric) == "rate":
        return rate_stats(metric, totals.decisions, totals.reached)
    return totals.revenue if metric == "revenue_per_decision" else None


def _series(est: Estimate) -> SeriesValue:
    return SeriesValue(est.value, est.ci_low, est.ci_high, est.error)


BANDIT_NOTES = (
    "A bandit moves traffic towards the arms that look best so far, so each arm's decisions come "
    "from different periods in different proportions. When the reward itself changes over time "
    "(weekday, season, novelty, a sale), pooling an arm's decisions mixes those periods unevenly "
    "and the naive per-arm means are biased; they can even rank the arms the wrong way round "
    "(Simpson's paradox).",
    "The period-weighted means compare arms within each period (those in which every arm was "
    "played) and weight each period by its share of all decisions, with the same weights for every arm.",
    "IPS and SNIPS weight each logged decision by 1 / the probability the policy gave its arm: "
    "they estimate what each arm would earn if it were chosen for everyone. SNIPS (self-normalised) "
    "has lower variance; a small effective sample size means few decisions carry the estimate.",
    "The bandit's own value is compared with its uniform-random holdout: that difference is what "
    "the bandit earned over not optimising at all.",
    "Promotion compares a bandit's arms by the IPS difference against control (ips_diff) with an always-valid "
    "interval over all logged decisions, never by the pooled per-arm numbers: valid under any allocation when "
    "the logged propensities are right, and however often it is looked at.",
)


def _bandit(bandit: BanditInput, metric: str, confidence: float, control: str = "",
            tuning_n: float = 10_000) -> BanditSection:
    """Period-weighted means, IPW/SNIPS per arm, and the policy against its holdout."""
    alpha = _alpha(confidence)
    naive: dict[str, MeanStats] = {}
    for cell in bandit.periods:
        naive[cell.arm] = naive[cell.arm] + cell.reward if cell.arm in naive else cell.reward
    weighted = period_weighted_means(list(bandit.periods), alpha=alpha)
    ipw = ipw_estimates(list(bandit.ipw), bandit.n_total, alpha=alpha)
    arms = list(dict.fromkeys([*naive, *weighted, *ipw]))
    by_arm = {s.arm: s for s in bandit.ipw}
    rows = []
    for arm in arms:
        n, w, e = naive.get(arm), weighted.get(arm), ipw.get(arm)
        versus_control = (
            ips_difference(by_arm, bandit.n_total, control, arm, alpha, tuning_n, bandit.ips_clusters)
            if arm != control and control in by_arm
            else None
        )
        rows.append(
            BanditArm(
                arm=arm,
                decisions=n.n if n else 0,
                naive_mean=n.mean if n and n.n else None,
                weighted_mean=w.mean if w else None,
                weighted_std_error=w.std_error if w else None,
                weighted_ci_low=w.ci_low if w else None,
                weighted_ci_high=w.ci_high if w else None,
                ips=e.ips if e else None,
                ips_ci_low=e.ips_ci_low if e else None,
                ips_ci_high=e.ips_ci_high if e else None,
                snips=e.snips if e else None,
                snips_ci_low=e.snips_ci_low if e else None,
                snips_ci_high=e.snips_ci_high if e else None,
                effective_sample_size=e.effective_sample_size if e else None,
                weighted_error=w.error if w else NOT_COMPUTED,
                ipw_error=e.error if e else NOT_COMPUTED,
                ips_diff=versus_control.estimate if versus_control else None,
                ips_diff_ci_low=versus_control.ci_low if versus_control else None,
                ips_diff_ci_high=versus_control.ci_high if versus_control else None,
                ips_diff_p_value=versus_control.p_value if versus_control else None,
                ips_diff_error=versus_control.error if versus_control else None,
            )
        )
    versus = None
    if bandit.policy is not None and bandit.holdout is not None:
        versus = PolicyVsHoldout(
            policy_decisions=bandit.policy.n,
            policy_mean=bandit.policy.mean if bandit.policy.n else None,
            holdout_decisions=bandit.holdout.n,
            holdout_mean=bandit.holdout.mean if bandit.holdout.n else None,
            comparison=compare("mean", bandit.holdout, bandit.policy, confidence),
        )
    notes = list(BANDIT_NOTES)
    if bandit.pending:
        notes.append(f"{bandit.pending:,} decisions are younger than the reward wait and are not counted in this "
                     "section yet: until then a decision has had no time to fail.")
    return BanditSection(metric, rows, versus, notes, bandit.pending)


def _warnings(inp: ReportInput, srm: SrmResult) -> list[str]:
    warnings = []
    if srm.warning and srm.message:
        warnings.append(srm.message)
    empty = [a.arm for a in inp.arms if a.decisions == 0]
    if empty:
        warnings.append(f"No decisions yet for arm(s) {', '.join(empty)}: their numbers are empty.")
    unattributed = sum(inp.unattributed_events.values())
    if unattributed:
        reasons = ", ".join(f"{reason} {count:,}" for reason, count in inp.unattributed_events.items())
        warnings.append(
            f"{unattributed:,} events could not be attributed to a decision ({reasons}); "
            "they are kept but are not counted in the numbers above."
        )
    if inp.allocation_type == "bandit":
        warnings.append(
            "Bandit allocation: the per-arm numbers pool decisions from periods the bandit allocated "
            "differently and can be biased; see the bandit section (period-weighted and IPW estimates)."
        )
    return warnings
