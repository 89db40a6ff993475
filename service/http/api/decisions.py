"""Decisions: one subject, or a whole send list in one call."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.orm import Session

from flask import Response, current_app, g, jsonify, request
from flask_openapi3 import APIBlueprint, Tag

from service.store import db
from service.usecases import decisions as core
from service.http.auth import BEARER
from service.http.errors import ApiError
from service.http.observability import count_decisions
from service.store.pseudonyms import app_secret, subject_hash
from service.usecases import contact
from service.store import idempotency
from service.clock import utcnow
from service.usecases.runtime import ExperimentRuntime, RuntimeCache
from service.http.schemas import AssignRequest, AssignResponse, BatchAssignRequest, BatchAssignResponse
from service.http.api.scoping import requires

api = APIBlueprint("decisions", __name__, url_prefix="/v1", abp_tags=[Tag(name="decisions")], abp_security=BEARER)


def runtime_cache() -> RuntimeCache:
    cache = current_app.extensions.get("nextbest.runtime")
    if cache is None:
        cache = RuntimeCache(float(current_app.config["NEXTBEST_POLICY_REFRESH_SECONDS"]))
        current_app.extensions["nextbest.runtime"] = cache
    return cache


@api.post("/assign", responses={200: AssignResponse})
@requires("decisions", "channel")
def assign(body: AssignRequest) -> Response:
    """Decide one subject's arm; the decision is stored before the answer is sent. With an
    Idempotency-Key (or request_id) a retry gets the stored answer and stores nothing."""
    key = idempotency.key_of(request.headers.get(idempotency.HEADER), body.request_id)
    if key is not None:
        replay = idempotency.claim(decision_session(), g.caller.key_id, key, "assign", request.get_data())
        if replay is not None:
            return replay
    try:
        answer = store_and_answer(*decide_one(body))
    except BaseException:
        g.pop("idempotency_pending", None)
        raise
    response = jsonify(answer)
    if key is not None:
        idempotency.remember(decision_session(), response.status_code, response.content_type, response.get_data())
    commit_decision()
    return response


def decision_session() -> Session:
    """The request's transaction for a decision that holds locks (contact rules that read history,
    an idempotency key): its reads, write and stored answer commit together. Closed at teardown."""
    session = g.get("decision_txn")
    if session is None:
        session = g.decision_txn = db.get_db().sessionmaker()
    return session


def commit_decision() -> None:
    """Commit the decision's transaction, if the request has one (this releases its locks)."""
    session = g.get("decision_txn")
    if session is not None:
        session.commit()


def decide_one(body: AssignRequest) -> tuple[ExperimentRuntime, core.Outcome]:
    """Everything before the write. Without locks it only reads, so a failure here has changed nothing
    (the direct path in service/http/direct_assign.py relies on that to hand such a request to Flask); with
    locks, they are held by the request's decision transaction, which teardown rolls back."""
    runtime = runtime_cache().get(db.session, body.experiment)
    requests = with_profile_features(db.session, runtime, [core.Request(body.subject_id, body.context, body.channel)])
    if contact.serialised(runtime):
        session = decision_session()
        contact.lock_requests(session, runtime, requests)
        suppressed = contact.verdict_for_one(db.get_db(), runtime, requests[0], session=session)
    elif contact.policies_for(runtime):
        suppressed = contact.verdict_for_one(db.get_db(), runtime, requests[0])
    else:
        # Without a contact policy only an unsubscribe, a refused consent or the do-not-contact list
        # can refuse, and the insert itself checks those.
        suppressed = {}
    (outcome,) = core.decide(runtime, requests, suppressed)
    return runtime, outcome


def store_and_answer(runtime: ExperimentRuntime, outcome: core.Outcome) -> dict[str, Any]:
    """Store the decision (when it is a logged one) and give the answer a channel gets. In a decision
    transaction the write joins it and the caller commits (commit_decision)."""
    database = db.get_db()
    txn = g.get("decision_txn")
    if outcome.row is not None:
        channel = outcome.row["channel"]
        hashed = subject_hash(app_secret(), outcome.subject_id) if channel else ""
        if not core.store_one(database, outcome, hashed, txn):
            request = core.Request(outcome.subject_id, None, channel)
            outcome = core.Outcome(outcome.subject_id, None, None, reason=contact.refusal_reason(database, request),
                                   no_offer=True)
    if outcome.no_offer:
        session = txn if txn is not None else db.session()
        _count_refusals(session, runtime, [outcome])
        if txn is None:
            session.commit()
    count_decisions(runtime.key, _kind(outcome))
    return core.to_json(runtime, outcome)


@api.post("/assign/batch", responses={200: BatchAssignResponse})
@requires("decisions", "channel")
def assign_batch(body: BatchAssignRequest) -> Response:
    """Decide a whole send list; stored with one bulk write, answered in the same order. A subject
    named twice is decided once. With an Idempotency-Key (or request_id) a retry gets the stored
    answer and stores nothing."""
    limit = int(current_app.config["NEXTBEST_MAX_BATCH_SUBJECTS"])
    if len(body.subjects) > limit:
        raise ApiError(413, f"a batch may hold at most {limit} subjects, got {len(body.subjects)}")
    session = db.session()
    key = idempotency.key_of(request.headers.get(idempotency.HEADER), body.request_id)
    if key is not None:
        replay = idempotency.claim(session, g.caller.key_id, key, "assign_batch", request.get_data())
        if replay is not None:
            return replay
    runtime = runtime_cache().get(db.session, body.experiment)
    requests = with_profile_features(
        db.session, runtime, [core.Request(s.subject_id, s.context, body.channel) for s in body.subjects])
    suppressed = contact_verdicts(session, runtime, requests)
    outcomes = core.decide(runtime, requests, suppressed)
    # The database ingests the rows while this thread writes the answer; it is sent only after the
    # write has committed, so every assignment_id in it exists.
    with _in_background(core.store, session, outcomes):
        answer = core.batch_answer_json(runtime, outcomes, *_compact_json())
    _count_refusals(session, runtime, outcomes)
    response = current_app.response_class(answer, mimetype="application/json")
    if key is not None:
        idempotency.remember(session, response.status_code, response.content_type, response.get_data())
    session.commit()
    for kind, count in Counter(_kind(o) for o in outcomes).items():
        count_decisions(runtime.key, kind, count)
    return response


def _kind(outcome: core.Outcome) -> str:
    """The decisions metric's label: a logged decision, a no-offer answer, or an unlogged default."""
    return "no_offer" if outcome.no_offer else "logged" if outcome.assignment_id else "default"


def _compact_json() -> tuple[Callable[[Any], str], Callable[[str], str]]:
    """The app's JSON encoder with compact separators, and the string encoder it uses."""
    provider = current_app.json
    encode_string = json.encoder.encode_basestring_ascii if provider.ensure_ascii else json.encoder.encode_basestring
    return (lambda value: provider.dumps(value, separators=(",", ":"))), encode_string  # type: ignore[attr-defined]


@contextmanager
def _in_background(work: Callable[..., Any], *args: Any) -> Iterator[None]:
    """Run `work(*args)` in a thread while the block runs; leaving waits for it and raises its error."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            work(*args)
        except BaseException as exc:  # handed to the request's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name="nextbest-batch-write", daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join()
    if failure:
        raise failure[0]


def with_profile_features(open_session: Callable[[], Session], runtime: ExperimentRuntime,
                          requests: list[core.Request]) -> list[core.Request]:
    """Fill features the experiment sources from the profile; the values used go into the decision's notes."""
    allocation = runtime.spec.allocation
    names = [f.name for f in getattr(allocation, "features", []) if f.source == "profile"]
    if not names or runtime.status != "running" or runtime.winner is not None:
        return requests
    from service.usecases.profiles import profile_features

    values = profile_features(open_session(), names, sorted({r.subject_id for r in requests}))
    return [
        core.Request(r.subject_id, {**values[r.subject_id], **(r.context or {})}, r.channel,
                     {"profile_features": values[r.subject_id]})
        for r in requests
    ]


def contact_verdicts(session: Session, runtime: ExperimentRuntime, requests: list[core.Request]) -> dict[int, Any]:
    """Contact-policy verdicts by request index (refusals, or arms to leave out)."""
    return contact.verdicts(session, runtime, requests)


def _count_refusals(session: Session, runtime: ExperimentRuntime, outcomes: list[core.Outcome]) -> None:
    reasons = [o.reason or "suppressed" for o in outcomes if o.no_offer]
    if reasons:
        contact.count_suppressed(session, runtime.id, reasons, utcnow())
