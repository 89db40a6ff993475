"""Subject profiles in the shell: store what callers supply, compute the rest from what we hold.

Computed on read (so nothing goes stale and nothing is written on the hot path):
- engagement: points per event type, halved every 30 days (experiments/profiles.py);
- value: probability alive, churn risk, purchase probability, expected purchases
  and value over the horizon, from the latest CLV fit (reports/clv.py);
- channels: per-channel response rates (a click or conversion per decision),
  shrunk toward each channel's population rate by an empirical-Bayes beta prior,
  and the best channel among those the subject has not left and consented to.
Population priors are refitted at most every PRIOR_TTL_SECONDS per worker.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import case, delete, func, select
from sqlalchemy.orm import Session

from experiments.contact import parse_timezone
from experiments.history import read_records, required_subject_id
from experiments.validity import first_bad_text
from experiments.numbers import finite_float
from experiments.profiles import (
    ChannelStats,
    EngagementConfig,
    SubjectProfile,
    best_channel,
    clv_profile,
    engagement_band,
    engagement_score,
    fit_channel_priors,
)

from service.store.bulk import in_batches
from service.clock import iso_utc, utcnow
from service.http.errors import ApiError
from service.store.models import Assignment, ClvFit, DecisionOutcome, Event, Subject, SubjectValue, Suppression, Transaction
from service.usecases.value import as_of_text, latest_model

PRIOR_TTL_SECONDS = 600
PROFILE_FIELDS = ("timezone", "lifetime_value", "loyalty_tier", "loyalty_points", "consent", "attributes")
COMPUTED_FEATURES = ("engagement", "clv", "probability_alive", "churn_risk", "expected_purchases")
_ENGAGEMENT = EngagementConfig()
_priors_lock = threading.Lock()


def validate_profile(data: dict[str, Any]) -> dict[str, Any]:
    """Column values for a profile update; ValueError names the field."""
    bad = first_bad_text(data)
    if bad:
        raise ValueError(f"{bad[0]} {bad[1]}")
    out: dict[str, Any] = {}
    if "timezone" in data:
        tz = data["timezone"]
        if tz is not None:
            parse_timezone(str(tz))
        out["timezone"] = tz
    if "lifetime_value" in data:
        value = data["lifetime_value"]
        number = finite_float(value) if value is not None else None
        if value is not None and (number is None or number < 0):
            raise ValueError("lifetime_value must be a finite number >= 0")
        out["supplied_value"] = number
    if "loyalty_tier" in data:
        tier = data["loyalty_tier"]
        if tier is not None and (not isinstance(tier, str) or len(tier) > 64):
            raise ValueError("loyalty_tier must be text of at most 64 characters")
        out["loyalty_tier"] = tier
    if "loyalty_points" in data:
        points = data["loyalty_points"]
        number = finite_float(points) if points is not None else None
        if points is not None and number is None:
            raise ValueError("loyalty_points must be a finite number")
        out["loyalty_points"] = number
    if "consent" in data:
        consent = data["consent"]
        if consent is not None and (not isinstance(consent, dict) or not all(
                isinstance(k, str) and isinstance(v, bool) for k, v in consent.items())):
            raise ValueError("consent maps channel names to true or false")
        out["consent"] = consent
    if "attributes" in data:
        attributes = data["attributes"]
        if attributes is not None and not isinstance(attributes, dict):
            raise ValueError("attributes must be an object")
        out["attributes"] = attributes
    return out


def upsert(session: Session, subject_id: str, data: dict[str, Any]) -> Subject:
    """Create or update a profile; fields not given keep their values."""
    try:
        values = validate_profile(data)
    except ValueError as exc:
        raise ApiError(422, str(exc)) from None
    now = utcnow()
    subject = session.get(Subject, subject_id)
    if subject is None:
        subject = Subject(subject_id=subject_id, created_at=now, updated_at=now)
        session.add(subject)
    for column, value in values.items():
        setattr(subject, column, value)
    subject.updated_at = now
    session.flush()
    return subject


def import_profiles(session: Session, data: bytes, fmt: str) -> dict[str, Any]:
    """Bulk upsert from CSV (columns subject_id, timezone, lifetime_value, loyalty_tier, loyalty_points,
    consent.<channel>, attributes.<name>) or JSON lines in the PUT body's shape plus subject_id."""
    records = [(line, _from_csv(record) if fmt == "csv" and isinstance(record, dict) else record)
               for line, record, _ in read_records(data, fmt)]
    stored, rejected = 0, []
    for line, record in records:
        try:
            if not isinstance(record, dict):
                raise ValueError(record if isinstance(record, str) else "not an object")
            subject_id = required_subject_id(record)
            fields = {k: v for k, v in record.items() if k in PROFILE_FIELDS}
            validate_profile(fields)
            upsert(session, subject_id, fields)
            stored += 1
        except (ValueError, ApiError) as exc:
            rejected.append({"line": line, "reason": str(getattr(exc, "message", exc))})
    return {"stored": stored, "rejected": rejected[:1000], "rejected_count": len(rejected)}


def _from_csv(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"subject_id": row.get("subject_id")}
    consent: dict[str, bool] = {}
    attributes: dict[str, Any] = {}
    for column, value in row.items():
        if column is None or value in (None, ""):
            continue
        if column.startswith("consent."):
            consent[column[8:]] = str(value).strip().lower() in ("1", "true", "yes", "y")
        elif column.startswith("attributes."):
            attributes[column[11:]] = value
        elif column in ("lifetime_value", "loyalty_points"):
            try:
                out[column] = float(value)
            except ValueError:
                out[column] = value
        elif column in ("timezone", "loyalty_tier"):
            out[column] = value
    if consent:
        out["consent"] = consent
    if attributes:
        out["attributes"] = attributes
    return out


def supplied_json(subject: Subject | None) -> dict[str, Any]:
    if subject is None:
        return {}
    return {"timezone": subject.timezone, "lifetime_value": subject.supplied_value,
            "loyalty_tier": subject.loyalty_tier, "loyalty_points": subject.loyalty_points,
            "consent": subject.consent or {}, "attributes": subject.attributes or {},
            "updated_at": iso_utc(subject.updated_at)}


def engagements(session: Session, subject_ids: Sequence[str], now: datetime) -> dict[str, float]:
    """Engagement score per subject from their events."""
    events: dict[str, list[tuple[str, datetime]]] = defaultdict(list)
    for clause in in_batches(session, Event.subject_id, list(subject_ids)):
        for subject, kind, occurred in session.execute(
                select(Event.subject_id, Event.type, Event.occurred_at).where(clause)):
            events[subject].append((kind, occurred))
    return {s: engagement_score(events.get(s, []), now, _ENGAGEMENT) for s in subject_ids}


def channel_priors(session: Session, channels: Sequence[str] = ()) -> dict[str, Any]:
    """Population beta prior of the response rate per channel (cached per app; refitted when stale or when
    a channel it has no prior for turns up)."""
    from flask import current_app

    _priors = current_app.extensions.setdefault("nextbest.channel_priors", {"at": 0.0, "value": {}})
    with _priors_lock:
        fresh = time.monotonic() - _priors["at"] < PRIOR_TTL_SECONDS
        if fresh and _priors["value"] and all(c in _priors["value"] for c in channels):
            return _priors["value"]
    responded = case(((DecisionOutcome.clicks > 0) | (DecisionOutcome.conversions > 0), 1), else_=0)
    rows = session.execute(
        select(Assignment.channel, Assignment.subject_id, func.count().label("n"), func.sum(responded).label("s"))
        .select_from(Assignment).outerjoin(DecisionOutcome, DecisionOutcome.assignment_id == Assignment.id)
        .where(Assignment.channel.is_not(None)).group_by(Assignment.channel, Assignment.subject_id).limit(200_000)
    ).all()
    priors: dict[str, Any] = {}
    if rows:
        channels = np.array([r.channel for r in rows], dtype=object)
        priors = fit_channel_priors(channels, np.array([int(r.s or 0) for r in rows]),
                                    np.array([int(r.n) for r in rows]))
    with _priors_lock:
        _priors.update(at=time.monotonic(), value=priors)
    return priors


def channel_stats(session: Session, subject_id: str) -> dict[str, ChannelStats]:
    responded = case(((DecisionOutcome.clicks > 0) | (DecisionOutcome.conversions > 0), 1), else_=0)
    return {
        row.channel: ChannelStats(successes=int(row.s or 0), trials=int(row.n))
        for row in session.execute(
            select(Assignment.channel, func.count().label("n"), func.sum(responded).label("s"))
            .select_from(Assignment).outerjoin(DecisionOutcome, DecisionOutcome.assignment_id == Assignment.id)
            .where(Assignment.subject_id == subject_id, Assignment.channel.is_not(None))
            .group_by(Assignment.channel)
        )
    }


def value_blocks(session: Session, subject_ids: Sequence[str]) -> dict[str, Any]:
    """The CLV block per subject from the latest fit (None where the subject has no purchases)."""
    found = latest_model(session)
    if found is None:
        return {}
    fit_row, model = found
    out = {}
    as_of = as_of_text(fit_row.calibration_end)
    for clause in in_batches(session, SubjectValue.subject_id, list(subject_ids)):
        for row in session.scalars(select(SubjectValue).where(clause)):
            block = clv_profile(model, row.frequency, row.recency, row.age, row.monetary,
                                fit_row.horizon_periods, fit_row.discount_rate)
            out[row.subject_id] = dataclasses.replace(block, as_of=as_of)
    return out


def profile(session: Session, subject_id: str, recent: int = 20) -> dict[str, Any]:
    """The 360-degree view of one subject."""
    now = utcnow()
    subject = session.get(Subject, subject_id)
    score = engagements(session, [subject_id], now)[subject_id]
    left = set(session.scalars(select(Suppression.channel).where(Suppression.subject_id == subject_id)))
    consent = (subject.consent or {}) if subject else {}
    stats = channel_stats(session, subject_id)
    choice = best_channel(stats, channel_priors(session, list(stats)), 1.0, left, consent) if stats else None
    clv = value_blocks(session, [subject_id]).get(subject_id)
    body = SubjectProfile(subject_id=subject_id, attributes=supplied_json(subject), engagement_score=score,
                          engagement_band=engagement_band(score), clv=clv, channel=choice).to_dict()
    body["known"] = subject is not None or bool(stats)
    body["suppressions"] = [
        {"channel": s.channel, "reason": s.reason, "since": iso_utc(s.created_at)}
        for s in session.scalars(select(Suppression).where(Suppression.subject_id == subject_id))
    ]
    body["recent_decisions"] = [
        {"assignment_id": a.id, "experiment_id": a.experiment_id, "arm": a.arm_key, "channel": a.channel,
         "propensity": a.propensity, "decided_at": iso_utc(a.created_at)}
        for a in session.scalars(select(Assignment).where(Assignment.subject_id == subject_id)
                                 .order_by(Assignment.created_at.desc()).limit(recent))
    ]
    return body


def profile_features(session: Session, names: Sequence[str], subject_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Values of profile-sourced features per subject: computed scores or supplied fields and attributes."""
    now = utcnow()
    out: dict[str, dict[str, Any]] = {s: {} for s in subject_ids}
    subjects = {}
    for clause in in_batches(session, Subject.subject_id, list(subject_ids)):
        for row in session.scalars(select(Subject).where(clause)):
            subjects[row.subject_id] = row
    wanted = set(names)
    scores = engagements(session, subject_ids, now) if "engagement" in wanted else {}
    blocks = value_blocks(session, subject_ids) if wanted & {"clv", "probability_alive", "churn_risk",
                                                              "expected_purchases"} else {}
    for subject_id in subject_ids:
        row = subjects.get(subject_id)
        block = blocks.get(subject_id)
        for name in names:
            if name == "engagement":
                value: Any = scores.get(subject_id)
            elif name == "clv":
                value = (row.supplied_value if row and row.supplied_value is not None
                         else (block.expected_value if block else None))
            elif name in ("probability_alive", "churn_risk", "expected_purchases"):
                value = getattr(block, name) if block else None
            elif name == "lifetime_value":
                value = row.supplied_value if row else None
            elif name in ("loyalty_tier", "loyalty_points", "timezone"):
                value = getattr(row, name) if row else None
            else:
                value = (row.attributes or {}).get(name) if row else None
            if value is not None:
                out[subject_id][name] = value
    return out


def export(session: Session, subject_id: str) -> dict[str, Any]:
    """Everything stored about a subject (access request), table by table."""
    def rows(model: Any, *conditions: Any) -> list[dict[str, Any]]:
        return [_row_json(r) for r in session.scalars(select(model).where(*conditions))]

    assignment_ids = list(session.scalars(select(Assignment.id).where(Assignment.subject_id == subject_id)))
    outcome_rows: list[dict[str, Any]] = []
    event_ids: set[int] = set()
    events = rows(Event, Event.subject_id == subject_id)
    event_ids.update(e["id"] for e in events)
    for clause in in_batches(session, DecisionOutcome.assignment_id, assignment_ids):
        outcome_rows.extend(_row_json(r) for r in session.scalars(select(DecisionOutcome).where(clause)))
    for clause in in_batches(session, Event.assignment_id, assignment_ids):
        events.extend(_row_json(r) for r in session.scalars(select(Event).where(clause)) if r.id not in event_ids)
    subject = session.get(Subject, subject_id)
    return {
        "format": "nextbest-subject-export/1",
        "subject_id": subject_id,
        "exported_at": iso_utc(utcnow()),
        "profile": _row_json(subject) if subject else None,
        "decisions": rows(Assignment, Assignment.subject_id == subject_id),
        "outcome_summaries": outcome_rows,
        "events": events,
        "suppressions": rows(Suppression, Suppression.subject_id == subject_id),
        "transactions": rows(Transaction, Transaction.subject_id == subject_id),
        "model_values": rows(SubjectValue, SubjectValue.subject_id == subject_id),
    }


def _row_json(row: Any) -> dict[str, Any]:
    out = {}
    for column in row.__table__.columns:
        value = getattr(row, column.key)
        if isinstance(value, datetime):
            value = iso_utc(value)
        elif hasattr(value, "isoformat"):
            value = value.isoformat()
        out[column.key] = value
    return out


def erase_profile_rows(session: Session, subject_id: str) -> dict[str, int]:
    """Erasure of what this module stores (registered with service.usecases.erasure)."""
    counts = {}
    for name, model in (("profile", Subject), ("transactions", Transaction), ("model_values", SubjectValue),
                        ("suppressions", Suppression)):
        counts[name] = session.execute(delete(model).where(model.subject_id == subject_id)).rowcount or 0
    return counts


__all__ = ["upsert", "profile", "export", "profile_features", "import_profiles", "ClvFit"]
