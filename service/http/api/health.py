"""Operations: liveness and readiness (no key needed)."""

from __future__ import annotations

from flask import Response, jsonify
from flask_openapi3 import APIBlueprint, Tag

from service.store import db
from service.http.schemas import Health

api = APIBlueprint("health", __name__, abp_tags=[Tag(name="operations")])


@api.get("/healthz", responses={200: Health})
def healthz() -> Response:
    """The process is up."""
    return jsonify(status="ok")


@api.get("/readyz", responses={200: Health, 503: Health})
def readyz() -> tuple[Response, int]:
    """The database is reachable and at the latest migration."""
    database = db.get_db()
    expected = db.head_revision()
    try:
        revision = database.current_revision()
    except Exception as exc:  # any driver error means not ready
        return jsonify(status="unavailable", database=database.dialect, message=exc.__class__.__name__), 503
    if revision != expected:
        return jsonify(status="not_migrated", database=database.dialect, revision=revision,
                       expected_revision=expected, message="run `nextbest db upgrade`"), 503
    return jsonify(status="ready", database=database.dialect, revision=revision, expected_revision=expected), 200
