"""Decision and event logs partitioned by week (PostgreSQL), so retention drops whole partitions.

PostgreSQL: `assignments` (by created_at), `events` (by received_at), `decision_outcomes`
and `decision_custom_outcomes` (by day, the UTC day of the decision) become range-partitioned
tables with one partition per ISO week (Monday 00:00 UTC to the next Monday) and a DEFAULT
partition that catches any time no weekly partition covers yet (imported history years old, a
clock far ahead): a write never fails for want of a partition. `nextbest partitions ensure` and
the periodic job create the weeks ahead (moving any rows the default partition holds for them);
retention moves the default partition's old rows into their weeks before dropping those
(service/store/partitions.py).

Why weekly, not daily: a lookup by id alone (`session.get(Assignment, id)`, the erasure's
deletes by assignment_id) cannot be pruned, because the id does not carry the partition key: it
probes one index per partition. A year of logs is 53 weekly partitions (+ 4 ahead + last week +
default = 58) against ~370 daily ones. Measured here (PostgreSQL 15, 365,000 decisions over a
year, 1,000 ids looked up by ingestion's query, warm cache, a busy 2-core machine): one table
11 ms; 58 weekly partitions 62 ms; 370 daily partitions 93 ms; one id alone 0.04 / 0.44 / 5.6 ms.
So ingestion first looks for the ids among the decisions from 8 days back to a day ahead, a span
two weekly partitions cover, and only for the ids not found there in the others
(service/store/ingest.py). Bounded below alone (created_at >= two weeks ago: the recent weeks, the
weeks ahead and the default partition), 1,000 ids took 18 ms on the 58 partitions above against
116 ms unbounded in the same run and 11 ms on one table; bounded on both sides, as ingestion does,
it probes two partitions (16 ms against 7 ms on one table, measured in-process on the busy machine).
Retention needs no finer grain: a week of rounding on a retention of months is noise.

Cost on the write paths, before and after on the same machine, back to back at low load
(bench/ingest_bench.py, bench/assign_bench.py --skip-calibration): POST /v1/events 38,400 ->
34,400 events/s (p50 195 -> 205 ms per batch of 1,000; in-process, one connection: 42 -> 53 ms a
batch, of which the lookup of the decisions 7 -> 18 ms and the one write statement, now with
event_keys, 29 -> 30 ms); decisions unchanged within the noise (fixed split 1,650 -> 1,720/s,
a 100,000-subject batch 1.86 -> 1.88 s, its COPY 178 -> 179 ms per 25,000 rows).

Keys include the partition column, as PostgreSQL requires: assignments (id, created_at),
events (id, received_at), decision_outcomes (assignment_id, day), decision_custom_outcomes
(assignment_id, event_type, day). The day and the creation time are fixed when a decision is
written, so these are as unique as the old keys, and ON CONFLICT targets them. An import, whose
rows without a time take the import's, looks its ids up first (service/store/history.py).

events.event_id can no longer be unique across partitions: exactly-once ingestion moves to an
unpartitioned `event_keys` (event_id primary key, received_at), inserted into first by the
ingestion statement (service/store/ingest.py); only the event_ids that insert returned are
stored as events. Existing events' keys are copied into it. Retention deletes the keys of the
events it drops by event_id, so received_at is not indexed (one index entry less per event).

decision_custom_outcomes gets a `day` column (from its decision's summary) on both databases, so
its rows retire with their decisions' week. `log_retention` records every retired partition
(table, range, retired_at), so a rollup rebuild can tell which experiments' logs are partial.

Non-internal triggers on the four tables (the report rollups' `nb_rollups_*` statement
triggers) are read from pg_trigger before a table is recreated and created again on the
partitioned table after its rows are copied, so the copy itself does not fire them. Foreign keys
and plain indexes are carried over the same way, from the catalog.

The copy takes the tables' ACCESS EXCLUSIVE locks for its duration: plan the upgrade in a quiet
hour on a large log.

SQLite keeps single tables: only the day column and the two new tables.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
AHEAD_WEEKS = 4

# table -> (partition column, is it a date (else timestamptz), partitioned primary key, plain primary key)
TABLES: dict[str, tuple[str, bool, tuple[str, ...], tuple[str, ...]]] = {
    "assignments": ("created_at", False, ("id", "created_at"), ("id",)),
    "events": ("received_at", False, ("id", "received_at"), ("id",)),
    "decision_outcomes": ("day", True, ("assignment_id", "day"), ("assignment_id",)),
    "decision_custom_outcomes": ("day", True, ("assignment_id", "event_type", "day"), ("assignment_id", "event_type")),
}
# Unique constraints the plain tables had besides their keys, which the partitioned ones cannot keep.
PLAIN_UNIQUE = {"events": [("events_event_id_key", ("event_id",))]}


def upgrade() -> None:
    op.create_table(
        "event_keys",
        sa.Column("event_id", sa.String(200), primary_key=True),
        sa.Column("received_at", TS, nullable=False),
    )
    op.create_table(
        "log_retention",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("table_name", sa.String(64), nullable=False),
        sa.Column("partition_name", sa.String(64), nullable=False),
        sa.Column("retired_from", TS),
        sa.Column("retired_before", TS, nullable=False),
        sa.Column("row_estimate", sa.BigInteger()),
        sa.Column("retired_at", TS, nullable=False),
    )
    op.create_index("ix_log_retention_table", "log_retention", ["table_name", "retired_before"])
    _add_custom_day()
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute("INSERT INTO event_keys (event_id, received_at) SELECT event_id, received_at FROM events")
    for table in TABLES:
        _recreate(table, partitioned=True)


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        for table in TABLES:
            _recreate(table, partitioned=False)
    with op.batch_alter_table("decision_custom_outcomes") as batch:
        batch.drop_column("day")
    op.drop_index("ix_log_retention_table", "log_retention")
    op.drop_table("log_retention")
    op.drop_table("event_keys")


def _add_custom_day() -> None:
    """decision_custom_outcomes.day: the decision's UTC day, as in its summary row."""
    with op.batch_alter_table("decision_custom_outcomes") as batch:
        batch.add_column(sa.Column("day", sa.Date(), nullable=True))
    op.execute("UPDATE decision_custom_outcomes SET day = (SELECT d.day FROM decision_outcomes AS d "
               "WHERE d.assignment_id = decision_custom_outcomes.assignment_id)")
    if op.get_context().dialect.name == "postgresql":
        op.execute("UPDATE decision_custom_outcomes AS c SET day = CAST(a.created_at AT TIME ZONE 'UTC' AS date) "
                   "FROM assignments AS a WHERE c.day IS NULL AND a.id = c.assignment_id")
        op.execute("UPDATE decision_custom_outcomes SET day = CAST(now() AT TIME ZONE 'UTC' AS date) "
                   "WHERE day IS NULL")
    else:
        op.execute("UPDATE decision_custom_outcomes SET day = coalesce((SELECT date(a.created_at) FROM assignments "
                   "AS a WHERE a.id = decision_custom_outcomes.assignment_id), date('now')) WHERE day IS NULL")
    with op.batch_alter_table("decision_custom_outcomes") as batch:
        batch.alter_column("day", existing_type=sa.Date(), nullable=False)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _recreate(table: str, *, partitioned: bool) -> None:
    """Recreate `table` as a weekly range-partitioned table (or back as a plain one), keeping its rows,
    columns, defaults, sequences, foreign keys, indexes and triggers (read from the catalog)."""
    conn = op.get_bind()
    column, is_date, partitioned_key, plain_key = TABLES[table]
    oid = conn.exec_driver_sql(f"SELECT to_regclass('{_q(table)}')::oid").scalar()
    triggers = conn.exec_driver_sql(
        "SELECT tgname, pg_get_triggerdef(oid), tgenabled FROM pg_trigger "
        "WHERE tgrelid = %s AND NOT tgisinternal ORDER BY tgname", (oid,)).fetchall()
    indexes = conn.exec_driver_sql(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = %s AND NOT EXISTS (SELECT 1 FROM pg_constraint AS k WHERE k.conindid = i.indexrelid) "
        "ORDER BY c.relname", (oid,)).fetchall()
    constraints = conn.exec_driver_sql(
        "SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = %s AND contype IN ('p', 'u', 'f') ORDER BY conname", (oid,)).fetchall()
    referenced = conn.exec_driver_sql(
        "SELECT conname FROM pg_constraint WHERE confrelid = %s AND contype = 'f'", (oid,)).fetchall()
    if referenced:
        raise RuntimeError(f"{table} is referenced by foreign keys {[r[0] for r in referenced]}; "
                           "they must be dropped before it can be partitioned")
    sequences = conn.exec_driver_sql(
        "SELECT s.oid::regclass::text, a.attname FROM pg_depend AS d "
        "JOIN pg_class AS s ON s.oid = d.objid AND s.relkind = 'S' "
        "JOIN pg_attribute AS a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
        "WHERE d.refobjid = %s AND d.deptype = 'a'", (oid,)).fetchall()

    # Free the names (indexes and key constraints share the schema's namespace), then move the table aside.
    for name, _ in indexes:
        op.execute(f"DROP INDEX {_q(name)}")
    for name, kind, _ in constraints:
        op.execute(f"ALTER TABLE {_q(table)} DROP CONSTRAINT {_q(name)}")
    old = f"{table}_unpartitioned" if partitioned else f"{table}_partitioned"
    op.execute(f"ALTER TABLE {_q(table)} RENAME TO {_q(old)}")
    partition_by = f" PARTITION BY RANGE ({_q(column)})" if partitioned else ""
    op.execute(f"CREATE TABLE {_q(table)} (LIKE {_q(old)} INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
               f"INCLUDING STORAGE INCLUDING COMMENTS){partition_by}")
    key = partitioned_key if partitioned else plain_key
    op.execute(f"ALTER TABLE {_q(table)} ADD CONSTRAINT {_q(table + '_pkey')} "
               f"PRIMARY KEY ({', '.join(_q(c) for c in key)})")
    if not partitioned:
        for name, columns in PLAIN_UNIQUE.get(table, []):
            op.execute(f"ALTER TABLE {_q(table)} ADD CONSTRAINT {_q(name)} UNIQUE ({', '.join(map(_q, columns))})")
    if partitioned:
        _create_partitions(table, column, is_date, old)
    op.execute(f"INSERT INTO {_q(table)} SELECT * FROM {_q(old)}")
    for sequence, attname in sequences:
        op.execute(f"ALTER SEQUENCE {sequence} OWNED BY {_q(table)}.{_q(attname)}")
    op.execute(f"DROP TABLE {_q(old)}")  # a DROP fires no DELETE trigger
    for _, definition in indexes:
        op.execute(definition)
    for name, kind, definition in constraints:
        if kind == "f":
            op.execute(f"ALTER TABLE {_q(table)} ADD CONSTRAINT {_q(name)} {definition}")
    for name, definition, enabled in triggers:
        op.execute(definition)
        if enabled == "D":
            op.execute(f"ALTER TABLE {_q(table)} DISABLE TRIGGER {_q(name)}")
    op.execute(f"ANALYZE {_q(table)}")


def _monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


def _create_partitions(table: str, column: str, is_date: bool, source: str) -> None:
    """One partition per week that holds rows of `source`, the weeks from last week to AHEAD_WEEKS ahead,
    and the default partition."""
    conn = op.get_bind()
    expression = _q(column) if is_date else f"({_q(column)} AT TIME ZONE 'UTC')"
    weeks = {row[0] for row in conn.exec_driver_sql(
        f"SELECT DISTINCT CAST(date_trunc('week', {expression}) AS date) FROM {_q(source)}")}
    this_week = _monday(datetime.now(timezone.utc).date())
    weeks.update(this_week + timedelta(weeks=n) for n in range(-1, AHEAD_WEEKS + 1))
    for week in sorted(weeks):
        op.execute(f"CREATE TABLE {_q(f'{table}_p{week:%Y%m%d}')} PARTITION OF {_q(table)} "
                   f"FOR VALUES FROM ({_bound(week, is_date)}) TO ({_bound(week + timedelta(weeks=1), is_date)})")
    op.execute(f"CREATE TABLE {_q(table + '_default')} PARTITION OF {_q(table)} DEFAULT")


def _bound(day: date, is_date: bool) -> str:
    return f"'{day.isoformat()}'" if is_date else f"'{day.isoformat()} 00:00:00+00'"
