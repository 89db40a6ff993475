"""Bulk writes: one statement per table and batch, with ON CONFLICT handling, on both databases.

PostgreSQL gets `INSERT ... SELECT FROM json_to_recordset(:rows)`: one short,
cacheable statement whose rows travel as one JSON document, many times faster
than a multi-row VALUES list of thousands of placeholders (and COPY for large
plain inserts). SQLite gets
SQLAlchemy's executemany with the same conflict semantics.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from collections.abc import Sequence
from typing import Any, Literal

from sqlalchemy import Boolean, Date, DateTime, Float, Integer, String, Text, case, text
from sqlalchemy.orm import Session
from sqlalchemy.types import JSON, TypeDecorator

OnConflict = Literal["error", "nothing", "merge"]
_PAGE = 1000
_COPY_FROM = 2000  # rows; below this one INSERT ... json_to_recordset is as quick
_PLAIN_UP_TO = 5  # rows; a plain VALUES list is cheapest for a handful


def _pg_type(column: Any) -> str:
    kind = column.type
    if isinstance(kind, TypeDecorator):
        kind = kind.impl
    if isinstance(kind, JSON):
        return "text"  # sent as text, cast to json in the SELECT
    if isinstance(kind, Boolean):
        return "boolean"
    if isinstance(kind, Integer):
        return "bigint"
    if isinstance(kind, Float):
        return "double precision"
    if isinstance(kind, DateTime):
        return "timestamptz"
    if isinstance(kind, Date):
        return "date"
    if isinstance(kind, (String, Text)):
        return "text"
    raise TypeError(f"no bulk array type for column {column.name} ({kind!r})")


def bulk_write(
    session: Session,
    model: Any,
    rows: Sequence[dict[str, Any]],
    *,
    conflict: Sequence[str] = (),
    on_conflict: OnConflict = "error",
    add: Sequence[str] = (),
    keep_min: Sequence[str] = (),
    returning: str | None = None,
) -> list[Any]:
    """Insert rows; on a conflict on `conflict` do nothing, or merge (add `add`, keep the least of `keep_min`,
    overwrite the rest). Returns the `returning` column of the rows written."""
    if not rows:
        return []
    table = model.__table__
    columns = list(rows[0].keys())
    if session.get_bind().dialect.name == "postgresql":
        if on_conflict == "error" and not returning and len(rows) <= _PLAIN_UP_TO:
            from sqlalchemy import insert

            session.execute(insert(model), list(rows))
            return []
        if on_conflict == "error" and not returning and len(rows) >= _COPY_FROM:
            _pg_copy(session, table, columns, rows)
            return []
        return _pg(session, table, columns, rows, conflict, on_conflict, add, keep_min, returning)
    return _sqlite(session, model, table, columns, rows, conflict, on_conflict, add, keep_min, returning)


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"cannot send {type(value).__name__} in a bulk write")


def _pg(session: Session, table: Any, columns: list[str], rows: Sequence[dict[str, Any]], conflict: Sequence[str],
        on_conflict: OnConflict, add: Sequence[str], keep_min: Sequence[str], returning: str | None) -> list[Any]:
    """The rows travel as one JSON document that PostgreSQL unpacks (json_to_recordset): one short
    statement, and both sides parse JSON in C, which beats binding one array per column."""
    definitions = []
    for name in columns:
        column = table.c[name]
        kind = column.type.impl if isinstance(column.type, TypeDecorator) else column.type
        definitions.append(f'"{name}" {"json" if isinstance(kind, JSON) else _pg_type(column)}')
    col_list = ", ".join(f'"{c}"' for c in columns)
    sql = (f'INSERT INTO "{table.name}" AS t ({col_list}) SELECT {col_list} '
           f'FROM json_to_recordset(CAST(:rows AS json)) AS u({", ".join(definitions)})')
    sql += _conflict_sql(columns, conflict, on_conflict, add, keep_min)
    if returning:
        sql += f' RETURNING "{returning}"'
    times = [c for c in columns if isinstance(rows[0][c], (datetime, date))]
    document = json.dumps(
        [{c: row[c] for c in columns} | {c: row[c].isoformat() for c in times if row[c] is not None} for row in rows]
        if times else [{c: row[c] for c in columns} for row in rows],
        default=_json_default, allow_nan=False)
    result = session.execute(text(sql), {"rows": document})
    return list(result.scalars()) if returning else []


def _pg_copy(session: Session, table: Any, columns: list[str], rows: Sequence[dict[str, Any]]) -> None:
    """COPY the rows in: PostgreSQL's fastest way in for rows that cannot conflict."""
    json_columns = {c for c in columns if isinstance(table.c[c].type, JSON)}
    raw = session.connection().connection.driver_connection
    col_list = ", ".join(f'"{c}"' for c in columns)
    with raw.cursor() as cursor, cursor.copy(f'COPY "{table.name}" ({col_list}) FROM STDIN') as copy:
        for row in rows:
            copy.write_row([
                (None if row[c] is None else json.dumps(row[c], allow_nan=False)) if c in json_columns else row[c]
                for c in columns
            ])


def _conflict_sql(columns: list[str], conflict: Sequence[str], on_conflict: OnConflict, add: Sequence[str],
                  keep_min: Sequence[str]) -> str:
    if on_conflict == "error":
        return ""
    target = ", ".join(f'"{c}"' for c in conflict)
    if on_conflict == "nothing":
        return f" ON CONFLICT ({target}) DO NOTHING"
    sets = []
    for c in columns:
        if c in conflict:
            continue
        if c in add:
            sets.append(f'"{c}" = t."{c}" + excluded."{c}"')
        elif c in keep_min:
            sets.append(f'"{c}" = CASE WHEN t."{c}" IS NULL OR excluded."{c}" < t."{c}" '
                        f'THEN excluded."{c}" ELSE t."{c}" END')
        else:
            sets.append(f'"{c}" = excluded."{c}"')
    return f" ON CONFLICT ({target}) DO UPDATE SET {', '.join(sets)}"


def _sqlite(session: Session, model: Any, table: Any, columns: list[str], rows: Sequence[dict[str, Any]],
            conflict: Sequence[str], on_conflict: OnConflict, add: Sequence[str], keep_min: Sequence[str],
            returning: str | None) -> list[Any]:
    from sqlalchemy.dialects.sqlite import insert

    stmt = insert(model)
    if on_conflict == "nothing":
        stmt = stmt.on_conflict_do_nothing(index_elements=list(conflict))
    elif on_conflict == "merge":
        ex = stmt.excluded
        sets: dict[str, Any] = {}
        for c in columns:
            if c in conflict:
                continue
            if c in add:
                sets[c] = table.c[c] + ex[c]
            elif c in keep_min:
                sets[c] = case((table.c[c].is_(None) | (ex[c] < table.c[c]), ex[c]), else_=table.c[c])
            else:
                sets[c] = ex[c]
        stmt = stmt.on_conflict_do_update(index_elements=list(conflict), set_=sets)
    out: list[Any] = []
    if returning:
        stmt = stmt.returning(table.c[returning])
    for start in range(0, len(rows), _PAGE):
        page = list(rows[start:start + _PAGE])
        if returning:
            out.extend(session.scalars(stmt, page).all())
        else:
            session.execute(stmt, page)
    return out


def in_batches(session: Session, column: Any, values: Sequence[Any]) -> list[Any]:
    """`column IN values` as few statements as possible: one `= ANY(array)` on PostgreSQL, and
    lists of 900 on SQLite (its parameter limit). Returns one clause per statement to run."""
    from sqlalchemy import any_, bindparam, cast, func, select
    from sqlalchemy.dialects.postgresql import ARRAY
    from sqlalchemy.dialects.postgresql import JSON as JSON_TYPE

    if not values:
        return []
    if session.get_bind().dialect.name == "postgresql":
        if isinstance(column.type, String):  # text travels as one JSON document: no per-element binding
            elements = func.json_array_elements_text(cast(bindparam(None, json.dumps(list(values))), JSON_TYPE))
            return [column.in_(select(elements))]
        return [column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))]
    return [column.in_(list(values[start:start + 900])) for start in range(0, len(values), 900)]
