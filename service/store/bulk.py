"""Bulk writes: one statement per table and batch, with ON CONFLICT handling, on both databases.

PostgreSQL gets `INSERT ... SELECT FROM json_to_recordset(:rows)`: one short,
cacheable statement whose rows travel as one JSON document, many times faster
than a multi-row VALUES list of thousands of placeholders (and COPY for large
plain inserts). SQLite gets
SQLAlchemy's executemany with the same conflict semantics.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Sequence
from typing import Any, Literal

from sqlalchemy import (BigInteger, Boolean, Date, DateTime, Enum, Float, Integer, SmallInteger, String, Text, case,
                        select, text)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session
from sqlalchemy.types import JSON, TypeDecorator

from service.store.db import session_driver

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


class _Isoformat:
    """`default` for json.dumps: datetimes and dates as ISO 8601 text, each distinct object formatted once
    (a batch's rows share a handful of timestamp objects: the batch's clock, repeated event times)."""

    __slots__ = ("_done",)

    def __init__(self) -> None:
        self._done: dict[int, str] = {}  # id() of an object the rows being encoded keep alive -> its text

    def __call__(self, value: Any) -> Any:
        text = self._done.get(id(value))
        if text is None:
            if not hasattr(value, "isoformat"):
                raise TypeError(f"cannot send {type(value).__name__} in a bulk write")
            text = self._done[id(value)] = value.isoformat()
        return text


def json_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """The rows as one JSON array of objects holding exactly `columns` (datetimes as ISO 8601), for
    json_to_recordset. Rows that already hold exactly those keys are encoded as they are, uncopied."""
    wanted = set(columns)
    exact = len(wanted) == len(columns) and all(row.keys() == wanted for row in rows)
    payload = rows if exact else [{c: row[c] for c in columns} for row in rows]
    return json.dumps(payload, default=_Isoformat(), allow_nan=False)


def _recordset_type(column: Any) -> str:
    """The PostgreSQL type a column's values take when read out of a JSON document."""
    kind = column.type.impl if isinstance(column.type, TypeDecorator) else column.type
    return "json" if isinstance(kind, JSON) else _pg_type(column)


def recordset(table: Any, columns: Sequence[str], param: str = "rows") -> str:
    """`json_to_recordset(...) AS u(...)`: the JSON document bound to `:param` as rows of `columns`,
    typed like `table`'s columns, to SELECT from."""
    definitions = [f'"{name}" {_recordset_type(table.c[name])}' for name in columns]
    return f'json_to_recordset(CAST(:{param} AS json)) AS u({", ".join(definitions)})'


def json_columns(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """The rows as one JSON array of column arrays (datetimes as ISO 8601), for `column_recordset`:
    about a third of the encoding work of one object per row, and no key repeated per row."""
    return json.dumps([[row[c] for row in rows] for c in columns], default=_Isoformat(), allow_nan=False)


def column_recordset(table: Any, columns: Sequence[str], document: str, alias: str = "u") -> str:
    """Like `recordset`, for a `json_columns` document (`document`: its placeholder, e.g. `:columns` or
    `%(columns)s`): the column arrays side by side (ROWS FROM), typed like `table`'s columns."""
    elements, casts = [], []
    for i, name in enumerate(columns):
        kind = _recordset_type(table.c[name])
        function = "json_array_elements" if kind == "json" else "json_array_elements_text"
        elements.append(f"{function}(CAST({document} AS json) -> {i})")
        casts.append(f'CAST(v.c{i} AS {kind}) AS "{name}"')
    names = ", ".join(f"c{i}" for i in range(len(columns)))
    return f'(SELECT {", ".join(casts)} FROM ROWS FROM ({", ".join(elements)}) AS v({names})) AS {alias}'


def _pg(session: Session, table: Any, columns: list[str], rows: Sequence[dict[str, Any]], conflict: Sequence[str],
        on_conflict: OnConflict, add: Sequence[str], keep_min: Sequence[str], returning: str | None) -> list[Any]:
    """The rows travel as one JSON document that PostgreSQL unpacks (json_to_recordset): one short
    statement, and both sides parse JSON in C, which beats binding one array per column."""
    col_list = ", ".join(f'"{c}"' for c in columns)
    sql = f'INSERT INTO "{table.name}" AS t ({col_list}) SELECT {col_list} FROM {recordset(table, columns)}'
    sql += conflict_clause(columns, conflict, on_conflict, add, keep_min)
    if returning:
        sql += f' RETURNING "{returning}"'
    result = session.execute(text(sql), {"rows": json_rows(rows, columns)})
    return list(result.scalars()) if returning else []


def _pg_copy(session: Session, table: Any, columns: list[str], rows: Sequence[dict[str, Any]]) -> None:
    """COPY the rows in: PostgreSQL's fastest way in for rows that cannot conflict. In the binary
    format when every column has a binary type here, which spares the client formatting each value
    as text (most of a 100,000-row COPY's client time, taken from the thread encoding the answer)."""
    as_json = [i for i, c in enumerate(columns) if isinstance(table.c[c].type, JSON)]
    dialect = session.get_bind().dialect
    binary_types = [_copy_type(table.c[c], dialect) for c in columns]
    binary = all(binary_types)
    values = operator.itemgetter(*columns) if len(columns) > 1 else (lambda row: (row[columns[0]],))
    col_list = ", ".join(f'"{c}"' for c in columns)
    options = " (FORMAT BINARY)" if binary else ""
    with session_driver(session) as raw, raw.cursor() as cursor, \
            cursor.copy(f'COPY "{table.name}" ({col_list}) FROM STDIN{options}') as copy:
        if binary:
            copy.set_types(binary_types)
        write = copy.write_row
        for row in rows:
            picked = values(row)
            if as_json:
                picked = list(picked)
                for i in as_json:
                    if picked[i] is not None:
                        picked[i] = json.dumps(picked[i], allow_nan=False)
            write(picked)


def _copy_type(column: Any, dialect: Any) -> str | None:
    """The type binary COPY sends this column's values as (JSON goes as its text, which is also its
    binary form), or None when there is none here."""
    kind = column.type.dialect_impl(dialect)
    if isinstance(kind, TypeDecorator):
        kind = kind.impl
    if isinstance(kind, JSON) and not isinstance(kind, postgresql.JSONB):
        return "text"
    if isinstance(kind, Boolean):
        return "bool"
    if isinstance(kind, BigInteger):
        return "int8"
    if isinstance(kind, Integer) and not isinstance(kind, SmallInteger):
        return "int4"
    if isinstance(kind, Float) and not kind.asdecimal:
        return "float8" if kind.precision is None or kind.precision > 24 else None
    if isinstance(kind, DateTime):
        return "timestamptz" if kind.timezone else "timestamp"
    if isinstance(kind, Date):
        return "date"
    if isinstance(kind, (String, Text)) and not isinstance(kind, Enum):
        return "text"
    return None


def conflict_clause(columns: Sequence[str], conflict: Sequence[str], on_conflict: OnConflict, add: Sequence[str] = (),
                    keep_min: Sequence[str] = ()) -> str:
    """PostgreSQL's ON CONFLICT clause for `bulk_write`'s conflict rules (target table aliased `t`)."""
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
    from sqlalchemy import any_, bindparam, cast, func
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


def select_in(session: Session, columns: Sequence[Any], key: Any, values: Sequence[Any]) -> list[tuple[Any, ...]]:
    """The `columns` (of one table) of the rows whose `key` column is in `values`, as plain tuples.

    PostgreSQL: one statement straight through the driver with binary results, so no value is formatted
    as text and parsed back, and no row passes through SQLAlchemy's result processing (for a thousand
    rows, several milliseconds of CPU less). Timestamps come back aware, in the connection's time zone.
    SQLite: SQLAlchemy, `in_batches` lists of 900, the columns' own result types.
    """
    if not values:
        return []
    if session.get_bind().dialect.name != "postgresql":
        found: list[tuple[Any, ...]] = []
        for clause in in_batches(session, key, values):
            found.extend(tuple(row) for row in session.connection().execute(select(*columns).where(clause)))
        return found
    table = key.table.name
    names = ", ".join(f'"{c.name}"' for c in columns)
    if isinstance(key.type, String):  # text travels as one JSON document, as in `in_batches`
        sql, param = (f'SELECT {names} FROM "{table}" WHERE "{key.name}" IN '
                      f"(SELECT json_array_elements_text(CAST(%s AS json)))"), json.dumps(list(values))
    else:
        sql, param = f'SELECT {names} FROM "{table}" WHERE "{key.name}" = ANY(%s)', list(values)
    with session_driver(session) as raw, raw.cursor(binary=True) as cursor:
        cursor.execute(sql, [param])
        return cursor.fetchall()
