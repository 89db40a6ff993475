"""The learning loop: turn decisions whose reward is known into training examples, refit, snapshot.

When is a reward known? A decision becomes a training example at the first of:
- its rewarding event is received (inside the attribution window): reward 1, or
  the conversion revenue for a revenue reward, as known at that moment;
- its attribution window closes without that event: the experiment's default
  reward (0 unless the spec says otherwise).
A rewarding event that arrives after the window has closed is unattributed and
changes nothing. `reward.wait_seconds`-style tuning is the attribution window
itself: shorten it to learn sooner, lengthen it to count slower conversions.

Each snapshot records `trained_through` (T). A refit at T2 trains on exactly the
decisions known by T2 but not by T, so refits are incremental and repeating one
trains nothing twice. Holdout decisions never train the bandit: they are the
uniform comparison group. With a training window (last N days) every refit
retrains from scratch on the examples of those days, so old behaviour is
forgotten (non-stationarity); `--full` does the same on demand.

Only one refit per experiment runs at a time across all workers and hosts (a
lease row); a crashed refit leaves the previous snapshot serving, and its lease
expires.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session

from bandits import Policy
from bandits.rewards import RewardDefinition, rewards_for
from experiments.spec import BanditAllocation, ExperimentSpec

from .clock import utcnow
from .leases import lease
from .models import Assignment, DecisionCustomOutcome, DecisionOutcome, Experiment, PolicySnapshot
from .observability import REFITS
from .store.experiments import audit, spec_of

_COUNT_COLUMNS = {"open": DecisionOutcome.opens, "click": DecisionOutcome.clicks,
                  "conversion": DecisionOutcome.conversions, "unsubscribe": DecisionOutcome.unsubscribes}


@dataclass(frozen=True, slots=True)
class RefitResult:
    experiment: str
    status: str  # "refit", "nothing_new", "locked", "not_a_bandit"
    version: int | None = None
    examples: int = 0
    trained_through: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "status": self.status, "version": self.version,
                "examples": self.examples,
                "trained_through": self.trained_through.isoformat() if self.trained_through else None}


def _known_by(moment: datetime, window: timedelta) -> Any:
    """SQL: the decision's reward is known at `moment` (window closed, or rewarding event received)."""
    return or_(Assignment.created_at <= moment - window,
               and_(DecisionOutcome.reward_received_at.is_not(None), DecisionOutcome.reward_received_at <= moment))


@dataclass(frozen=True, slots=True)
class KnownDecisions:
    """Logged decisions whose reward is known, oldest first."""

    contexts: list[dict[str, Any]]
    arms: list[str]
    rewards: np.ndarray
    propensities: np.ndarray
    decided_at: list[datetime]


def training_examples(session: Session, experiment: Experiment, spec: ExperimentSpec, since: datetime | None,
                      until: datetime, not_before: datetime | None = None) -> tuple[list[Any], list[str], np.ndarray]:
    """(contexts, arms, rewards) of decisions whose reward became known in (since, until], oldest first."""
    known = known_decisions(session, experiment, spec, since, until, not_before)
    return known.contexts, known.arms, known.rewards


def known_decisions(session: Session, experiment: Experiment, spec: ExperimentSpec, since: datetime | None,
                    until: datetime, not_before: datetime | None = None, *, include_holdout: bool = False
                    ) -> KnownDecisions:
    """Decisions whose reward became known in (since, until]; holdout ones only when asked (evaluation).

    An LTV-adjusted reward (revenue minus the value an unsubscribe destroys) is known only once the
    window has closed, since an unsubscribe may still come."""
    if spec.reward.type == "ltv_adjusted":
        return _known_ltv_decisions(session, experiment, spec, since, until, not_before, include_holdout)
    window = timedelta(seconds=spec.attribution_window_seconds)
    reward = spec.reward
    event_count = _COUNT_COLUMNS.get(reward.event)
    columns = [Assignment.context, Assignment.arm_key, Assignment.created_at, Assignment.propensity,
               DecisionOutcome.revenue, DecisionOutcome.reward_received_at]
    query = select(*columns).select_from(Assignment).outerjoin(
        DecisionOutcome, DecisionOutcome.assignment_id == Assignment.id)
    if event_count is not None:
        query = query.add_columns(event_count.label("reward_events"))
    else:
        query = query.outerjoin(DecisionCustomOutcome, and_(
            DecisionCustomOutcome.assignment_id == Assignment.id, DecisionCustomOutcome.event_type == reward.event,
        )).add_columns(DecisionCustomOutcome.count.label("reward_events"))
    conditions = [Assignment.experiment_id == experiment.id, _known_by(until, window)]
    if not include_holdout:
        conditions.append(Assignment.holdout.is_(False))
    if since is not None:
        conditions.append(~_known_by(since, window))
    if not_before is not None:
        conditions.append(Assignment.created_at >= not_before)
    rows = session.execute(query.where(*conditions).order_by(Assignment.created_at, Assignment.id)).all()
    if not rows:
        return KnownDecisions([], [], np.zeros(0), np.zeros(0), [])
    counts = np.array([r.reward_events or 0 for r in rows], dtype=float)
    revenue = np.array([r.revenue or 0.0 for r in rows], dtype=float)
    # Rewarded decisions count as successes even before their window closes.
    closed = np.array([r.created_at <= until - window for r in rows], dtype=bool)
    rewarded = np.array([r.reward_received_at is not None and r.reward_received_at <= until for r in rows])
    definition = RewardDefinition.from_spec(reward) if reward.type == "event" else RewardDefinition(
        event=reward.event)
    values, known = rewards_for(definition, np.where(rewarded, counts, 0), revenue, closed)
    keep = np.flatnonzero(known)
    return KnownDecisions(
        contexts=[rows[i].context or {} for i in keep], arms=[rows[i].arm_key for i in keep],
        rewards=values[keep], propensities=np.array([rows[i].propensity for i in keep], dtype=float),
        decided_at=[rows[i].created_at for i in keep],
    )


def _known_ltv_decisions(session: Session, experiment: Experiment, spec: ExperimentSpec, since: datetime | None,
                         until: datetime, not_before: datetime | None, include_holdout: bool) -> KnownDecisions:
    from .models import Subject, SubjectValue
    from .report_queries import subject_value_sql

    window = timedelta(seconds=spec.attribution_window_seconds)
    unsubscribed = case((DecisionOutcome.unsubscribes > 0, 1.0), else_=0.0)
    value = (func.coalesce(DecisionOutcome.revenue, 0.0)
             - float(spec.unsubscribe_value_share) * subject_value_sql(spec) * unsubscribed)
    query = (select(Assignment.context, Assignment.arm_key, Assignment.created_at, Assignment.propensity,
                    value.label("value"))
             .select_from(Assignment)
             .outerjoin(DecisionOutcome, DecisionOutcome.assignment_id == Assignment.id)
             .outerjoin(Subject, Subject.subject_id == Assignment.subject_id)
             .outerjoin(SubjectValue, SubjectValue.subject_id == Assignment.subject_id))
    conditions = [Assignment.experiment_id == experiment.id, Assignment.created_at <= until - window]
    if not include_holdout:
        conditions.append(Assignment.holdout.is_(False))
    if since is not None:
        conditions.append(Assignment.created_at > since - window)
    if not_before is not None:
        conditions.append(Assignment.created_at >= not_before)
    rows = session.execute(query.where(*conditions).order_by(Assignment.created_at, Assignment.id)).all()
    return KnownDecisions(
        contexts=[r.context or {} for r in rows], arms=[r.arm_key for r in rows],
        rewards=np.array([float(r.value or 0.0) for r in rows]),
        propensities=np.array([r.propensity for r in rows], dtype=float), decided_at=[r.created_at for r in rows],
    )


def latest_snapshot(session: Session, experiment_id: int) -> PolicySnapshot | None:
    return session.scalars(
        select(PolicySnapshot).where(PolicySnapshot.experiment_id == experiment_id)
        .order_by(PolicySnapshot.version.desc()).limit(1)
    ).first()


def refit(session: Session, experiment: Experiment, *, full: bool = False, now: datetime | None = None,
          holder: str = "refit") -> RefitResult:
    """Train the experiment's policy on what became known since its last snapshot; commit a new version."""
    result = _refit(session, experiment, full=full, now=now, holder=holder)
    REFITS.labels(result.status).inc()
    return result


def _refit(session: Session, experiment: Experiment, *, full: bool, now: datetime | None,
           holder: str) -> RefitResult:
    spec = spec_of(experiment)
    if not isinstance(spec.allocation, BanditAllocation):
        return RefitResult(experiment.key, "not_a_bandit")
    with lease(session, f"refit:{experiment.id}", holder, ttl_seconds=600) as held:
        if not held:
            return RefitResult(experiment.key, "locked")
        now = now or utcnow()
        allocation = spec.allocation
        arms = [arm.key for arm in spec.arms if arm.enabled]
        seed = int(experiment.salt[:8], 16)
        snapshot = latest_snapshot(session, experiment.id)
        windowed = allocation.training_window_days is not None
        from_scratch = full or windowed or snapshot is None
        not_before = now - timedelta(days=allocation.training_window_days) if windowed else None
        since = None if from_scratch else snapshot.trained_through  # type: ignore[union-attr]
        contexts, chosen, rewards = training_examples(session, experiment, spec, since, now, not_before)
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
                                   trained_through=now, examples=examples, created_at=utcnow()))
        audit(session, experiment, holder, "refit", version=version, new_examples=len(chosen),
              full=from_scratch, trained_through=now.isoformat())
        session.commit()
        return RefitResult(experiment.key, "refit", version, len(chosen), now)


def _order(spec: ExperimentSpec) -> Any:
    positions = {arm.key: i for i, arm in enumerate(spec.arms)}
    return lambda arm: positions.get(arm, len(positions))


def refit_all(session: Session, *, full: bool = False, key: str | None = None, holder: str = "refit") -> list[RefitResult]:
    """Refit every running (or the named) bandit experiment."""
    query = select(Experiment).where(Experiment.status.in_(("running", "paused")))
    if key is not None:
        query = select(Experiment).where(Experiment.key == key)
    results = []
    for experiment in session.scalars(query).all():
        if experiment.winner_arm is not None:
            continue
        results.append(refit(session, experiment, full=full, holder=holder))
    return results


def snapshot_count(session: Session, experiment_id: int) -> int:
    return session.scalar(select(func.count()).select_from(PolicySnapshot)
                          .where(PolicySnapshot.experiment_id == experiment_id)) or 0
