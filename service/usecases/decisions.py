"""The decision path: choose an arm per subject, log it with its propensity, answer.

What a channel gets in each experiment state (it can always render something):

- running: a logged decision (assignment_id, arm, payload, propensity).
- running with a promoted winner: the winner (less the holdback, which stays on
  control), still logged so the holdback keeps measuring.
- draft or paused: the control arm, not logged (assignment_id null,
  reason "experiment_draft" / "experiment_paused").
- concluded: the winner, or control when concluded without one, not logged
  (reason "experiment_concluded").
- suppressed by the contact policy: no offer (arm null, no_offer true) with the
  reason and retry_after.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import String, bindparam, text
from sqlalchemy.orm import Session

from experiments.bucketing import Splitter, in_holdout, uniform_arm, unit_position
from experiments.context import ContextError, covariate_value, validated_context
from experiments.spec import BanditAllocation

from service.store.bulk import bulk_write
from service.clock import iso_utc, utcnow
from service.store.db import Database, DriverStatement, PreparedStatement, session_driver
from service.http.errors import ApiError
from service.store.ids import new_ids
from service.store.models import Assignment
from service.usecases.runtime import ExperimentRuntime


@dataclass(frozen=True, slots=True)
class Request:
    subject_id: str
    context: Mapping[str, Any] | None
    channel: str | None
    notes: Mapping[str, Any] | None = None  # why: profile features used, ...


@dataclass(slots=True)
class Outcome:
    """One answer to a channel; `row` is what gets stored when it is a logged decision."""

    subject_id: str
    arm: str | None
    propensity: float | None
    holdout: bool = False
    reason: str | None = None
    no_offer: bool = False
    retry_after: datetime | None = None
    assignment_id: str | None = None
    row: dict[str, Any] | None = None


_DEFAULT_REASONS = {"draft": "experiment_draft", "paused": "experiment_paused", "concluded": "experiment_concluded"}


def default_arm(runtime: ExperimentRuntime) -> str:
    return runtime.winner if runtime.status == "concluded" and runtime.winner else runtime.control


def check_contexts(runtime: ExperimentRuntime, requests: Sequence[Request]) -> list[dict[str, Any]]:
    """Validate every context; a bad one is a 422 naming the subject's position and the feature."""
    allocation = runtime.spec.allocation
    features = allocation.features if isinstance(allocation, BanditAllocation) else []
    contexts = []
    problems: list[dict[str, Any]] = []
    for index, req in enumerate(requests):
        try:
            contexts.append(validated_context(features, req.context, profile_merged=True))
        except ContextError as exc:
            prefix = f"subjects.{index}." if len(requests) > 1 else ""
            problems.extend({"field": prefix + p.field, "message": p.message} for p in exc.problems)
            if len(problems) >= 50:
                break
    if problems:
        raise ApiError(422, f"context does not fit the experiment's features: {problems[0]['field']}: "
                            f"{problems[0]['message']}", details=problems)
    return contexts


def decide(runtime: ExperimentRuntime, requests: Sequence[Request], suppressed: Mapping[int, Any] | None = None,
           now: datetime | None = None) -> list[Outcome]:
    """Choose arms for all requests at once; suppressed maps request index -> contact verdict."""
    now = now or utcnow()
    suppressed = suppressed or {}
    if runtime.status != "running":
        arm = default_arm(runtime)
        return [Outcome(r.subject_id, arm, None, reason=_DEFAULT_REASONS[runtime.status]) for r in requests]
    contexts = check_contexts(runtime, requests)
    outcomes: list[Outcome | None] = [None] * len(requests)
    excluded: dict[int, frozenset[str]] = {}
    checks: dict[int, list[dict[str, Any]]] = {}
    for index, verdict in suppressed.items():
        if verdict.allowed:
            excluded[index] = frozenset(verdict.excluded_arms)
            if verdict.checks:
                checks[index] = [c.as_json() for c in verdict.checks]
            continue
        outcomes[index] = Outcome(requests[index].subject_id, None, None, reason=verdict.reason, no_offer=True,
                                  retry_after=verdict.retry_after)
    live = [i for i in range(len(requests)) if outcomes[i] is None]
    if runtime.splitter is not None:
        splitter = runtime.splitter
        for i in live:
            position = unit_position(runtime.salt, requests[i].subject_id)
            if i in excluded and set(splitter.shares) & excluded[i]:
                arm, share = _split_without(splitter.shares, excluded[i], position)
                outcomes[i] = Outcome(requests[i].subject_id, arm, share) if arm else Outcome(
                    requests[i].subject_id, None, None, reason="all_arms_converted", no_offer=True)
            else:
                arm = splitter.arm_at(position)
                outcomes[i] = Outcome(requests[i].subject_id, arm, splitter.shares[arm])
    else:
        _decide_bandit(runtime, requests, contexts, live, outcomes, excluded)
    live = [i for i in live if outcomes[i] is not None and not outcomes[i].no_offer]  # type: ignore[union-attr]
    ids = new_ids(len(live))
    covariate = runtime.spec.covariate
    for assignment_id, i in zip(ids, live):
        out = outcomes[i]
        assert out is not None
        out.assignment_id = assignment_id
        req = requests[i]
        out.row = {
            "id": assignment_id, "experiment_id": runtime.id, "arm_key": out.arm, "subject_id": req.subject_id,
            "propensity": out.propensity, "policy_version": runtime.policy_version, "holdout": out.holdout,
            "context": contexts[i] or None, "channel": req.channel,
            "covariate": covariate_value(contexts[i], covariate), "source": "live", "created_at": now,
            "notes": _notes(req.notes, excluded.get(i), checks.get(i)),
        }
    return [o for o in outcomes if o is not None]


def _notes(notes: Mapping[str, Any] | None, excluded: frozenset[str] | None,
           checks: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    merged = dict(notes or {})
    if checks:
        merged["contact_checks"] = checks
    if excluded:
        merged["excluded_arms"] = sorted(excluded)
        merged["contact_rule"] = "exclude_converted_arms"
    return merged or None


def _split_without(shares: Mapping[str, float], excluded: frozenset[str], position: float) -> tuple[str | None, float]:
    """The fixed split renormalised over the arms the subject may still get."""
    kept = {arm: share for arm, share in shares.items() if arm not in excluded}
    if not kept:
        return None, 0.0
    splitter = Splitter(kept)
    arm = splitter.arm_at(position)
    return arm, splitter.shares[arm]


_RNG = threading.local()


def _thread_rng() -> np.random.Generator:
    """This thread's generator for drawing decisions, seeded from the OS once per thread and process
    (seeding one per request cost more than a LinUCB decision; a forked worker never reuses its
    parent's stream)."""
    held = getattr(_RNG, "held", None)
    if held is None or held[0] != os.getpid():
        held = _RNG.held = (os.getpid(), np.random.default_rng())
    return held[1]


def _decide_bandit(runtime: ExperimentRuntime, requests: Sequence[Request], contexts: list[dict[str, Any]],
                   live: list[int], outcomes: list[Outcome | None], excluded: Mapping[int, frozenset[str]]) -> None:
    allocation = runtime.spec.allocation
    assert isinstance(allocation, BanditAllocation)
    arms = runtime.enabled_arms
    policy_rows = []
    rng = _thread_rng()
    for i in live:
        allowed = [a for a in arms if a not in excluded.get(i, ())]
        if not allowed:
            outcomes[i] = Outcome(requests[i].subject_id, None, None, reason="all_arms_converted", no_offer=True)
        elif in_holdout(runtime.salt, requests[i].subject_id, allocation.holdout):
            arm = uniform_arm(runtime.salt, requests[i].subject_id, allowed)
            outcomes[i] = Outcome(requests[i].subject_id, arm, 1.0 / len(allowed), holdout=True)
        else:
            policy_rows.append(i)
    if not policy_rows:
        return
    decisions = runtime.policy.decide([contexts[i] for i in policy_rows], rng)
    for i, decision in zip(policy_rows, decisions):
        banned = excluded.get(i)
        if banned and decision.arm in banned or banned and any(a in banned for a in decision.probabilities):
            kept = {a: p for a, p in decision.probabilities.items() if a not in banned}
            total = sum(kept.values())
            names = list(kept)
            arm = names[int(rng.choice(len(names), p=[kept[a] / total for a in names]))]
            outcomes[i] = Outcome(requests[i].subject_id, arm, kept[arm] / total)
        else:
            outcomes[i] = Outcome(requests[i].subject_id, decision.arm, float(decision.propensity))


_GUARDED_INSERTS: dict[str, DriverStatement] = {}
_PREPARED_INSERTS: dict[str, PreparedStatement] = {}
_HASH_TYPE = String(64)


def _guarded_insert(dialect: Any) -> DriverStatement:
    """INSERT ... SELECT ... WHERE NOT EXISTS (suppression, refused consent, do-not-contact) RETURNING id,
    compiled once per dialect."""
    if dialect.name not in _GUARDED_INSERTS:
        columns = list(Assignment.__table__.columns)
        sql = _guarded_insert_sql(dialect.name, [f":{c.key}" for c in columns], ":subject_hash")
        types = {c.key: c.type for c in columns} | {"subject_hash": _HASH_TYPE}
        statement = text(sql).bindparams(*[bindparam(name, type_=kind) for name, kind in types.items()])
        _GUARDED_INSERTS[dialect.name] = DriverStatement(statement, dialect, types)
    return _GUARDED_INSERTS[dialect.name]


def _guarded_insert_sql(dialect: str, values: Sequence[str], hashed: str) -> str:
    names = [c.key for c in Assignment.__table__.columns]
    at = dict(zip(names, values))
    subject, channel = at["subject_id"], at["channel"]
    if dialect == "postgresql":
        refused = f"(consent ->> {channel}) = 'false'"
    else:  # SQLite: the consent object's member for the channel is JSON false
        refused = (f"EXISTS (SELECT 1 FROM json_each(subjects.consent) AS j WHERE j.key = {channel} "
                   f"AND j.type = 'false')")
    return (f"INSERT INTO assignments ({', '.join(names)}) SELECT {', '.join(values)} "
            f"WHERE NOT EXISTS (SELECT 1 FROM suppressions WHERE subject_id = {subject} AND channel = {channel}) "
            f"AND NOT EXISTS (SELECT 1 FROM subjects WHERE subject_id = {subject} AND {refused}) "
            f"AND NOT EXISTS (SELECT 1 FROM do_not_contact WHERE subject_hash = {hashed} AND channel = {channel}) "
            f"RETURNING id")


def _prepared_guarded_insert(dialect: Any) -> PreparedStatement:
    """The same statement for PostgreSQL's prepared path: numbered parameters, each cast to its column's type."""
    if dialect.name not in _PREPARED_INSERTS:
        columns = list(Assignment.__table__.columns)
        numbered = [f"${n}::{c.type.compile(dialect)}" for n, c in enumerate(columns, start=1)]
        sql = _guarded_insert_sql(dialect.name, numbered, f"${len(columns) + 1}::VARCHAR(64)")
        _PREPARED_INSERTS[dialect.name] = PreparedStatement(
            "nextbest_store_decision_v2", sql, [c.key for c in columns] + ["subject_hash"], _guarded_insert(dialect))
    return _PREPARED_INSERTS[dialect.name]


def store_one(database: Database, outcome: Outcome, subject_hash: str = "",
              session: Session | None = None) -> bool:
    """Store one decision in the same statement that checks the channel suppression, the profile's
    consent and the do-not-contact list: one round trip. Without `session` it runs straight on the
    driver, outside any transaction; with one, in its transaction (whose contact locks it holds).
    Returns whether it was stored (False: the subject may not be contacted on the channel)."""
    row = outcome.row
    if row is None:
        return True
    values = {**row, "subject_hash": subject_hash}
    if session is not None:
        with session_driver(session) as connection:
            return _guarded_insert(database.engine.dialect).fetch_one(connection, values) is not None
    if database.thread_connections is not None:
        return database.thread_connections.execute(_prepared_guarded_insert(database.engine.dialect), values) > 0
    with database.driver_connection() as connection:
        return _guarded_insert(database.engine.dialect).fetch_one(connection, values) is not None


def store(session: Session, outcomes: Sequence[Outcome]) -> None:
    """Write the logged decisions in one bulk statement, before anyone sees their ids."""
    rows = [o.row for o in outcomes if o.row is not None]
    for start in range(0, len(rows), 50_000):
        bulk_write(session, Assignment, rows[start:start + 50_000])


def to_json(runtime: ExperimentRuntime, outcome: Outcome) -> dict[str, Any]:
    if outcome.no_offer:
        return {
            "assignment_id": None, "experiment": runtime.key, "subject_id": outcome.subject_id, "arm": None,
            "payload": None, "propensity": None, "policy_version": None, "holdout": False, "no_offer": True,
            "reason": outcome.reason,
            "retry_after": iso_utc(outcome.retry_after),
        }
    return {
        "assignment_id": outcome.assignment_id, "experiment": runtime.key, "subject_id": outcome.subject_id,
        "arm": outcome.arm, "payload": runtime.payloads.get(outcome.arm or "", {}),
        "propensity": round(outcome.propensity, 6) if outcome.propensity is not None else None,
        "policy_version": runtime.policy_version if outcome.assignment_id else None,
        "holdout": outcome.holdout, "no_offer": False, "reason": outcome.reason, "retry_after": None,
    }


_TAIL_KEYS = ("arm", "payload", "propensity", "policy_version", "holdout", "no_offer", "reason", "retry_after")


def batch_answer_json(runtime: ExperimentRuntime, outcomes: Sequence[Outcome], dumps: Callable[[Any], str],
                      encode_string: Callable[[str], str]) -> str:
    """The batch answer {"experiment", "assignments", "suppressed"}, exactly as `dumps` writes it with
    compact separators, built from pieces: decisions of one arm share everything but their id and
    subject, so each piece after those is encoded once (encoding 100,000 answers one by one took
    a third of a batch's time). `encode_string` is the JSON string encoder `dumps` uses."""
    tails: dict[tuple[Any, ...], str] = {}
    experiment = encode_string(runtime.key)
    rows = []
    for outcome in outcomes:
        key = (outcome.arm, outcome.propensity, outcome.holdout, outcome.reason, outcome.assignment_id is None)
        tail = tails.get(key) if not outcome.no_offer else None
        if tail is None:
            answer = to_json(runtime, outcome)
            tail = dumps({k: answer[k] for k in _TAIL_KEYS})[1:]
            if not outcome.no_offer and len(tails) < 4096:
                tails[key] = tail
        assignment_id = "null" if outcome.assignment_id is None else encode_string(outcome.assignment_id)
        rows.append(f'{{"assignment_id":{assignment_id},"experiment":{experiment},'
                    f'"subject_id":{encode_string(outcome.subject_id)},{tail}')
    suppressed = sum(1 for o in outcomes if o.no_offer)
    return f'{{"experiment":{experiment},"assignments":[{",".join(rows)}],"suppressed":{suppressed}}}'
