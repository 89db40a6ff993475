"""SQL that turns decisions and outcome summaries into the report's sufficient statistics.

A report over the whole experiment reads the rollups the database keeps current
(service/store/rollups.py): O(arms x days) rows. A segment or a time window, CUPED,
LTV-adjusted value, custom events and the bandit section read the logs: GROUP BY arm (and day) over
two narrow tables, `assignments` for the denominators and `decision_outcomes` for the
numerators. A decision without outcomes contributes zero to every sum.
"""

from __future__ import annotations

from collections import defaultdict
from contextvars import ContextVar
from typing import Any

from sqlalchemy import Float, and_, case, cast, func, literal, select, text, true
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from experiments.spec import BanditAllocation, ExperimentSpec
from reports.inputs import ArmSummary, BanditInput, DailyArmSummary, ReportInput
from reports.stats import MeanStats, SubjectSums

from service.store import rollups
from service.store.rollups import EVENTS as ROLLUP_EVENTS, ArmTotals
from service.store.models import Assignment, DecisionCustomOutcome, DecisionOutcome, Event, Experiment, Subject, SubjectValue, SuppressedRequest

O = DecisionOutcome
A = Assignment


# The subjects a report is restricted to (a segment of a breakdown), or None for everyone.
_segment: ContextVar[Any] = ContextVar("report_segment", default=None)


# The decision times a report is restricted to, [since, until), or None for all (e.g. matured decisions after
# a promotion).
_window: ContextVar[tuple[Any, Any] | None] = ContextVar("report_window", default=None)


def _a_scope(eid: int) -> ColumnElement[bool]:
    """Decisions of the experiment, within the current segment and time window."""
    subjects = _segment.get()
    clause = A.experiment_id == eid
    if subjects is not None:
        clause = and_(clause, A.subject_id.in_(subjects))
    window = _window.get()
    if window is not None:
        since, until = window
        if since is not None:
            clause = and_(clause, A.created_at >= since)
        if until is not None:
            clause = and_(clause, A.created_at < until)
    return clause


def _segment_of(assignment_id: Any, eid: int) -> ColumnElement[bool]:
    if _segment.get() is None and _window.get() is None:
        return true()
    return assignment_id.in_(select(A.id).where(_a_scope(eid)))


def window_report_input(session: Session, experiment: Experiment, spec: ExperimentSpec, since: Any,
                        until: Any) -> ReportInput:
    """The report input restricted to decisions made in [since, until) (None: open-ended)."""
    token = _window.set((since, until))
    try:
        return report_input(session, experiment, spec)
    finally:
        _window.reset(token)


def _o_scope(eid: int) -> ColumnElement[bool]:
    """Outcome summaries of the experiment, within the current segment."""
    return and_(O.experiment_id == eid, _segment_of(O.assignment_id, eid))


def segment_values(session: Session, experiment: Experiment, attribute: str) -> list[str | None]:
    """The values a profile attribute takes among the experiment's subjects (None: unknown)."""
    column = _attribute_column(attribute)
    rows = session.execute(
        select(column).select_from(A).outerjoin(Subject, Subject.subject_id == A.subject_id)
        .where(A.experiment_id == experiment.id).group_by(column).order_by(column).limit(50)
    ).scalars().all()
    return [None if v is None else str(v) for v in rows]


def _attribute_column(attribute: str) -> Any:
    if attribute in ("loyalty_tier", "timezone"):
        return getattr(Subject, attribute)
    if attribute.startswith("attributes.") and len(attribute) > 11:
        return Subject.attributes[attribute[11:]].as_string()
    raise ValueError(f"segment_by takes loyalty_tier, timezone or attributes.<name>, got {attribute!r}")


def segment_report_input(session: Session, experiment: Experiment, spec: ExperimentSpec, attribute: str,
                         value: str | None) -> ReportInput:
    """The report input restricted to the subjects whose profile attribute has `value` (None: unknown)."""
    column = _attribute_column(attribute)
    profiled = select(Subject.subject_id).where(column == value) if value is not None else None
    if value is None:
        known = select(Subject.subject_id).where(column.is_not(None))
        subjects: Any = select(A.subject_id).where(A.experiment_id == experiment.id, A.subject_id.not_in(known))
    else:
        subjects = profiled
    token = _segment.set(subjects)
    try:
        return report_input(session, experiment, spec)
    finally:
        _segment.reset(token)


def _indicator(column: Any) -> Any:
    return case((column > 0, 1), else_=0)


def subject_sums(session: Session, eid: int, spec: ExperimentSpec) -> dict[str, dict[str, SubjectSums]]:
    """Per arm and metric, the per-subject sums that cluster every interval and test on subjects.

    One GROUP BY subject subquery per arm (GrowthBook's ratio-metric inputs): for each metric
    with per-subject denominator n_i and numerator y_i, the subjects K, sum n_i^2, sum y_i^2 and
    sum n_i y_i (``reports.stats.SubjectSums``). Decisions without outcomes count as zeros.
    """
    per_decision = (
        select(
            A.arm_key.label("arm"), A.subject_id.label("subject"),
            _indicator(O.opens).label("o"), _indicator(O.clicks).label("k"),
            _indicator(O.conversions).label("c"), _indicator(O.unsubscribes).label("u"),
            func.coalesce(O.revenue, 0.0).label("rev"),
            case((O.conversions > 0, func.coalesce(O.revenue, 0.0)), else_=0.0).label("crev"),
            case((and_(O.opens > 0, O.clicks > 0), 1), else_=0).label("ko"),
        )
        .select_from(A).outerjoin(O, O.assignment_id == A.id).where(_a_scope(eid)).subquery()
    )
    q = per_decision.c
    per_subject = (
        select(q.arm, func.count().label("d"), func.sum(q.o).label("o"), func.sum(q.k).label("k"),
               func.sum(q.c).label("c"), func.sum(q.u).label("u"), func.sum(q.rev).label("rev"),
               func.sum(q.crev).label("crev"), func.sum(q.ko).label("ko"))
        .group_by(q.arm, q.subject).subquery()
    )
    p = per_subject.c
    columns: list[Any] = [p.arm, func.count().label("k_all"), func.sum(p.d * p.d).label("d2")]
    for name in ("o", "k", "c", "u", "rev"):
        col = getattr(p, name)
        columns += [func.sum(col * col).label(f"{name}_y2"), func.sum(p.d * col).label(f"{name}_ny")]
    columns += [
        func.sum(case((p.c > 0, 1), else_=0)).label("k_conv"), func.sum(p.c * p.c).label("conv_n2"),
        func.sum(p.crev * p.crev).label("crev_y2"), func.sum(p.c * p.crev).label("crev_ny"),
        func.sum(case((p.o > 0, 1), else_=0)).label("k_open"), func.sum(p.o * p.o).label("open_n2"),
        func.sum(p.ko * p.ko).label("ko_y2"), func.sum(p.o * p.ko).label("ko_ny"),
    ]
    out: dict[str, dict[str, SubjectSums]] = {}
    for row in session.execute(select(*columns).group_by(p.arm)):
        k, d2 = int(row.k_all), float(row.d2 or 0)
        sums = {
            f"{event}_rate": SubjectSums(k, d2, float(getattr(row, f"{name}_y2") or 0),
                                         float(getattr(row, f"{name}_ny") or 0))
            for name, event in (("o", "open"), ("k", "click"), ("c", "conversion"), ("u", "unsubscribe"))
        }
        sums["revenue_per_decision"] = SubjectSums(k, d2, float(row.rev_y2 or 0), float(row.rev_ny or 0))
        sums["revenue_per_converter"] = SubjectSums(int(row.k_conv or 0), float(row.conv_n2 or 0),
                                                    float(row.crev_y2 or 0), float(row.crev_ny or 0))
        sums["click_to_open_rate"] = SubjectSums(int(row.k_open or 0), float(row.open_n2 or 0),
                                                 float(row.ko_y2 or 0), float(row.ko_ny or 0))
        out[row.arm] = sums
    if spec.custom_events:
        _custom_subject_sums(session, eid, out)
    return out


def _custom_subject_sums(session: Session, eid: int, out: dict[str, dict[str, SubjectSums]]) -> None:
    """Add ``<event>_rate`` sums for the experiment's custom event types to ``out``."""
    C = DecisionCustomOutcome
    decided = (
        select(A.arm_key.label("arm"), A.subject_id.label("subject"), func.count().label("d"))
        .where(_a_scope(eid)).group_by(A.arm_key, A.subject_id).subquery()
    )
    reached = (
        select(A.arm_key.label("arm"), A.subject_id.label("subject"), C.event_type.label("event"),
               func.count().label("y"))
        .select_from(A).join(C, C.assignment_id == A.id)
        .where(_a_scope(eid), C.experiment_id == eid)
        .group_by(A.arm_key, A.subject_id, C.event_type).subquery()
    )
    rows = session.execute(
        select(reached.c.arm, reached.c.event, func.sum(reached.c.y * reached.c.y).label("y2"),
               func.sum(decided.c.d * reached.c.y).label("ny"))
        .select_from(reached)
        .join(decided, and_(decided.c.arm == reached.c.arm, decided.c.subject == reached.c.subject))
        .group_by(reached.c.arm, reached.c.event)
    )
    found = {(row.arm, row.event): row for row in rows}
    for arm, sums in out.items():
        base = sums["conversion_rate"]
        for (a, event), row in found.items():
            if a == arm:
                sums[f"{event}_rate"] = SubjectSums(base.subjects, base.sum_n2, float(row.y2 or 0), float(row.ny or 0))


def _reached(column: Any) -> ColumnElement[int]:
    return func.sum(case((column > 0, 1), else_=0))


def decision_value(spec: ExperimentSpec, metric: str) -> ColumnElement[float]:
    """Per-decision value of a metric as a SQL expression over decision_outcomes."""
    if metric == "revenue_per_decision":
        return O.revenue
    column = {"conversion_rate": O.conversions, "click_rate": O.clicks, "open_rate": O.opens,
              "unsubscribe_rate": O.unsubscribes}.get(metric, O.conversions)
    return cast(case((column > 0, 1.0), else_=0.0), Float)


_PER_DECISION_METRICS = frozenset(
    {"revenue_per_decision", "conversion_rate", "click_rate", "open_rate", "unsubscribe_rate"})


def bandit_metric(spec: ExperimentSpec) -> str | None:
    """The metric the bandit section and promotion's IPS sums measure: the decision metric where SQL has it."""
    metric = spec.promotion.metric if spec.promotion else None
    return metric if metric in _PER_DECISION_METRICS else None


def reward_value(spec: ExperimentSpec) -> ColumnElement[float]:
    """Per-decision bandit reward as a SQL expression (event reached, or its revenue)."""
    reward = spec.reward
    if reward.type == "event" and reward.value == "revenue":
        return O.revenue
    column = {"conversion": O.conversions, "click": O.clicks, "open": O.opens,
              "unsubscribe": O.unsubscribes}.get(reward.event, O.conversions)
    return cast(case((column > 0, 1.0), else_=0.0), Float)


def _whole_experiment() -> bool:
    """Whether the report covers every decision (no segment, no time window): then the rollups serve it."""
    return _segment.get() is None and _window.get() is None


def _scanned_totals(session: Session, eid: int) -> dict[str, ArmTotals]:
    """Per-arm totals aggregated from the logs, within the current segment and time window."""
    totals: dict[str, ArmTotals] = {}
    for row in session.execute(
        select(A.arm_key, func.count().label("n"), func.count(func.distinct(A.subject_id)).label("subjects"),
               func.sum(A.propensity).label("propensity_sum"))
        .where(_a_scope(eid)).group_by(A.arm_key)
    ):
        totals[row.arm_key] = ArmTotals(decisions=int(row.n), subjects=int(row.subjects),
                                        propensity_sum=float(row.propensity_sum or 0))
    for o in session.execute(
        select(
            O.arm_key,
            _reached(O.opens).label("r_open"), _reached(O.clicks).label("r_click"),
            _reached(O.conversions).label("r_conversion"), _reached(O.unsubscribes).label("r_unsubscribe"),
            func.sum(O.opens).label("n_open"), func.sum(O.clicks).label("n_click"),
            func.sum(O.conversions).label("n_conversion"), func.sum(O.unsubscribes).label("n_unsubscribe"),
            func.sum(O.revenue).label("revenue"), func.sum(O.revenue * O.revenue).label("revenue2"),
            func.sum(case((O.conversions > 0, O.revenue), else_=0.0)).label("conv_revenue"),
            func.sum(case((O.conversions > 0, O.revenue * O.revenue), else_=0.0)).label("conv_revenue2"),
        ).where(_o_scope(eid)).group_by(O.arm_key)
    ):
        arm = totals.setdefault(o.arm_key, ArmTotals())
        arm.reached = {event: int(getattr(o, f"r_{event}") or 0) for event in ROLLUP_EVENTS}
        arm.counts = {event: int(getattr(o, f"n_{event}") or 0) for event in ROLLUP_EVENTS}
        arm.revenue, arm.revenue2 = float(o.revenue or 0.0), float(o.revenue2 or 0.0)
        arm.converter_revenue, arm.converter_revenue2 = float(o.conv_revenue or 0.0), float(o.conv_revenue2 or 0.0)
    return totals


def report_input(session: Session, experiment: Experiment, spec: ExperimentSpec) -> ReportInput:
    """The report's sufficient statistics: from the rollups for the whole experiment, else from the logs."""
    eid = experiment.id
    whole = _whole_experiment()
    if session.get_bind().dialect.name == "postgresql":
        # What still reads the logs (a segment or window, CUPED, LTV, custom events, the bandit section)
        # counts distinct subjects and sums per subject: sorted in memory instead of spilling to disk.
        session.execute(text("SET LOCAL work_mem = '64MB'"))
    if whole:
        clusters = rollups.cluster_sums(session, eid)
        totals = rollups.arm_totals(session, eid, clusters)
        if spec.custom_events:
            _custom_subject_sums(session, eid, clusters)
    else:
        totals = _scanned_totals(session, eid)
        clusters = subject_sums(session, eid, spec)
    custom: dict[str, dict[str, tuple[int, int]]] = defaultdict(dict)
    if spec.custom_events:
        for row in session.execute(
            select(DecisionCustomOutcome.arm_key, DecisionCustomOutcome.event_type, func.count().label("reached"),
                   func.sum(DecisionCustomOutcome.count).label("events"))
            .where(DecisionCustomOutcome.experiment_id == eid, _segment_of(DecisionCustomOutcome.assignment_id, eid))
            .group_by(DecisionCustomOutcome.arm_key, DecisionCustomOutcome.event_type)
        ):
            custom[row.arm_key][row.event_type] = (int(row.reached), int(row.events or 0))

    is_bandit = isinstance(spec.allocation, BanditAllocation)
    weights = spec.fixed_weights()
    covariates = _covariate_stats(session, eid, spec) if spec.covariate else {}
    ltv_stats = ltv_arm_stats(session, experiment, spec) if wants_ltv(session, spec) else {}
    arms = []
    for arm in spec.arms:
        t = totals.get(arm.key) or ArmTotals()
        n = t.decisions
        reached, counts = dict(t.reached), dict(t.counts)
        for event_type in spec.custom_events:
            r, c = custom.get(arm.key, {}).get(event_type, (0, 0))
            reached[event_type], counts[event_type] = r, c
        if is_bandit:
            # A bandit's expected share is its mean propensity; before any decision (or once they are all
            # erased) every arm is equally likely, rather than all shares 0, which no split test can use.
            mean = t.mean_propensity
            expected = mean if mean is not None else \
                0.0 if any(x.decisions for x in totals.values()) else 1.0 / len(spec.arms)
        else:
            expected = weights.get(arm.key, 0.0)
        arms.append(ArmSummary(
            arm=arm.key, is_control=arm.is_control, expected_share=expected, decisions=n,
            subjects=t.subjects, reached=reached, event_counts=counts,
            revenue=MeanStats(n, t.revenue, t.revenue2),
            converter_revenue=MeanStats(reached["conversion"], t.converter_revenue, t.converter_revenue2),
            covariate=covariates.get(arm.key),
            clusters=clusters.get(arm.key),
            **_ltv_fields(ltv_stats.get(arm.key)),
        ))
    metrics = list(spec.metrics) + [f"{t}_rate" for t in spec.custom_events]
    # LTV as the promotion metric stays LTV everywhere (sequential section included); without any known
    # subject value it is not computed, and promotion says so instead of quietly using revenue.
    decision_metric = spec.promotion.metric if spec.promotion else "conversion_rate"
    ltv = None
    if ltv_stats:
        from reports.ltv import compare_ltv

        ltv = compare_ltv(_with_control(ltv_stats, spec.control_arm), spec.control_arm,
                          spec.promotion.confidence if spec.promotion else 0.95).to_dict()
    return ReportInput(
        ltv=ltv,
        experiment=experiment.key,
        allocation_type="bandit" if is_bandit else "fixed",
        arms=arms,
        daily=rollups.daily(session, eid) if whole else _daily(session, eid, spec),
        metrics=[m for m in metrics if m != "ltv_adjusted_value" or ltv_stats],
        decision_metric=decision_metric,
        confidence=spec.promotion.confidence if spec.promotion else 0.95,
        bandit=_bandit_input(session, eid, spec) if is_bandit else None,
        unattributed_events=unattributed_counts(session, eid),
        suppressed=suppressed_counts(session, eid),
        srm_counts={arm.key: 0 for arm in spec.arms} | (
            rollups.counts_before(session, eid, experiment.promoted_at) if whole
            else _counts_before(session, eid, experiment.promoted_at))
        if experiment.promoted_at and not is_bandit else None,
    )


def _counts_before(session: Session, eid: int, moment: Any) -> dict[str, int]:
    """Decisions per arm made under the configured split, before a promotion changed the allocation."""
    return {
        row.arm_key: int(row.n)
        for row in session.execute(
            select(A.arm_key, func.count().label("n")).where(_a_scope(eid), A.created_at < moment)
            .group_by(A.arm_key)
        )
    }


def wants_ltv(session: Session, spec: ExperimentSpec) -> bool:
    """LTV-adjusted value is computed when the experiment asks for it and some subject value is known."""
    promoted_on_ltv = spec.promotion is not None and spec.promotion.metric == "ltv_adjusted_value"
    if "ltv_adjusted_value" not in spec.metrics and spec.reward.type != "ltv_adjusted" and not promoted_on_ltv:
        return False
    if spec.default_subject_value > 0 or spec.subject_value_field:
        return True
    return bool(session.scalar(select(func.count()).select_from(SubjectValue).limit(1))) or bool(
        session.scalar(select(func.count()).select_from(Subject).where(Subject.supplied_value.is_not(None)).limit(1)))


def subject_value_sql(spec: ExperimentSpec) -> Any:
    """The subject's value per decision, by precedence: profile > context field > model > experiment default."""
    sources: list[Any] = [case((Subject.supplied_value >= 0, Subject.supplied_value))]
    if spec.subject_value_field:
        field = A.context[spec.subject_value_field].as_float()
        sources.append(case((field >= 0, field)))
    sources += [SubjectValue.expected_value, literal(float(spec.default_subject_value))]
    return func.coalesce(*sources)


def ltv_arm_stats(session: Session, experiment: Experiment, spec: ExperimentSpec) -> dict[str, Any]:
    """Per-subject sums of LTV-adjusted value and its parts, per arm (reports.ltv's SQL shape)."""
    from reports.ltv import LtvArmStats, ValueSums

    share = float(spec.unsubscribe_value_share)
    revenue = func.coalesce(O.revenue, 0.0)
    unsubscribed = case((O.unsubscribes > 0, 1.0), else_=0.0)
    loss = -share * subject_value_sql(spec) * unsubscribed
    per_decision = (
        select(A.arm_key.label("arm"), A.subject_id.label("subject"), revenue.label("rev"), loss.label("loss"))
        .select_from(A)
        .outerjoin(O, O.assignment_id == A.id)
        .outerjoin(Subject, Subject.subject_id == A.subject_id)
        .outerjoin(SubjectValue, SubjectValue.subject_id == A.subject_id)
        .where(_a_scope(experiment.id))
        .subquery()
    )
    per_subject = (
        select(per_decision.c.arm, func.count().label("d"), func.sum(per_decision.c.rev).label("rev"),
               func.sum(per_decision.c.loss).label("loss"))
        .group_by(per_decision.c.arm, per_decision.c.subject)
        .subquery()
    )
    p = per_subject.c
    value = p.rev + p.loss
    rows = session.execute(
        select(p.arm, func.count().label("n"), func.sum(p.d).label("d"), func.sum(p.d * p.d).label("d2"),
               func.sum(value).label("v"), func.sum(value * value).label("v2"), func.sum(value * p.d).label("vd"),
               func.sum(p.rev).label("r"), func.sum(p.rev * p.rev).label("r2"), func.sum(p.rev * p.d).label("rd"),
               func.sum(p.loss).label("l"), func.sum(p.loss * p.loss).label("l2"),
               func.sum(p.loss * p.d).label("ld"))
        .group_by(p.arm)
    ).all()
    out = {}
    for row in rows:
        out[row.arm] = LtvArmStats(
            n_subjects=int(row.n), n_decisions=int(row.d), sum_decisions_squared=float(row.d2),
            value=ValueSums(float(row.v), float(row.v2), float(row.vd)),
            revenue=ValueSums(float(row.r), float(row.r2), float(row.rd)),
            unsubscribe_loss=ValueSums(float(row.l), float(row.l2), float(row.ld)),
        )
    return out


def _with_control(stats: dict[str, Any], control: str) -> dict[str, Any]:
    """The arms' LTV statistics with the control present: a control without decisions (early on, or in a
    segment) is an empty arm, which the comparison reports as "no decisions yet" on each row."""
    if control in stats:
        return stats
    from reports.ltv import LtvArmStats, ValueSums

    return {control: LtvArmStats(0, 0, 0.0, ValueSums(0.0, 0.0, 0.0)), **stats}


def _ltv_fields(stats: Any) -> dict[str, Any]:
    if stats is None:
        return {}
    from reports.ltv import arm_summary_ltv

    value, components = arm_summary_ltv(stats)
    return {"ltv_value": value, "ltv_components": components}


def _covariate_stats(session: Session, eid: int, spec: ExperimentSpec) -> dict[str, Any]:
    """CUPED inputs per arm: per-decision sums of x, y and per-subject totals (to cluster on subjects)."""
    from reports.cuped import CovariateStats

    metric = spec.promotion.metric if spec.promotion else "conversion_rate"
    y = func.coalesce(decision_value(spec, metric), 0.0)
    x = A.covariate
    per_decision = (
        select(A.arm_key.label("arm"), A.subject_id.label("subject"), x.label("x"), y.label("y"),
               (x * x).label("x2"), (y * y).label("y2"), (x * y).label("xy"))
        .select_from(A).outerjoin(O, O.assignment_id == A.id)
        .where(_a_scope(eid), A.covariate.is_not(None)).subquery()
    )
    q = per_decision.c
    per_subject = (
        select(q.arm, func.count().label("d"), func.sum(q.x).label("x"), func.sum(q.y).label("y"),
               func.sum(q.x2).label("x2"), func.sum(q.y2).label("y2"), func.sum(q.xy).label("xy"))
        .group_by(q.arm, q.subject).subquery()
    )
    p = per_subject.c
    out = {}
    for row in session.execute(
        select(p.arm, func.count().label("k"), func.sum(p.d).label("n"), func.sum(p.x).label("sx"),
               func.sum(p.x2).label("sx2"), func.sum(p.y).label("sy"), func.sum(p.y2).label("sy2"),
               func.sum(p.xy).label("sxy"), func.sum(p.d * p.d).label("n2"), func.sum(p.y * p.y).label("yy"),
               func.sum(p.x * p.x).label("xx"), func.sum(p.x * p.y).label("xy_s"),
               func.sum(p.d * p.y).label("ny"), func.sum(p.d * p.x).label("nx"))
        .group_by(p.arm)
    ):
        out[row.arm] = CovariateStats(
            n=int(row.n), sum_x=float(row.sx or 0), sum_x2=float(row.sx2 or 0), sum_y=float(row.sy or 0),
            sum_y2=float(row.sy2 or 0), sum_xy=float(row.sxy or 0), subjects=int(row.k),
            subject_n2=float(row.n2 or 0), subject_y2=float(row.yy or 0), subject_x2=float(row.xx or 0),
            subject_xy=float(row.xy_s or 0), subject_ny=float(row.ny or 0), subject_nx=float(row.nx or 0),
        )
    return out


def _day(column: Any) -> Any:
    return func.date(column)


def _daily(session: Session, eid: int, spec: ExperimentSpec) -> list[DailyArmSummary]:
    day = _day(A.created_at).label("day")
    counts = {
        (str(row.day), row.arm_key): int(row.n)
        for row in session.execute(
            select(day, A.arm_key, func.count().label("n")).where(_a_scope(eid)).group_by(day, A.arm_key)
        )
    }
    outcomes = {
        (str(row.day), row.arm_key): row
        for row in session.execute(
            select(O.day, O.arm_key, _reached(O.opens).label("r_open"), _reached(O.clicks).label("r_click"),
                   _reached(O.conversions).label("r_conversion"), _reached(O.unsubscribes).label("r_unsubscribe"),
                   func.sum(O.revenue).label("revenue"), func.sum(O.revenue * O.revenue).label("revenue2"))
            .where(_o_scope(eid)).group_by(O.day, O.arm_key)
        )
    }
    from datetime import date

    days = []
    for (day_text, arm), n in sorted(counts.items()):
        o = outcomes.get((day_text, arm))
        reached = {"open": int(o.r_open or 0), "click": int(o.r_click or 0), "conversion": int(o.r_conversion or 0),
                   "unsubscribe": int(o.r_unsubscribe or 0)} if o else dict.fromkeys(ROLLUP_EVENTS, 0)
        days.append(DailyArmSummary(
            day=date.fromisoformat(day_text[:10]), arm=arm, decisions=n, reached=reached,
            revenue=MeanStats(n, float(o.revenue or 0) if o else 0.0, float(o.revenue2 or 0) if o else 0.0),
        ))
    return days


def _bandit_input(session: Session, eid: int, spec: ExperimentSpec) -> BanditInput:
    """The bandit section's sums over matured decisions only (as old as the reward wait), as training uses."""
    from datetime import timedelta

    from reports.bandit import IpwArmStats, PeriodArmStats

    from service.clock import utcnow

    metric = bandit_metric(spec)
    r = decision_value(spec, metric) if metric is not None else reward_value(spec)
    cutoff = utcnow() - timedelta(seconds=spec.reward_wait_seconds)
    matured = A.created_at <= cutoff
    pending = session.scalar(select(func.count()).select_from(A).where(_a_scope(eid), ~matured)) or 0

    def a_matured(eid: int) -> ColumnElement[bool]:
        return and_(_a_scope(eid), matured)

    def o_matured(eid: int) -> ColumnElement[bool]:
        return and_(_o_scope(eid), O.assignment_id.in_(select(A.id).where(A.experiment_id == eid, matured)))
    w = 1.0 / O.propensity
    day = _day(A.created_at).label("day")
    counts = {
        (str(row.day), row.arm_key): int(row.n)
        for row in session.execute(
            select(day, A.arm_key, func.count().label("n"))
            .where(a_matured(eid), A.holdout.is_(False)).group_by(day, A.arm_key)
        )
    }
    rewards = {
        (str(row.day), row.arm_key): row
        for row in session.execute(
            select(O.day, O.arm_key, func.sum(r).label("s"), func.sum(r * r).label("s2"))
            .where(o_matured(eid), O.holdout.is_(False)).group_by(O.day, O.arm_key)
        )
    }
    periods = [
        PeriodArmStats(period=day_text[:10], arm=arm,
                       reward=MeanStats(n, float(rewards[(day_text, arm)].s or 0) if (day_text, arm) in rewards else 0.0,
                                        float(rewards[(day_text, arm)].s2 or 0) if (day_text, arm) in rewards else 0.0))
        for (day_text, arm), n in sorted(counts.items())
    ]
    weights = {
        row.arm_key: row
        for row in session.execute(
            select(A.arm_key, func.sum(1.0 / A.propensity).label("sw"),
                   func.sum(1.0 / (A.propensity * A.propensity)).label("sw2"))
            .where(a_matured(eid)).group_by(A.arm_key)
        )
    }
    def ipw_sums(value: Any) -> list[IpwArmStats]:
        weighted = {
            row.arm_key: row
            for row in session.execute(
                select(O.arm_key, func.sum(w * value).label("swr"), func.sum(w * w * value).label("sw2r"),
                       func.sum(w * w * value * value).label("sw2r2"))
                .where(o_matured(eid)).group_by(O.arm_key)
            )
        }
        out = []
        for arm, row in weights.items():
            extra = weighted.get(arm)
            out.append(IpwArmStats(
                arm=arm, sum_w=float(row.sw or 0), sum_wr=float(extra.swr or 0) if extra else 0.0,
                sum_w2=float(row.sw2 or 0), sum_w2r=float(extra.sw2r or 0) if extra else 0.0,
                sum_w2r2=float(extra.sw2r2 or 0) if extra else 0.0,
            ))
        return out

    ipw = ipw_sums(r)
    guardrail_ipw = {g.metric: ipw_sums(decision_value(spec, g.metric)) for g in spec.guardrails
                     if g.metric in _PER_DECISION_METRICS}
    n_total = session.scalar(select(func.count()).select_from(A).where(a_matured(eid))) or 0
    groups = {}
    for holdout in (True, False):
        n = session.scalar(select(func.count()).select_from(A).where(a_matured(eid),
                                                                     A.holdout.is_(holdout))) or 0
        sums = session.execute(
            select(func.sum(r).label("s"), func.sum(r * r).label("s2"))
            .where(o_matured(eid), O.holdout.is_(holdout))
        ).one()
        groups[holdout] = MeanStats(int(n), float(sums.s or 0), float(sums.s2 or 0)) if n else None
    return BanditInput(periods=periods, ipw=ipw, n_total=int(n_total), holdout=groups[True], policy=groups[False],
                       pending=int(pending), metric=metric, guardrail_ipw=guardrail_ipw,
                       ips_clusters=_ips_subject_sums(session, a_matured(eid), spec, r))


MAX_CLUSTERED_BANDIT_ARMS = 10  # per-subject cross sums grow with the square of the arms


def _ips_subject_sums(session: Session, decisions: ColumnElement[bool], spec: ExperimentSpec, r: Any) -> Any:
    """Per-subject sums of the IPS terms of each arm (and their cross products), to cluster on subjects,
    over the `decisions` given (the matured ones)."""
    from reports.bandit import IpsSubjectSums

    keys = [arm.key for arm in spec.arms]
    if len(keys) > MAX_CLUSTERED_BANDIT_ARMS:
        return None
    wr = func.coalesce(r, 0.0) / A.propensity
    per_decision = (
        select(A.arm_key.label("arm"), A.subject_id.label("subject"), wr.label("wr"))
        .select_from(A).outerjoin(O, O.assignment_id == A.id).where(decisions).subquery()
    )
    q = per_decision.c
    per_subject = (
        select(func.count().label("n"),
               *[func.sum(case((q.arm == key, q.wr), else_=0.0)).label(f"z{i}") for i, key in enumerate(keys)])
        .group_by(q.subject).subquery()
    )
    p = per_subject.c
    z = [getattr(p, f"z{i}") for i in range(len(keys))]
    columns: list[Any] = [func.count().label("k"), func.sum(p.n * p.n).label("n2")]
    columns += [func.sum(zi * zi).label(f"zz{i}") for i, zi in enumerate(z)]
    columns += [func.sum(p.n * zi).label(f"nz{i}") for i, zi in enumerate(z)]
    pairs = [(i, j) for i in range(len(keys)) for j in range(i + 1, len(keys))]
    columns += [func.sum(z[i] * z[j]).label(f"x{i}_{j}") for i, j in pairs]
    row = session.execute(select(*columns)).one()
    if not row.k:
        return None
    return IpsSubjectSums(
        subjects=int(row.k), sum_n2=float(row.n2 or 0),
        sum_z2={key: float(getattr(row, f"zz{i}") or 0) for i, key in enumerate(keys)},
        sum_nz={key: float(getattr(row, f"nz{i}") or 0) for i, key in enumerate(keys)},
        cross={"|".join(sorted((keys[i], keys[j]))): float(getattr(row, f"x{i}_{j}") or 0) for i, j in pairs},
    )


def suppressed_counts(session: Session, eid: int) -> dict[str, int]:
    return {
        row.reason: int(row.n)
        for row in session.execute(
            select(SuppressedRequest.reason, func.sum(SuppressedRequest.count).label("n"))
            .where(SuppressedRequest.experiment_id == eid).group_by(SuppressedRequest.reason)
        )
    }


def unattributed_counts(session: Session, eid: int) -> dict[str, int]:
    return {
        row.reason or "unknown": int(row.n)
        for row in session.execute(
            select(Event.unattributed_reason.label("reason"), func.count().label("n"))
            .where(and_(Event.experiment_id == eid, Event.attribution == "unattributed"))
            .group_by(Event.unattributed_reason)
        )
    }
