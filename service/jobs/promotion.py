"""Promotion in the shell: evaluate rules on the live report, promote atomically, record and notify.

Promotion is one transaction: a conditional UPDATE that sets the winner only
while the experiment is running without one (so two evaluators at once cannot
promote twice or promote two winners), the audit record with the statistics
that justified it, and the webhook deliveries to send. After it commits, every
worker serves the winner (less the holdback, which stays on control) within
the policy refresh interval. Manual promotion, rollback and a stop for harm
(``"on_harm": "stop"``: the experiment is paused) take the same path.

After promotion the winner is watched against its holdback: only decisions made
after the promotion whose attribution window has closed (matured: every outcome
that counts has had time to arrive) are compared, with the same stop rule as
before promotion (the winner clearly worse on the decision metric, or a guardrail
clearly breached). A regression is audited and notified once, and with
``"on_regression": "rollback"`` the promotion is rolled back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from experiments.promotion import PromotionDecision, evaluate_promotion

from service.clock import iso_utc, utcnow
from service.http.errors import ApiError
from service.jobs.leases import lease
from service.store.models import Experiment
from service.http.observability import PROMOTIONS
from service.store.report_queries import report_input, window_report_input
from service.store.experiments import audit, spec_of, to_json
from service.jobs.webhooks import enqueue

log = logging.getLogger("nextbest.promotion")


def decide(session: Session, experiment: Experiment, now: datetime | None = None) -> PromotionDecision:
    """What the experiment's promotion rule would do now, and why."""
    now = now or utcnow()
    spec = spec_of(experiment)
    runtime = (now - experiment.started_at).total_seconds() if experiment.started_at else 0.0
    status = experiment.status if experiment.winner_arm is None else "promoted"
    return evaluate_promotion(report_input(session, experiment, spec), spec.promotion, spec.guardrails,
                              max(runtime, 0.0), "running" if status == "running" else status)


def decision_json(experiment: Experiment, decision: PromotionDecision,
                  post_promotion: dict[str, Any] | None = None) -> dict[str, Any]:
    body = asdict(decision)
    body["experiment"] = experiment.key
    body["promoted_winner"] = experiment.winner_arm
    body["conditions"] = [asdict(c) for c in decision.conditions]
    body["reason"] = decision.stop_reason if decision.action == "stop" else None
    body["post_promotion"] = post_promotion
    return body


def watch(session: Session, experiment: Experiment, now: datetime | None = None) -> dict[str, Any] | None:
    """The promoted winner against its holdback, on matured post-promotion decisions; None when not promoted."""
    if experiment.winner_arm is None or experiment.promoted_at is None:
        return None
    now = now or utcnow()
    spec = spec_of(experiment)
    control = spec.control_arm
    winner = experiment.winner_arm
    window = timedelta(seconds=spec.attribution_window_seconds)
    matured_until = min(now - window, now)
    promoted_at = experiment.promoted_at
    base: dict[str, Any] = {
        "winner": winner, "control": control, "holdback": experiment.holdback, "since": iso_utc(promoted_at),
        "matured_until": iso_utc(matured_until), "attribution_window_seconds": spec.attribution_window_seconds,
        "on_regression": spec.promotion.on_regression if spec.promotion else None,
    }
    if spec.promotion is None or winner == control:
        return {**base, "regression": None, "decisions": {}, "values": {}, "conditions": [],
                "summary": "Nothing to watch: no promotion rule, or control was promoted."}
    if matured_until <= promoted_at:
        inp = None
    else:
        inp = window_report_input(session, experiment, spec, promoted_at, matured_until)
    if inp is None:
        return {**base, "regression": None, "decisions": {}, "values": {}, "conditions": [],
                "summary": "No post-promotion decision has matured yet (the attribution window has not closed)."}
    arms = [a for a in inp.arms if a.arm in (control, winner)]
    pair = replace(inp, arms=arms, allocation_type="fixed", bandit=None, srm_counts=None)
    decision = evaluate_promotion(pair, spec.promotion, spec.guardrails, 0.0, "running", is_bandit=False)
    metric_values = decision.statistics["arms"]
    regression = decision.stop_reason
    if regression:
        summary = f"Regression since promotion: {regression}."
    elif experiment.holdback <= 0:
        summary = "No holdback on control, so the winner cannot be compared with control after promotion."
    else:
        summary = "No regression since promotion: the winner is not clearly worse than its holdback."
    return {
        **base,
        "regression": regression,
        "decisions": {a.arm: a.decisions for a in arms},
        "values": {arm: v["value"] for arm, v in metric_values.items()},
        "metric": spec.promotion.metric,
        "conditions": [c for c in decision.statistics["conditions"]
                       if c["name"] == "beats_control" or c["name"].startswith("guardrail:")],
        "summary": summary,
    }


def stop(session: Session, experiment: Experiment, actor: str, reason: str,
         statistics: dict[str, Any] | None = None) -> bool:
    """Pause a running experiment for harm: audited, with a webhook; False when it changed meanwhile."""
    now = utcnow()
    result = session.execute(
        update(Experiment)
        .where(Experiment.id == experiment.id, Experiment.status == "running", Experiment.winner_arm.is_(None))
        .values(status="paused", updated_at=now, revision=Experiment.revision + 1)
        .execution_options(synchronize_session=False)
    )
    if (result.rowcount or 0) != 1:
        session.rollback()
        return False
    audit(session, experiment, actor, "stop", status_before="running", status_after="paused", reason=reason,
          statistics=statistics or {})
    enqueue(session, experiment, "experiment.stopped", {
        "experiment": experiment.key, "status": "paused", "reason": reason, "stopped_at": iso_utc(now),
        "actor": actor,
    })
    session.commit()
    PROMOTIONS.labels("stop").inc()
    session.refresh(experiment)
    return True


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


def rollback(session: Session, experiment: Experiment, actor: str, reason: str,
             statistics: dict[str, Any] | None = None) -> bool:
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
    details = {"statistics": statistics} if statistics is not None else {}
    audit(session, experiment, actor, "rollback", previous_winner=before, reason=reason, **details)
    enqueue(session, experiment, "experiment.rolled_back", {
        "experiment": experiment.key, "previous_winner": before, "reason": reason, "actor": actor,
    })
    session.commit()
    PROMOTIONS.labels("rollback").inc()
    session.refresh(experiment)
    return True


def evaluate_all(session: Session, *, holder: str = "promotion") -> list[dict[str, Any]]:
    """The periodic job: evaluate every running experiment with a rule; promote or notify as it says."""
    with lease(session, "promotion", holder, ttl_seconds=30) as held:
        if not held:
            return [{"status": "locked"}]
        results = []
        # Running experiments without a winner are checked for promotion, then those with one (promoted
        # earlier or just now) for a regression; each experiment on its own (`_isolated`).
        for has_winner, what, failed, check in (
            (Experiment.winner_arm.is_(None), "promotion check", {"promoted": False}, _evaluate_one),
            (Experiment.winner_arm.is_not(None), "post-promotion check", {"rolled_back": False}, _watch_one),
        ):
            for experiment in session.scalars(
                    select(Experiment).where(Experiment.status == "running", has_winner)).all():
                outcome = _isolated(session, experiment, what, failed,
                                    lambda e=experiment, c=check: c(session, e, holder))
                if outcome is not None:
                    results.append(outcome)
        return results


def _isolated(session: Session, experiment: Experiment, what: str, failed: dict[str, Any],
              check: Callable[[], dict[str, Any] | None]) -> dict[str, Any] | None:
    """Run one experiment's check; a failure is logged and reported as `action: failed`, never raised,
    so one broken experiment cannot stop the others from being promoted or watched."""
    key = experiment.key
    try:
        return check()
    except Exception as exc:  # noqa: BLE001 - one experiment's failure must not stop the others
        session.rollback()
        log.error("%s failed", what, exc_info=exc, extra={"experiment": key})
        return {"experiment": key, "action": "failed", "error": f"{type(exc).__name__}: {exc}"[:300], **failed}


def _notify_once(session: Session, experiment: Experiment, holder: str, action: str, payload: dict[str, Any],
                 statistics: Any, winner: str | None = None) -> None:
    """Audit and announce a notice (`experiment.<action>` webhook) unless the last one said the same."""
    if _notified(session, experiment, winner, action=action):
        return
    details = {"winner": winner} if winner is not None else {}
    audit(session, experiment, holder, action, **details, reason=payload["reason"], statistics=statistics)
    enqueue(session, experiment, f"experiment.{action}", {"experiment": experiment.key, **payload})
    session.commit()


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
    elif decision.action == "notify" and decision.winner:
        _notify_once(session, experiment, holder, "promotion_ready",
                     {"winner": decision.winner, "reason": decision.summary}, decision.statistics, decision.winner)
    elif decision.action == "stop" and decision.stop_reason:
        outcome["reason"] = decision.stop_reason
        if spec.promotion.on_harm == "stop":
            outcome["stopped"] = stop(session, experiment, holder, decision.stop_reason, decision.statistics)
        else:
            _notify_once(session, experiment, holder, "stop_recommended", {"reason": decision.stop_reason},
                         decision.statistics)
    return outcome


def _watch_one(session: Session, experiment: Experiment, holder: str) -> dict[str, Any] | None:
    """Check a promoted winner against its holdback; roll back or notify on a regression."""
    spec = spec_of(experiment)
    if spec.promotion is None:
        return None
    watched = watch(session, experiment)
    if watched is None or not watched["regression"]:
        return None
    outcome = {"experiment": experiment.key, "action": "regression", "winner": experiment.winner_arm,
               "summary": watched["summary"], "rolled_back": False}
    if spec.promotion.on_regression == "rollback":
        outcome["rolled_back"] = rollback(session, experiment, holder, watched["summary"], statistics=watched)
    else:
        _notify_once(session, experiment, holder, "regression",
                     {"winner": experiment.winner_arm, "reason": watched["summary"]}, watched, experiment.winner_arm)
    return outcome


def _notified(session: Session, experiment: Experiment, winner: str | None, action: str = "promotion_ready") -> bool:
    """Whether the last audit entry of this kind was about the same winner (notices go out once)."""
    from service.store.models import AuditEntry

    last = session.scalars(
        select(AuditEntry).where(AuditEntry.experiment_id == experiment.id, AuditEntry.action == action)
        .order_by(AuditEntry.id.desc()).limit(1)
    ).first()
    return last is not None and last.details.get("winner") == winner


def experiment_json(experiment: Experiment) -> dict[str, Any]:
    return to_json(experiment)
