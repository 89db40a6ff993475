"""The learning loop: turn matured decisions into training examples, refit, snapshot.

When does a decision train? When it has matured: once it is `reward.wait_seconds` old (default
one day, or the attribution window if that is shorter), the same age for every decision whatever
its outcome. Its reward is what was received within that time of its own decision time: 1 if a
rewarding event was received by then (or the revenue received by then, for a revenue reward),
else the spec's `reward.default`. An LTV-adjusted reward follows the same rule (revenue and
unsubscribes received within the wait). Imported history carries its outcomes with it, so an
imported decision's events count whenever they were received.

Why symmetric: if a success trained as soon as its event arrived but a failure only when its
window closed, every policy (and off-policy evaluation) would see, for a whole window, successes
without their failures, and most of all for the arms that got recent traffic. Waiting the same
time for every decision measures each arm's "reward within the wait" without bias, and the
attribution window stays the reporting window (reports still count two weeks of outcomes).

Exactly once, across workers and hosts. Each snapshot records a watermark `trained_through` (W):
the decisions that matured at or before W (created_at + wait <= W) are in the policy. A refit at
`now` moves the watermark to W' = now - grace and trains the decisions that matured in (W, W'],
each once, with the events received within their wait. An event's `received_at` is stamped
before its transaction commits, so a refit must not read a decision's events while a transaction
that stamped one of them at or before its maturity may still be open: the grace (default
REWARD_GRACE_SECONDS, `NEXTBEST_REWARD_GRACE_SECONDS`) is longer than any ingestion transaction
may take, and ingestion refuses to commit events stamped more than half the grace ago (the
client gets a 503 and retries; events are idempotent). So the watermark only moves past
decisions whose rewarding events are all committed, and no reward is skipped or learned twice
however ingestion and refits interleave. (Hosts' clocks must agree to within the other half.)
A decision imported behind the watermark would be skipped by an incremental refit, so an import
makes the next refit retrain from scratch.

Holdout decisions never train the bandit: they are the uniform comparison group. With a training
window (last N days) every refit retrains from scratch on the matured decisions of those days, so
old behaviour is forgotten (non-stationarity); `--full` does the same on demand.

Only one refit per experiment runs at a time across all workers and hosts (a lease row); a crashed
refit leaves the previous snapshot serving, and its lease expires. A refit that fails is recorded
(metric, audit entry, dashboard) and the other experiments are refitted all the same.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session

from bandits import Policy
from bandits.rewards import RewardDefinition, rewards_for
from experiments.spec import BanditAllocation, ExperimentSpec

from service.clock import utcnow
from service.jobs.leases import lease
from service.store.models import Assignment, AuditEntry, Event, Experiment, PolicySnapshot
from service.http.observability import REFITS
from service.store.experiments import audit, spec_of

log = logging.getLogger("nextbest.learning")

# Longer than any ingestion transaction may take (ingestion refuses to commit after half of it),
# plus the clock difference between hosts.
REWARD_GRACE_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class RefitResult:
    experiment: str
    status: str  # "refit", "nothing_new", "locked", "not_a_bandit", "failed"
    version: int | None = None
    examples: int = 0
    trained_through: datetime | None = None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        answer = {"experiment": self.experiment, "status": self.status, "version": self.version,
                  "examples": self.examples,
                  "trained_through": self.trained_through.isoformat() if self.trained_through else None}
        if self.error is not None:
            answer["error"] = self.error
        return answer


@dataclass(frozen=True, slots=True)
class KnownDecisions:
    """Matured decisions with their rewards, oldest first, and how many are still pending."""

    contexts: list[dict[str, Any]]
    arms: list[str]
    rewards: np.ndarray
    propensities: np.ndarray
    decided_at: list[datetime]
    pending: int = 0


def watermark(now: datetime, grace_seconds: float = REWARD_GRACE_SECONDS) -> datetime:
    """The latest maturity time a read at `now` may train: every event stamped before it is committed."""
    return now - timedelta(seconds=grace_seconds)


def training_examples(session: Session, experiment: Experiment, spec: ExperimentSpec, since: datetime | None,
                      until: datetime, not_before: datetime | None = None) -> tuple[list[Any], list[str], np.ndarray]:
    """(contexts, arms, rewards) of the decisions that matured in (since, until], oldest first."""
    known = known_decisions(session, experiment, spec, since, until, not_before)
    return known.contexts, known.arms, known.rewards


def _received_within(session: Session, wait_seconds: int) -> Any:
    """SQL: the event was received within `wait_seconds` of its decision (end included)."""
    if session.get_bind().dialect.name == "postgresql":
        return Event.received_at <= Assignment.created_at + func.make_interval(0, 0, 0, 0, 0, 0, wait_seconds)
    # SQLite keeps timestamps as text; Julian days are exact to about 20 microseconds here.
    return func.julianday(Event.received_at) <= func.julianday(Assignment.created_at) + wait_seconds / 86400.0


def known_decisions(session: Session, experiment: Experiment, spec: ExperimentSpec, since: datetime | None,
                    until: datetime, not_before: datetime | None = None, *, include_holdout: bool = False
                    ) -> KnownDecisions:
    """Decisions that matured in (since, until], with the rewards received within their wait.

    Holdout decisions only when asked (evaluation). `pending` counts the decisions (from
    `not_before` on) that have not matured by `until`."""
    wait_seconds = spec.reward_wait_seconds
    wait = timedelta(seconds=wait_seconds)
    reward = spec.reward
    scope = [Assignment.experiment_id == experiment.id]
    if not include_holdout:
        scope.append(Assignment.holdout.is_(False))
    if not_before is not None:
        scope.append(Assignment.created_at >= not_before)
    live = Assignment.source != "import"
    if since is None:  # imported history carries its final outcomes: matured as soon as it is stored
        matured = [*scope, or_(~live, Assignment.created_at <= until - wait)]
    else:  # incremental: an import makes the next refit a full one (see refit), so only live decisions here
        matured = [*scope, live, Assignment.created_at <= until - wait, Assignment.created_at > since - wait]

    counted = and_(Event.attribution != "unattributed",
                   or_(Assignment.source == "import", _received_within(session, wait_seconds)))
    earned = (select(Event.assignment_id.label("assignment_id"),
                     func.sum(case((and_(counted, Event.type == reward.event), 1), else_=0)).label("reward_events"),
                     func.sum(case((and_(counted, Event.type == "conversion"), func.coalesce(Event.value, 0.0)),
                                   else_=0.0)).label("revenue"),
                     func.sum(case((and_(counted, Event.type == "unsubscribe"), 1), else_=0)).label("unsubscribes"))
              .join(Assignment, Assignment.id == Event.assignment_id)
              .where(*matured, Event.type.in_(sorted({reward.event, "conversion", "unsubscribe"})))
              .group_by(Event.assignment_id)).subquery()
    columns = [Assignment.id, Assignment.context, Assignment.arm_key, Assignment.created_at, Assignment.propensity]
    query = select(*columns).select_from(Assignment)
    if reward.type == "ltv_adjusted":
        from service.store.models import Subject, SubjectValue
        from service.store.report_queries import subject_value_sql

        query = (query.outerjoin(Subject, Subject.subject_id == Assignment.subject_id)
                 .outerjoin(SubjectValue, SubjectValue.subject_id == Assignment.subject_id)
                 .add_columns(subject_value_sql(spec).label("subject_value")))
    rows = session.execute(query.where(*matured).order_by(Assignment.created_at, Assignment.id)).all()
    # Two plain queries merged here: a join of the decisions to their grouped events let PostgreSQL
    # (before it had statistics on a fresh table) rescan the events for every decision.
    outcomes = {r.assignment_id: r for r in session.execute(select(earned)).all()} if rows else {}
    pending = session.scalar(select(func.count()).select_from(Assignment)
                             .where(*scope, live, Assignment.created_at > until - wait)) or 0
    if not rows:
        return KnownDecisions([], [], np.zeros(0), np.zeros(0), [], pending)
    earned_by = [outcomes.get(r.id) for r in rows]
    counts = np.array([(e.reward_events or 0) if e is not None else 0 for e in earned_by], dtype=float)
    revenue = np.array([float(e.revenue or 0.0) if e is not None else 0.0 for e in earned_by], dtype=float)
    if reward.type == "ltv_adjusted":
        unsubscribed = np.array([(e is not None and (e.unsubscribes or 0) > 0) for e in earned_by], dtype=float)
        value = np.array([float(r.subject_value or 0.0) for r in rows], dtype=float)
        values = revenue - float(spec.unsubscribe_value_share) * value * unsubscribed
    else:
        values, _ = rewards_for(RewardDefinition.from_spec(reward), counts, revenue, np.ones(len(rows), dtype=bool))
    return KnownDecisions(
        contexts=[r.context or {} for r in rows], arms=[r.arm_key for r in rows], rewards=values,
        propensities=np.array([r.propensity for r in rows], dtype=float),
        decided_at=[r.created_at for r in rows], pending=int(pending),
    )


def latest_snapshot(session: Session, experiment_id: int) -> PolicySnapshot | None:
    return session.scalars(
        select(PolicySnapshot).where(PolicySnapshot.experiment_id == experiment_id)
        .order_by(PolicySnapshot.version.desc()).limit(1)
    ).first()


def refit(session: Session, experiment: Experiment, *, full: bool = False, now: datetime | None = None,
          holder: str = "refit", grace_seconds: float = REWARD_GRACE_SECONDS) -> RefitResult:
    """Train the experiment's policy on the decisions matured since its last snapshot; commit a new version."""
    result = _refit(session, experiment, full=full, now=now, holder=holder, grace_seconds=grace_seconds)
    REFITS.labels(result.status).inc()
    return result


def _imported_since(session: Session, experiment: Experiment, moment: datetime) -> bool:
    """Whether history was imported since `moment` (its audit entry is stamped before it commits)."""
    return (session.scalar(select(func.count()).select_from(AuditEntry).where(
        AuditEntry.experiment_id == experiment.id, AuditEntry.action == "import",
        AuditEntry.created_at >= moment)) or 0) > 0


def _refit(session: Session, experiment: Experiment, *, full: bool, now: datetime | None,
           holder: str, grace_seconds: float) -> RefitResult:
    spec = spec_of(experiment)
    if not isinstance(spec.allocation, BanditAllocation):
        return RefitResult(experiment.key, "not_a_bandit")
    with lease(session, f"refit:{experiment.id}", holder, ttl_seconds=60) as held:
        if not held:
            return RefitResult(experiment.key, "locked")
        now = now or utcnow()
        through = watermark(now, grace_seconds)
        allocation = spec.allocation
        arms = [arm.key for arm in spec.arms if arm.enabled]
        seed = int(experiment.salt[:8], 16)
        snapshot = latest_snapshot(session, experiment.id)
        windowed = allocation.training_window_days is not None
        from_scratch = (full or windowed or snapshot is None or snapshot.trained_through is None
                        or _imported_since(session, experiment, snapshot.created_at - timedelta(seconds=grace_seconds)))
        not_before = now - timedelta(days=allocation.training_window_days) if windowed else None  # type: ignore[operator]
        since = None if from_scratch else snapshot.trained_through  # type: ignore[union-attr]
        if since is not None and through <= since:
            return RefitResult(experiment.key, "nothing_new", snapshot.version, 0, since)  # type: ignore[union-attr]
        known = known_decisions(session, experiment, spec, since, through, not_before)
        contexts, chosen, rewards = known.contexts, known.arms, known.rewards
        if not from_scratch and not chosen:
            return RefitResult(experiment.key, "nothing_new", snapshot.version if snapshot else None, 0,
                               snapshot.trained_through if snapshot else None)
        contextual = allocation.policy.contextual or bool(allocation.features)
        ctx = contexts if contextual else None
        if from_scratch:
            all_arms = [arm.key for arm in spec.arms]
            policy = Policy.train(allocation.policy, allocation.features, all_arms, ctx, chosen, rewards, seed=seed)
            policy = policy.with_arms(arms)
        else:
            assert snapshot is not None
            policy = Policy.from_state(allocation.policy, allocation.features, snapshot.state)
            policy = policy.with_arms(sorted(set(arms) | set(chosen), key=_order(spec)))
            policy = policy.update(ctx, chosen, rewards).with_arms(arms)
        version = (snapshot.version if snapshot else 0) + 1
        examples = len(chosen) + (0 if from_scratch or snapshot is None else snapshot.examples)
        session.add(PolicySnapshot(experiment_id=experiment.id, version=version, state=policy.to_state(),
                                   trained_through=through, examples=examples, created_at=utcnow()))
        audit(session, experiment, holder, "refit", version=version, new_examples=len(chosen),
              reward_sum=float(np.sum(rewards)) if len(rewards) else 0.0, pending=known.pending,
              full=from_scratch, trained_through=through.isoformat())
        session.commit()
        return RefitResult(experiment.key, "refit", version, len(chosen), through)


def _order(spec: ExperimentSpec) -> Any:
    positions = {arm.key: i for i, arm in enumerate(spec.arms)}
    return lambda arm: positions.get(arm, len(positions))


def refit_safely(session: Session, experiment: Experiment, *, full: bool = False, holder: str = "refit",
                 grace_seconds: float = REWARD_GRACE_SECONDS) -> RefitResult:
    """Refit one experiment; a failure is rolled back, counted, logged and audited, never raised.

    One experiment with a bad row must not stop the others from learning."""
    key, experiment_id = experiment.key, experiment.id
    try:
        return refit(session, experiment, full=full, holder=holder, grace_seconds=grace_seconds)
    except Exception as exc:  # noqa: BLE001 - any failure of one refit is recorded, the job goes on
        session.rollback()
        message = f"{exc.__class__.__name__}: {exc}"[:500]
        log.exception("refit of %s failed", key)
        REFITS.labels("failed").inc()
        try:
            failed = session.get(Experiment, experiment_id)
            if failed is not None:
                audit(session, failed, holder, "refit_failed", error=message)
                session.commit()
        except Exception:  # noqa: BLE001 - the database itself may be away; the log line stands
            session.rollback()
            log.exception("could not record the failed refit of %s", key)
        return RefitResult(key, "failed", error=message)


def refit_all(session: Session, *, full: bool = False, key: str | None = None, holder: str = "refit",
              grace_seconds: float = REWARD_GRACE_SECONDS) -> list[RefitResult]:
    """Refit every running (or the named) bandit experiment; one failure does not stop the others."""
    query = select(Experiment.id).where(Experiment.status.in_(("running", "paused")))
    if key is not None:
        query = select(Experiment.id).where(Experiment.key == key)
    results = []
    for experiment_id in session.scalars(query.order_by(Experiment.id)).all():
        experiment = session.get(Experiment, experiment_id)
        if experiment is None or experiment.winner_arm is not None:
            continue
        results.append(refit_safely(session, experiment, full=full, holder=holder, grace_seconds=grace_seconds))
    return results


def snapshot_count(session: Session, experiment_id: int) -> int:
    return session.scalar(select(func.count()).select_from(PolicySnapshot)
                          .where(PolicySnapshot.experiment_id == experiment_id)) or 0
