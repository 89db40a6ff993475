"""Store imported history: decisions, their events and outcome summaries, in bulk.

A decision's id is derived from the experiment, the line number and the raw
row, so sending the same file again imports nothing twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from experiments.context import covariate_value, number_problems
from experiments.history import parse_history, parse_mapping, read_records
from experiments.spec import BanditAllocation

from service.store.bulk import bulk_write, select_in
from service.clock import utcnow
from service.http.errors import ApiError
from service.store.ingest import SUMMARY_COUNTERS
from service.store.models import Assignment, DecisionCustomOutcome, DecisionOutcome, Event, EventKey, unique_key
from service.store import experiments as store

_CHUNK = 20_000


def import_file(session: Session, key: str, data: bytes, fmt: str, mapping: str | None = None,
                max_rows: int = 2_000_000, actor: str = "cli", generate_subject_ids: bool = False,
                progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Validate and store every good row; answer with counts and the rejected line numbers.

    `progress(done, total)` hears of each stored chunk of decisions (the CLI's progress bar)."""
    experiment = store.get(session, key)
    spec = store.spec_of(experiment)
    try:
        columns = parse_mapping(mapping)
    except ValueError as exc:
        raise ApiError(422, str(exc), details=[{"field": "columns"}]) from None
    arms = {}
    for arm in spec.arms:
        arms[arm.key.lower()] = arm.key
        if arm.name:
            arms[arm.name.strip().lower()] = arm.key
    if isinstance(spec.allocation, BanditAllocation):
        shares = {arm.key: 1.0 / len(spec.arms) for arm in spec.arms}
    else:
        shares = spec.fixed_weights()
    now = utcnow()
    try:
        parsed = parse_history(read_records(data, fmt), arms=arms, shares=shares, event_types=spec.event_types,
                               mapping=columns, now=now, max_rows=max_rows,
                               generate_subject_ids=generate_subject_ids)
    except ValueError as exc:
        raise ApiError(422, str(exc)) from None

    # The context rule of live decisions (finite, bounded numbers) holds for imported ones too.
    categorical = {f.name for f in spec.allocation.features if f.type == "categorical"} \
        if isinstance(spec.allocation, BanditAllocation) else set()
    good_rows = []
    for row in parsed.rows:
        problems = number_problems(row.context, skip=categorical)
        if problems:
            parsed.rejected.append({"line": row.line, "reason": "; ".join(f"{p.field}: {p.message}" for p in problems)})
        else:
            good_rows.append(row)
    parsed.rejected.sort(key=lambda r: r["line"])

    decisions, events, outcomes, custom = [], [], [], []
    for row in good_rows:
        digest = hashlib.sha256(f"{experiment.id}:{row.line}:{row.fingerprint}".encode()).hexdigest()
        assignment_id = "i" + digest[:31]
        decisions.append({
            "id": assignment_id, "experiment_id": experiment.id, "arm_key": row.arm, "subject_id": row.subject_id,
            "propensity": row.propensity, "policy_version": 0, "holdout": False, "context": row.context or None,
            "channel": None, "covariate": covariate_value(row.context, spec.covariate), "source": "import",
            "created_at": row.decided_at,
        })
        if not row.counts:
            continue
        summary = {
            "assignment_id": assignment_id, "experiment_id": experiment.id, "arm_key": row.arm,
            "day": row.decided_at.date(), "propensity": row.propensity, "holdout": False,
            "covariate": decisions[-1]["covariate"], "opens": 0, "clicks": 0, "conversions": 0, "unsubscribes": 0,
            "custom": 0, "revenue": row.revenue, "first_reward_at": None, "reward_received_at": None,
            "updated_at": now,
        }
        for event_type, count in row.counts.items():
            column = SUMMARY_COUNTERS.get(event_type)
            if column:
                summary[column] = count
            else:
                summary["custom"] += count
                custom.append({"assignment_id": assignment_id, "event_type": event_type,
                               "experiment_id": experiment.id, "arm_key": row.arm, "count": count,
                               "day": row.decided_at.date()})
            if event_type == spec.reward.event:
                summary["first_reward_at"] = row.decided_at
                summary["reward_received_at"] = now
            for k in range(count):
                events.append({
                    "event_id": f"import:{assignment_id}:{event_type}:{k}", "experiment_id": experiment.id,
                    "assignment_id": assignment_id, "subject_id": row.subject_id, "type": event_type,
                    "value": row.revenue if event_type == "conversion" and k == 0 else None,
                    "occurred_at": row.decided_at, "received_at": now, "attribution": "assignment",
                    "unattributed_reason": None,
                })
        outcomes.append(summary)

    new_ids: set[str] = set()
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        # PostgreSQL's partitioned log keys decisions by (id, created_at), and a row without a time is
        # stamped with the import's: the ids already stored are looked up first, and imports into one
        # experiment take turns, so a file sent again (or twice at once) still imports nothing twice.
        session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                        {"key": f"nextbest-import:{experiment.id}"})
    for start in range(0, len(decisions), _CHUNK):
        chunk = decisions[start:start + _CHUNK]
        if dialect == "postgresql":
            stored = {id for id, in select_in(session, (Assignment.id,), Assignment.id, [d["id"] for d in chunk])}
            chunk = [d for d in chunk if d["id"] not in stored]
        new_ids.update(bulk_write(session, Assignment, chunk, conflict=unique_key(Assignment, dialect),
                                  on_conflict="nothing", returning="id"))
        if progress is not None:
            progress(min(start + _CHUNK, len(decisions)), len(decisions))
    fresh = lambda rows: [r for r in rows if r["assignment_id"] in new_ids]  # noqa: E731
    if dialect == "postgresql":  # event_ids stay unique through event_keys there (service/store/ingest.py)
        keyed: set[str] = set()
        new_events = fresh(events)
        for start in range(0, len(new_events), _CHUNK):
            keyed.update(bulk_write(session, EventKey, [{"event_id": e["event_id"], "received_at": now}
                                                        for e in new_events[start:start + _CHUNK]],
                                    conflict=["event_id"], on_conflict="nothing", returning="event_id"))
        events = [e for e in new_events if e["event_id"] in keyed]
    for model, rows in ((Event, fresh(events)), (DecisionOutcome, fresh(outcomes)),
                        (DecisionCustomOutcome, fresh(custom))):
        for start in range(0, len(rows), _CHUNK):
            bulk_write(session, model, rows[start:start + _CHUNK])
    store.audit(session, experiment, actor, "import", rows=len(good_rows), imported=len(new_ids),
                rejected=len(parsed.rejected))
    return {
        "imported": len(new_ids),
        "duplicates": len(decisions) - len(new_ids),
        "events": len(fresh(events)),
        "rejected": parsed.rejected[:1000],
        "rejected_count": len(parsed.rejected),
        "ignored_columns": parsed.ignored_columns,
    }
