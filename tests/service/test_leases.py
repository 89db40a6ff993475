"""Job leases across hosts: renewed while their job runs, free again soon after their holder dies."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from service import clock
from service.jobs import leases
from service.store import db as db_module
from service.store.models import JobLease


def _expiry(app: Any, name: str) -> Any:
    with db_module.get_db(app).session() as session:
        return session.scalar(select(JobLease.expires_at).where(JobLease.name == name))


def test_a_held_lease_is_renewed_by_its_keeper(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    renewed = threading.Event()
    real = leases.renew

    def renew(*args: Any) -> bool:
        result = real(*args)
        renewed.set()
        return result

    monkeypatch.setattr(leases, "renew", renew)
    database = db_module.get_db(app)
    with database.session() as session, leases.lease(session, "job", "host-a", ttl_seconds=0.3) as held:
        assert held
        first = _expiry(app, "job")
        assert renewed.wait(60), "the keeper never renewed the lease"
        assert _expiry(app, "job") > first
        with database.session() as other:
            assert not leases.acquire(other, "job", "host-b", ttl_seconds=30)
    with database.session() as other:  # released at the end of the job
        assert leases.acquire(other, "job", "host-b", ttl_seconds=30)


def test_a_dead_holders_lease_lapses_after_its_time_to_live(app: Any) -> None:
    """A killed host renews nothing: its lease is taken over once its (short) time to live has passed."""
    database = db_module.get_db(app)
    with database.session() as session:
        assert leases.acquire(session, "promotion", "host-a:killed", ttl_seconds=30)
        assert not leases.acquire(session, "promotion", "host-b", ttl_seconds=30)
        session.execute(update(JobLease).values(expires_at=clock.utcnow() - timedelta(seconds=1)))
        session.commit()
        assert leases.acquire(session, "promotion", "host-b", ttl_seconds=30)
        assert not leases.renew(session.get_bind(), "promotion", "host-a:killed", 30)  # no longer its lease
