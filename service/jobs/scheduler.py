"""Periodic jobs inside the service: refit bandits, evaluate promotions, deliver webhooks, fold the report
rollups' per-backend rows, keep the log partitions (PostgreSQL: weeks created ahead, and past
NEXTBEST_LOG_RETENTION_DAYS retired).

With NEXTBEST_JOBS=on every worker runs a daemon thread that wakes every
NEXTBEST_JOB_INTERVAL_SECONDS; leases in the database make sure only one
worker, on one host, runs each job at a time. Cron can run the same jobs with
`nextbest refit`, `nextbest promote` and `nextbest partitions ensure` / `retire` instead.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from service.clock import utcnow
from service.config import switched_on
from service.store.db import Database
from service.jobs.leases import holder_name
from service.store.models import Experiment
from service.http.observability import job_succeeded

log = logging.getLogger("nextbest.jobs")


def refit_due(database: Database, holder: str, grace_seconds: float | None = None) -> list[Any]:
    """Refit each running bandit whose last snapshot is older than its refit interval.

    A refit that fails (a bad row, a state that cannot be stored) is recorded and skipped; the
    other experiments are refitted all the same."""
    from experiments.spec import BanditAllocation

    from service.config import reward_grace_seconds
    from service.jobs.learning import latest_snapshot, refit_safely
    from service.store.experiments import spec_of

    grace = reward_grace_seconds() if grace_seconds is None else grace_seconds
    results = []
    with database.session() as session:
        ids = session.scalars(select(Experiment.id).where(Experiment.status == "running",
                                                          Experiment.winner_arm.is_(None))
                              .order_by(Experiment.id)).all()
        for experiment_id in ids:
            experiment = session.get(Experiment, experiment_id)
            if experiment is None:
                continue
            try:
                spec = spec_of(experiment)
            except Exception:  # noqa: BLE001 - an unreadable spec is that experiment's problem alone
                log.exception("experiment %s has an unreadable spec; not refitted", experiment.key)
                continue
            if not isinstance(spec.allocation, BanditAllocation):
                continue
            last = latest_snapshot(session, experiment.id)
            interval = timedelta(seconds=spec.allocation.refit_interval_seconds)
            if last is None or last.created_at + interval <= utcnow():
                results.append(refit_safely(session, experiment, holder=holder, grace_seconds=grace))
    return results


def run_once(database: Database, holder: str | None = None, grace_seconds: float | None = None) -> dict[str, Any]:
    """One pass of every job; errors in one job do not stop the others."""
    from service.jobs.promotion import evaluate_all
    from service.jobs.webhooks import deliver_due
    from service.store.partitions import maintain, retention_days

    holder = holder or holder_name("jobs")
    summary: dict[str, Any] = {}
    for name, job in (("refit", lambda: [r.as_json() for r in refit_due(database, holder, grace_seconds)]),
                      ("promotion", lambda: _with_session(database, lambda s: evaluate_all(s, holder=holder))),
                      ("webhooks", lambda: _with_session(database, deliver_due)),
                      ("rollups", lambda: _with_session(database, compact_rollups)),
                      ("partitions", lambda: _with_session(
                          database, lambda s: maintain(s, holder, retention_days())))):
        try:
            summary[name] = job()
            job_succeeded(name)
        except OperationalError as exc:  # database away: one line, the next pass retries
            log.warning("job %s skipped: database unavailable (%s)", name, exc.__class__.__name__)
            summary[name] = "database_unavailable"
        except Exception:  # a failing job is logged and retried next pass
            log.exception("job %s failed", name)
            summary[name] = "error"
    return summary


def compact_rollups(session: Any) -> int:
    """Fold the report rollups' per-backend rows into one (service/store/rollups.py)."""
    from service.store.rollups import compact

    folded = compact(session)
    session.commit()
    return folded


def _with_session(database: Database, work: Any) -> Any:
    with database.session() as session:
        return work(session)


class JobThread(threading.Thread):
    def __init__(self, database: Database, interval: float, grace_seconds: float | None = None):
        super().__init__(name="nextbest-jobs", daemon=True)
        self.database = database
        self.interval = interval
        self.grace_seconds = grace_seconds
        self.stopped = threading.Event()

    def run(self) -> None:
        holder = holder_name("jobs")
        while not self.stopped.wait(self.interval):
            run_once(self.database, holder, grace_seconds=self.grace_seconds)

    def stop(self) -> None:
        self.stopped.set()


def start(app: Any) -> JobThread | None:
    if not switched_on(app.config, "NEXTBEST_JOBS"):
        return None
    from service.store.db import get_db

    thread = JobThread(get_db(app), float(app.config["NEXTBEST_JOB_INTERVAL_SECONDS"]),
                       float(app.config.get("NEXTBEST_REWARD_GRACE_SECONDS", 300.0)))
    thread.start()
    app.extensions["nextbest.jobs"] = thread
    return thread
