"""Leases: one holder at a time for a named job, across all workers and hosts, on any database.

A lease is a row in `job_leases`. Taking it is one conditional UPDATE that
succeeds only when the row is free or expired, so two takers serialise on the
row and exactly one wins. A holder that crashes simply lets the lease expire.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import or_, update
from sqlalchemy.orm import Session

from service.store.bulk import bulk_write
from service.clock import utcnow
from service.store.models import JobLease


def holder_name(prefix: str = "worker") -> str:
    return f"{prefix}:{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def acquire(session: Session, name: str, holder: str, ttl_seconds: float) -> bool:
    """Take the lease if it is free, expired or already ours; commits either way."""
    bulk_write(session, JobLease, [{"name": name, "holder": None, "expires_at": None}], conflict=["name"],
               on_conflict="nothing")
    session.commit()
    now = utcnow()
    result = session.execute(
        update(JobLease)
        .where(JobLease.name == name,
               or_(JobLease.holder.is_(None), JobLease.expires_at < now, JobLease.holder == holder))
        .values(holder=holder, expires_at=now + timedelta(seconds=ttl_seconds))
    )
    session.commit()
    return (result.rowcount or 0) == 1


def release(session: Session, name: str, holder: str) -> None:
    session.rollback()
    session.execute(update(JobLease).where(JobLease.name == name, JobLease.holder == holder)
                    .values(holder=None, expires_at=None))
    session.commit()


@contextmanager
def lease(session: Session, name: str, holder: str, ttl_seconds: float = 600) -> Iterator[bool]:
    """`with lease(...) as held:` — held is False when someone else has it."""
    held = acquire(session, name, holder, ttl_seconds)
    try:
        yield held
    finally:
        if held:
            release(session, name, holder)
