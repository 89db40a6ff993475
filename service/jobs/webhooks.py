"""Signed webhook notices: queued with the change that caused them, delivered with retries and backoff.

Each delivery is a POST of the JSON payload with headers
  X-Nextbest-Event: experiment.promoted
  X-Nextbest-Delivery: <delivery id>
  X-Nextbest-Timestamp: <unix seconds>
  X-Nextbest-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" with the subscriber's secret>
  X-Nextbest-Attempt: <1, 2, ...>
A receiver recomputes the HMAC and rejects stale timestamps, and de-duplicates by the
delivery id (a retry after a lost answer carries the same id). A failing subscriber is
retried (30 s, 1, 2, 4 ... minutes, up to MAX_ATTEMPTS) and then marked failed; it never
blocks or undoes the change it reports.

At most one POST per delivery attempt, across workers, hosts and concurrent `nextbest
promote` runs: a sender first claims the attempt with one conditional UPDATE (compare and
swap on the attempt count while the delivery is due), which moves `next_attempt_at` past
the send's timeout as a lease. Only the sender whose UPDATE matched posts; a sender that
dies mid-attempt leaves the lease to expire, and the next attempt goes out then.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from datetime import timedelta
from typing import Any

import requests
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from service.clock import utcnow
from service.store.models import Experiment, Webhook, WebhookDelivery

MAX_ATTEMPTS = 6
BASE_DELAY_SECONDS = 30.0
TIMEOUT_SECONDS = 5.0
LEASE_SECONDS = 4 * TIMEOUT_SECONDS  # a claimed attempt is retried after this if its sender died


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: str, timestamp: str, body: bytes, signature: str, tolerance_seconds: float = 300) -> bool:
    """What a receiver does: constant-time compare and a freshness check."""
    try:
        fresh = abs(time.time() - float(timestamp)) <= tolerance_seconds
    except ValueError:
        return False
    return fresh and hmac.compare_digest(sign(secret, timestamp, body), signature)


def subscribe(session: Session, url: str, experiment: Experiment | None, secret: str | None = None) -> tuple[Webhook, str]:
    secret = secret or secrets.token_urlsafe(32)
    hook = Webhook(url=url, secret=secret, experiment_id=experiment.id if experiment else None, active=True,
                   created_at=utcnow())
    session.add(hook)
    session.flush()
    return hook, secret


def enqueue(session: Session, experiment: Experiment, event: str, payload: dict[str, Any]) -> int:
    """Queue one delivery per active subscriber of this experiment (or of all experiments). Does not commit."""
    hooks = session.scalars(
        select(Webhook).where(Webhook.active.is_(True),
                              or_(Webhook.experiment_id.is_(None), Webhook.experiment_id == experiment.id))
    ).all()
    now = utcnow()
    for hook in hooks:
        session.add(WebhookDelivery(webhook_id=hook.id, experiment_id=experiment.id, event=event,
                                    payload={**payload, "event": event}, status="pending", attempts=0,
                                    next_attempt_at=now, created_at=now))
    return len(hooks)


def deliver_due(session: Session, limit: int = 100, http: Any = None) -> dict[str, int]:
    """Try every delivery that is due, each attempt claimed first so it is posted at most once across
    every worker and job; record each outcome."""
    http = http or requests
    now = utcnow()
    due = session.execute(
        select(WebhookDelivery.id, WebhookDelivery.attempts)
        .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
        .order_by(WebhookDelivery.id).limit(limit)
    ).all()
    session.commit()
    counts = {"delivered": 0, "retrying": 0, "failed": 0}
    for delivery_id, attempts in due:
        if not _claim(session, delivery_id, attempts):
            continue  # another sender has this attempt
        delivery = session.get(WebhookDelivery, delivery_id, populate_existing=True)
        assert delivery is not None
        hook = session.get(Webhook, delivery.webhook_id)
        if hook is None or not hook.active:
            delivery.status, delivery.last_error = "failed", "subscriber removed"
            counts["failed"] += 1
            session.commit()
            continue
        body = json.dumps(delivery.payload, sort_keys=True, allow_nan=False).encode()
        stamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "X-Nextbest-Event": delivery.event,
                   "X-Nextbest-Delivery": str(delivery.id), "X-Nextbest-Attempt": str(delivery.attempts),
                   "X-Nextbest-Timestamp": stamp, "X-Nextbest-Signature": sign(hook.secret, stamp, body)}
        try:
            response = http.post(hook.url, data=body, headers=headers, timeout=TIMEOUT_SECONDS)
            delivery.last_status = response.status_code
            ok = 200 <= response.status_code < 300
            delivery.last_error = None if ok else f"HTTP {response.status_code}"
        except requests.RequestException as exc:
            ok = False
            delivery.last_status = None
            delivery.last_error = f"{exc.__class__.__name__}: {str(exc)[:300]}"
        if ok:
            delivery.status, delivery.delivered_at = "delivered", utcnow()
            counts["delivered"] += 1
        elif delivery.attempts >= MAX_ATTEMPTS:
            delivery.status = "failed"
            counts["failed"] += 1
        else:
            delivery.next_attempt_at = utcnow() + timedelta(seconds=BASE_DELAY_SECONDS * 2 ** (delivery.attempts - 1))
            counts["retrying"] += 1
        session.commit()
    return counts


def _claim(session: Session, delivery_id: int, attempts: int) -> bool:
    """Take the next attempt of a due delivery: one conditional UPDATE, so exactly one sender wins it.
    The lease (next_attempt_at moved past the send's timeout) lets a crashed sender's attempt be retried."""
    now = utcnow()
    claimed = session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == "pending",
               WebhookDelivery.attempts == attempts, WebhookDelivery.next_attempt_at <= now)
        .values(attempts=attempts + 1, next_attempt_at=now + timedelta(seconds=LEASE_SECONDS))
        .execution_options(synchronize_session=False)
    ).rowcount == 1
    session.commit()
    return claimed
