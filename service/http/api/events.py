"""Outcomes: a batch of events, each accepted, duplicate or rejected with its reason."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, jsonify
from flask_openapi3 import APIBlueprint, Tag

from sqlalchemy.exc import DBAPIError

from service.store import db
from service.store.db import is_transient
from service.http.auth import BEARER
from service.clock import utcnow
from service.config import reward_grace_seconds
from service.http.errors import ApiError
from service.usecases.contact import suppress_unsubscribed
from service.store.ingest import ingest
from service.http.observability import EVENTS, EXPERIMENT_EVENTS
from service.http.schemas import EventBatchIn, EventBatchOut
from service.http.api.scoping import requires

api = APIBlueprint("events", __name__, url_prefix="/v1", abp_tags=[Tag(name="events")], abp_security=BEARER)


@api.post("/events", responses={200: EventBatchOut})
@requires("events", "channel")
def send_events(body: EventBatchIn) -> Response:
    """Record outcomes exactly once; only a malformed envelope fails the whole batch."""
    limit = int(current_app.config["NEXTBEST_MAX_EVENTS_PER_BATCH"])
    if len(body.events) > limit:
        raise ApiError(413, f"a batch may hold at most {limit} events, got {len(body.events)}")
    session = db.session()
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            result = _store(session, body.events)
            break
        except DBAPIError as exc:  # a deadlock the database broke: the batch is rolled back, run it again
            session.rollback()
            if not is_transient(exc) or attempt == _ATTEMPTS:
                raise
    for status, count in (("accepted", result.accepted), ("duplicate", result.duplicates),
                          ("rejected", result.rejected)):
        if count:
            EVENTS.labels(status).inc(count)
    for key, count in result.accepted_by_experiment.items():
        EXPERIMENT_EVENTS.labels(key or "none").inc(count)
    return jsonify(result.as_json())


_ATTEMPTS = 3


def _store(session: Any, events: Any) -> Any:
    """Ingest and commit one batch (its effects are all or nothing)."""
    stamped = utcnow()
    result = ingest(session, events, now=stamped)
    suppress_unsubscribed(session, result.unsubscribes, {})  # each names its channel
    # Refits train decisions matured a grace ago and trust that every event stamped before then is
    # committed; a batch that held its stamp longer than half the grace is not committed (service/jobs/learning.py).
    limit = reward_grace_seconds(current_app.config) / 2
    if (utcnow() - stamped).total_seconds() > limit:
        session.rollback()
        raise ApiError(503, f"the batch took longer than {limit:g} s to store; send it again",
                       code="ingest_too_slow", headers={"Retry-After": "1"})
    session.commit()
    return result
