"""Explain one decision in words and numbers (transparency toward the customer)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from experiments.spec import BanditAllocation

from service.clock import iso_utc
from service.http.errors import ApiError
from service.store.models import Assignment, Experiment
from service.store.experiments import spec_of


def explain(session: Session, assignment_id: str) -> dict[str, Any]:
    decision = session.get(Assignment, assignment_id)
    if decision is None:
        raise ApiError(404, f"no decision {assignment_id!r}")
    experiment = session.get(Experiment, decision.experiment_id)
    assert experiment is not None
    spec = spec_of(experiment)
    notes = decision.notes or {}
    context = decision.context or {}
    allocation = spec.allocation
    if isinstance(allocation, BanditAllocation):
        names = [f.name for f in allocation.features]
        features = {name: context.get(name) for name in names}
        how = ("a uniformly random arm from the holdout" if decision.holdout else
               f"the {allocation.policy.name} policy at version {decision.policy_version}"
               + (f" using {', '.join(names)}" if names else ""))
        allocation_json = {"type": "bandit", "policy": allocation.policy.model_dump(mode="json"),
                           "holdout": allocation.holdout}
    else:
        features = {}
        how = "the fixed split (a salted hash of the subject id, so the same subject always gets the same arm)"
        allocation_json = {"type": "fixed", "weights": spec.fixed_weights()}
    rules = []
    # Every contact rule checked at decision time, with the value that decided it (decisions stored
    # before these were noted carry only the arms left out).
    checks = list(notes.get("contact_checks") or [])
    if not checks and decision.channel and decision.source == "live":
        # No policy: the decision's own insert checked the channel's suppression and consent.
        checks = [{"rule": "unsubscribed", "passed": True, "value": "subscribed", "limit": decision.channel},
                  {"rule": "consent", "passed": True, "value": "not refused", "limit": decision.channel}]
    for check in checks:
        limit = f" (limit {check['limit']})" if check.get("limit") else ""
        rules.append(f"{check['rule']}: {check['value']}{limit}, {'passed' if check['passed'] else 'refused'}")
    if notes.get("excluded_arms"):
        rules.append(f"left out arms already bought: {', '.join(notes['excluded_arms'])}")
    text = (f"Subject {decision.subject_id} got arm {decision.arm_key!r} of experiment {experiment.key!r} from {how}; "
            f"that arm had probability {decision.propensity:.4f} of being chosen.")
    if rules:
        text += " Contact policy: " + "; ".join(rules) + "."
    arbitration = notes.get("arbitration")
    if arbitration:
        others = ", ".join(f"{r['experiment']} on {r['channel']} ({r['expected_value']:.4g})"
                           for r in arbitration.get("runners_up", [])[:3])
        text += (f" Next best action chose this offer and channel with probability {arbitration['probability']:.4f}"
                 f" (expected value {arbitration['expected_value']:.4g}"
                 + (f"; runners-up: {others}" if others else "") + f"); send at {arbitration['send_at']}: "
                 f"{arbitration['send_time']}.")
    return {
        "assignment_id": decision.id, "experiment": experiment.key, "subject_id": decision.subject_id,
        "arm": decision.arm_key, "propensity": decision.propensity, "allocation": allocation_json,
        "policy_version": decision.policy_version, "holdout": decision.holdout, "features": features,
        "profile_features": notes.get("profile_features", {}), "contact_rules": rules, "contact_checks": checks, "channel": decision.channel,
        "decided_at": iso_utc(decision.created_at), "explanation": text, "arbitration": arbitration,
    }
