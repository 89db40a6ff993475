"""Weekly partitions of the decision and event logs (PostgreSQL), and log retention by dropping them.

Alembic 0014 partitions `assignments` (by created_at), `events` (by received_at),
`decision_outcomes` and `decision_custom_outcomes` (by day) into ISO weeks, Monday 00:00 UTC
to the next Monday, each with a DEFAULT partition, so a write never fails for want of a
partition: a decision imported with a time years ago, or stamped by a clock far ahead, lands in
the default partition.

`ensure` creates the partitions from last week to AHEAD_WEEKS ahead; a week that already has
rows in the default partition gets them moved into its new partition (the default is detached
meanwhile, so no write can slip between). Imported history older than that stays in the
default partition: each lookup by id probes one index per partition, so years of history as
weekly partitions would make every event batch's lookup of its decisions slower (alembic 0014's
docstring has the numbers).

`retire` drops whole partitions that end at or before the retention cutoff (now minus
NEXTBEST_LOG_RETENTION_DAYS), after moving the default partition's rows from before the cutoff
into their weeks so they go too. It never DELETEs from the partitioned tables: a DROP fires no
trigger, so the report rollups (which triggers on `assignments` and `decision_outcomes` keep, and
which reports read) keep their totals. Each dropped partition is recorded in `log_retention`, so
a rollup rebuild can refuse experiments whose logs are partly gone (`retired_before`).
The dedupe keys (`event_keys`) of the events in a dropped partition are deleted with it (looked up
by their primary key: the keys need no index on time, which would cost every event one more index
entry): an event sent again after that is stored again, as a new event. Keys of events erased
with their subject stay, so a retry of those is still a duplicate.

Retention refuses to run when its cutoff falls inside what a running (or paused, which can be
resumed) experiment still reads from the logs:

- attribution: an event arriving now is attributed to a decision made up to the attribution
  window (plus the clock skew allowed) before it; the reward wait is never longer than the window;
- training: a bandit with `training_window_days` retrains from scratch on the decisions of that
  many days, each with its outcomes, and those decisions' outcomes keep arriving over their
  attribution window, so the span kept is the window plus the training window;
- a bandit without a training window trains on all of its decisions (a full refit, or one after
  an import, starts from scratch): nothing from its first decision on may go.

So the cutoff must not be later than, for every such experiment, now - (attribution window +
skew + training window), or that bandit's first decision. Concluded experiments need nothing:
their reports read the rollups.

Creating, attaching and dropping a partition takes its parent's ACCESS EXCLUSIVE lock for a moment;
each waits at most LOCK_TIMEOUT for it (writers queue behind a waiting DDL), and a pass that times out
is retried by the next. Rows moved out of the default partition are deleted from it while it is
detached and inserted into their partition by name: statement triggers on the parent (the rollups')
do not fire; a row-level trigger on the parent would, as PostgreSQL clones those onto partitions.

SQLite keeps single tables: nothing here partitions or retires anything there.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from experiments.outcomes import CLOCK_SKEW
from experiments.spec import BanditAllocation

from service.clock import utcnow
from service.store.models import Assignment, Experiment, LogRetention

log = logging.getLogger("nextbest.partitions")

WEEK = timedelta(weeks=1)
AHEAD_WEEKS = 4
# table -> (partition column, whether the column is a date; else a timestamptz). Retired in this order.
TABLES: dict[str, tuple[str, bool]] = {
    "decision_custom_outcomes": ("day", True),
    "decision_outcomes": ("day", True),
    "events": ("received_at", False),
    "assignments": ("created_at", False),
}
RETIRE_EVERY = timedelta(hours=1)  # the job's retention pass reads the default partitions: not every minute
LOCK_TIMEOUT = "5s"  # DDL waits this long for the table lock, then gives up (writers queue behind a waiting DDL)
_RANGE = re.compile(r"FOR VALUES FROM \('([^']*)'\) TO \('([^']*)'\)")


@dataclass(frozen=True)
class Partition:
    table: str
    name: str
    start: datetime | None  # None: the default partition
    end: datetime | None
    rows: int  # the statistics' estimate

    @property
    def is_default(self) -> bool:
        return self.start is None

    def as_json(self) -> dict[str, Any]:
        return {"table": self.table, "partition": self.name, "default": self.is_default,
                "from": self.start.isoformat() if self.start else None,
                "to": self.end.isoformat() if self.end else None, "rows_estimate": self.rows}


class RetentionRefused(Exception):
    """The cutoff would retire logs a running experiment still needs."""

    def __init__(self, cutoff: datetime, needs: list[dict[str, Any]]):
        self.cutoff = cutoff
        self.needs = needs
        names = ", ".join(f"{n['experiment']} (needs logs since {n['since']}: {n['why']})" for n in needs)
        super().__init__(f"retention cutoff {cutoff.isoformat()} is inside what running experiments still read: "
                         f"{names}")


def retention_days(config: Mapping[str, Any] | None = None) -> int | None:
    """NEXTBEST_LOG_RETENTION_DAYS as a number of days, or None (unset or empty: keep the logs forever)."""
    raw = (config or {}).get("NEXTBEST_LOG_RETENTION_DAYS")
    if raw is None:
        raw = os.environ.get("NEXTBEST_LOG_RETENTION_DAYS", "")
    raw = str(raw).strip()
    if not raw:
        return None
    try:
        days = int(raw)
    except ValueError:
        raise ValueError(f"NEXTBEST_LOG_RETENTION_DAYS must be a whole number of days, got {raw!r}") from None
    if days < 1:
        raise ValueError(f"NEXTBEST_LOG_RETENTION_DAYS must be at least 1, got {days}")
    return days


def is_partitioned(session: Session) -> bool:
    """Whether this database keeps the logs partitioned (PostgreSQL past alembic 0014)."""
    if session.get_bind().dialect.name != "postgresql":
        return False
    kind = session.execute(text("SELECT c.relkind FROM pg_class AS c WHERE c.oid = to_regclass('assignments')"))
    return kind.scalar() == "p"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _moment(bound: str, is_date: bool) -> datetime:
    if is_date:
        return datetime.combine(date.fromisoformat(bound), time(), tzinfo=timezone.utc)
    return datetime.fromisoformat(bound).astimezone(timezone.utc)


def list_partitions(session: Session, tables: Sequence[str] = tuple(TABLES)) -> list[Partition]:
    """Every partition of the log tables, oldest first per table, the default partition last."""
    found: list[Partition] = []
    for table in tables:
        is_date = TABLES[table][1]
        rows = session.execute(text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid), "
            "greatest(c.reltuples, pg_stat_get_live_tuples(c.oid))::bigint "
            "FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(:table)"), {"table": table}).all()
        parts = []
        for name, bound, estimate in rows:
            match = _RANGE.search(bound or "")
            start = _moment(match.group(1), is_date) if match else None
            end = _moment(match.group(2), is_date) if match else None
            parts.append(Partition(table, name, start, end, max(int(estimate or 0), 0)))
        far = datetime.max.replace(tzinfo=timezone.utc)
        found.extend(sorted(parts, key=lambda p: (p.start is None, p.start or far)))
    return found


def week_of(moment: datetime) -> date:
    """The Monday (UTC) of the week holding `moment`."""
    day = moment.astimezone(timezone.utc).date()
    return day - timedelta(days=day.weekday())


def _bound(week: date, is_date: bool) -> str:
    return f"'{week.isoformat()}'" if is_date else f"'{week.isoformat()} 00:00:00+00'"


def _in_week(column: str, week: date, is_date: bool) -> str:
    return f"{_q(column)} >= {_bound(week, is_date)} AND {_q(column)} < {_bound(week + WEEK, is_date)}"


def _default_weeks(session: Session, table: str) -> set[date]:
    """The weeks of the rows in `table`'s default partition."""
    column, is_date = TABLES[table]
    default = f"{table}_default"
    if session.execute(text("SELECT to_regclass(:name)"), {"name": default}).scalar() is None:
        return set()
    expression = _q(column) if is_date else f"({_q(column)} AT TIME ZONE 'UTC')"
    return {row[0] for row in session.execute(text(
        f"SELECT DISTINCT CAST(date_trunc('week', {expression}) AS date) FROM {_q(default)}"))}


def _columns(session: Session, table: str) -> str:
    names = session.execute(text(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(:table) AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum"), {"table": table}).scalars().all()
    return ", ".join(_q(n) for n in names)


def _create_weeks(session: Session, table: str, weeks: Sequence[date]) -> list[str]:
    """Create the partitions of `weeks` that do not exist yet, moving any rows the default partition
    holds for them into them (with the default detached meanwhile). Statements name the partitions
    directly, never the parent: no trigger on the parent fires, and the rows keep their counts."""
    column, is_date = TABLES[table]
    have = {p.start.date() for p in list_partitions(session, [table]) if p.start is not None}
    weeks = sorted(set(weeks) - have)
    if not weeks:
        return []
    session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    default = f"{table}_default"
    moving = sorted(set(weeks) & _default_weeks(session, table))
    if moving:
        session.execute(text(f"ALTER TABLE {_q(table)} DETACH PARTITION {_q(default)}"))
    created = []
    for week in weeks:
        name = f"{table}_p{week:%Y%m%d}"
        session.execute(text(f"CREATE TABLE {_q(name)} PARTITION OF {_q(table)} FOR VALUES FROM "
                             f"({_bound(week, is_date)}) TO ({_bound(week + WEEK, is_date)})"))
        created.append(name)
    if moving:
        columns = _columns(session, table)
        for week in moving:
            session.execute(text(
                f"WITH moved AS (DELETE FROM {_q(default)} WHERE {_in_week(column, week, is_date)} "
                f"RETURNING {columns}) INSERT INTO {_q(f'{table}_p{week:%Y%m%d}')} ({columns}) "
                f"SELECT {columns} FROM moved"))
        session.execute(text(f"ALTER TABLE {_q(table)} ATTACH PARTITION {_q(default)} DEFAULT"))
    return created


def ensure(session: Session, now: datetime | None = None, ahead_weeks: int = AHEAD_WEEKS) -> list[str]:
    """Create every log table's partitions from last week to `ahead_weeks` ahead; returns the names
    created. Does not commit (the caller does, soon: the DDL holds the tables' locks till then)."""
    if not is_partitioned(session):
        return []
    this_week = week_of(now or utcnow())
    weeks = [this_week + WEEK * n for n in range(-1, ahead_weeks + 1)]
    created = []
    for table in TABLES:
        created.extend(_create_weeks(session, table, weeks))
    return created


def needs_of_running(session: Session, now: datetime) -> list[dict[str, Any]]:
    """For each running or paused experiment, since when it still reads the decision and event logs
    and why (the rule is in the module docstring), earliest first."""
    from service.store.experiments import spec_of

    needs = []
    experiments = session.scalars(select(Experiment).where(Experiment.status.in_(("running", "paused")))
                                  .order_by(Experiment.id)).all()
    for experiment in experiments:
        try:
            spec = spec_of(experiment)
        except Exception:  # noqa: BLE001 - an unreadable spec protects everything rather than nothing
            needs.append({"experiment": experiment.key, "since": datetime.min.replace(tzinfo=timezone.utc),
                          "why": "its spec cannot be read"})
            continue
        window = timedelta(seconds=max(spec.attribution_window_seconds, spec.reward_wait_seconds)) + CLOCK_SKEW
        allocation = spec.allocation
        if isinstance(allocation, BanditAllocation) and allocation.training_window_days is None:
            first = session.scalar(select(func.min(Assignment.created_at))
                                   .where(Assignment.experiment_id == experiment.id))
            since = min(first or now, now - window)
            why = "a bandit without a training window trains on all its decisions"
        elif isinstance(allocation, BanditAllocation):
            since = now - window - timedelta(days=allocation.training_window_days or 0)
            why = (f"attribution window {spec.attribution_window_seconds} s + training window "
                   f"{allocation.training_window_days} days")
        else:
            since = now - window
            why = f"attribution window {spec.attribution_window_seconds} s"
        needs.append({"experiment": experiment.key, "since": since, "why": why})
    return sorted(needs, key=lambda n: n["since"])


def retired_before(session: Session, table: str = "assignments") -> datetime | None:
    """The end of the latest retired range of `table`'s log (rows before it may be gone), or None."""
    return session.scalar(select(func.max(LogRetention.retired_before)).where(LogRetention.table_name == table))


def retire(session: Session, days: int, now: datetime | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Drop every log partition that ends at or before now - `days`, and the dedupe keys of the events
    dropped; record each in `log_retention`. Raises RetentionRefused when a running experiment still
    needs logs from before the cutoff. Does not commit."""
    now = now or utcnow()
    cutoff = now - timedelta(days=days)
    result: dict[str, Any] = {"cutoff": cutoff.isoformat(), "dry_run": dry_run, "retired": [],
                              "event_keys_pruned": 0}
    if not is_partitioned(session):
        result["note"] = "the logs are not partitioned on this database (SQLite): nothing is retired"
        return result
    blocking = [n for n in needs_of_running(session, now) if n["since"] < cutoff]
    if blocking:
        raise RetentionRefused(cutoff, [{**n, "since": n["since"].isoformat()} for n in blocking])
    for table in TABLES:
        old_weeks = sorted(w for w in _default_weeks(session, table) if _moment(str(w + WEEK), True) <= cutoff)
        if dry_run:
            result["retired"].extend({"table": table, "partition": f"{table}_default", "default": True,
                                      "from": _moment(str(w), True).isoformat(),
                                      "to": _moment(str(w + WEEK), True).isoformat(), "rows_estimate": None}
                                     for w in old_weeks)
        else:
            _create_weeks(session, table, old_weeks)
        for part in list_partitions(session, [table]):
            if part.end is None or part.end > cutoff:
                continue
            result["retired"].append(part.as_json())
            if dry_run:
                continue
            session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            if table == "events":  # their dedupe keys go with them, found by the keys' primary key
                pruned = session.execute(text(f"DELETE FROM event_keys WHERE event_id IN "
                                              f"(SELECT event_id FROM {_q(part.name)})"))
                result["event_keys_pruned"] += pruned.rowcount or 0  # type: ignore[attr-defined]
            session.execute(text(f"DROP TABLE {_q(part.name)}"))  # fires no DELETE trigger: rollups keep totals
            session.add(LogRetention(table_name=table, partition_name=part.name, retired_from=part.start,
                                     retired_before=part.end, row_estimate=part.rows, retired_at=now))
    if not dry_run:
        session.flush()
    return result


_last_retirement: dict[str, datetime] = {}  # this process's last retention pass, by database URL


def maintain(session: Session, holder: str, days: int | None, now: datetime | None = None) -> dict[str, Any]:
    """The periodic job: under the `partitions` lease, create the weeks ahead and, with a retention,
    retire what is past it (at most every RETIRE_EVERY per process). A refusal is logged and reported,
    not raised: a later pass tries again."""
    from service.jobs.leases import lease

    if not is_partitioned(session):
        return {"partitioned": False}
    with lease(session, "partitions", holder, ttl_seconds=60) as held:
        if not held:
            return {"partitioned": True, "action": "locked"}
        summary: dict[str, Any] = {"partitioned": True, "created": ensure(session, now)}
        session.commit()
        moment = now or utcnow()
        url = str(session.get_bind().url)
        last = _last_retirement.get(url)
        if days is not None and (last is None or not last <= moment < last + RETIRE_EVERY):
            _last_retirement[url] = moment
            try:
                retired = retire(session, days, moment)
                session.commit()
                summary["retired"] = [r["partition"] for r in retired["retired"]]
                summary["event_keys_pruned"] = retired["event_keys_pruned"]
            except RetentionRefused as exc:
                session.rollback()
                log.warning("log retention skipped: %s", exc)
                summary["retention"] = "refused"
        return summary
