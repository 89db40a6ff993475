"""Idempotent decision requests: an `Idempotency-Key` (or a batch's `request_id`) makes a retry harmless.

The first request with a key runs in a transaction that also stores its answer; a later request
with the same key and the same body gets that answer back byte for byte (with
`Idempotent-Replayed: true`) and stores nothing; the same key with another body is a 422. Keys
are scoped per API key, so one caller can never read another's answer, and kept for
NEXTBEST_IDEMPOTENCY_RETENTION_SECONDS (24 h by default), after which they are pruned on write.

Two requests with one key at the same moment: on PostgreSQL the second is answered 409
`idempotency_in_progress` with Retry-After (a transaction-scoped advisory lock on the key);
on SQLite it waits for the first's write lock and then gets the stored answer. A request that
fails stores nothing, so it can be retried with the same key.
"""

from __future__ import annotations

import hashlib
import itertools
from datetime import timedelta

from flask import Response, current_app, g
from sqlalchemy import delete, text
from sqlalchemy.orm import Session

from service.store import contact_locks
from service.clock import utcnow
from service.http.errors import ApiError
from service.store.models import IdempotencyRecord

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
PRUNE_EVERY = 256  # stored answers per process between two prunes of expired keys
_writes = itertools.count(1)


def key_of(header: str | None, request_id: str | None) -> str | None:
    """The request's idempotency key: the header, else the body's request_id; None when neither."""
    if header is not None:
        key = header.strip()
        if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isprintable():
            raise ApiError(422, f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable characters",
                           details=[{"field": HEADER, "message": "1 to 255 printable characters"}])
        return key
    return f"request_id:{request_id}" if request_id is not None else None


def retention_seconds() -> float:
    return float(current_app.config.get("NEXTBEST_IDEMPOTENCY_RETENTION_SECONDS", 86400))


def claim(session: Session, key_id: int, key: str, endpoint: str, raw: bytes) -> Response | None:
    """The stored answer for this key, or None after taking the key for this request (until the
    session's transaction ends). Raises 422 for the key with another body, 409 while it is in use."""
    digest = hashlib.sha256(endpoint.encode() + b"\0" + raw).hexdigest()
    if session.get_bind().dialect.name == "postgresql":
        taken = session.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"),
                               {"key": contact_locks.lock_key("idempotency", str(key_id), key)})
        if not taken:
            raise ApiError(409, f"a request with this {HEADER} is still being processed; retry it shortly",
                           code="idempotency_in_progress", headers={"Retry-After": "1"})
    else:
        contact_locks.serialise(session, [])  # SQLite: the write lock, so a concurrent twin waits
    record = session.get(IdempotencyRecord, (key_id, key))
    if record is not None and record.created_at < utcnow() - timedelta(seconds=retention_seconds()):
        session.delete(record)
        session.flush()
        record = None
    if record is not None:
        if record.request_hash != digest:
            raise ApiError(422, f"this {HEADER} was already used with a different request (endpoint or body); "
                                "use a new key for a new request", code="idempotency_key_reused",
                           details=[{"field": HEADER, "message": "reused with a different body"}])
        replay = Response(record.body, status=record.status, content_type=record.content_type)
        replay.headers["Idempotent-Replayed"] = "true"
        return replay
    g.idempotency_pending = (key_id, key, endpoint, digest)
    return None


def remember(session: Session, status: int, content_type: str, body: bytes) -> None:
    """Store the answer of the claimed key in the session's transaction (the caller commits)."""
    pending = g.pop("idempotency_pending", None)
    if pending is None:
        return
    key_id, key, endpoint, digest = pending
    now = utcnow()
    session.add(IdempotencyRecord(key_id=key_id, idempotency_key=key, endpoint=endpoint, request_hash=digest,
                                  status=status, content_type=content_type, body=body, created_at=now))
    if next(_writes) % PRUNE_EVERY == 0:
        prune(session, now)


def prune(session: Session, now: object = None) -> int:
    """Delete stored answers older than the retention period; returns how many."""
    cutoff = (now or utcnow()) - timedelta(seconds=retention_seconds())  # type: ignore[operator]
    return session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.created_at < cutoff)).rowcount or 0
