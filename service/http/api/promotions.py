"""Promotion: the decision explained, promotion and rollback by hand, webhook subscribers."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify
from flask_openapi3 import APIBlueprint, Tag
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.store import db
from service.http.auth import BEARER
from service.http.auth import current_caller
from service.http.errors import ApiError
from service.store.models import Experiment, Webhook, WebhookDelivery
from service.jobs.promotion import decide, decision_json, promote, rollback, watch
from service.http.schemas import ExperimentOut, ExperimentPath, PromoteBody, PromotionDecisionOut, RollbackBody, WebhookIn, WebhookList, WebhookOut, WebhookPath
from service.store import experiments as store
from service.store.experiments import audit, spec_of, to_json
from service.jobs.webhooks import subscribe
from service.http.api.scoping import optional_body, requires

api = APIBlueprint("promotions", __name__, url_prefix="/v1", abp_tags=[Tag(name="promotion")], abp_security=BEARER)


@api.get("/experiments/<key>/decision", responses={200: PromotionDecisionOut})
@requires("promotions", "analyst")
def promotion_decision(path: ExperimentPath) -> Response:
    """Would the rule promote now, and why or why not, in words and numbers."""
    session = db.session()
    experiment = store.get(session, path.key)
    return jsonify(decision_json(experiment, decide(session, experiment), watch(session, experiment)))


@api.post("/experiments/<key>/promote", responses={200: ExperimentOut})
@requires("promotions", "analyst")
def promote_by_hand(path: ExperimentPath, body: PromoteBody) -> Response:
    """Promote a winner by hand: the same atomic path and audit record as the automatic job."""
    session = db.session()
    experiment = store.get(session, path.key)
    if experiment.status != "running":
        raise ApiError(409, f"only a running experiment can be promoted; it is {experiment.status}",
                       code="invalid_transition")
    if experiment.winner_arm is not None:
        raise ApiError(409, f"{experiment.winner_arm!r} is already promoted; roll back first", code="already_promoted")
    spec = spec_of(experiment)
    holdback = body.holdback if body.holdback is not None else (spec.promotion.holdback if spec.promotion else 0.0)
    if not promote(session, experiment, body.winner, current_caller().name, holdback=holdback, reason=body.reason):
        raise ApiError(409, "the experiment changed meanwhile (promoted or stopped)", code="conflict")
    return jsonify(to_json(experiment))


@api.post("/experiments/<key>/rollback", responses={200: ExperimentOut})
@requires("promotions", "analyst")
def rollback_by_hand(path: ExperimentPath) -> Response:
    """Undo a promotion; the configured allocation serves again."""
    body = optional_body(RollbackBody)
    session = db.session()
    experiment = store.get(session, path.key)
    if not rollback(session, experiment, current_caller().name, body.reason):
        raise ApiError(409, "the experiment changed meanwhile", code="conflict")
    return jsonify(to_json(experiment))


def _webhook_json(session: Session, hook: Webhook, secret: str | None = None) -> dict[str, Any]:
    key = session.scalar(select(Experiment.key).where(Experiment.id == hook.experiment_id)) if hook.experiment_id else None
    counts = dict(session.execute(select(WebhookDelivery.status, func.count())
                                  .where(WebhookDelivery.webhook_id == hook.id).group_by(WebhookDelivery.status)).all())
    return {"id": hook.id, "url": hook.url, "experiment": key, "active": hook.active, "secret": secret,
            "deliveries": {k: int(v) for k, v in counts.items()}}


@api.post("/webhooks", responses={201: WebhookOut})
@requires("promotions", "admin")
def create_webhook(body: WebhookIn) -> tuple[Response, int]:
    """Subscribe a URL to promotion notices (HMAC-signed; the secret is shown once)."""
    session = db.session()
    experiment = store.get(session, body.experiment) if body.experiment else None
    hook, secret = subscribe(session, body.url, experiment, body.secret)
    audit(session, experiment, current_caller().name, "webhook_subscribe", url=body.url, webhook_id=hook.id)
    session.commit()
    return jsonify(_webhook_json(session, hook, secret)), 201


@api.get("/webhooks", responses={200: WebhookList})
@requires("promotions", "admin")
def list_webhooks() -> Response:
    session = db.session()
    hooks = session.scalars(select(Webhook).order_by(Webhook.id)).all()
    return jsonify(webhooks=[_webhook_json(session, h) for h in hooks])


@api.delete("/webhooks/<webhook_id>", responses={200: WebhookOut})
@requires("promotions", "admin")
def delete_webhook(path: WebhookPath) -> Response:
    session = db.session()
    hook = session.get(Webhook, path.webhook_id)
    if hook is None:
        raise ApiError(404, f"no webhook {path.webhook_id}")
    hook.active = False
    session.commit()
    return jsonify(_webhook_json(session, hook))
