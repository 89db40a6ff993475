"""Query routing audit for Citus: every SQL statement the service runs, and where Citus would run it.

Runs the service in process (Flask test client) on a fresh database and walks through a decision
(plain, with a contact policy, idempotent), a batch, events (by assignment id, by subject, an
unsubscribe), a report, a refit, a profile write and read, an assignment explanation, an export
and an erasure. Every statement is captured where it reaches the driver: SQLAlchemy's
before_cursor_execute for the ORM and Core paths, and the service's own driver-level paths
(DriverStatement, the prepared per-thread decision insert, the raw cursors of ingestion and bulk
reads) by wrapping them. Each distinct statement is classified against the placement manifest
(service/store/distribution.py):

  router: one subject        every subject table filtered (or joined) on one subject: one shard
  by subject: many shards     rows or filters for many subjects; each shard gets its own subjects
  experiment-wide fan-out     subject tables read by experiment (reports, refits): every shard, fine
  reference/local only        only reference or coordinator-local tables
  other key                   a table distributed by another key (idempotency keys), routed by it
  problematic                 a lookup or conflict target without the subject, a join on a
                              non-distribution column, a table without the subject, a fan-out on
                              the hot path

With --rows N (PostgreSQL), it then loads N decisions and N events through the API and prints rows
and bytes per table (pg_total_relation_size: heap, indexes and TOAST), for capacity planning.

Run: .venv/bin/python bench/citus_audit.py [--backend sqlite|postgresql|both] [--rows 100000] [--verbose]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import random
import re
import shutil
import sys
import tempfile
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import event  # noqa: E402

from _harness import DB_PREFIX, create_database, drop_database, log, machine_note, print_table  # noqa: E402
from service import create_app  # noqa: E402
from service.http.auth import create_key  # noqa: E402
from service.store import db as db_module  # noqa: E402
from service.store.distribution import MANIFEST, SUBJECT_COLUMN  # noqa: E402

ROUTER, MANY, FANOUT, REFERENCE, OTHER_KEY, PROBLEM, SESSION = (
    "router: one subject", "by subject: many shards", "experiment-wide fan-out", "reference/local only",
    "other key", "problematic", "session/lock")
HOT_STEPS = ("decision", "batch", "events", "unsubscribe")  # steps on the decision or event path
ORDER = [ROUTER, MANY, OTHER_KEY, FANOUT, REFERENCE, SESSION, PROBLEM]  # as the summary lists them
SEVERITY = [REFERENCE, SESSION, ROUTER, OTHER_KEY, MANY, FANOUT, PROBLEM]  # a UNION is as bad as its worst part

# --------------------------------------------------------------------------- capture


@dataclass
class Capture:
    step: str = "setup"
    statements: list[tuple[str, str, bool]] = field(default_factory=list)  # (step, sql, run for many rows)

    def add(self, sql: Any, many: bool = False) -> None:
        if isinstance(sql, bytes):
            sql = sql.decode()
        self.statements.append((self.step, str(sql), many))


class _RecordingCursor:
    def __init__(self, cursor: Any, capture: Capture):
        self._cursor, self._capture = cursor, capture

    def execute(self, sql: Any, *args: Any, **kwargs: Any) -> Any:
        self._capture.add(sql)
        return self._cursor.execute(sql, *args, **kwargs)

    def copy(self, sql: Any, *args: Any, **kwargs: Any) -> Any:
        self._capture.add(sql)
        return self._cursor.copy(sql, *args, **kwargs)

    def __enter__(self) -> _RecordingCursor:
        self._cursor.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._cursor.__exit__(*exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class _RecordingConnection:
    def __init__(self, connection: Any, capture: Capture):
        self._connection, self._capture = connection, capture

    def cursor(self, *args: Any, **kwargs: Any) -> _RecordingCursor:
        return _RecordingCursor(self._connection.cursor(*args, **kwargs), self._capture)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


@contextlib.contextmanager
def capturing(app: Any, capture: Capture) -> Iterator[None]:
    """Record every statement: SQLAlchemy's events on both engines, and the driver-level paths."""
    from service.store import bulk, ingest
    from service.store.db import DriverStatement, ThreadConnections

    database = db_module.get_db(app)
    engines = {id(e): e for e in (database.engine, database.autocommit_engine)}.values()

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        capture.add(statement, executemany)

    original_fetch = DriverStatement._fetch
    original_prepared = ThreadConnections.execute
    originals = {module: module.session_driver for module in (ingest, bulk)}

    def fetch(self: Any, connection: Any, values: Any, take: Any) -> Any:
        capture.add(self.sql)
        return original_fetch(self, connection, values, take)

    def prepared(self: Any, statement: Any, row: Any) -> int:
        capture.add(statement.sql)
        return original_prepared(self, statement, row)

    def recorded_driver(module: Any) -> Any:
        @contextlib.contextmanager
        def session_driver(session: Any) -> Iterator[Any]:
            with originals[module](session) as raw:
                yield _RecordingConnection(raw, capture)
        return session_driver

    for engine in engines:
        event.listen(engine, "before_cursor_execute", before)
    DriverStatement._fetch = fetch  # type: ignore[method-assign]
    ThreadConnections.execute = prepared  # type: ignore[method-assign]
    for module in originals:
        module.session_driver = recorded_driver(module)
    try:
        yield
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", before)
        DriverStatement._fetch = original_fetch  # type: ignore[method-assign]
        ThreadConnections.execute = original_prepared  # type: ignore[method-assign]
        for module, original in originals.items():
            module.session_driver = original


# --------------------------------------------------------------------------- classification

_TABLE = re.compile(r'\b(?:from|join|into|update|copy)\s+(?:only\s+)?"?([a-z_][a-z0-9_]*)"?', re.I)
_PARAM = r"(?::\w+|%\(\w+\)s|%s|\$\d+(?:::[\w() ]+)?|\?|'[^']*')"


def _filters(sql: str, column: str) -> tuple[bool, bool, bool]:
    """(one value, a list of values, a list as a JSON subquery) constraining `column`."""
    col = rf'(?:\b\w+\.)?"?{column}"?'
    one = re.search(rf"{col}\s*=\s*{_PARAM}", sql, re.I) is not None
    many = re.search(rf"{col}\s*(?:in\s*\(\s*(?:{_PARAM}|\[)|=\s*any\s*\()", sql, re.I) is not None
    many = many or re.search(rf"\(\s*\w+\.experiment_id\s*,\s*{col}\s*\)\s*in", sql, re.I) is not None
    json_list = re.search(rf"{col}\s*in\s*\(\s*select\s+json_array_elements_text", sql, re.I) is not None
    return one, many or json_list, json_list


def _joined_on_subject(sql: str) -> bool:
    return re.search(rf'\w+\."?{SUBJECT_COLUMN}"?\s*=\s*\w+\."?{SUBJECT_COLUMN}"?', sql, re.I) is not None


def classify(sql: str, hot: bool = False, many_rows: bool = False) -> tuple[str, list[str], str]:
    """(class, tables, note) of one statement against the manifest; `hot`: on the decision or event path.

    The parts of a UNION ALL are judged one by one: the statement is as bad as its worst part.
    """
    parts = re.split(r"\s+union\s+all\s+", sql, flags=re.I)
    if len(parts) > 1:
        judged = [_classify_one(part, hot, many_rows) for part in parts]
        worst = max(judged, key=lambda j: SEVERITY.index(j[0]))
        tables = sorted({t for _, found, _ in judged for t in found})
        return worst[0], tables, worst[2]
    return _classify_one(sql, hot, many_rows)


def _classify_one(sql: str, hot: bool, many_rows: bool) -> tuple[str, list[str], str]:
    flat = " ".join(sql.split())
    low = flat.lower()
    tables = sorted({t.lower() for t in _TABLE.findall(flat) if t.lower() in MANIFEST})
    if "pg_advisory" in low or "pg_try_advisory" in low:
        return SESSION, tables, ("advisory lock: held on the node that runs it (the coordinator); under "
                                 "query-from-any-node it must become a row lock on the subject's shard")
    if not tables:
        if low.startswith(("select 1", "savepoint", "release", "rollback", "pragma", "begin", "commit")) \
                or "pg_notify" in low or not low.startswith(("select", "insert", "update", "delete", "with")):
            return SESSION, tables, ""
        return REFERENCE, tables, "no table"
    placements = {t: MANIFEST[t] for t in tables}
    subject_tables = [t for t, p in placements.items() if p.colocated_with_subjects]
    other_keyed = [t for t, p in placements.items() if p.kind == "distributed" and not p.colocated_with_subjects]
    if not subject_tables and not other_keyed:
        return REFERENCE, tables, ""
    if other_keyed and not subject_tables:
        column = placements[other_keyed[0]].column or ""
        one, many, _ = _filters(flat, column)
        if one or many or low.startswith("insert"):
            return OTHER_KEY, tables, f"routed by {column}"
        return PROBLEM, tables, f"{other_keyed[0]} read without its key {column}: every shard"
    notes: list[str] = []
    missing = [t for t in subject_tables if SUBJECT_COLUMN not in _columns_of(t)]
    is_write = low.startswith(("insert", "copy", "with inserted")) or " on conflict " in low
    one, many, json_list = _filters(flat, SUBJECT_COLUMN)
    conflict = re.search(r"on conflict\s*\(([^)]*)\)", low)
    if conflict and SUBJECT_COLUMN not in conflict.group(1):
        notes.append(f"ON CONFLICT ({conflict.group(1).replace(chr(34), '')}) lacks {SUBJECT_COLUMN}")
    if missing:
        notes.append(f"{', '.join(missing)} has no {SUBJECT_COLUMN}: rows cannot be routed")
    if len(subject_tables) > 1 and not _joined_on_subject(flat) and re.search(r"\bjoin\b", low):
        if not (one and flat.lower().count(f"{SUBJECT_COLUMN} =") >= len(subject_tables)):
            notes.append("join of distributed tables on a non-distribution column")
    if notes:
        return PROBLEM, tables, "; ".join(notes)
    single_row = not many_rows and low.startswith("insert") and " values (" in low and "), (" not in low \
        and re.search(rf"\(([^)]*\b{SUBJECT_COLUMN}\b[^)]*)\)\s*values", low) is not None
    if (one and not many) or single_row:
        return ROUTER, tables, ""
    if many or is_write:
        note = "rows routed by their subject" if is_write and not many else ""
        if json_list:
            note = "list sent as a JSON subquery: Citus cannot prune it, every shard runs it (= ANY(array) prunes)"
        return MANY, tables, note
    by_experiment = re.search(r'experiment_id"?\s*(?:=|in\b)', low) is not None
    if re.search(r'(?:\bassignment_id|\b\w+\.id|"id")\s*(?:=|in\s*\()', low) and not by_experiment:
        return PROBLEM, tables, "lookup by assignment id alone: every shard"
    probe = "an existence probe" if "select exists" in low else "a read"
    if hot:
        return PROBLEM, tables, f"{probe} without a subject on the decision or event path: every shard, every call"
    if by_experiment:
        return FANOUT, tables, ""
    if low.startswith("delete"):
        return FANOUT, tables, "delete without a subject: every shard (a retention job)"
    return FANOUT, tables, f"{probe} over the whole table: every shard"


def _columns_of(table: str) -> set[str]:
    from service.store.models import Base

    found = Base.metadata.tables.get(table)
    return {c.name for c in found.columns} if found is not None else {SUBJECT_COLUMN}


# --------------------------------------------------------------------------- the walk-through

ARMS = [{"key": "control", "is_control": True, "payload": {"template": "none"}},
        {"key": "mens", "payload": {"template": "mens-v1"}},
        {"key": "womens", "payload": {"template": "womens-v1"}}]


def _spec(key: str, **extra: Any) -> dict[str, Any]:
    return {"key": key, "name": key, "arms": ARMS, "reward": {"event": "conversion"},
            "allocation": {"type": "fixed", "weights": {"control": 1, "mens": 1, "womens": 1}}, **extra}


class Walk:
    def __init__(self, app: Any, capture: Capture, name: str = "audit"):
        self.app, self.capture = app, capture
        self.client = app.test_client()
        database = db_module.get_db(app)
        with database.session() as session:
            self.tokens = {scope: create_key(session, f"{name}-{scope}", scope)[1]
                           for scope in ("channel", "analyst", "admin")}

    def call(self, method: str, path: str, scope: str, body: Any = None, expect: int = 200,
             headers: dict[str, str] | None = None) -> Any:
        response = self.client.open(path, method=method, json=body,
                                    headers={"Authorization": f"Bearer {self.tokens[scope]}", **(headers or {})})
        if response.status_code != expect:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.get_data(as_text=True)[:300]}")
        return response.get_json(silent=True)

    def events(self, events: list[dict[str, Any]]) -> None:
        answer = self.call("POST", "/v1/events", "channel", {"events": events})
        if answer["accepted"] != len(events):
            raise RuntimeError(f"events not all accepted: {answer['results'][:3]}")

    def step(self, name: str) -> None:
        self.capture.step = name

    def run(self) -> None:
        self.step("setup")
        self.call("POST", "/v1/experiments", "analyst", _spec("plain"), 201)
        self.call("POST", "/v1/experiments", "analyst", _spec(
            "capped", contact_policy={"max_per_subject": {"count": 3, "per_seconds": 604800},
                                      "cooldown_after_conversion_seconds": 259200,
                                      "exclude_converted_arms": True}), 201)
        self.call("POST", "/v1/experiments", "analyst", _spec(
            "bandit", allocation={"type": "bandit", "policy": {"name": "thompson_sampling"}, "holdout": 0.1}), 201)
        for key in ("plain", "capped", "bandit"):
            self.call("POST", f"/v1/experiments/{key}/start", "analyst")
        self.step("profile write (PUT /v1/subjects)")
        self.call("PUT", "/v1/subjects/s-1", "channel", {"timezone": "Europe/Berlin", "consent": {"email": True}})
        self.step("decision (POST /v1/assign)")
        first = self.call("POST", "/v1/assign", "channel", {"experiment": "plain", "subject_id": "s-1",
                                                            "channel": "email"})
        self.call("POST", "/v1/assign", "channel", {"experiment": "bandit", "subject_id": "s-2", "channel": "email"})
        self.step("decision, contact policy")
        capped = self.call("POST", "/v1/assign", "channel", {"experiment": "capped", "subject_id": "s-1",
                                                             "channel": "email"})
        self.step("decision, Idempotency-Key")
        self.call("POST", "/v1/assign", "channel", {"experiment": "plain", "subject_id": "s-3", "channel": "sms"},
                  headers={"Idempotency-Key": "audit-1"})
        self.step("batch (POST /v1/assign/batch)")
        subjects = [{"subject_id": f"b-{i}"} for i in range(50)]
        batch = self.call("POST", "/v1/assign/batch", "channel", {"experiment": "plain", "channel": "email",
                                                                  "subjects": subjects})["assignments"]
        self.step("batch, contact policy")
        self.call("POST", "/v1/assign/batch", "channel", {"experiment": "capped", "channel": "email",
                                                          "subjects": subjects[:20]})
        self.step("events by assignment_id")
        at = iso_now()
        events = [{"event_id": f"e-{i}", "assignment_id": a["assignment_id"], "type": t, "occurred_at": at}
                  for i, (a, t) in enumerate(zip(batch, ["open", "click", "conversion"] * 20)) if a["assignment_id"]]
        events.append({"event_id": "e-first", "assignment_id": first["assignment_id"], "type": "conversion",
                       "value": 12.5, "occurred_at": at})
        self.events(events)
        self.step("events by subject (window attribution)")
        self.events([{"event_id": "e-subj", "experiment": "capped", "subject_id": "s-1", "type": "click",
                      "occurred_at": at}])
        self.step("unsubscribe event")
        self.events([{"event_id": "e-unsub", "assignment_id": capped["assignment_id"], "type": "unsubscribe",
                      "channel": "email", "occurred_at": at}])
        self.step("report (GET /v1/experiments/{key}/report)")
        self.call("GET", "/v1/experiments/plain/report", "analyst")
        self.step("refit (bandit)")
        from service.jobs.learning import refit_all

        with self.app.app_context(), db_module.get_db(self.app).session() as session:
            refit_all(session, full=True, key="bandit")
        self.step("profile read (GET /v1/subjects)")
        self.call("GET", "/v1/subjects/s-1", "analyst")
        self.step("explain (GET /v1/assignments/{id})")
        self.call("GET", f"/v1/assignments/{first['assignment_id']}", "analyst")
        self.step("export (GET /v1/subjects/{id}/export)")
        self.call("GET", "/v1/subjects/s-1/export", "admin")
        self.step("erasure (DELETE /v1/subjects/{id})")
        self.call("DELETE", "/v1/subjects/s-1", "admin")


def iso_now() -> str:
    from service.clock import utcnow

    return utcnow().isoformat().replace("+00:00", "Z")


def _short(sql: str, width: int = 110) -> str:
    flat = " ".join(sql.split())
    return flat if len(flat) <= width else flat[:width - 3] + "..."


def _app(url: str) -> Any:
    """The service in process; its access log (a line per request) stays out of the progress output."""
    app = create_app({"DATABASE_URL": url, "TESTING": True, "NEXTBEST_POLICY_REFRESH_SECONDS": 0.0})
    logging.getLogger("nextbest.access").setLevel(logging.WARNING)
    return app


def audit(url: str, label: str, verbose: bool) -> dict[str, int]:
    db_module.upgrade(url)
    app = _app(url)
    capture = Capture()
    try:
        with capturing(app, capture):
            Walk(app, capture).run()
    finally:
        db_module.get_db(app).dispose()
    seen: dict[tuple[str, str], int] = defaultdict(int)
    many_rows: dict[tuple[str, str], bool] = defaultdict(bool)
    order: list[tuple[str, str]] = []
    for step, sql, many in capture.statements:
        if step == "setup":
            continue
        key = (step, " ".join(sql.split()))
        if key not in seen:
            order.append(key)
        seen[key] += 1
        many_rows[key] |= many
    rows, totals = [], defaultdict(int)
    for step, sql in order:
        kind, tables, note = classify(sql, hot=step.startswith(HOT_STEPS), many_rows=many_rows[(step, sql)])
        totals[kind] += 1
        if kind in (SESSION, REFERENCE) and not verbose and not note:
            continue
        rows.append([step, kind, ", ".join(tables) or "-", seen[(step, sql)], note, _short(sql)])
    print_table(
        f"Citus routing of the statements the service runs ({label})",
        ["step", "class", "tables", "runs", "why", "statement"], rows,
        [machine_note() if label == "PostgreSQL" else "SQLite: the same paths, SQLite's SQL (bulk paths differ)",
         "distinct statements per step (reference/local-only and transaction statements counted, listed "
         "with --verbose); " + ", ".join(f"{k}: {totals[k]}" for k in ORDER if totals[k]),
         "placements from service/store/distribution.py; classification by the statement's text (tables, "
         "filters and joins on subject_id), not by a Citus planner: verify on a real cluster with EXPLAIN"],
    )
    return dict(totals)


# --------------------------------------------------------------------------- sizes


def sizes(url: str, dbname: str, rows: int) -> None:
    """Load `rows` decisions and as many events through the API; print rows and bytes per table."""
    import psycopg

    from _harness import pg_connect

    app = _app(url)
    walk = Walk(app, Capture(), name="sizes")
    walk.call("POST", "/v1/experiments", "analyst", _spec("sized"), 201)
    walk.call("POST", "/v1/experiments/sized/start", "analyst")
    rng = random.Random(7)
    ids: list[tuple[str, str]] = []
    chunk = 20_000
    for start in range(0, rows, chunk):
        # Subject ids shaped like a retailer's customer numbers (12 digits).
        subjects = [{"subject_id": f"{rng.randrange(10**11, 10**12)}"} for _ in range(min(chunk, rows - start))]
        answer = walk.call("POST", "/v1/assign/batch", "channel",
                           {"experiment": "sized", "channel": "email", "subjects": subjects})
        ids += [(a["assignment_id"], a["subject_id"]) for a in answer["assignments"] if a["assignment_id"]]
        log(f"  sizes: {len(ids):,} decisions")
    kinds = ["open"] * 6 + ["click"] * 3 + ["conversion"]
    at = iso_now()
    sent = 0
    for start in range(0, rows, 5_000):
        batch = []
        for i in range(start, min(rows, start + 5_000)):
            assignment, _ = ids[rng.randrange(len(ids))]
            kind = kinds[i % len(kinds)]
            batch.append({"event_id": uuid.UUID(int=rng.getrandbits(128)).hex, "assignment_id": assignment,
                          "type": kind, "occurred_at": at, **({"value": round(rng.uniform(5, 150), 2)} if kind == "conversion" else {})})
        walk.events(batch)
        sent += len(batch)
    log(f"  sizes: {sent:,} events")
    db_module.get_db(app).dispose()
    with pg_connect(dbname, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        found = conn.execute(
            "SELECT c.relname, pg_total_relation_size(c.oid), pg_relation_size(c.oid), "
            "pg_indexes_size(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') ORDER BY 2 DESC").fetchall()
        counts = {name: conn.execute(psycopg.sql.SQL("SELECT count(*) FROM {}").format(
            psycopg.sql.Identifier(name))).fetchone()[0] for name, *_ in found}
    table = []
    for name, total, heap, index in found:
        n = counts[name]
        if n == 0:
            continue
        table.append([name, f"{n:,}", f"{total / 2**20:,.1f}", f"{heap / 2**20:,.1f}", f"{index / 2**20:,.1f}",
                      f"{total / n:,.0f}"])
    print_table(
        f"Rows and bytes per table after {rows:,} decisions and {sent:,} events (PostgreSQL)",
        ["table", "rows", "total MiB", "heap MiB", "indexes MiB", "bytes/row (all)"], table,
        ["pg_total_relation_size (heap + indexes + TOAST) after VACUUM ANALYZE; decisions by POST /v1/assign/batch "
         "(fixed split, channel email, 12-digit subject ids), events by POST /v1/events attributed by "
         "assignment_id (60% open, 30% click, 10% conversion with a value)",
         "freshly loaded tables: no bloat from updates other than the summaries' upserts; a long-running "
         "table carries more (fill factor, dead tuples)"],
    )


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--rows", type=int, default=0, help="PostgreSQL: then load this many decisions and events "
                                                             "and print the bytes per row of each table")
    parser.add_argument("--verbose", action="store_true", help="list transaction and session statements too")
    args = parser.parse_args()
    if args.backend in ("sqlite", "both"):
        folder = Path(tempfile.mkdtemp(prefix="nextbest-citus-audit-"))
        try:
            audit(f"sqlite:///{folder / 'audit.sqlite3'}", "SQLite", args.verbose)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    if args.backend in ("postgresql", "both"):
        name = f"{DB_PREFIX}citus_audit"
        database = create_database(name)
        try:
            audit(database.url, "PostgreSQL", args.verbose)
            if args.rows:
                sizes(database.url, name, args.rows)
        finally:
            drop_database(name)


if __name__ == "__main__":
    main()
