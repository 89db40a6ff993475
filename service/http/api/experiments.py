"""Experiments: create, list, read, change, lifecycle, audit."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify
from flask_openapi3 import APIBlueprint, Tag

from experiments.spec import ExperimentSpec

from service.store import db
from service.clock import iso_utc
from service.http.auth import BEARER
from service.http.auth import current_caller
from service.http.schemas import ActionBody, AuditList, ConcludeBody, ExperimentList, ExperimentListQuery, ExperimentOut, ExperimentPatch, ExperimentPath
from service.store import experiments as store
from service.http.api.scoping import optional_body, requires

api = APIBlueprint("experiments", __name__, url_prefix="/v1", abp_tags=[Tag(name="experiments")],
                   abp_security=BEARER)
scope = requires  # alias keeps the decorator lines short


@api.post("/experiments", responses={201: ExperimentOut})
@scope("experiments", "analyst")
def create_experiment(body: ExperimentSpec) -> tuple[Response, int]:
    """Create an experiment in draft; the whole spec is validated."""
    session = db.session()
    experiment = store.create(session, body, current_caller().name)
    session.commit()
    return jsonify(store.to_json(experiment)), 201


@api.get("/experiments", responses={200: ExperimentList})
@scope("experiments", "analyst")
def list_experiments(query: ExperimentListQuery) -> Response:
    """List experiments, oldest first, paginated by cursor."""
    page = store.list_page(db.session(), status=query.status, limit=query.limit, cursor=query.cursor)
    return jsonify(
        experiments=[store.to_json(e) for e in page.items], next_cursor=page.next_cursor, total=page.total
    )


@api.get("/experiments/<key>", responses={200: ExperimentOut})
@scope("experiments", "analyst")
def get_experiment(path: ExperimentPath) -> Response:
    return jsonify(store.to_json(store.get(db.session(), path.key)))


@api.patch("/experiments/<key>", responses={200: ExperimentOut})
@scope("experiments", "analyst")
def patch_experiment(path: ExperimentPath, body: ExperimentPatch) -> Response:
    """Change what may change in the experiment's status (arms and weights freeze once running)."""
    session = db.session()
    experiment = store.get(session, path.key, for_update=True)
    changes: dict[str, Any] = body.model_dump(mode="json", exclude_unset=True)
    store.patch(session, experiment, changes, current_caller().name)
    session.commit()
    return jsonify(store.to_json(experiment))


def _act(key: str, action: str, reason: str | None = None, winner: str | None = None) -> Response:
    session = db.session()
    experiment = store.get(session, key, for_update=True)
    store.apply_action(session, experiment, action, current_caller().name, winner=winner, reason=reason)
    session.commit()
    return jsonify(store.to_json(experiment))


@api.post("/experiments/<key>/start", responses={200: ExperimentOut})
@scope("experiments", "analyst")
def start_experiment(path: ExperimentPath) -> Response:
    """Start a draft or resume a paused experiment; optional body {"reason"}."""
    return _act(path.key, "start", optional_body(ActionBody).reason)


@api.post("/experiments/<key>/pause", responses={200: ExperimentOut})
@scope("experiments", "analyst")
def pause_experiment(path: ExperimentPath) -> Response:
    """Pause: channels get the control arm until it is started again; optional body {"reason"}."""
    return _act(path.key, "pause", optional_body(ActionBody).reason)


@api.post("/experiments/<key>/conclude", responses={200: ExperimentOut})
@scope("experiments", "analyst")
def conclude_experiment(path: ExperimentPath) -> Response:
    """Conclude, optionally naming the winner every channel then gets; optional body {"winner", "reason"}."""
    body = optional_body(ConcludeBody)
    return _act(path.key, "conclude", body.reason, body.winner)


@api.get("/experiments/<key>/audit", responses={200: AuditList})
@scope("experiments", "analyst")
def experiment_audit(path: ExperimentPath) -> Response:
    """Lifecycle and promotion history, oldest first."""
    session = db.session()
    experiment = store.get(session, path.key)
    entries = store.audit_entries(session, experiment)
    return jsonify(
        experiment=experiment.key,
        entries=[
            {"id": e.id, "actor": e.actor, "action": e.action, "details": e.details,
             "created_at": iso_utc(e.created_at)}
            for e in entries
        ],
    )
