"""What the service's SQL hands the report builder: per-arm (and per-day) sufficient statistics."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from reports.metrics import METRICS, VALUE_METRICS
from reports.bandit import IpsSubjectSums, IpwArmStats, PeriodArmStats
from reports.cuped import CovariateStats
from reports.stats import MeanStats, SubjectSums

MetricKind = Literal["rate", "mean"]

# Rates whose success count is not ``reached[<event>]`` over ``decisions``.
CLICK_TO_OPEN = "click_to_open_rate"
# Rates where a rise is bad news: Bayesian "chance to beat control" counts a fall as a win.
LOWER_IS_BETTER = frozenset({"unsubscribe_rate"})


@dataclass(frozen=True, slots=True)
class ArmSummary:
    """One arm's totals over the report window."""

    arm: str
    is_control: bool
    expected_share: float  # configured share of traffic (fixed split) or mean logged propensity (bandit)
    decisions: int  # decisions (exposures) of this arm
    subjects: int  # distinct subjects
    reached: Mapping[str, int]  # event type -> decisions with at least one such event
    event_counts: Mapping[str, int]  # event type -> all events of that type
    revenue: MeanStats  # revenue per decision (n == decisions)
    converter_revenue: MeanStats  # revenue over decisions that converted (n == reached['conversion'])
    ltv_value: MeanStats | None = None  # LTV-adjusted value per decision, when computed
    ltv_components: Mapping[str, float] | None = None  # per-decision means, e.g. {"unsubscribe_loss": ...}
    covariate: CovariateStats | None = None  # CUPED inputs for the decision metric
    # metric -> per-subject sums, so every interval and test of that metric is clustered on subjects
    clusters: Mapping[str, SubjectSums] | None = None


@dataclass(frozen=True, slots=True)
class DailyArmSummary:
    """One arm's totals for one day (not cumulative)."""

    day: datetime.date
    arm: str
    decisions: int
    reached: Mapping[str, int]
    revenue: MeanStats


@dataclass(frozen=True, slots=True)
class BanditInput:
    """What a bandit-allocated experiment needs beyond the per-arm totals."""

    periods: Sequence[PeriodArmStats]  # reward per (period, arm) for the decision metric
    ipw: Sequence[IpwArmStats]
    n_total: int
    holdout: MeanStats | None  # reward of holdout (uniform random) decisions
    policy: MeanStats | None  # reward of decisions the bandit allocated
    metric: str | None = None  # what the rewards measure (a decision metric), or None: the bandit's own reward
    # guardrail metric -> logged-propensity sums of that metric, so guardrails of a bandit use IPS too
    guardrail_ipw: Mapping[str, Sequence[IpwArmStats]] = field(default_factory=dict)
    ips_clusters: IpsSubjectSums | None = None  # per-subject sums of the decision metric's IPS terms
    pending: int = 0  # decisions younger than the reward wait, left out of all of the above


@dataclass(frozen=True, slots=True)
class ReportInput:
    """Everything one A/B report is built from.

    ``metrics`` names built-in metrics (``reports.metrics.METRICS``) and ``<event>_rate`` for
    custom event types; the service adds the custom ones it knows from the experiment spec. The
    decision metric is always reported; ``ltv_adjusted_value`` only when some arm has ``ltv_value``.
    """

    experiment: str
    allocation_type: Literal["fixed", "bandit"]
    arms: Sequence[ArmSummary]
    daily: Sequence[DailyArmSummary] = ()
    metrics: Sequence[str] = METRICS
    decision_metric: str = "conversion_rate"
    confidence: float = 0.95
    sequential_tuning_n: float = 10_000
    bandit: BanditInput | None = None
    unattributed_events: Mapping[str, int] = field(default_factory=dict)  # reason -> count
    suppressed: Mapping[str, int] = field(default_factory=dict)  # reason -> requests that got no offer
    # Decisions per arm made under the configured split (e.g. before a promotion changed it), for the SRM
    # check of a fixed split; None means every decision was.
    srm_counts: Mapping[str, int] | None = None
    # The lifetime-value-adjusted comparison (reports.ltv.LtvReport.to_dict()), when value is known.
    ltv: Mapping[str, Any] | None = None
    generated_at: datetime.datetime | None = None


def control_arm(arms: Sequence[ArmSummary]) -> ArmSummary:
    """The one control arm; ValueError when arm names repeat or there is not exactly one control."""
    names = [a.arm for a in arms]
    if len(set(names)) != len(names):
        raise ValueError(f"arm names must be unique, got {names}")
    controls = [a for a in arms if a.is_control]
    if len(controls) != 1:
        raise ValueError(f"exactly one arm must be the control, got {len(controls)} of {names}")
    return controls[0]


def metric_kind(metric: str) -> MetricKind:
    """Say whether a metric name is a rate or a mean; raise ValueError for an unknown name."""
    if metric in VALUE_METRICS:
        return "mean"
    if metric.endswith("_rate") and len(metric) > len("_rate"):
        return "rate"
    raise ValueError(f"unknown metric {metric!r}: expected one of {', '.join(METRICS)} or '<event>_rate'")


def rate_stats(metric: str, decisions: int, reached: Mapping[str, int]) -> MeanStats:
    """Return a rate metric's successes over its denominator as 0/1 sufficient statistics.

    Click-to-open is decisions with a click over decisions with an open. Only the two counts are
    known, not their overlap, so clicks are capped at opens: clicks without a recorded open
    (images blocked) would otherwise push the rate above 1.
    """
    if metric == CLICK_TO_OPEN:
        opens = reached.get("open", 0)
        return MeanStats.proportion(opens, min(reached.get("click", 0), opens))
    return MeanStats.proportion(decisions, reached.get(metric.removesuffix("_rate"), 0))


def arm_metric_stats(arm: ArmSummary, metric: str) -> MeanStats | None:
    """Return the sufficient statistics of one metric for one arm (None when not computed), clustered on subjects."""
    stats: MeanStats | None
    if metric_kind(metric) == "rate":
        stats = rate_stats(metric, arm.decisions, arm.reached)
    elif metric == "revenue_per_decision":
        stats = arm.revenue
    elif metric == "revenue_per_converter":
        stats = arm.converter_revenue
    else:
        stats = arm.ltv_value
    clusters = arm.clusters.get(metric) if arm.clusters is not None else None
    if stats is not None and clusters is not None and stats.clusters is None:
        stats = stats.with_clusters(clusters)
    return stats
