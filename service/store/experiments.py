"""Experiments in the database: create, read, change, lifecycle, audit."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from experiments import lifecycle
from experiments.spec import ArmSpec, ExperimentSpec

from service.clock import iso_utc, utcnow
from service.http.errors import ApiError
from service.store.models import Arm, AuditEntry, Experiment


def spec_of(experiment: Experiment) -> ExperimentSpec:
    """Rebuild the validated spec from the row and its arms."""
    stored = dict(experiment.spec)
    values = stored.pop("arm_values", None) or {}
    arms = [
        ArmSpec(key=a.key, name=a.name, payload=a.payload or {}, is_control=a.is_control, enabled=a.enabled,
                value=values.get(a.key))
        for a in experiment.arms
    ]
    return ExperimentSpec.model_validate(
        {**stored, "key": experiment.key, "name": experiment.name,
         "description": experiment.description, "arms": arms}
    )


def _spec_columns(spec: ExperimentSpec) -> dict[str, Any]:
    """The spec's JSON column: everything but the arms (rows of their own) and the labels, plus the arms'
    values (what a conversion on each is worth), which the arm rows do not hold."""
    columns = spec.model_dump(mode="json", exclude={"arms", "key", "name", "description"})
    values = {arm.key: arm.value for arm in spec.arms if arm.value is not None}
    if values:
        columns["arm_values"] = values
    return columns


def _write_arms(experiment: Experiment, spec: ExperimentSpec) -> None:
    existing = {arm.key: arm for arm in experiment.arms}
    arms = []
    for position, arm_spec in enumerate(spec.arms):
        arm = existing.get(arm_spec.key) or Arm(key=arm_spec.key)
        arm.name = arm_spec.name
        arm.payload = arm_spec.payload
        arm.is_control = arm_spec.is_control
        arm.enabled = arm_spec.enabled
        arm.position = position
        arms.append(arm)
    experiment.arms = arms


def audit(session: Session, experiment: Experiment | None, actor: str, action: str, **details: Any) -> None:
    session.add(
        AuditEntry(
            experiment_id=experiment.id if experiment is not None else None,
            actor=actor,
            action=action,
            details=details,
            created_at=utcnow(),
        )
    )


def create(session: Session, spec: ExperimentSpec, actor: str) -> Experiment:
    now = utcnow()
    experiment = Experiment(
        key=spec.key,
        name=spec.name,
        description=spec.description,
        status="draft",
        spec=_spec_columns(spec),
        salt=secrets.token_hex(8),
        holdback=0.0,
        revision=1,
        created_at=now,
        updated_at=now,
    )
    _write_arms(experiment, spec)
    session.add(experiment)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise ApiError(409, f"an experiment with key {spec.key!r} already exists", code="duplicate_key") from None
    audit(session, experiment, actor, "create", spec=spec.model_dump(mode="json"))
    return experiment


def get(session: Session, key: str, *, for_update: bool = False) -> Experiment:
    query = select(Experiment).where(Experiment.key == key)
    if for_update:
        query = query.with_for_update()
    experiment = session.scalars(query).first()
    if experiment is None:
        raise ApiError(404, f"no experiment with key {key!r}")
    return experiment


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Experiment]
    next_cursor: int | None
    total: int


def list_page(session: Session, *, status: str | None, limit: int, cursor: int | None) -> Page:
    query = select(Experiment).order_by(Experiment.id)
    count = select(func.count()).select_from(Experiment)
    if status:
        query = query.where(Experiment.status == status)
        count = count.where(Experiment.status == status)
    if cursor:
        query = query.where(Experiment.id > cursor)
    rows = list(session.scalars(query.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(items=rows, next_cursor=rows[-1].id if more and rows else None, total=session.scalar(count) or 0)


def patch(session: Session, experiment: Experiment, changes: dict[str, Any], actor: str) -> Experiment:
    """Apply a partial spec; fields frozen in the current state are a 409 naming them."""
    if "key" in changes and changes["key"] != experiment.key:
        raise ApiError(409, "an experiment's key never changes", code="frozen_field", details=[{"field": "key"}])
    changes.pop("key", None)
    current = spec_of(experiment)
    current_json = current.model_dump(mode="json")
    merged = {**current_json, **changes}
    spec = ExperimentSpec.model_validate(merged)  # the whole spec must still be valid
    new_json = spec.model_dump(mode="json")
    changed = {field for field in changes if new_json.get(field) != current_json.get(field)}
    checked = set(changed)
    if "arms" in changed and experiment.status in ("running", "paused") and spec.allocation.type == "bandit":
        problem = lifecycle.bandit_arm_change_problem(current_json["arms"], new_json["arms"])
        if problem:
            raise ApiError(409, problem, code="frozen_field", details=[{"field": "arms"}])
        checked.discard("arms")
    frozen = lifecycle.frozen_fields_in(experiment.status, checked)
    if frozen:
        raise ApiError(
            409,
            f"{', '.join(frozen)} cannot change while the experiment is {experiment.status}",
            code="frozen_field",
            details=[{"field": f} for f in frozen],
        )
    if not changed:
        return experiment
    experiment.name = spec.name
    experiment.description = spec.description
    experiment.spec = _spec_columns(spec)
    if "arms" in changed:
        _write_arms(experiment, spec)
    experiment.revision += 1
    experiment.updated_at = utcnow()
    audit(session, experiment, actor, "update", changed=sorted(changed),
          before={f: current_json.get(f) for f in changed}, after={f: new_json.get(f) for f in changed})
    return experiment


def apply_action(
    session: Session, experiment: Experiment, action: str, actor: str, *, winner: str | None = None,
    reason: str | None = None,
) -> Experiment:
    """Run a lifecycle action; a wrong state is a 409 that says what is allowed."""
    try:
        new_status = lifecycle.transition(experiment.status, action)
    except lifecycle.TransitionError as exc:
        raise ApiError(409, str(exc), code="invalid_transition",
                       details=[{"status": experiment.status, "allowed": lifecycle.allowed_actions(experiment.status)}]
                       ) from None
    arm_keys = [arm.key for arm in experiment.arms]
    if winner is not None and winner not in arm_keys:
        raise ApiError(422, f"winner {winner!r} is not an arm of this experiment",
                       details=[{"field": "winner", "message": f"expected one of {arm_keys}"}])
    now = utcnow()
    before = experiment.status
    experiment.status = new_status
    experiment.updated_at = now
    experiment.revision += 1
    if action == "start" and experiment.started_at is None:
        experiment.started_at = now
    if action == "conclude":
        experiment.concluded_at = now
        if winner is not None:
            experiment.winner_arm = winner
    audit(session, experiment, actor, action, status_before=before, status_after=new_status,
          winner=winner, reason=reason)
    return experiment


def audit_entries(session: Session, experiment: Experiment, limit: int = 500) -> list[AuditEntry]:
    return list(
        session.scalars(
            select(AuditEntry).where(AuditEntry.experiment_id == experiment.id).order_by(AuditEntry.id).limit(limit)
        )
    )


def to_json(experiment: Experiment) -> dict[str, Any]:
    """The stored experiment as the API returns it: the spec plus state."""
    body = spec_of(experiment).model_dump(mode="json")
    body.update(
        id=experiment.id,
        status=experiment.status,
        salt=experiment.salt,
        winner=experiment.winner_arm,
        holdback=experiment.holdback,
        revision=experiment.revision,
        allowed_actions=lifecycle.allowed_actions(experiment.status),
        created_at=iso_utc(experiment.created_at),
        updated_at=iso_utc(experiment.updated_at),
        started_at=iso_utc(experiment.started_at),
        promoted_at=iso_utc(experiment.promoted_at),
        concluded_at=iso_utc(experiment.concluded_at),
    )
    return body

