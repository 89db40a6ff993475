"""Leases: one holder at a time for a named job, across all workers and hosts, on any database.

A lease is a row in `job_leases`. Taking it is one conditional UPDATE that
succeeds only when the row is free or expired, so two takers serialise on the
row and exactly one wins. While the job runs, a keeper thread renews the lease
every third of its time to live, on a connection of its own; a holder that
dies (a killed host) stops renewing, and the lease is free again within one
time to live (30 s for promotion, 60 s for a refit) instead of the longest a
job may run.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, update
from sqlalchemy.exc import SQLAlchemyError
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


log = logging.getLogger("nextbest")


def renew(bind: Any, name: str, holder: str, ttl_seconds: float) -> bool:
    """Extend our lease by `ttl_seconds` from now, in a transaction of its own; False if it is not ours."""
    engine = getattr(bind, "engine", bind)
    with engine.begin() as connection:
        result = connection.execute(
            update(JobLease).where(JobLease.name == name, JobLease.holder == holder)
            .values(expires_at=utcnow() + timedelta(seconds=ttl_seconds)))
    return (result.rowcount or 0) == 1


def _keep(bind: Any, name: str, holder: str, ttl_seconds: float, stopped: threading.Event) -> None:
    while not stopped.wait(ttl_seconds / 3):
        try:
            if not renew(bind, name, holder, ttl_seconds):
                log.warning("lease %s is no longer held by %s", name, holder)
                return
        except SQLAlchemyError as exc:  # database away: the next round tries again, or the lease lapses
            log.warning("lease %s not renewed: %s", name, exc.__class__.__name__)


def release(session: Session, name: str, holder: str) -> None:
    session.rollback()
    session.execute(update(JobLease).where(JobLease.name == name, JobLease.holder == holder)
                    .values(holder=None, expires_at=None))
    session.commit()


@contextmanager
def lease(session: Session, name: str, holder: str, ttl_seconds: float = 60) -> Iterator[bool]:
    """`with lease(...) as held:` — held is False when someone else has it; renewed while held."""
    held = acquire(session, name, holder, ttl_seconds)
    stopped = threading.Event()
    keeper = None
    if held:
        keeper = threading.Thread(target=_keep, args=(session.get_bind(), name, holder, ttl_seconds, stopped),
                                  name=f"lease:{name}", daemon=True)
        keeper.start()
    try:
        yield held
    finally:
        stopped.set()
        if keeper is not None:
            keeper.join()
        if held:
            release(session, name, holder)
