"""Promotion in the shell: evaluate rules on the live report, promote atomically, record and notify.

Promotion is one transaction: a conditional UPDATE that sets the winner only
while the experiment is running without one (so two evaluators at once cannot
promote twice or promote two winners), the audit record with the statistics
that justified it, and the webhook deliveries to send. After it commits, every
worker serves the winner (less the holdback, which stays on control) within
the policy refresh interval. Manual promotion and rollback take the same path.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
import logging
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from experiments.promotion import PromotionDecision, evaluate_promotion

from .clock import iso_utc, utcnow
from .errors import ApiError
from .leases import lease
from .models import Experiment
from .observability import PROMOTIONS
from .report_queries import report_input
from .store.experiments import audit, spec_of, to_json
from .webhooks import enqueue

log = logging.getLogger("nextbest.promotion")


def decide(session: Session, experiment: Experiment, now: datetime | None = None) -> PromotionDecision:
    """What the experiment's promotion rule would do now, and why."""
    now = now or utcnow()
    spec = spec_of(experiment)
    runtime = (now - experiment.started_at).total_seconds() if experiment.started_at else 0.0
    status = experiment.status if experiment.winner_arm is None else "promoted"
    return evaluate_promotion(report_input(session, experiment, spec), spec.promotion, spec.guardrails,
                              max(runtime, 0.0), "running" if status == "running" else status)


def decision_json(experiment: Experiment, decision: PromotionDecision) -> dict[str, Any]:
    body = asdict(decision)
    body["experiment"] = experiment.key
    body["promoted_winner"] = experiment.winner_arm
    body["conditions"] = [asdict(c) for c in decision.conditions]
    return body


def promote(session: Session, experiment: Experiment, winner: str, actor: str, *, holdback: float,
            reason: str, statistics: dict[str, Any] | None = None, how: str = "manual") -> bool:
    """Give the winner all traffic (less the holdback on control); False when someone else already did."""
    arms = [arm.key for arm in experiment.arms]
    if winner not in arms:
        raise ApiError(422, f"winner {winner!r} is not an arm of this experiment",
                       details=[{"field": "winner", "message": f"expected one of {arms}"}])
    now = utcnow()
    result = session.execute(
        update(Experiment)
        .where(Experiment.id == experiment.id, Experiment.status == "running", Experiment.winner_arm.is_(None))
        .values(winner_arm=winner, holdback=holdback, promoted_at=now, updated_at=now,
                revision=Experiment.revision + 1)
        .execution_options(synchronize_session=False)
    )
    if (result.rowcount or 0) != 1:
        session.rollback()
        return False
    audit(session, experiment, actor, "promote", winner=winner, holdback=holdback, reason=reason,
          statistics=statistics or {})
    enqueue(session, experiment, "experiment.promoted", {
        "experiment": experiment.key, "winner": winner, "holdback": holdback, "reason": reason,
        "promoted_at": iso_utc(now), "actor": actor,
    })
    session.commit()
    PROMOTIONS.labels(how).inc()
    session.refresh(experiment)
    return True


def rollback(session: Session, experiment: Experiment, actor: str, reason: str) -> bool:
    """Undo a promotion: the experiment goes back to its configured allocation."""
    if experiment.winner_arm is None or experiment.status == "concluded":
        raise ApiError(409, "only a running experiment with a promoted winner can be rolled back",
                       code="invalid_transition")
    before = experiment.winner_arm
    now = utcnow()
    result = session.execute(
        update(Experiment).where(Experiment.id == experiment.id, Experiment.winner_arm == before)
        .values(winner_arm=None, holdback=0.0, promoted_at=None, updated_at=now, revision=Experiment.revision + 1)
        .execution_options(synchronize_session=False)
    )
    if (result.rowcount or 0) != 1:
        session.rollback()
        return False
    audit(session, experiment, actor, "rollback", previous_winner=before, reason=reason)
    enqueue(session, experiment, "experiment.rolled_back", {
        "experiment": experiment.key, "previous_winner": before, "reason": reason, "actor": actor,
    })
    session.commit()
    PROMOTIONS.labels("rollback").inc()
    session.refresh(experiment)
    return True


def evaluate_all(session: Session, *, holder: str = "promotion") -> list[dict[str, Any]]:
    """The periodic job: evaluate every running experiment with a rule; promote or notify as it says."""
    with lease(session, "promotion", holder, ttl_seconds=300) as held:
        if not held:
            return [{"status": "locked"}]
        results = []
        candidates = session.scalars(
            select(Experiment).where(Experiment.status == "running", Experiment.winner_arm.is_(None))
        ).all()
        for experiment in candidates:
            key = experiment.key
            try:
                outcome = _evaluate_one(session, experiment, holder)
            except Exception as exc:  # noqa: BLE001 - one experiment's failure must not stop the others
                session.rollback()
                log.error("promotion check failed", exc_info=exc, extra={"experiment": key})
                outcome = {"experiment": key, "action": "failed", "error": f"{type(exc).__name__}: {exc}"[:300],
                           "promoted": False}
            if outcome is not None:
                results.append(outcome)
        return results


def _evaluate_one(session: Session, experiment: Experiment, holder: str) -> dict[str, Any] | None:
    """Evaluate one experiment's rule and act on it; None when it has no rule."""
    spec = spec_of(experiment)
    if spec.promotion is None:
        return None
    decision = decide(session, experiment)
    outcome: dict[str, Any] = {"experiment": experiment.key, "action": decision.action,
                               "winner": decision.winner, "summary": decision.summary, "promoted": False}
    if decision.action == "promote" and decision.winner:
        outcome["promoted"] = promote(session, experiment, decision.winner, holder,
                                      holdback=spec.promotion.holdback, reason=decision.summary,
                                      statistics=decision.statistics, how="auto")
    elif decision.action == "notify" and decision.winner and not _notified(session, experiment,
                                                                           decision.winner):
        audit(session, experiment, holder, "promotion_ready", winner=decision.winner,
              reason=decision.summary, statistics=decision.statistics)
        enqueue(session, experiment, "experiment.promotion_ready",
                {"experiment": experiment.key, "winner": decision.winner, "reason": decision.summary})
        session.commit()
    return outcome


def _notified(session: Session, experiment: Experiment, winner: str) -> bool:
    from .models import AuditEntry

    last = session.scalars(
        select(AuditEntry).where(AuditEntry.experiment_id == experiment.id, AuditEntry.action == "promotion_ready")
        .order_by(AuditEntry.id.desc()).limit(1)
    ).first()
    return last is not None and last.details.get("winner") == winner


def experiment_json(experiment: Experiment) -> dict[str, Any]:
    return to_json(experiment)
