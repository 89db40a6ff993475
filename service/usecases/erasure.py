"""Erase a subject everywhere (GDPR art. 17), leaving only keyed pseudonyms: the audit record, and a
do-not-contact entry per channel the subject had left, so an erased unsubscriber stays suppressed
(contacting someone who said no is what erasure must never lead to) without the id being kept.

Pseudonyms are HMAC-SHA256 of the id with a server secret (service/store/pseudonyms.py), so a guessable
id cannot be recovered by hashing guesses.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from service.store.bulk import bulk_write
from service.clock import utcnow
from service.store.models import (Assignment, DecisionCustomOutcome, DecisionOutcome, DoNotContact, Event,
                                  SubjectArmSums, Suppression)
from service.store.pseudonyms import app_secret, subject_hash
from service.store.experiments import audit

_CHUNK = 900


def subject_reference(subject_id: str) -> str:
    """A pseudonym for the audit log: lets an operator confirm an erasure of a known id, reveals nothing else."""
    return subject_hash(app_secret(), subject_id)[:32]


def erase_subject(session: Session, subject_id: str, actor: str) -> dict[str, Any]:
    """Delete every decision, event, summary and profile row of the subject, keeping its channel
    suppressions as do-not-contact entries under its keyed pseudonym. Does not commit."""
    hashed = subject_hash(app_secret(), subject_id)
    left = session.scalars(select(Suppression.channel).where(Suppression.subject_id == subject_id)).all()
    bulk_write(session, DoNotContact, [{"subject_hash": hashed, "channel": channel, "reason": "unsubscribed",
                                        "created_at": utcnow()} for channel in sorted(left)],
               conflict=["subject_hash", "channel"], on_conflict="nothing")
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
    # The triggers removed the subject's rows with its decisions; rows of decisions already retired
    # from the logs stay in no other table keyed by the id.
    session.execute(delete(SubjectArmSums).where(SubjectArmSums.subject_id == subject_id))
    from service.usecases.profiles import erase_profile_rows

    counts.update(erase_profile_rows(session, subject_id))
    counts["do_not_contact_kept"] = len(left)
    audit(session, None, actor, "erase_subject", subject_ref=subject_reference(subject_id), **counts)
    return counts
