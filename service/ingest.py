"""Outcome ingestion: exactly once, attributed, summarised in bulk per batch.

One transaction per batch: insert the events with ON CONFLICT (event_id) DO
NOTHING ... RETURNING, so only rows this call really inserted move the
per-decision summaries; a retry, or the same batch from two clients at once,
is stored once. Rows are written in a fixed order (event_id, assignment_id)
so concurrent batches cannot deadlock each other.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from experiments.outcomes import (
    CLOCK_SKEW,
    DecisionRef,
    IncomingEvent,
    attribute_to_decision,
    attribute_to_subject,
    parse_event,
)
from experiments.spec import BUILTIN_EVENTS

from .bulk import bulk_write, in_batches
from .clock import utcnow
from .models import Assignment, DecisionCustomOutcome, DecisionOutcome, Event, Experiment

_CHUNK = 900  # parameters per IN (...) list, under SQLite's limits
# Built-in event type -> its counter column in decision_outcomes.
SUMMARY_COUNTERS = {"open": "opens", "click": "clicks", "conversion": "conversions", "unsubscribe": "unsubscribes"}


@dataclass(frozen=True, slots=True)
class ExperimentInfo:
    id: int
    key: str
    window: timedelta
    event_types: frozenset[str]
    reward_event: str


@dataclass(frozen=True, slots=True)
class DecisionInfo:
    id: str
    experiment_id: int
    arm_key: str
    subject_id: str
    created_at: datetime
    propensity: float
    holdout: bool
    covariate: float | None
    channel: str | None = None


@dataclass
class BatchResult:
    results: list[dict[str, Any]] = field(default_factory=list)
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    accepted_events: list[dict[str, Any]] = field(default_factory=list)
    channels: dict[str, str | None] = field(default_factory=dict)  # event_id -> channel it concerns

    def as_json(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "rejected": self.rejected,
                "results": self.results}


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _experiment_info(row: Experiment) -> ExperimentInfo:
    spec = row.spec
    custom = spec.get("custom_events") or []
    reward = spec.get("reward") or {}
    return ExperimentInfo(
        id=row.id, key=row.key, window=timedelta(seconds=int(spec.get("attribution_window_seconds", 1209600))),
        event_types=frozenset((*BUILTIN_EVENTS, *custom)), reward_event=str(reward.get("event", "conversion")),
    )


def load_experiments(session: Session, *, ids: Iterable[int] = (), keys: Iterable[str] = ()) -> dict[Any, ExperimentInfo]:
    """Experiment facts by id and by key."""
    ids, keys = sorted(set(ids)), sorted(set(keys))
    found: dict[Any, ExperimentInfo] = {}
    for column, values in ((Experiment.id, ids), (Experiment.key, keys)):
        for clause in in_batches(session, column, values):
            for row in session.scalars(select(Experiment).where(clause)):
                info = _experiment_info(row)
                found[info.id] = info
                found[info.key] = info
    return found


_DECISION_COLUMNS = (Assignment.id, Assignment.experiment_id, Assignment.arm_key, Assignment.subject_id,
                     Assignment.created_at, Assignment.propensity, Assignment.holdout, Assignment.covariate,
                     Assignment.channel)


def _decision(row: Any) -> DecisionInfo:
    return DecisionInfo(row.id, row.experiment_id, row.arm_key, row.subject_id, row.created_at, row.propensity,
                        row.holdout, row.covariate, row.channel)


def load_decisions_by_id(session: Session, ids: Iterable[str]) -> dict[str, DecisionInfo]:
    found: dict[str, DecisionInfo] = {}
    for clause in in_batches(session, Assignment.id, sorted(set(ids))):
        for row in session.execute(select(*_DECISION_COLUMNS).where(clause)):
            found[row.id] = _decision(row)
    return found


def load_decisions_by_subject(
    session: Session, pairs: Iterable[tuple[int, str]], since: datetime
) -> dict[tuple[int, str], list[DecisionInfo]]:
    """Each (experiment, subject)'s decisions since `since`, for window attribution."""
    found: dict[tuple[int, str], list[DecisionInfo]] = defaultdict(list)
    for chunk in _chunks(sorted(set(pairs)), 400):
        query = select(*_DECISION_COLUMNS).where(
            tuple_(Assignment.experiment_id, Assignment.subject_id).in_(list(chunk)), Assignment.created_at >= since
        )
        for row in session.execute(query):
            found[(row.experiment_id, row.subject_id)].append(_decision(row))
    return found


def ingest(session: Session, raw_events: Sequence[Any], now: datetime | None = None) -> BatchResult:
    """Validate, attribute and store a batch; per-event results in the input order. Does not commit."""
    now = now or utcnow()
    result = BatchResult()
    statuses: list[dict[str, Any] | None] = [None] * len(raw_events)
    parsed: list[tuple[int, IncomingEvent]] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_events):
        event_id = raw.get("event_id") if isinstance(raw, dict) else None
        try:
            event = parse_event(raw)
        except ValueError as exc:
            statuses[index] = {"event_id": event_id if isinstance(event_id, str) else None,
                               "status": "rejected", "reason": str(exc)}
            continue
        if event.occurred_at > now + CLOCK_SKEW:
            statuses[index] = {"event_id": event.event_id, "status": "rejected",
                               "reason": "occurred_at is in the future"}
            continue
        if event.event_id in seen:
            statuses[index] = {"event_id": event.event_id, "status": "duplicate"}
            continue
        seen.add(event.event_id)
        parsed.append((index, event))

    decisions = load_decisions_by_id(session, (e.assignment_id for _, e in parsed if e.assignment_id))
    experiments = load_experiments(
        session,
        ids={d.experiment_id for d in decisions.values()},
        keys={e.experiment for _, e in parsed if e.experiment and not e.assignment_id},
    )
    subject_events = [(i, e) for i, e in parsed if not e.assignment_id and e.experiment in experiments]
    by_subject: dict[tuple[int, str], list[DecisionInfo]] = {}
    if subject_events:
        earliest = min(e.occurred_at - experiments[e.experiment].window for _, e in subject_events)
        by_subject = load_decisions_by_subject(
            session, ((experiments[e.experiment].id, e.subject_id) for _, e in subject_events), earliest - CLOCK_SKEW
        )

    rows: list[dict[str, Any]] = []
    row_decision: dict[str, DecisionInfo | None] = {}
    for index, event in parsed:
        decision: DecisionInfo | None = None
        if event.assignment_id:
            decision = decisions.get(event.assignment_id)
            info = experiments.get(decision.experiment_id) if decision else None
            if info is None:
                attribution, reason = "unattributed", "unknown_assignment"
            else:
                verdict = attribute_to_decision(
                    DecisionRef(decision.id, decision.created_at), event.occurred_at, info.window)  # type: ignore[union-attr]
                attribution, reason = ("assignment", None) if verdict.assignment_id else ("unattributed", verdict.reason)
        elif event.experiment is None:
            info, attribution, reason = None, "unattributed", "no_experiment"  # a channel-wide unsubscribe
        else:
            info = experiments.get(event.experiment)
            if info is None:
                statuses[index] = {"event_id": event.event_id, "status": "rejected",
                                   "reason": f"unknown experiment {event.experiment!r}"}
                continue
            candidates = by_subject.get((info.id, event.subject_id or ""), [])
            verdict = attribute_to_subject([DecisionRef(d.id, d.created_at) for d in candidates],
                                           event.occurred_at, info.window)
            decision = next((d for d in candidates if d.id == verdict.assignment_id), None)
            attribution, reason = ("subject", None) if decision else ("unattributed", verdict.reason)
        if info is not None and event.type not in info.event_types:
            statuses[index] = {"event_id": event.event_id, "status": "rejected",
                               "reason": f"event type {event.type!r} is not built in or declared by experiment "
                                         f"{info.key!r}"}
            continue
        known = decision  # even outside its window, the named decision tells whose event this is
        if attribution == "unattributed":
            decision = None
        rows.append({
            "event_id": event.event_id, "experiment_id": info.id if info else None,
            "assignment_id": decision.id if decision else event.assignment_id,
            "subject_id": known.subject_id if known else event.subject_id, "type": event.type,
            "value": event.value, "occurred_at": event.occurred_at, "received_at": now,
            "attribution": attribution, "unattributed_reason": reason,
        })
        row_decision[event.event_id] = decision
        result.channels[event.event_id] = event.channel or (decision.channel if decision else None)
        statuses[index] = {"event_id": event.event_id, "status": "pending", "attribution": attribution,
                           **({"reason": reason} if reason else {})}

    inserted = insert_events(session, rows)
    update_summaries(session, [r for r in rows if r["event_id"] in inserted and row_decision[r["event_id"]]],
                     row_decision, experiments)
    for status in statuses:
        assert status is not None
        if status["status"] == "pending":
            status["status"] = "accepted" if status["event_id"] in inserted else "duplicate"
        if status["status"] == "accepted":
            result.accepted += 1
        elif status["status"] == "duplicate":
            result.duplicates += 1
        else:
            result.rejected += 1
        result.results.append(status)
    result.accepted_events = [r for r in rows if r["event_id"] in inserted]
    return result


def insert_events(session: Session, rows: list[dict[str, Any]]) -> set[str]:
    """Insert, skipping event_ids already stored; returns the ids this call inserted."""
    rows = sorted(rows, key=lambda r: r["event_id"])
    return set(bulk_write(session, Event, rows, conflict=["event_id"], on_conflict="nothing", returning="event_id"))


_SUMMED = ("opens", "clicks", "conversions", "unsubscribes", "custom", "revenue")


def update_summaries(session: Session, rows: list[dict[str, Any]], decisions: dict[str, DecisionInfo | None],
                     experiments: dict[Any, ExperimentInfo]) -> None:
    """Add the inserted events to their decisions' outcome summaries (one upsert per table)."""
    summary: dict[str, dict[str, Any]] = {}
    custom: dict[tuple[str, str], dict[str, Any]] = {}
    now = utcnow()
    for row in rows:
        decision = decisions[row["event_id"]]
        assert decision is not None
        info = experiments[decision.experiment_id]
        entry = summary.get(decision.id)
        if entry is None:
            entry = summary[decision.id] = new_summary(decision, now)
        column = SUMMARY_COUNTERS.get(row["type"])
        if column is not None:
            entry[column] += 1
        else:
            entry["custom"] += 1
            key = (decision.id, row["type"])
            item = custom.setdefault(key, {"assignment_id": decision.id, "event_type": row["type"],
                                           "experiment_id": decision.experiment_id, "arm_key": decision.arm_key,
                                           "count": 0})
            item["count"] += 1
        if row["type"] == "conversion" and row["value"] is not None:
            entry["revenue"] += row["value"]
        if row["type"] == info.reward_event:
            first = entry["first_reward_at"]
            entry["first_reward_at"] = row["occurred_at"] if first is None else min(first, row["occurred_at"])
            entry["reward_received_at"] = row["received_at"]
    write_summaries(session, [summary[k] for k in sorted(summary)], [custom[k] for k in sorted(custom)])


def new_summary(decision: DecisionInfo, now: datetime) -> dict[str, Any]:
    return {
        "assignment_id": decision.id, "experiment_id": decision.experiment_id, "arm_key": decision.arm_key,
        "day": decision.created_at.date(), "propensity": decision.propensity, "holdout": decision.holdout,
        "covariate": decision.covariate, "opens": 0, "clicks": 0, "conversions": 0, "unsubscribes": 0,
        "custom": 0, "revenue": 0.0, "first_reward_at": None, "reward_received_at": None, "updated_at": now,
    }


def write_summaries(session: Session, summaries: list[dict[str, Any]], custom: list[dict[str, Any]]) -> None:
    """Merge per-decision increments into the summaries, in key order (no deadlocks between batches)."""
    bulk_write(session, DecisionOutcome, summaries, conflict=["assignment_id"], on_conflict="merge",
               add=_SUMMED, keep_min=["first_reward_at", "reward_received_at"])
    bulk_write(session, DecisionCustomOutcome, custom, conflict=["assignment_id", "event_type"],
               on_conflict="merge", add=["count"])
