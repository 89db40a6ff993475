"""The SQL that keeps the report rollups current: database triggers, and the rebuild from the logs.

Inside the transaction that writes a decision or an outcome:

1. `assignments` and `decision_outcomes` -> `subject_arm_sums` (each subject's n_i and y_i per arm)
   and `arm_day_rollups` (additive sums per arm, decision day and holdout flag).
2. Every change to a subject's row adds f(new) - f(old) to `arm_cluster_sums`, where f gives the
   row's terms of the sums over subjects (1, n^2, y^2, n*y per metric). A sum of such differences
   is exactly the sum over the current rows, whatever the order of events.

Triggers see every write path at once (single decisions, batches, COPY imports, ingestion's one
statement, erasure). PostgreSQL runs them once per statement over its transition tables: one
statement upserts the subjects' rows and, from the rows it returns, moves the arms' cluster sums
(a removed subject row by a DELETE trigger of its own), a second one the day rollups. Every writer
locks subjects' rows before arms' rows, each in one key order, so concurrent writers cannot
deadlock; arms' rows are kept per backend (shard = pid), so no two transactions share one, and
`rollups.compact` folds them into shard 0 now and then. SQLite, with one writer at a time, runs
row triggers, level 2 included. Anything else writing subject_arm_sums keeps the cluster sums
itself (the rebuild recomputes them).

The per-decision values are written once here, as SQL text over a `decision_outcomes` row, and
used by the triggers and by the rebuild, so the two cannot disagree on what a metric is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# A decision_outcomes row's per-decision values, as SQL over alias `{x}` (subject-level numerators).
SUBJECT_OUTCOME_VALUES: dict[str, str] = {
    "opened": "CASE WHEN {x}.opens > 0 THEN 1 ELSE 0 END",
    "clicked": "CASE WHEN {x}.clicks > 0 THEN 1 ELSE 0 END",
    "converted": "CASE WHEN {x}.conversions > 0 THEN 1 ELSE 0 END",
    "unsubscribed": "CASE WHEN {x}.unsubscribes > 0 THEN 1 ELSE 0 END",
    "opened_clicked": "CASE WHEN {x}.opens > 0 AND {x}.clicks > 0 THEN 1 ELSE 0 END",
    "revenue": "COALESCE({x}.revenue, 0.0)",
    "converter_revenue": "CASE WHEN {x}.conversions > 0 THEN COALESCE({x}.revenue, 0.0) ELSE 0.0 END",
}
SUBJECT_COLUMNS: tuple[str, ...] = ("decisions", *SUBJECT_OUTCOME_VALUES)

_W = "(1.0 / NULLIF({x}.propensity, 0))"
_INDICATORS = ("opened", "clicked", "converted", "unsubscribed")

# A decision's additive values in the day rollup, from its assignments row (alias `{x}`).
DAY_DECISION_VALUES: dict[str, str] = {
    "decisions": "1",
    "propensity_sum": "{x}.propensity",
    "weight_sum": _W,
    "weight2_sum": f"{_W} * {_W}",
}

# ... and from its decision_outcomes row (alias `{x}`), which carries the propensity too.
DAY_OUTCOME_VALUES: dict[str, str] = {
    **{name: SUBJECT_OUTCOME_VALUES[name] for name in _INDICATORS},
    "opens": "{x}.opens", "clicks": "{x}.clicks", "conversions": "{x}.conversions",
    "unsubscribes": "{x}.unsubscribes",
    "revenue": SUBJECT_OUTCOME_VALUES["revenue"],
    "revenue2": f"{SUBJECT_OUTCOME_VALUES['revenue']} * {SUBJECT_OUTCOME_VALUES['revenue']}",
    "converter_revenue": SUBJECT_OUTCOME_VALUES["converter_revenue"],
    "converter_revenue2": (f"{SUBJECT_OUTCOME_VALUES['converter_revenue']} * "
                           f"{SUBJECT_OUTCOME_VALUES['converter_revenue']}"),
    **{f"weighted_{name}": f"{_W} * {SUBJECT_OUTCOME_VALUES[name]}" for name in (*_INDICATORS, "revenue")},
    **{f"weighted2_{name}": f"{_W} * {_W} * {SUBJECT_OUTCOME_VALUES[name]}" for name in (*_INDICATORS, "revenue")},
    "weighted2_revenue2": (f"{_W} * {_W} * {SUBJECT_OUTCOME_VALUES['revenue']} * "
                           f"{SUBJECT_OUTCOME_VALUES['revenue']}"),
}
DAY_COLUMNS: tuple[str, ...] = (*DAY_DECISION_VALUES, *DAY_OUTCOME_VALUES)
DAY_KEYS = ("experiment_id", "arm_key", "day", "holdout", "shard")

# A subject_arm_sums row's terms of the sums over subjects (alias `{x}`).
CLUSTER_VALUES: dict[str, str] = {
    "subjects": "1",
    "decisions2": "{x}.decisions * {x}.decisions",
    **{term: expr for name in (*_INDICATORS, "revenue") for term, expr in (
        (f"{name}_sq", f"{{x}}.{name} * {{x}}.{name}"),
        (f"{name}_by_decisions", f"{{x}}.decisions * {{x}}.{name}"),
    )},
    "converters": "CASE WHEN {x}.converted > 0 THEN 1 ELSE 0 END",
    "converter_revenue_sq": "{x}.converter_revenue * {x}.converter_revenue",
    "converter_revenue_by_converted": "{x}.converted * {x}.converter_revenue",
    "openers": "CASE WHEN {x}.opened > 0 THEN 1 ELSE 0 END",
    "opened_clicked_sq": "{x}.opened_clicked * {x}.opened_clicked",
    "opened_clicked_by_opened": "{x}.opened * {x}.opened_clicked",
}
CLUSTER_COLUMNS: tuple[str, ...] = tuple(CLUSTER_VALUES)
CLUSTER_KEYS = ("experiment_id", "arm_key", "shard")
# The subject first: erasure finds a subject's rows by the key, and Citus would place them by it.
SUBJECT_KEYS = ("subject_id", "experiment_id", "arm_key")


def _of(values: dict[str, str], alias: str) -> dict[str, str]:
    return {name: expr.replace("{x}", alias) for name, expr in values.items()}


def _day(dialect: str, column: str) -> str:
    """The UTC date of a stored decision time (SQLite keeps naive UTC text)."""
    return f"CAST(({column} AT TIME ZONE 'UTC') AS date)" if dialect == "postgresql" else f"date({column})"


def _shard(dialect: str) -> str:
    return "pg_backend_pid()" if dialect == "postgresql" else "0"


def _merge(table: str, keys: Sequence[str], columns: Sequence[str]) -> str:
    sets = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in columns)
    return f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {sets}"


# PostgreSQL: statement-level triggers over transition tables.

_SUBJECT_ORDER = 'ORDER BY d.subject_id COLLATE "C", d.experiment_id, d.arm_key COLLATE "C"'


def _pg_signed(parts: Sequence[tuple[str, str]]) -> str:
    """UNION ALL of (sign, transition table) pairs, e.g. [("1", "new_rows"), ("-1", "old_rows")]."""
    return " UNION ALL ".join(f"SELECT {sign} AS sign, r.* FROM {table} AS r" for sign, table in parts)


def _cluster_difference(changed: Sequence[str]) -> str:
    """Per arm, sum of f(new) - f(old) over the upserted subject rows `up` (RETURNING, with `inserted`),
    old being new minus the deltas `d` of the `changed` columns (nothing, for a row just inserted)."""
    def f(column: str, old: bool) -> str:
        return re.sub(r"\{x\}\.(\w+)", lambda m: f"(up.{m[1]} - d.{m[1]})" if old and m[1] in changed
                      else f"up.{m[1]}", CLUSTER_VALUES[column])

    return ", ".join(f"sum(({f(c, False)}) - CASE WHEN up.inserted THEN 0 ELSE ({f(c, True)}) END)"
                     for c in CLUSTER_COLUMNS)


def _pg_subject_upsert(deltas: str, changed: Sequence[str]) -> str:
    """One statement: add the subjects' `deltas` (a query with keys and the `changed` columns) to their rows
    and, from the rows it returns, the exact change of the arms' cluster sums; subjects' rows are all locked
    (the aggregate reads every one) before the arms' rows."""
    values = ", ".join(f"d.{c}" if c in changed else "0" for c in SUBJECT_COLUMNS)
    return f"""
    WITH d AS ({deltas}),
    up AS (
        INSERT INTO subject_arm_sums (experiment_id, subject_id, arm_key, {', '.join(SUBJECT_COLUMNS)})
        SELECT d.experiment_id, d.subject_id, d.arm_key, {values} FROM d
        {_SUBJECT_ORDER}
        {_merge('subject_arm_sums', SUBJECT_KEYS, changed)}
        RETURNING subject_arm_sums.*, (subject_arm_sums.xmax = 0) AS inserted
    )
    INSERT INTO arm_cluster_sums ({', '.join(CLUSTER_KEYS)}, {', '.join(CLUSTER_COLUMNS)})
    SELECT up.experiment_id, up.arm_key, {_shard('postgresql')}, {_cluster_difference(changed)}
    FROM up JOIN d ON d.experiment_id = up.experiment_id AND d.subject_id = up.subject_id
                  AND d.arm_key = up.arm_key
    GROUP BY up.experiment_id, up.arm_key
    ORDER BY up.experiment_id, up.arm_key COLLATE "C"
    {_merge('arm_cluster_sums', CLUSTER_KEYS, CLUSTER_COLUMNS)};"""


def _pg_assignment_deltas(parts: Sequence[tuple[str, str]]) -> str:
    signed = _pg_signed(parts)
    deltas = (f"SELECT s.experiment_id, s.subject_id, s.arm_key, sum(s.sign) AS decisions FROM ({signed}) AS s "
              f"GROUP BY s.experiment_id, s.subject_id, s.arm_key HAVING sum(s.sign) <> 0")
    day_values = ", ".join(f"sum(d.sign * {expr})" for expr in _of(DAY_DECISION_VALUES, "d").values())
    zero_outcomes = ", ".join("0" for _ in DAY_OUTCOME_VALUES)
    gone = ""
    if any(sign.startswith("-") for sign, _ in parts):
        # A subject's last decision in an arm removed: its row goes (the DELETE trigger subtracts it).
        gone = f"""
    DELETE FROM subject_arm_sums AS s USING (SELECT DISTINCT experiment_id, subject_id, arm_key FROM ({signed}) AS d
                                            WHERE d.sign < 0) AS gone
    WHERE s.experiment_id = gone.experiment_id AND s.subject_id = gone.subject_id AND s.arm_key = gone.arm_key
      AND s.decisions <= 0;"""
    return _pg_subject_upsert(deltas, ["decisions"]) + gone + f"""
    INSERT INTO arm_day_rollups ({', '.join(DAY_KEYS)}, {', '.join(DAY_COLUMNS)})
    SELECT d.experiment_id, d.arm_key, {_day('postgresql', 'd.created_at')}, d.holdout, {_shard('postgresql')},
           {day_values}, {zero_outcomes}
    FROM ({signed}) AS d
    GROUP BY 1, 2, 3, 4
    ORDER BY d.experiment_id, d.arm_key COLLATE "C", 3, 4
    {_merge('arm_day_rollups', DAY_KEYS, DAY_DECISION_VALUES)};"""


def _pg_outcome_deltas(parts: Sequence[tuple[str, str]]) -> str:
    signed = _pg_signed(parts)
    outcome_sums = {c: f"sum(o.sign * {expr})" for c, expr in _of(SUBJECT_OUTCOME_VALUES, "o").items()}
    deltas = (f"SELECT o.experiment_id, a.subject_id, o.arm_key, "
              f"{', '.join(f'{expr} AS {c}' for c, expr in outcome_sums.items())} "
              f"FROM ({signed}) AS o JOIN assignments AS a ON a.id = o.assignment_id "
              # The decision's UTC day bounds its time: with the log partitioned by time, one partition.
              f"AND a.created_at >= CAST(o.day AS timestamp) AT TIME ZONE 'UTC' "
              f"AND a.created_at < CAST(o.day + 1 AS timestamp) AT TIME ZONE 'UTC' "
              f"GROUP BY o.experiment_id, a.subject_id, o.arm_key "
              f"HAVING {' OR '.join(f'{expr} <> 0' for expr in outcome_sums.values())}")
    zero_decisions = ", ".join("0" for _ in DAY_DECISION_VALUES)
    day_values = ", ".join(f"sum(o.sign * {expr})" for expr in _of(DAY_OUTCOME_VALUES, "o").values())
    return _pg_subject_upsert(deltas, list(SUBJECT_OUTCOME_VALUES)) + f"""
    INSERT INTO arm_day_rollups ({', '.join(DAY_KEYS)}, {', '.join(DAY_COLUMNS)})
    SELECT o.experiment_id, o.arm_key, o.day, o.holdout, {_shard('postgresql')}, {zero_decisions}, {day_values}
    FROM ({signed}) AS o
    GROUP BY 1, 2, 3, 4
    ORDER BY o.experiment_id, o.arm_key COLLATE "C", 3, 4
    {_merge('arm_day_rollups', DAY_KEYS, DAY_OUTCOME_VALUES)};"""


def _pg_cluster_removal(parts: Sequence[tuple[str, str]]) -> str:
    """Subject rows deleted: subtract their terms from the arms' cluster sums."""
    values = ", ".join(f"-sum({expr})" for expr in _of(CLUSTER_VALUES, "s").values())
    return f"""
    INSERT INTO arm_cluster_sums ({', '.join(CLUSTER_KEYS)}, {', '.join(CLUSTER_COLUMNS)})
    SELECT s.experiment_id, s.arm_key, {_shard('postgresql')}, {values}
    FROM {parts[0][1]} AS s
    GROUP BY s.experiment_id, s.arm_key
    ORDER BY s.experiment_id, s.arm_key COLLATE "C"
    {_merge('arm_cluster_sums', CLUSTER_KEYS, CLUSTER_COLUMNS)};"""


_OPERATIONS = {
    "INSERT": ([("1", "new_rows")], "NEW TABLE AS new_rows"),
    "UPDATE": ([("1", "new_rows"), ("-1", "old_rows")], "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
    "DELETE": ([("-1", "old_rows")], "OLD TABLE AS old_rows"),
}
# table: (trigger name, builder of its statements, the operations it runs on). On PostgreSQL the
# writes to subject_arm_sums above keep the cluster sums in the same statement; only a deletion
# of subject rows (a decision's removal, an erasure) goes through a trigger of its own.
_PG_TRIGGERS = {
    "assignments": ("nb_rollups_assignments", _pg_assignment_deltas, ("INSERT", "UPDATE", "DELETE")),
    "decision_outcomes": ("nb_rollups_decision_outcomes", _pg_outcome_deltas, ("INSERT", "UPDATE", "DELETE")),
    "subject_arm_sums": ("nb_rollups_subject_arm_sums", _pg_cluster_removal, ("DELETE",)),
}


# Up to this many changed rows a statement runs the trigger's statements as PL/pgSQL caches them: planned
# once per connection, for a small transition table. A larger statement (a batch, an import) plans them
# afresh for its size: a nested-loop plan cached from single decisions, reused for 100,000 rows, ran
# past the statement timeout.
SMALL_STATEMENT_ROWS = 64


def _pg_body(sql: str, table: str) -> str:
    statements = [part.strip() for part in sql.split(";") if part.strip()]
    assert not any("$q$" in statement for statement in statements)
    cached = "\n".join(f"        {statement};" for statement in statements)
    planned = "\n".join(f"        EXECUTE $q$ {statement} $q$;" for statement in statements)
    return (f"BEGIN\n    IF (SELECT count(*) FROM {table}) <= {SMALL_STATEMENT_ROWS} THEN\n{cached}\n"
            f"    ELSE\n{planned}\n    END IF;\n    RETURN NULL;\nEND")


def pg_trigger_ddl() -> list[str]:
    """CREATE FUNCTION / CREATE TRIGGER statements (PostgreSQL), one trigger per table and operation."""
    statements = []
    for table, (name, build, operations) in _PG_TRIGGERS.items():
        for op in operations:
            parts, referencing = _OPERATIONS[op]
            function = f"{name}_{op.lower()}"
            # The planner cannot estimate a transition table's CTEs (it guesses 10,000 rows) and merge-joins
            # them after sorting every wide row; a hash join costs a fraction of that for a large batch.
            statements.append(
                f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql "
                f"SET enable_mergejoin = off AS $body$\n{_pg_body(build(parts), parts[0][1])}\n$body$")
            statements.append(
                f"CREATE TRIGGER {function} AFTER {op} ON {table} REFERENCING {referencing} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()")
    return statements


def pg_drop_ddl() -> list[str]:
    out = []
    for table, (name, _, operations) in _PG_TRIGGERS.items():
        for op in operations:
            out.append(f"DROP TRIGGER IF EXISTS {name}_{op.lower()} ON {table}")
            out.append(f"DROP FUNCTION IF EXISTS {name}_{op.lower()}()")
    return out


# SQLite: row triggers (one writer at a time, so no lock order to keep).

def _sqlite_upsert(table: str, keys: Sequence[str], key_values: Sequence[str], columns: Sequence[str],
                   values: Sequence[str]) -> str:
    """Upsert one row; `key_values` in the order of `keys` (the table's primary key)."""
    return (f"INSERT INTO {table} ({', '.join([*keys, *columns])}) VALUES ({', '.join([*key_values, *values])}) "
            f"{_merge(table, keys, columns)};")


def _sqlite_row_deltas(table: str, sign: str, row: str) -> str:
    """Statements adding `sign` times the contribution of row `row` (NEW or OLD) of `table`."""
    if table == "assignments":
        day = _day("sqlite", f"{row}.created_at")
        out = _sqlite_upsert("subject_arm_sums", SUBJECT_KEYS, [f"{row}.subject_id", f"{row}.experiment_id",
                                                                 f"{row}.arm_key"],
                             ["decisions"], [sign])
        if sign.startswith("-"):
            out += (f" DELETE FROM subject_arm_sums WHERE experiment_id = {row}.experiment_id AND "
                    f"subject_id = {row}.subject_id AND arm_key = {row}.arm_key AND decisions <= 0;")
        out += _sqlite_upsert("arm_day_rollups", DAY_KEYS, [f"{row}.experiment_id", f"{row}.arm_key", day,
                                                            f"{row}.holdout", "0"],
                              list(DAY_DECISION_VALUES),
                              [f"{sign} * ({expr})" for expr in _of(DAY_DECISION_VALUES, row).values()])
        return out
    if table == "decision_outcomes":
        subject = f"(SELECT subject_id FROM assignments WHERE id = {row}.assignment_id)"
        out = _sqlite_upsert("subject_arm_sums", SUBJECT_KEYS, [subject, f"{row}.experiment_id", f"{row}.arm_key"],
                             list(SUBJECT_OUTCOME_VALUES),
                             [f"{sign} * ({expr})" for expr in _of(SUBJECT_OUTCOME_VALUES, row).values()])
        out += _sqlite_upsert("arm_day_rollups", DAY_KEYS, [f"{row}.experiment_id", f"{row}.arm_key", f"{row}.day",
                                                            f"{row}.holdout", "0"],
                              list(DAY_OUTCOME_VALUES),
                              [f"{sign} * ({expr})" for expr in _of(DAY_OUTCOME_VALUES, row).values()])
        return out
    return _sqlite_upsert("arm_cluster_sums", CLUSTER_KEYS, [f"{row}.experiment_id", f"{row}.arm_key", "0"],
                          list(CLUSTER_COLUMNS), [f"{sign} * ({expr})" for expr in _of(CLUSTER_VALUES, row).values()])


def sqlite_trigger_ddl() -> list[str]:
    statements = []
    for table, (name, _, _) in _PG_TRIGGERS.items():
        for op, body in (
            ("INSERT", _sqlite_row_deltas(table, "1", "NEW")),
            ("UPDATE", _sqlite_row_deltas(table, "-1", "OLD") + " " + _sqlite_row_deltas(table, "1", "NEW")),
            ("DELETE", _sqlite_row_deltas(table, "-1", "OLD")),
        ):
            statements.append(f"CREATE TRIGGER {name}_{op.lower()} AFTER {op} ON {table} FOR EACH ROW BEGIN {body} END")
    return statements


def sqlite_drop_ddl() -> list[str]:
    return [f"DROP TRIGGER IF EXISTS {name}_{op}" for name, _, _ in _PG_TRIGGERS.values()
            for op in ("insert", "update", "delete")]


def trigger_ddl(dialect: str) -> list[str]:
    return pg_trigger_ddl() if dialect == "postgresql" else sqlite_trigger_ddl()


def drop_trigger_ddl(dialect: str) -> list[str]:
    return pg_drop_ddl() if dialect == "postgresql" else sqlite_drop_ddl()


# The rebuild: the same values, aggregated from the logs.

def subjects_from_logs_sql(where: str) -> str:
    """Every subject's sums per arm, aggregated from the logs (columns named as in subject_arm_sums)."""
    outcome_values = ", ".join(f"coalesce(sum({expr}), 0) AS {c}"
                               for c, expr in _of(SUBJECT_OUTCOME_VALUES, "x").items())
    return f"""
SELECT a.experiment_id, a.subject_id, a.arm_key, count(*) AS decisions, {outcome_values}
FROM assignments AS a LEFT JOIN decision_outcomes AS x ON x.assignment_id = a.id
WHERE {where}
GROUP BY a.experiment_id, a.subject_id, a.arm_key"""


def rebuild_subjects_sql(where: str) -> str:
    """Insert every subject's sums from the logs (`rebuild_clusters_sql` then gives the arms' sums)."""
    return (f"INSERT INTO subject_arm_sums (experiment_id, subject_id, arm_key, {', '.join(SUBJECT_COLUMNS)})"
            f"{subjects_from_logs_sql(where)}")


def compact_sql(table: str) -> str:
    """Fold the rows other backends wrote (shard <> 0) into shard 0, skipping rows a writer holds: the
    compaction waits for nobody, and writers never write shard 0. Answers the number of rows folded."""
    keys, columns = (DAY_KEYS, DAY_COLUMNS) if table == "arm_day_rollups" else (CLUSTER_KEYS, CLUSTER_COLUMNS)
    assert keys[-1] == "shard"
    groups = keys[:-1]
    match = " AND ".join(f"r.{k} = m.{k}" for k in keys)
    order = ", ".join(f'{g} COLLATE "C"' if g == "arm_key" else g for g in groups)
    return f"""
WITH moved AS (
    DELETE FROM {table} AS r
    USING (SELECT {', '.join(keys)} FROM {table} WHERE shard <> 0 FOR UPDATE SKIP LOCKED) AS m
    WHERE {match}
    RETURNING r.*
), folded AS (
    INSERT INTO {table} ({', '.join(keys)}, {', '.join(columns)})
    SELECT {', '.join(groups)}, 0, {', '.join(f'sum({c})' for c in columns)}
    FROM moved GROUP BY {', '.join(groups)}
    ORDER BY {order}
    {_merge(table, keys, columns)}
)
SELECT count(*) FROM moved"""


def clusters_from_subjects_sql(where: str) -> str:
    """Per experiment and arm, the sums over subjects from the rows of subject_arm_sums (alias `s`)."""
    values = ", ".join(f"coalesce(sum({expr}), 0) AS {name}" for name, expr in _of(CLUSTER_VALUES, "s").items())
    return f"""
SELECT s.experiment_id, s.arm_key, {values}
FROM subject_arm_sums AS s WHERE {where}
GROUP BY s.experiment_id, s.arm_key"""


def rebuild_clusters_sql(where: str) -> str:
    return (f"INSERT INTO arm_cluster_sums ({', '.join(CLUSTER_KEYS)}, {', '.join(CLUSTER_COLUMNS)}) "
            f"SELECT c.experiment_id, c.arm_key, 0, {', '.join(f'c.{name}' for name in CLUSTER_COLUMNS)} "
            f"FROM ({clusters_from_subjects_sql(where)}) AS c")


def rebuild_day_decisions_sql(dialect: str, where: str) -> str:
    values = ", ".join(f"coalesce(sum({expr}), 0) AS {name}" for name, expr in _of(DAY_DECISION_VALUES, "a").items())
    return f"""
SELECT a.experiment_id, a.arm_key, {_day(dialect, 'a.created_at')} AS day, a.holdout, {values}
FROM assignments AS a WHERE {where}
GROUP BY 1, 2, 3, 4"""


def rebuild_day_outcomes_sql(where: str) -> str:
    values = ", ".join(f"coalesce(sum({expr}), 0) AS {name}" for name, expr in _of(DAY_OUTCOME_VALUES, "x").items())
    return f"""
SELECT x.experiment_id, x.arm_key, x.day, x.holdout, {values}
FROM decision_outcomes AS x WHERE {where}
GROUP BY 1, 2, 3, 4"""
