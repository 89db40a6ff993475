"""Erase a subject everywhere (GDPR art. 17), leaving only a pseudonymous audit record."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from .models import Assignment, DecisionCustomOutcome, DecisionOutcome, Event
from .store.experiments import audit

_CHUNK = 900


def subject_reference(subject_id: str) -> str:
    """A pseudonym for the audit log: lets an operator confirm an erasure of a known id, reveals nothing else."""
    return hashlib.sha256(f"nextbest-erasure:{subject_id}".encode()).hexdigest()[:24]


def erase_subject(session: Session, subject_id: str, actor: str) -> dict[str, Any]:
    """Delete every decision, event, summary and profile row of the subject. Does not commit."""
    assignment_ids = list(session.scalars(select(Assignment.id).where(Assignment.subject_id == subject_id)))
    counts = {"decisions": len(assignment_ids), "events": 0, "outcome_summaries": 0}
    for start in range(0, len(assignment_ids), _CHUNK):
        chunk = assignment_ids[start:start + _CHUNK]
        counts["outcome_summaries"] += session.execute(
            delete(DecisionOutcome).where(DecisionOutcome.assignment_id.in_(chunk))).rowcount or 0
        session.execute(delete(DecisionCustomOutcome).where(DecisionCustomOutcome.assignment_id.in_(chunk)))
        counts["events"] += session.execute(delete(Event).where(Event.assignment_id.in_(chunk))).rowcount or 0
    counts["events"] += session.execute(delete(Event).where(Event.subject_id == subject_id)).rowcount or 0
    session.execute(delete(Assignment).where(Assignment.subject_id == subject_id))
    from .profiles import erase_profile_rows

    counts.update(erase_profile_rows(session, subject_id))
    audit(session, None, actor, "erase_subject", subject_ref=subject_reference(subject_id), **counts)
    return counts
