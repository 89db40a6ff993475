"""Gauges read from the database when /metrics is scraped: what every worker shares.

Counters live in each worker (summed across workers by prometheus-client's
multiprocess mode); how stale each bandit's policy is and how many webhook
deliveries wait are facts of the database, so they are read at scrape time with a
few indexed queries, and are the same whichever worker answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from service.clock import utcnow
from service.store.db import Database
from service.store.models import Experiment, PolicySnapshot, WebhookDelivery


class DatabaseState:
    """A prometheus collector of policy ages and the webhook backlog; `up 0` when the database is away."""

    def __init__(self, database: Database):
        self.database = database

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily("nextbest_database_up", "1 when the database answered the scrape's queries")
        try:
            families = list(self._families())
        except DBAPIError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self) -> Iterator[Any]:
        now = utcnow()
        age = GaugeMetricFamily("nextbest_policy_age_seconds",
                                "seconds since the policy snapshot in use was trained (running bandits; since the "
                                "start while no snapshot exists)", labels=["experiment"])
        version = GaugeMetricFamily("nextbest_policy_version", "version of the policy snapshot in use",
                                    labels=["experiment"])
        backlog = GaugeMetricFamily("nextbest_webhook_backlog", "webhook deliveries waiting to be sent")
        oldest = GaugeMetricFamily("nextbest_webhook_oldest_pending_seconds",
                                   "age of the oldest webhook delivery still waiting (0 when none)")
        running = GaugeMetricFamily("nextbest_experiments", "experiments by status", labels=["status"])
        with self.database.session() as session:
            latest = (select(PolicySnapshot.experiment_id, func.max(PolicySnapshot.version).label("version"),
                             func.max(PolicySnapshot.created_at).label("trained_at"))
                      .group_by(PolicySnapshot.experiment_id).subquery())
            rows = session.execute(
                select(Experiment.key, Experiment.spec, Experiment.started_at, latest.c.version, latest.c.trained_at)
                .outerjoin(latest, latest.c.experiment_id == Experiment.id)
                .where(Experiment.status == "running")
            ).all()
            for row in rows:
                if (row.spec or {}).get("allocation", {}).get("type") != "bandit":
                    continue
                since = row.trained_at or row.started_at
                if since is not None:
                    age.add_metric([row.key], max(0.0, (now - since).total_seconds()))
                version.add_metric([row.key], row.version or 0)
            pending = session.execute(
                select(func.count(), func.min(WebhookDelivery.created_at)).where(WebhookDelivery.status == "pending")
            ).one()
            for status, count in session.execute(select(Experiment.status, func.count()).group_by(Experiment.status)):
                running.add_metric([status], count)
        backlog.add_metric([], pending[0] or 0)
        oldest.add_metric([], max(0.0, (now - pending[1]).total_seconds()) if pending[1] is not None else 0.0)
        yield from (age, version, backlog, oldest, running)
