"""Contact policy in the shell: read each subject's contact history in bulk, let the core judge.

Per request (or per batch, with IN lists) it reads: active suppressions (a
primary-key lookup, also of the do-not-contact list erased subjects stay on), the
profile's consent and time zone, and only when a policy needs them, the subject's
recent decisions across all experiments (on the channel, and on every channel for a
cross-channel cap), the latest conversion or purchase (an attributed or unattributed
conversion event, or an imported transaction), and the arms of this experiment the
subject already converted on.

When a rule reads history (a cap or a cooldown), the reads run after the decision's
(subject, channel) locks are held, in the transaction that writes the decision
(service/store/contact_locks.py), so simultaneous requests cannot all pass a cap of one.

Quiet hours use the request's time zone (`context.timezone`), else the profile's,
else NEXTBEST_DEFAULT_TIMEZONE (UTC unless set).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flask import current_app, has_app_context
from sqlalchemy import bindparam, exists, func, select, text
from sqlalchemy.orm import Session

from experiments.contact import (
    ContactHistory,
    ContactVerdict,
    check_contact,
    counts_all_channels,
    longest_cap_window,
    needs_history,
    parse_timezone,
)
from experiments.spec import ContactPolicy

from service.store import contact_locks
from service.store.bulk import bulk_write, in_batches
from service.clock import utcnow
from service.store.db import Database, DriverStatement, session_driver
from service.http.errors import ApiError
from service.store.models import Assignment, DoNotContact, Event, Subject, SuppressedRequest, Suppression, Transaction
from service.store.pseudonyms import app_secret, subject_hash


def global_policy() -> ContactPolicy | None:
    """The operator's default policy (NEXTBEST_CONTACT_POLICY, JSON), combined with each experiment's own."""
    raw = current_app.config.get("NEXTBEST_CONTACT_POLICY") if has_app_context() else None
    if not raw:
        return None
    return ContactPolicy.model_validate(json.loads(raw) if isinstance(raw, str) else raw)


def policies_for(runtime: Any) -> list[ContactPolicy]:
    """The global default and the experiment's own policy, whichever exist."""
    return [p for p in (global_policy(), runtime.spec.contact_policy) if p is not None]


def serialised(runtime: Any) -> bool:
    """Whether decisions of this experiment must hold (subject, channel) locks: a running experiment
    whose policies cap or cool down (reads of history that a simultaneous decision would race)."""
    return runtime.status == "running" and needs_history(policies_for(runtime))


def lock_requests(session: Session, runtime: Any, requests: Sequence[Any]) -> None:
    """Take the locks that serialise these requests' contact rules, in the session's transaction."""
    policies = policies_for(runtime)
    keys = contact_locks.keys_for(((r.subject_id, r.channel) for r in requests), counts_all_channels(policies))
    contact_locks.serialise(session, keys)


def last_purchase(session: Session, subject_id: str) -> datetime | None:
    """The subject's latest conversion or imported purchase (what cooldowns count from)."""
    return _last_conversions(session, [subject_id]).get(subject_id)


def default_timezone() -> str | None:
    """NEXTBEST_DEFAULT_TIMEZONE, or None for UTC."""
    return _default_timezone()


def _default_timezone() -> str | None:
    zone = current_app.config.get("NEXTBEST_DEFAULT_TIMEZONE") if has_app_context() else None
    return str(zone) if zone and str(zone).upper() != "UTC" else None


def verdicts(session: Session, runtime: Any, requests: Sequence[Any], now: datetime | None = None) -> dict[int, Any]:
    """Verdicts by request index for a running experiment: refusals, arms to leave out, and (under a
    policy) the rules checked. A subject named twice on one channel in one call is decided once."""
    if runtime.status != "running" or not requests:
        return {}
    now = now or utcnow()
    policies = policies_for(runtime)
    if needs_history(policies):
        lock_requests(session, runtime, requests)
    subjects = sorted({r.subject_id for r in requests})
    channel_of = {r.subject_id: r.channel for r in requests}
    # An unsubscribe suppresses a channel, so only requests that name one need the lookup.
    with_channel = [s for s in subjects if channel_of.get(s)]
    history = _History(unsubscribed=_suppressions(session, with_channel))
    _do_not_contact(session, with_channel, history)
    _profiles(session, with_channel if not any(p.quiet_hours for p in policies) else subjects, history)
    needed = _history_needed(policies)
    if "decided" in needed:
        since = now - timedelta(seconds=longest_cap_window(policies) or 0)
        history.recent, history.recent_all = _recent_decisions(session, subjects, channel_of, since)
    if "converted" in needed:
        history.conversions = _last_conversions(session, subjects)
    if "converted_arm" in needed:
        history.converted_arms = _converted_arms(session, runtime.id, subjects)
    return _judge(policies, runtime, requests, history, now)


def _history_needed(policies: Sequence[ContactPolicy]) -> tuple[str, ...]:
    """The kinds of contact history the policies judge by; suppressions and the profile always count."""
    return ("unsubscribed", "do_not_contact", "consent", "timezone") + (
        ("decided",) if longest_cap_window(policies) else ()) + (
        ("converted", "purchased") if any(p.cooldown_after_conversion_seconds for p in policies) else ()) + (
        ("converted_arm",) if any(p.exclude_converted_arms for p in policies) else ())


def verdict_for_one(database: Database, runtime: Any, request: Any, now: datetime | None = None,
                    session: Session | None = None) -> dict[int, Any]:
    """`verdicts` for a single request, its whole contact history read in one statement: a quarter of
    the CPU of one ORM query per kind of history. With `session`, read in its transaction (whose
    locks the caller holds)."""
    if runtime.status != "running":
        return {}
    now = now or utcnow()
    policies = policies_for(runtime)
    history = read_one(database, request, _history_needed(policies), runtime.id,
                       now - timedelta(seconds=longest_cap_window(policies) or 0), session)
    return _judge(policies, runtime, [request], history, now)


def read_one(database: Database, request: Any, kinds: tuple[str, ...], experiment_id: int, since: datetime,
             session: Session | None = None) -> _History:
    """One subject's contact history of the given kinds, in one UNION ALL statement."""
    statement, read_time = _history_statement(database.engine.dialect, kinds)
    values = {"subject_id": request.subject_id, "since": since, "experiment_id": experiment_id,
              "subject_hash": subject_hash(app_secret(), request.subject_id) if request.channel else ""}
    if session is not None:
        with session_driver(session) as connection:
            rows = statement.fetch_all(connection, values)
    else:
        with database.driver_connection() as connection:
            rows = statement.fetch_all(connection, values)
    history = _History()
    subject = request.subject_id
    for kind, detail, at in rows:
        if kind == "unsubscribed" and request.channel:
            history.unsubscribed[subject].add(detail)
        elif kind == "decided":
            history.recent_all[subject].append(read_time(at))
            if detail == request.channel:
                history.recent[subject].append(read_time(at))
        elif kind == "converted" and at is not None:
            at = read_time(at)
            if subject not in history.conversions or at > history.conversions[subject]:
                history.conversions[subject] = at
        elif kind == "converted_arm":
            history.converted_arms[subject].add(detail)
        elif kind == "consent" and detail:
            history.refused[subject] = _refused_channels(detail)
        elif kind == "timezone" and detail:
            history.timezones[subject] = detail
    return history


def refusal_reason(database: Database, request: Any) -> str:
    """Why the guarded insert stored nothing: the subject left the channel, or never consented to it."""
    history = read_one(database, request, ("unsubscribed", "do_not_contact", "consent"), 0, utcnow())
    if request.channel in history.refused.get(request.subject_id, ()):
        if request.channel not in history.unsubscribed.get(request.subject_id, ()):
            return "no_consent"
    return "unsubscribed"


def _refused_channels(consent: Any) -> set[str]:
    if isinstance(consent, str):
        try:
            consent = json.loads(consent)
        except ValueError:
            return set()
    return {channel for channel, given in (consent or {}).items() if given is False} if isinstance(
        consent, dict) else set()


_HISTORY_PARTS = {
    "unsubscribed": "SELECT 'unsubscribed' AS kind, channel AS detail, {null_at} AS at FROM suppressions "
                    "WHERE subject_id = :subject_id",
    "do_not_contact": "SELECT 'unsubscribed', channel, {null_at} FROM do_not_contact WHERE subject_hash = :subject_hash",
    "consent": "SELECT 'consent', CAST(consent AS TEXT), {null_at} FROM subjects WHERE subject_id = :subject_id",
    "timezone": "SELECT 'timezone', timezone, {null_at} FROM subjects WHERE subject_id = :subject_id",
    "decided": "SELECT 'decided', channel, created_at FROM assignments "
               "WHERE subject_id = :subject_id AND created_at > :since",
    "converted": "SELECT 'converted', NULL, MAX(occurred_at) FROM events "
                 "WHERE subject_id = :subject_id AND type = 'conversion'",
    "purchased": "SELECT 'converted', NULL, MAX(occurred_at) FROM transactions WHERE subject_id = :subject_id",
    # The join names the subject on both sides (an event's subject is always its decision's), so on
    # Citus it stays on the subject's shard instead of joining on a non-distribution column.
    "converted_arm": "SELECT 'converted_arm', a.arm_key, {null_at} FROM assignments a "
                     "JOIN events e ON e.assignment_id = a.id AND e.subject_id = a.subject_id "
                     "WHERE a.subject_id = :subject_id AND a.experiment_id = :experiment_id "
                     "AND e.type = 'conversion'",
}
_HISTORY_STATEMENTS: dict[tuple[str, tuple[str, ...]], tuple[DriverStatement, Any]] = {}


def _history_statement(dialect: Any, kinds: tuple[str, ...]) -> tuple[DriverStatement, Any]:
    """The UNION ALL of the history parts needed, compiled once, and how to read its timestamps."""
    key = (dialect.name, kinds)
    if key not in _HISTORY_STATEMENTS:
        # A typed NULL: PostgreSQL resolves a UNION's column types part by part.
        null_at = "CAST(NULL AS TIMESTAMP WITH TIME ZONE)" if dialect.name == "postgresql" else "NULL"
        sql = " UNION ALL ".join(_HISTORY_PARTS[k] for k in kinds).replace("{null_at}", null_at)
        binds = {"subject_id": Assignment.__table__.c.subject_id.type,
                 "since": Assignment.__table__.c.created_at.type,
                 "experiment_id": Assignment.__table__.c.experiment_id.type,
                 "subject_hash": DoNotContact.__table__.c.subject_hash.type}
        used = {name: kind for name, kind in binds.items() if f":{name}" in sql}
        statement = text(sql).bindparams(*[bindparam(name, type_=kind) for name, kind in used.items()])
        timestamp = Assignment.__table__.c.created_at.type
        read = timestamp.dialect_impl(dialect).result_processor(dialect, None) or (lambda value: value)
        _HISTORY_STATEMENTS[key] = (DriverStatement(statement, dialect, used), read)
    return _HISTORY_STATEMENTS[key]


@dataclass
class _History:
    """What the shell read, by subject, for the core to judge."""

    unsubscribed: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    recent: dict[str, list[datetime]] = field(default_factory=lambda: defaultdict(list))
    recent_all: dict[str, list[datetime]] = field(default_factory=lambda: defaultdict(list))
    conversions: dict[str, datetime] = field(default_factory=dict)
    converted_arms: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    refused: dict[str, set[str]] = field(default_factory=dict)  # channels the profile's consent refuses
    timezones: dict[str, str] = field(default_factory=dict)  # the profile's time zone


def _judge(policies: list[ContactPolicy], runtime: Any, requests: Sequence[Any], history: _History,
           now: datetime) -> dict[int, Any]:
    verdicts: dict[int, ContactVerdict] = {}
    seen: set[tuple[str, str | None]] = set()
    default_zone = _default_timezone() if policies else None
    for index, request in enumerate(requests):
        pair = (request.subject_id, request.channel)
        if pair in seen:
            verdicts[index] = ContactVerdict(
                False, "duplicate_in_batch", None, frozenset(),
                f"subject {request.subject_id!r} appears earlier in this batch on the same channel; "
                "it is decided once per call")
            continue
        seen.add(pair)
        left = history.unsubscribed.get(request.subject_id, frozenset())
        refused = history.refused.get(request.subject_id, frozenset())
        if not policies and not (request.channel and (request.channel in left or request.channel in refused)):
            continue
        timezone = (request.context or {}).get("timezone") if request.context else None
        if timezone is not None:
            try:
                parse_timezone(str(timezone))
            except ValueError as exc:
                raise ApiError(422, str(exc), details=[{"field": "context.timezone"}]) from None
        else:
            timezone = _valid_zone(history.timezones.get(request.subject_id)) or default_zone
        subject_history = ContactHistory(
            recent_decisions=history.recent.get(request.subject_id, ()),
            last_conversion_at=history.conversions.get(request.subject_id),
            unsubscribed_channels=frozenset(left),
            converted_arms=frozenset(history.converted_arms.get(request.subject_id, ())),
            timezone=str(timezone) if timezone else None,
            recent_all_channels=history.recent_all.get(request.subject_id, ()),
            refused_channels=frozenset(refused),
        )
        verdict = check_contact(policies, request.channel, subject_history, now, runtime.enabled_arms)
        if not verdict.allowed or verdict.excluded_arms or policies:
            verdicts[index] = verdict  # a refusal, arms to leave out, or the rules checked
    return verdicts


def _valid_zone(name: str | None) -> str | None:
    """A profile's time zone if it is a known IANA name (a stored bad value must not fail decisions)."""
    if not name:
        return None
    try:
        parse_timezone(name)
    except ValueError:
        return None
    return name


def _do_not_contact(session: Session, subjects: list[str], history: _History) -> None:
    """Channels erased subjects left, found by their keyed pseudonym (skipped while the list is empty)."""
    if not subjects or not session.scalar(select(exists().where(DoNotContact.channel.is_not(None)))):
        return
    secret = app_secret()
    by_hash = {subject_hash(secret, s): s for s in subjects}
    for clause in in_batches(session, DoNotContact.subject_hash, list(by_hash)):
        for hashed, channel in session.execute(select(DoNotContact.subject_hash, DoNotContact.channel).where(clause)):
            history.unsubscribed[by_hash[hashed]].add(channel)


def _profiles(session: Session, subjects: list[str], history: _History) -> None:
    """Consent and time zone from the profiles (skipped while there are none)."""
    if not subjects or not session.scalar(select(exists().where(Subject.subject_id.is_not(None)))):
        return
    for clause in in_batches(session, Subject.subject_id, subjects):
        for subject, consent, zone in session.execute(
            select(Subject.subject_id, Subject.consent, Subject.timezone).where(clause)
        ):
            if consent:
                history.refused[subject] = _refused_channels(consent)
            if zone:
                history.timezones[subject] = zone


def _suppressions(session: Session, subjects: list[str]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for clause in in_batches(session, Suppression.subject_id, subjects):
        for subject, channel in session.execute(
            select(Suppression.subject_id, Suppression.channel).where(clause)
        ):
            found[subject].add(channel)
    return found


def _recent_decisions(session: Session, subjects: list[str], channel_of: dict[str, str | None],
                      since: datetime) -> tuple[dict[str, list[datetime]], dict[str, list[datetime]]]:
    """Recent decisions by subject: on the request's channel, and on every channel."""
    found: dict[str, list[datetime]] = defaultdict(list)
    every: dict[str, list[datetime]] = defaultdict(list)
    for clause in in_batches(session, Assignment.subject_id, subjects):
        for subject, channel, created in session.execute(
            select(Assignment.subject_id, Assignment.channel, Assignment.created_at)
            .where(clause, Assignment.created_at > since)
        ):
            every[subject].append(created)
            if channel == channel_of.get(subject):
                found[subject].append(created)
    return found, every


def _last_conversions(session: Session, subjects: list[str]) -> dict[str, datetime]:
    """The latest conversion event (attributed or not) or imported purchase per subject."""
    found: dict[str, datetime] = {}
    for model, column, where in ((Event, Event.occurred_at, Event.type == "conversion"),
                                 (Transaction, Transaction.occurred_at, None)):
        for clause in in_batches(session, model.subject_id, subjects):
            query = select(model.subject_id, func.max(column)).where(clause).group_by(model.subject_id)
            for subject, last in session.execute(query.where(where) if where is not None else query):
                last = last if last.tzinfo else last.replace(tzinfo=utcnow().tzinfo)
                if subject not in found or last > found[subject]:
                    found[subject] = last
    return found


def _converted_arms(session: Session, experiment_id: int, subjects: list[str]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for clause in in_batches(session, Assignment.subject_id, subjects):
        for subject, arm in session.execute(
            select(Assignment.subject_id, Assignment.arm_key)  # joined on the subject too: see _HISTORY_PARTS
            .join(Event, (Event.assignment_id == Assignment.id) & (Event.subject_id == Assignment.subject_id))
            .where(clause, Assignment.experiment_id == experiment_id,
                   Event.type == "conversion")
        ):
            found[subject].add(arm)
    return found


def count_suppressed(session: Session, experiment_id: int, reasons: Sequence[str], now: datetime) -> None:
    """Add refused requests to the daily counts by reason."""
    counts: dict[str, int] = defaultdict(int)
    for reason in reasons:
        counts[reason] += 1
    rows = [{"experiment_id": experiment_id, "day": now.date(), "reason": r, "count": c}
            for r, c in sorted(counts.items())]
    bulk_write(session, SuppressedRequest, rows, conflict=["experiment_id", "day", "reason"], on_conflict="merge",
               add=["count"])


def suppress_unsubscribed(session: Session, accepted_events: Sequence[dict[str, Any]],
                          channels: dict[str, str | None]) -> int:
    """Every accepted unsubscribe suppresses its subject on its channel, for every experiment, at once."""
    rows = {}
    for event in accepted_events:
        if event["type"] != "unsubscribe" or not event.get("subject_id"):
            continue
        channel = event.get("channel") or channels.get(event["event_id"])
        if not channel:
            continue
        rows[(event["subject_id"], channel)] = {
            "subject_id": event["subject_id"], "channel": channel, "reason": "unsubscribed",
            "source_event_id": event["event_id"], "created_at": event["received_at"],
        }
    bulk_write(session, Suppression, [rows[k] for k in sorted(rows)], conflict=["subject_id", "channel"],
               on_conflict="nothing")
    return len(rows)


def resubscribe(session: Session, subject_id: str, channel: str) -> bool:
    """Lift a channel suppression (the documented way back after an unsubscribe)."""
    row = session.get(Suppression, (subject_id, channel))
    if row is None:
        return False
    session.delete(row)
    return True
