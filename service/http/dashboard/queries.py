"""The few reads the experiment list needs beyond the reports: counts grouped in SQL, one scan for all."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from service.clock import utcnow
from service.store.models import Assignment, Experiment

STATUS_ORDER = {"running": 0, "paused": 1, "draft": 2, "concluded": 3}


@dataclass(frozen=True, slots=True)
class Traffic:
    decisions: int
    last_24h: int
    latest: datetime | None = None  # the newest decision: "last 24 h" reads 0 for a while after a send


def traffic(db: Session, now: datetime | None = None) -> dict[int, Traffic]:
    """Decisions per experiment: all time, in the last 24 hours, and the newest (one GROUP BY over assignments)."""
    since = (now or utcnow()) - timedelta(hours=24)
    rows = db.execute(
        select(
            Assignment.experiment_id,
            func.count().label("n"),
            func.sum(case((Assignment.created_at >= since, 1), else_=0)).label("recent"),
            func.max(Assignment.created_at).label("latest"),
        ).group_by(Assignment.experiment_id)
    )
    return {row.experiment_id: Traffic(int(row.n), int(row.recent or 0), row.latest) for row in rows}


def experiments(db: Session, status: str | None = None, limit: int = 500) -> list[Experiment]:
    """Experiments to list: running first, then paused, drafts, concluded; newest first within each."""
    query = select(Experiment)
    if status:
        query = query.where(Experiment.status == status)
    rows = list(db.scalars(query.order_by(Experiment.id.desc()).limit(limit)))
    return sorted(rows, key=lambda e: STATUS_ORDER.get(e.status, 9))
