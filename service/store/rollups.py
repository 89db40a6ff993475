"""Reading and rebuilding the report rollups (kept current by the triggers of service/store/rollup_sql.py).

A report over the whole experiment reads `arm_day_rollups` (one row per arm, day, holdout flag and
shard) and `arm_cluster_sums` (one row per arm and shard): O(arms x days) rows, whatever the size of
the logs. Segments, time windows, CUPED and LTV-adjusted value still read the logs (see README).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone
from typing import Any

from sqlalchemy import Connection, func, inspect, select, text
from sqlalchemy.orm import Session

from reports.inputs import DailyArmSummary
from reports.stats import MeanStats, SubjectSums

from service.store import rollup_sql
from service.store.models import ArmClusterSums, ArmDayRollup, Assignment

EVENTS = ("open", "click", "conversion", "unsubscribe")
_REACHED = dict(zip(EVENTS, ("opened", "clicked", "converted", "unsubscribed")))
_COUNTED = dict(zip(EVENTS, ("opens", "clicks", "conversions", "unsubscribes")))


@dataclass
class ArmTotals:
    """One arm's totals over its decisions: what the report's per-arm rows are built from."""

    decisions: int = 0
    subjects: int = 0
    propensity_sum: float = 0.0
    reached: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EVENTS, 0))
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EVENTS, 0))
    revenue: float = 0.0
    revenue2: float = 0.0
    converter_revenue: float = 0.0
    converter_revenue2: float = 0.0

    @property
    def mean_propensity(self) -> float | None:
        return self.propensity_sum / self.decisions if self.decisions else None


def _sums(columns: tuple[str, ...], model: Any) -> list[Any]:
    return [func.sum(getattr(model, c)).label(c) for c in columns]


def arm_totals(session: Session, experiment_id: int,
               clusters: dict[str, dict[str, SubjectSums]] | None = None) -> dict[str, ArmTotals]:
    """Per arm: decisions, distinct subjects, mean propensity, events reached and counted, revenue
    (the subjects from `clusters`, the arms' cluster sums, read here when not given)."""
    R = ArmDayRollup
    out: dict[str, ArmTotals] = {}
    for row in session.execute(
        select(R.arm_key, *_sums(rollup_sql.DAY_COLUMNS, R)).where(R.experiment_id == experiment_id)
        .group_by(R.arm_key)
    ):
        if not row.decisions:
            continue  # every decision of the arm was erased
        out[row.arm_key] = ArmTotals(
            decisions=int(row.decisions), propensity_sum=float(row.propensity_sum or 0),
            reached={event: int(getattr(row, column) or 0) for event, column in _REACHED.items()},
            counts={event: int(getattr(row, column) or 0) for event, column in _COUNTED.items()},
            revenue=float(row.revenue or 0), revenue2=float(row.revenue2 or 0),
            converter_revenue=float(row.converter_revenue or 0),
            converter_revenue2=float(row.converter_revenue2 or 0),
        )
    for arm, sums in (cluster_sums(session, experiment_id) if clusters is None else clusters).items():
        if arm in out:
            out[arm].subjects = sums["conversion_rate"].subjects
    return out


def cluster_sums(session: Session, experiment_id: int) -> dict[str, dict[str, SubjectSums]]:
    """Per arm and metric, the per-subject sums that cluster intervals on subjects (as
    report_queries.subject_sums computes them from the logs)."""
    C = ArmClusterSums
    out: dict[str, dict[str, SubjectSums]] = {}
    for row in session.execute(
        select(C.arm_key, *_sums(rollup_sql.CLUSTER_COLUMNS, C)).where(C.experiment_id == experiment_id)
        .group_by(C.arm_key)
    ):
        k, d2 = int(row.subjects or 0), float(row.decisions2 or 0)
        if k <= 0:
            continue
        sums = {
            f"{event}_rate": SubjectSums(k, d2, float(getattr(row, f"{column}_sq") or 0),
                                         float(getattr(row, f"{column}_by_decisions") or 0))
            for event, column in _REACHED.items()
        }
        sums["revenue_per_decision"] = SubjectSums(k, d2, float(row.revenue_sq or 0),
                                                   float(row.revenue_by_decisions or 0))
        sums["revenue_per_converter"] = SubjectSums(int(row.converters or 0), float(row.converted_sq or 0),
                                                    float(row.converter_revenue_sq or 0),
                                                    float(row.converter_revenue_by_converted or 0))
        sums["click_to_open_rate"] = SubjectSums(int(row.openers or 0), float(row.opened_sq or 0),
                                                 float(row.opened_clicked_sq or 0),
                                                 float(row.opened_clicked_by_opened or 0))
        out[row.arm_key] = sums
    return out


def daily(session: Session, experiment_id: int) -> list[DailyArmSummary]:
    """Per day and arm, decisions made that day and what they reached (outcomes counted on the decision's day)."""
    R = ArmDayRollup
    rows = session.execute(
        select(R.day, R.arm_key, *_sums(("decisions", *_REACHED.values(), "revenue", "revenue2"), R))
        .where(R.experiment_id == experiment_id).group_by(R.day, R.arm_key).order_by(R.day, R.arm_key)
    )
    return [
        DailyArmSummary(
            day=row.day, arm=row.arm_key, decisions=int(row.decisions),
            reached={event: int(getattr(row, column) or 0) for event, column in _REACHED.items()},
            revenue=MeanStats(int(row.decisions), float(row.revenue or 0), float(row.revenue2 or 0)),
        )
        for row in rows if row.decisions
    ]


def counts_before(session: Session, experiment_id: int, moment: datetime) -> dict[str, int]:
    """Decisions per arm made before `moment`: whole days from the rollups, the rest of its day from the log."""
    R = ArmDayRollup
    day = moment.astimezone(timezone.utc).date()
    counts: dict[str, int] = defaultdict(int)
    for arm, n in session.execute(
        select(R.arm_key, func.sum(R.decisions)).where(R.experiment_id == experiment_id, R.day < day)
        .group_by(R.arm_key)
    ):
        counts[arm] += int(n or 0)
    midnight = datetime.combine(day, time(), tzinfo=timezone.utc)
    for arm, n in session.execute(
        select(Assignment.arm_key, func.count()).where(
            Assignment.experiment_id == experiment_id, Assignment.created_at >= midnight,
            Assignment.created_at < moment).group_by(Assignment.arm_key)
    ):
        counts[arm] += int(n)
    return {arm: n for arm, n in counts.items() if n}


# Compaction, rebuild and verification.

def _bind(connection: Connection | Session) -> Any:
    return connection.get_bind() if isinstance(connection, Session) else connection


def _dialect(connection: Connection | Session) -> str:
    return str(_bind(connection).dialect.name)


def compact(session: Session) -> int:
    """Fold every backend's rollup rows into shard 0 (PostgreSQL; SQLite writes shard 0 only); returns
    the rows folded. Rows a writer holds are skipped until the next pass. Does not commit."""
    if _dialect(session) != "postgresql":
        return 0
    return sum(int(session.execute(text(rollup_sql.compact_sql(table))).scalar_one())
               for table in ("arm_cluster_sums", "arm_day_rollups"))


def _scope(column: str, experiment_ids: list[int] | None) -> str:
    if experiment_ids is None:
        return "1 = 1"
    return f"{column} IN ({', '.join(str(int(e)) for e in experiment_ids)})" if experiment_ids else "1 = 0"


def rebuild(connection: Connection | Session, experiment_ids: list[int] | None = None) -> dict[str, int]:
    """Recompute the rollups of the given experiments (None: all) from the decision and outcome logs.

    On PostgreSQL the logs are locked against writes (SHARE) for the duration, so nothing written
    meanwhile is counted twice or missed; reads go on. Does not commit.
    """
    dialect = _dialect(connection)
    run = connection.execute
    _refuse_retired(connection, experiment_ids)
    if dialect == "postgresql":
        run(text("LOCK TABLE assignments, decision_outcomes IN SHARE MODE"))
        run(text("SET LOCAL work_mem = '256MB'"))
    if experiment_ids is None and dialect == "postgresql":
        run(text("TRUNCATE subject_arm_sums, arm_day_rollups, arm_cluster_sums"))
    else:
        for table in ("subject_arm_sums", "arm_cluster_sums", "arm_day_rollups"):
            run(text(f"DELETE FROM {table} WHERE {_scope('experiment_id', experiment_ids)}"))
    run(text(rollup_sql.rebuild_subjects_sql(_scope("a.experiment_id", experiment_ids))))
    # SQLite's row triggers have added the new subject rows to the cluster sums; PostgreSQL's have not.
    run(text(f"DELETE FROM arm_cluster_sums WHERE {_scope('experiment_id', experiment_ids)}"))
    run(text(rollup_sql.rebuild_clusters_sql(_scope("s.experiment_id", experiment_ids))))
    days = _day_sums_from_logs(connection, experiment_ids)
    rows = [{"experiment_id": e, "arm_key": a, "day": d, "holdout": h, "shard": 0, **values}
            for (e, a, d, h), values in sorted(days.items())]
    if rows:
        run(ArmDayRollup.__table__.insert(), rows)
    return {"day_rows": len(rows)}


def _day_sums_from_logs(connection: Connection | Session, experiment_ids: list[int] | None
                        ) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Per (experiment, arm, day, holdout), every column of arm_day_rollups as the logs give it: the
    decisions' sums from `assignments`, the outcomes' from `decision_outcomes` (zero where none)."""
    days: dict[tuple[Any, ...], dict[str, Any]] = {}
    for sql, columns in (
        (rollup_sql.rebuild_day_decisions_sql(_dialect(connection), _scope("a.experiment_id", experiment_ids)),
         rollup_sql.DAY_DECISION_VALUES),
        (rollup_sql.rebuild_day_outcomes_sql(_scope("x.experiment_id", experiment_ids)), rollup_sql.DAY_OUTCOME_VALUES),
    ):
        for row in connection.execute(text(sql)):
            values = row._mapping
            key = (values["experiment_id"], values["arm_key"], _as_date(values["day"]), bool(values["holdout"]))
            days.setdefault(key, dict.fromkeys(rollup_sql.DAY_COLUMNS, 0)).update({c: values[c] for c in columns})
    return days


def _refuse_retired(connection: Connection | Session, experiment_ids: list[int] | None) -> None:
    """Retention dropped log partitions whose totals only the rollups still hold: an experiment with
    decisions from before the retired range cannot be rebuilt from what is left (ValueError)."""
    if not inspect(_bind(connection)).has_table("log_retention"):
        return
    retired = connection.execute(text("SELECT max(retired_before) FROM log_retention")).scalar()
    if retired is None:
        return
    day = _as_moment(retired).astimezone(timezone.utc).date()
    lost = sorted(int(e) for e, in connection.execute(text(
        f"SELECT DISTINCT experiment_id FROM arm_day_rollups WHERE day < :day AND decisions <> 0 "
        f"AND {_scope('experiment_id', experiment_ids)}"), {"day": day}))
    if lost:
        raise ValueError(f"the logs before {day} were retired (log_retention); experiments {lost} had decisions "
                         f"then, which only their rollups still hold: they cannot be rebuilt from the logs")


def _as_moment(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return datetime.fromisoformat(str(value)).replace(tzinfo=timezone.utc)


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def verify(connection: Connection | Session, experiment_id: int, tolerance: float = 1e-9) -> list[str]:
    """Differences between the stored rollups of an experiment and what its logs give (empty: they agree).

    Reads only: the subject rows, the day sums and the cluster sums are each compared with a fresh
    aggregate, integers exactly and sums of money within `tolerance` (relative).
    """
    run = connection.execute
    problems: list[str] = []

    def differs(a: Any, b: Any) -> bool:
        a, b = float(a or 0), float(b or 0)
        return not math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)

    expected_subjects = {
        (r.subject_id, r.arm_key): r._mapping
        for r in run(text(rollup_sql.subjects_from_logs_sql(_scope("a.experiment_id", [experiment_id]))))
    }
    stored_subjects = {
        (r.subject_id, r.arm_key): r._mapping for r in run(text(
            f"SELECT * FROM subject_arm_sums WHERE experiment_id = {int(experiment_id)}"))
    }
    for key in sorted(set(expected_subjects) | set(stored_subjects)):
        want, have = expected_subjects.get(key), stored_subjects.get(key)
        if want is None or have is None:
            problems.append(f"subject_arm_sums {key}: {'missing' if have is None else 'not in the logs'}")
            continue
        for column in rollup_sql.SUBJECT_COLUMNS:
            if differs(want[column], have[column]):
                problems.append(f"subject_arm_sums {key} {column}: stored {have[column]}, logs give {want[column]}")
    days = {(a, d, h): values for (_, a, d, h), values in _day_sums_from_logs(connection, [experiment_id]).items()}
    R = ArmDayRollup
    stored_days = {
        (r.arm_key, _as_date(r.day), bool(r.holdout)): r._mapping
        for r in run(select(R.arm_key, R.day, R.holdout, *_sums(rollup_sql.DAY_COLUMNS, R))
                     .where(R.experiment_id == experiment_id).group_by(R.arm_key, R.day, R.holdout))
    }
    for key in sorted(set(days) | set(stored_days), key=str):
        want, have = days.get(key, {}), stored_days.get(key)
        for column in rollup_sql.DAY_COLUMNS:
            if differs(want.get(column, 0), have[column] if have is not None else 0):
                problems.append(f"arm_day_rollups {key} {column}: stored {have[column] if have else 0}, "
                                f"logs give {want.get(column, 0)}")
    expected_clusters = {
        r.arm_key: r._mapping
        for r in run(text(rollup_sql.clusters_from_subjects_sql(_scope("s.experiment_id", [experiment_id]))))
    }
    C = ArmClusterSums
    stored_clusters = {
        r.arm_key: r._mapping for r in run(
            select(C.arm_key, *_sums(rollup_sql.CLUSTER_COLUMNS, C)).where(C.experiment_id == experiment_id)
            .group_by(C.arm_key))
    }
    for arm in sorted(set(expected_clusters) | set(stored_clusters)):
        want, have = expected_clusters.get(arm), stored_clusters.get(arm)
        for column in rollup_sql.CLUSTER_COLUMNS:
            if differs(want[column] if want else 0, have[column] if have else 0):
                problems.append(f"arm_cluster_sums {arm} {column}: stored {have[column] if have else 0}, "
                                f"subjects give {want[column] if want else 0}")
    return problems
