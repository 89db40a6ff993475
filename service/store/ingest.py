"""Outcome ingestion: exactly once, attributed, summarised in bulk per batch.

One transaction per batch: a batch's event_ids are inserted with ON CONFLICT
(event_id) DO NOTHING ... RETURNING, so only rows this call really inserted
move the per-decision summaries; a retry, or the same batch from two clients at
once, is stored once. Rows are written in a fixed order (event_id, assignment_id)
so concurrent batches cannot deadlock each other.

On PostgreSQL `events` is partitioned by week (alembic 0014) and cannot keep
event_id unique itself: the ids go into the unpartitioned `event_keys` first,
and only the events whose keys that insert returned are stored. The keys, the
events, the per-decision summaries and the custom-event counts are written by
one statement (`_pg_store`): the summaries are aggregated from exactly the rows
the insert returned, in the database. On SQLite (one writer at a time, and
events.event_id unique) the same rules run here, in Python.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from functools import cache
from typing import Any, NamedTuple

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from experiments.outcomes import (
    CLOCK_SKEW,
    DecisionRef,
    IncomingEvent,
    attribute_to_subject,
    parse_event,
    window_reason,
)
from experiments.spec import BUILTIN_EVENTS

from service.store.bulk import bulk_write, column_recordset, conflict_clause, json_columns, json_rows, select_in
from service.clock import utcnow
from service.store.db import session_driver
from service.store.models import (Assignment, DecisionCustomOutcome, DecisionOutcome, Event, Experiment,
                                  unique_key)

_CHUNK = 900  # parameters per IN (...) list, under SQLite's limits
# Built-in event type -> its counter column in decision_outcomes.
SUMMARY_COUNTERS = {"open": "opens", "click": "clicks", "conversion": "conversions", "unsubscribe": "unsubscribes"}
# What the shell sends per event; received_at is the batch's own clock, bound once.
EVENT_COLUMNS = ("event_id", "experiment_id", "assignment_id", "subject_id", "type", "value", "occurred_at",
                 "attribution", "unattributed_reason")


@dataclass(frozen=True, slots=True)
class ExperimentInfo:
    id: int
    key: str
    window: timedelta
    event_types: frozenset[str]
    reward_event: str


class DecisionInfo(NamedTuple):
    """A decision as attribution and the summaries need it: a read-only row, built straight from the query's."""

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
    # Accepted unsubscribes as the contact policy reads them (event_id, type, subject_id, channel, received_at).
    unsubscribes: list[dict[str, Any]] = field(default_factory=list)
    accepted_by_experiment: dict[str, int] = field(default_factory=dict)  # "" for events of no experiment

    def as_json(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "rejected": self.rejected,
                "results": self.results}


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _experiment_info(id: int, key: str, spec: dict[str, Any]) -> ExperimentInfo:
    custom = spec.get("custom_events") or []
    reward = spec.get("reward") or {}
    return ExperimentInfo(
        id=id, key=key, window=timedelta(seconds=int(spec.get("attribution_window_seconds", 1209600))),
        event_types=frozenset((*BUILTIN_EVENTS, *custom)), reward_event=str(reward.get("event", "conversion")),
    )


def _core(session: Session, statement: Any) -> Any:
    """Run a column query on the session's connection: plain rows in one fetch, without the ORM's per-row loading."""
    return session.connection().execute(statement).fetchall()


def load_experiments(session: Session, *, ids: Iterable[int] = (), keys: Iterable[str] = ()) -> dict[Any, ExperimentInfo]:
    """Experiment facts by id and by key (three columns: no ORM objects, no arms)."""
    found: dict[Any, ExperimentInfo] = {}
    columns = (Experiment.id, Experiment.key, Experiment.spec)
    for key, values in ((Experiment.id, ids), (Experiment.key, keys)):
        for id, name, spec in select_in(session, columns, key, sorted(set(values))):
            info = _experiment_info(id, name, spec or {})
            found[info.id] = info
            found[info.key] = info
    return found


# In DecisionInfo's field order.
_DECISION_COLUMNS = (Assignment.id, Assignment.experiment_id, Assignment.arm_key, Assignment.subject_id,
                     Assignment.created_at, Assignment.propensity, Assignment.holdout, Assignment.covariate,
                     Assignment.channel)


# Where decisions are first looked for by id: events mostly name decisions of the last days, and on
# PostgreSQL's weekly partitions (alembic 0014) a lookup bounded by time on both sides probes only the
# two or three partitions of that span (the default partition too, unless weeks cover the span), where
# an unbounded one probes an index in every partition. Ids not found there are looked for outside it.
RECENT_DECISIONS = timedelta(days=8)
_AHEAD = timedelta(days=1)  # decisions stamped by another server's clock a little ahead of this one's


def load_decisions_by_id(session: Session, ids: Iterable[str], now: datetime | None = None) -> dict[str, DecisionInfo]:
    """The named decisions by id (timestamps in UTC); on PostgreSQL those of the last RECENT_DECISIONS
    first, then the rest."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    if session.get_bind().dialect.name == "postgresql":
        now = now or utcnow()
        span = (now - RECENT_DECISIONS, now + _AHEAD)
        rows = _decisions_by_id(session, wanted, "created_at >= %s AND created_at < %s", span)
        if len(rows) < len(wanted):
            seen = {row[0] for row in rows}
            rows.extend(_decisions_by_id(session, [i for i in wanted if i not in seen],
                                         "(created_at < %s OR created_at >= %s)", span))
    else:
        rows = select_in(session, _DECISION_COLUMNS, Assignment.id, wanted)
    found: dict[str, DecisionInfo] = {}
    for (id, experiment_id, arm_key, subject_id, created_at, propensity, holdout, covariate, channel) in rows:
        found[id] = DecisionInfo(id, experiment_id, arm_key, subject_id, created_at.astimezone(timezone.utc),
                                 propensity, holdout, covariate, channel)
    return found


def _decisions_by_id(session: Session, ids: list[str], when: str, span: tuple[datetime, datetime]
                     ) -> list[tuple[Any, ...]]:
    """PostgreSQL: the decisions of `ids` whose created_at meets `when` (two placeholders: the span's
    ends), straight through the driver with binary results, as `select_in` does."""
    names = ", ".join(f'"{c.name}"' for c in _DECISION_COLUMNS)
    sql = (f'SELECT {names} FROM assignments WHERE id IN (SELECT json_array_elements_text(CAST(%s AS json))) '
           f'AND {when}')
    with session_driver(session) as raw, raw.cursor(binary=True) as cursor:
        cursor.execute(sql, [json.dumps(ids), *span])
        return cursor.fetchall()


def load_decisions_by_subject(
    session: Session, pairs: Iterable[tuple[int, str]], since: datetime
) -> dict[tuple[int, str], list[DecisionInfo]]:
    """Each (experiment, subject)'s decisions since `since`, for window attribution."""
    found: dict[tuple[int, str], list[DecisionInfo]] = defaultdict(list)
    for chunk in _chunks(sorted(set(pairs)), 400):
        query = select(*_DECISION_COLUMNS).where(
            tuple_(Assignment.experiment_id, Assignment.subject_id).in_(list(chunk)), Assignment.created_at >= since
        )
        for row in _core(session, query):
            found[(row[1], row[3])].append(DecisionInfo._make(row))
    return found


def _rejected(event_id: Any, reason: str) -> dict[str, Any]:
    return {"event_id": event_id, "status": "rejected", "reason": reason}


def _contradiction(event: IncomingEvent, decision: DecisionInfo, info: ExperimentInfo) -> str | None:
    """Why an event's experiment or subject_id contradicts the decision its assignment_id names, if they do."""
    if event.experiment is not None and event.experiment != info.key:
        return (f"experiment {event.experiment!r} contradicts assignment_id {event.assignment_id!r}, "
                f"which belongs to experiment {info.key!r}")
    if event.subject_id is not None and event.subject_id != decision.subject_id:
        return f"subject_id contradicts assignment_id {event.assignment_id!r}, which was decided for another subject"
    return None


def ingest(session: Session, raw_events: Sequence[Any], now: datetime | None = None) -> BatchResult:
    """Validate, attribute and store a batch; per-event results in the input order. Does not commit."""
    now = now or utcnow()
    latest = now + CLOCK_SKEW
    result = BatchResult()
    results = result.results
    # Events that passed validation, each with its (provisional) result, which the steps below refine in place.
    pending: list[tuple[dict[str, Any], IncomingEvent]] = []
    seen: set[str] = set()
    timestamps: dict[str, datetime] = {}
    for raw in raw_events:
        try:
            event = parse_event(raw, timestamps)
        except ValueError as exc:
            event_id = raw.get("event_id") if isinstance(raw, dict) else None
            results.append(_rejected(event_id if isinstance(event_id, str) else None, str(exc)))
            continue
        event_id = event.event_id
        if event.occurred_at > latest:
            results.append(_rejected(event_id, "occurred_at is in the future"))
        elif event_id in seen:
            results.append({"event_id": event_id, "status": "duplicate"})
        else:
            seen.add(event_id)
            status = {"event_id": event_id, "status": "accepted"}
            results.append(status)
            pending.append((status, event))

    decisions = load_decisions_by_id(session, {e.assignment_id for _, e in pending if e.assignment_id}, now)
    experiments = load_experiments(
        session,
        ids={d.experiment_id for d in decisions.values()},
        keys={e.experiment for _, e in pending if e.experiment and not e.assignment_id},
    )
    subject_events = [e for _, e in pending if not e.assignment_id and e.experiment in experiments]
    by_subject: dict[tuple[int, str], list[DecisionInfo]] = {}
    if subject_events:
        earliest = min(e.occurred_at - experiments[e.experiment].window for e in subject_events)
        by_subject = load_decisions_by_subject(
            session, ((experiments[e.experiment].id, e.subject_id) for e in subject_events), earliest - CLOCK_SKEW
        )

    rows: list[dict[str, Any]] = []  # in EVENT_COLUMNS
    row_decisions: list[DecisionInfo | None] = []  # the decision each row counts towards, if any
    stored: list[dict[str, Any]] = []  # the results of the rows, in the same order
    unsubscribes: list[tuple[dict[str, Any], str | None]] = []  # (row, channel) of each unsubscribe row
    for status, event in pending:
        decision: DecisionInfo | None = None
        reason: str | None
        if event.assignment_id:
            decision = decisions.get(event.assignment_id)
            info = experiments.get(decision.experiment_id) if decision else None
            if info is None:
                attribution, reason = "unattributed", "unknown_assignment"
            elif contradiction := _contradiction(event, decision, info):  # type: ignore[arg-type]
                status["status"], status["reason"] = "rejected", contradiction
                continue
            else:
                reason = window_reason(decision.created_at, event.occurred_at, info.window)  # type: ignore[union-attr]
                attribution = "unattributed" if reason else "assignment"
        elif event.experiment is None:
            info, attribution, reason = None, "unattributed", "no_experiment"  # a channel-wide unsubscribe
        else:
            info = experiments.get(event.experiment)
            if info is None:
                status["status"], status["reason"] = "rejected", f"unknown experiment {event.experiment!r}"
                continue
            candidates = by_subject.get((info.id, event.subject_id or ""), [])
            verdict = attribute_to_subject([DecisionRef(d.id, d.created_at) for d in candidates],
                                           event.occurred_at, info.window)
            decision = next((d for d in candidates if d.id == verdict.assignment_id), None)
            attribution, reason = ("subject", None) if decision else ("unattributed", verdict.reason)
        if info is not None and event.type not in info.event_types:
            status["status"] = "rejected"
            status["reason"] = (f"event type {event.type!r} is not built in or declared by experiment "
                                f"{info.key!r}")
            continue
        known = decision  # even outside its window, the named decision tells whose event this is
        if attribution == "unattributed":
            decision = None
        row = {
            "event_id": event.event_id, "experiment_id": info.id if info else None,
            "assignment_id": decision.id if decision else event.assignment_id,
            "subject_id": known.subject_id if known else event.subject_id, "type": event.type,
            "value": event.value, "occurred_at": event.occurred_at,
            "attribution": attribution, "unattributed_reason": reason,
        }
        rows.append(row)
        row_decisions.append(decision)
        stored.append(status)
        status["attribution"] = attribution
        if reason is not None:
            status["reason"] = reason
        if event.type == "unsubscribe":
            unsubscribes.append((row, event.channel or (decision.channel if decision else None)))

    if session.get_bind().dialect.name == "postgresql":
        inserted = _store_pg(session, rows, row_decisions, experiments, now)
    else:
        inserted = _store_in_python(session, rows, row_decisions, experiments, now)

    result.accepted = len(inserted)
    key_of = {info.id: info.key for info in experiments.values() if info is not None}
    for row in rows:
        if row["event_id"] in inserted:
            key = key_of.get(row["experiment_id"], "")
            result.accepted_by_experiment[key] = result.accepted_by_experiment.get(key, 0) + 1
    if len(inserted) < len(rows):  # some were stored already (a retry, or another client's copy)
        for status in stored:
            if status["event_id"] not in inserted:
                status["status"] = "duplicate"
    result.duplicates = sum(1 for r in results if r["status"] == "duplicate")
    result.rejected = len(results) - result.accepted - result.duplicates
    result.unsubscribes = [
        {"event_id": row["event_id"], "type": row["type"], "subject_id": row["subject_id"], "channel": channel,
         "received_at": now}
        for row, channel in unsubscribes if row["event_id"] in inserted
    ]
    return result


# The decision facts a summary row carries, as `_store_pg` sends them (in decision_outcomes' column names).
_FACT_COLUMNS = ("assignment_id", "experiment_id", "arm_key", "day", "propensity", "holdout", "covariate")
_BUILTIN = ", ".join(f"'{t}'" for t in SUMMARY_COUNTERS)


def _summaries_sql() -> str:
    """Upsert the per-decision summaries of the `counted` rows, with the facts of the `decided` decisions."""
    counters = ",\n             ".join(f"count(*) FILTER (WHERE type = '{t}') AS {c}" for t, c in SUMMARY_COUNTERS.items())
    columns = [*_FACT_COLUMNS, *SUMMARY_COUNTERS.values(), "custom", "revenue", "first_reward_at",
               "reward_received_at", "updated_at"]
    return f"""
INSERT INTO decision_outcomes AS t ({", ".join(columns)})
SELECT {", ".join(f"d.{c}" for c in _FACT_COLUMNS)}, {", ".join(f"p.{c}" for c in SUMMARY_COUNTERS.values())},
       p.custom, p.revenue, p.first_reward_at, p.reward_received_at, CAST(%(updated_at)s AS timestamptz)
FROM (SELECT assignment_id,
             {counters},
             count(*) FILTER (WHERE type NOT IN ({_BUILTIN})) AS custom,
             coalesce(sum(value) FILTER (WHERE type = 'conversion'), 0) AS revenue,
             min(occurred_at) FILTER (WHERE rewarding) AS first_reward_at,
             CASE WHEN bool_or(rewarding) THEN CAST(%(received_at)s AS timestamptz) END AS reward_received_at
      FROM counted GROUP BY assignment_id) AS p
JOIN decided AS d ON d.assignment_id = p.assignment_id
ORDER BY d.assignment_id COLLATE "C"
{conflict_clause(columns, unique_key(DecisionOutcome, "postgresql"), "merge", add=_SUMMED,
                 keep_min=["first_reward_at", "reward_received_at"])}"""


def _custom_sql() -> str:
    """Upsert the custom-event counts of the `counted` rows."""
    columns = ["assignment_id", "event_type", "experiment_id", "arm_key", "count", "day"]
    return f"""
INSERT INTO decision_custom_outcomes AS t ({", ".join(columns)})
SELECT d.assignment_id, c.type, d.experiment_id, d.arm_key, c.n, d.day
FROM (SELECT assignment_id, type, count(*) AS n FROM counted WHERE type NOT IN ({_BUILTIN})
      GROUP BY assignment_id, type) AS c
JOIN decided AS d ON d.assignment_id = c.assignment_id
ORDER BY d.assignment_id COLLATE "C", c.type COLLATE "C"
{conflict_clause(columns, unique_key(DecisionCustomOutcome, "postgresql"), "merge", add=["count"])}"""


@cache
def _pg_store(with_custom: bool) -> str:
    """Insert the batch's event_ids into `event_keys` (event_id order), store the events whose keys were
    inserted, then add exactly those, when attributed, to their decisions' summaries (assignment_id order)
    and, `with_custom`, to their custom-event counts; answers the inserted event_ids.

    Lock order, as separate statements would take them: event keys (the only conflicts an event can
    meet: a retry, or another client's copy, waits here on the first copy's key and then skips), then
    the events (new rows in their week's partition, nothing to wait for), then summaries, then custom
    counts. The aggregates read every inserted row before the first summary is written.
    The decisions' facts come from the lookup attribution already made (`decisions`), not a second one.
    Parameters in the driver's style: the statement runs straight through it.
    """
    columns = ", ".join(f'"{c}"' for c in EVENT_COLUMNS)
    custom = f"""
), custom AS ({_custom_sql()}""" if with_custom else ""
    return f"""
WITH incoming AS (
    SELECT * FROM {column_recordset(Event.__table__, EVENT_COLUMNS, "%(columns)s")}
), keys AS (
    INSERT INTO event_keys AS k (event_id, received_at)
    SELECT event_id, CAST(%(received_at)s AS timestamptz) FROM incoming
    ORDER BY event_id COLLATE "C"
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
), inserted AS (
    INSERT INTO events AS t ({columns}, received_at)
    SELECT {", ".join(f'u."{c}"' for c in EVENT_COLUMNS)}, CAST(%(received_at)s AS timestamptz)
    FROM incoming AS u JOIN keys ON keys.event_id = u.event_id
    RETURNING event_id, experiment_id, assignment_id, type, value, occurred_at, attribution
), counted AS (
    SELECT i.assignment_id, i.type, i.value, i.occurred_at, i.type = r.event AS rewarding
    FROM inserted AS i
    JOIN json_to_recordset(CAST(%(rewards)s AS json)) AS r(experiment_id bigint, event text)
      ON r.experiment_id = i.experiment_id
    WHERE i.attribution <> 'unattributed'
), decided AS (
    SELECT * FROM {column_recordset(DecisionOutcome.__table__, _FACT_COLUMNS, "%(decisions)s", alias="d")}
), summaries AS ({_summaries_sql()}{custom}
)
SELECT event_id FROM inserted"""


def _store_pg(session: Session, rows: list[dict[str, Any]], row_decisions: list[DecisionInfo | None],
              experiments: dict[Any, ExperimentInfo], now: datetime) -> set[str]:
    """Events, summaries and custom counts in one statement; returns the event_ids this call inserted."""
    if not rows:
        return set()
    rewards = json_rows([{"experiment_id": info.id, "event": info.reward_event}
                         for key, info in experiments.items() if key == info.id], ("experiment_id", "event"))
    decided = {d.id: d for d in row_decisions if d is not None}
    if decided:
        ids, experiment_ids, arm_keys, _, created, propensities, holdouts, covariates, _ = zip(*decided.values())
        days = [moment.date() for moment in created]  # created_at is UTC
        facts = json.dumps([ids, experiment_ids, arm_keys, days, propensities, holdouts, covariates],
                           default=date.isoformat, allow_nan=False)
    else:
        facts = json.dumps([[] for _ in _FACT_COLUMNS])
    with_custom = any(row["type"] not in SUMMARY_COUNTERS for row in rows)
    params = {"columns": json_columns(rows, EVENT_COLUMNS), "decisions": facts, "rewards": rewards,
              "received_at": now, "updated_at": utcnow()}
    with session_driver(session) as raw, raw.cursor(binary=True) as cursor:
        if decided:
            # The subjects' report sums are updated by two triggers of the statement below (new
            # summaries, then changed ones), each in key order but one after the other; locked here,
            # all in one key order first, two batches on the same subjects cannot deadlock.
            keys = sorted({(d.subject_id, d.experiment_id, d.arm_key) for d in decided.values()})
            subjects, experiment_ids, arm_keys = (list(column) for column in zip(*keys))
            cursor.execute(_LOCK_SUBJECT_SUMS, {"subjects": subjects, "experiments": experiment_ids,
                                                "arms": arm_keys})
        cursor.execute(_pg_store(with_custom), params)
        return {event_id for event_id, in cursor.fetchall()}


_LOCK_SUBJECT_SUMS = """
SELECT 1 FROM subject_arm_sums AS s
JOIN unnest(CAST(%(subjects)s AS text[]), CAST(%(experiments)s AS int[]), CAST(%(arms)s AS text[]))
     AS k(subject_id, experiment_id, arm_key)
  ON s.subject_id = k.subject_id AND s.experiment_id = k.experiment_id AND s.arm_key = k.arm_key
ORDER BY s.subject_id COLLATE "C", s.experiment_id, s.arm_key COLLATE "C"
FOR UPDATE OF s"""


def _store_in_python(session: Session, rows: list[dict[str, Any]], row_decisions: list[DecisionInfo | None],
                     experiments: dict[Any, ExperimentInfo], now: datetime) -> set[str]:
    """The same writes as `_store_pg`, as separate statements with the summaries added up here."""
    full = [{**row, "received_at": now} for row in rows]
    inserted = insert_events(session, full)
    decision_of = {row["event_id"]: d for row, d in zip(full, row_decisions)}
    update_summaries(session, [r for r in full if r["event_id"] in inserted and decision_of[r["event_id"]]],
                     decision_of, experiments)
    return inserted


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
                                           "count": 0, "day": decision.created_at.date()})
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
    dialect = session.get_bind().dialect.name
    bulk_write(session, DecisionOutcome, summaries, conflict=unique_key(DecisionOutcome, dialect), on_conflict="merge",
               add=_SUMMED, keep_min=["first_reward_at", "reward_received_at"])
    bulk_write(session, DecisionCustomOutcome, custom, conflict=unique_key(DecisionCustomOutcome, dialect),
               on_conflict="merge", add=["count"])
