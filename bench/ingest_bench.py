"""Events per second: POST /v1/events in batches of 1,000, next to the fastest raw insert of the same rows.

1. A fresh, migrated PostgreSQL database; the service under gunicorn; a running
   fixed-split experiment with --decisions real decisions made by one
   POST /v1/assign/batch.
2. --batches batches of 1,000 events (60% open, 30% click, 10% conversion with a
   value), each attributed by assignment_id to one of those decisions, sent over
   --connections keep-alive connections; every event is new.
3. The rows the service stored are read back, the tables emptied, and the same
   rows, in the same batches of 1,000, one transaction each, over the same number
   of connections, are inserted straight through psycopg 3 with ON CONFLICT
   (event_id) DO NOTHING (on the event_keys table that keeps event_ids unique, then
   the events whose keys were new): via INSERT ... SELECT FROM unnest(arrays), and via COPY
   into a temporary table + INSERT ... SELECT. The faster is the ceiling. One more
   row shows the service's whole write (events and the per-decision summaries)
   done as one raw SQL statement per batch, for scale.

Run: .venv/bin/python bench/ingest_bench.py [--decisions 50000] [--batches 100] [--connections 8]
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (  # noqa: E402
    Bench,
    Database,
    fmt_int,
    fmt_ms,
    fmt_ratio,
    fmt_s,
    log,
    machine_note,
    print_table,
    send_all,
    verdict,
)

BATCH = 1000
TARGET = 30_000
COLUMNS = ["event_id", "experiment_id", "assignment_id", "subject_id", "type", "value", "occurred_at",
           "received_at", "attribution", "unattributed_reason"]
PG_TYPES = ["text", "bigint", "text", "text", "text", "double precision", "timestamptz", "timestamptz", "text",
            "text"]
SPEC = {
    "key": "ingest", "name": "bench ingest",
    "arms": [{"key": "control", "is_control": True}, {"key": "mens"}, {"key": "womens"}],
    "allocation": {"type": "fixed", "weights": {"control": 1, "mens": 1, "womens": 1}},
    "reward": {"event": "conversion"},
}


def event_batches(assignments: Sequence[str], batches: int, prefix: str, occurred_at: str,
                  seed: int = 1) -> list[list[dict[str, Any]]]:
    rng = random.Random(seed)
    out = []
    for b in range(batches):
        events = []
        for k in range(BATCH):
            event: dict[str, Any] = {"event_id": f"{prefix}-{b:05d}-{k:04d}", "assignment_id": rng.choice(assignments),
                                     "occurred_at": occurred_at}
            slot = k % 10
            if slot < 6:
                event["type"] = "open"
            elif slot < 9:
                event["type"] = "click"
            else:
                event["type"] = "conversion"
                event["value"] = round(rng.uniform(5, 120), 2)
            events.append(event)
        out.append(events)
    return out


# --------------------------------------------------------------------------- the raw ceiling

def _keyed_insert(source: str) -> str:
    """Insert the rows of `source` whose event_id is new: events.event_id is unique through event_keys
    (alembic 0014: on PostgreSQL `events` is partitioned and cannot keep it unique itself)."""
    cols = ", ".join(COLUMNS)
    return (f"WITH x AS (SELECT * FROM {source}), "
            f"k AS (INSERT INTO event_keys (event_id, received_at) SELECT event_id, received_at FROM x "
            f"ON CONFLICT (event_id) DO NOTHING RETURNING event_id) "
            f"INSERT INTO events ({cols}) SELECT {', '.join(f'u.{c}' for c in COLUMNS)} FROM x AS u "
            f"JOIN k ON k.event_id = u.event_id")


def _unnest_sql(returning: bool = True) -> str:
    casts = ", ".join(f"%s::{t}[]" for t in PG_TYPES)
    cols = ", ".join(COLUMNS)
    sql = _keyed_insert(f"unnest({casts}) AS x({cols})")
    return sql + (" RETURNING event_id" if returning else "")


def _summary_sql() -> str:
    """Events and per-decision summaries in one statement: what the service writes, all in SQL."""
    casts = ", ".join(f"%s::{t}[]" for t in PG_TYPES)
    cols = ", ".join(COLUMNS)
    return f"""
WITH x AS (
  SELECT * FROM unnest({casts}) AS x({cols})
), k AS (
  INSERT INTO event_keys (event_id, received_at) SELECT event_id, received_at FROM x
  ON CONFLICT (event_id) DO NOTHING RETURNING event_id
), ins AS (
  INSERT INTO events ({cols}) SELECT x.* FROM x JOIN k ON k.event_id = x.event_id
  RETURNING assignment_id, type, value, occurred_at, attribution
), per AS (
  SELECT assignment_id,
         count(*) FILTER (WHERE type = 'open') AS opens,
         count(*) FILTER (WHERE type = 'click') AS clicks,
         count(*) FILTER (WHERE type = 'conversion') AS conversions,
         count(*) FILTER (WHERE type = 'unsubscribe') AS unsubscribes,
         coalesce(sum(value) FILTER (WHERE type = 'conversion'), 0) AS revenue,
         min(occurred_at) FILTER (WHERE type = 'conversion') AS first_reward_at
  FROM ins WHERE attribution <> 'unattributed' GROUP BY assignment_id
)
INSERT INTO decision_outcomes AS t (assignment_id, experiment_id, arm_key, day, propensity, holdout, covariate,
  opens, clicks, conversions, unsubscribes, custom, revenue, first_reward_at, updated_at)
SELECT a.id, a.experiment_id, a.arm_key, (a.created_at AT TIME ZONE 'UTC')::date, a.propensity, a.holdout,
       a.covariate, p.opens, p.clicks, p.conversions, p.unsubscribes, 0, p.revenue, p.first_reward_at, now()
FROM per p JOIN assignments a ON a.id = p.assignment_id
ORDER BY a.id
ON CONFLICT (assignment_id, day) DO UPDATE SET
  opens = t.opens + excluded.opens, clicks = t.clicks + excluded.clicks,
  conversions = t.conversions + excluded.conversions, unsubscribes = t.unsubscribes + excluded.unsubscribes,
  revenue = t.revenue + excluded.revenue,
  first_reward_at = CASE WHEN t.first_reward_at IS NULL OR excluded.first_reward_at < t.first_reward_at
                         THEN excluded.first_reward_at ELSE t.first_reward_at END,
  updated_at = excluded.updated_at
"""


def _copy_text(rows: Sequence[tuple[Any, ...]]) -> bytes:
    def cell(v: Any) -> str:
        if v is None:
            return "\\N"
        if isinstance(v, datetime):
            return v.isoformat()
        return str(v).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")

    buf = io.StringIO()
    for row in rows:
        buf.write("\t".join(cell(v) for v in row))
        buf.write("\n")
    return buf.getvalue().encode()


def run_raw(db: Database, batches: list[list[tuple[Any, ...]]], connections: int, method: str) -> tuple[float, int]:
    """Insert every batch (one transaction each) over `connections` connections; (wall seconds, rows inserted)."""
    if method == "copy":
        prepared: list[Any] = [_copy_text(rows) for rows in batches]
    else:
        prepared = [[list(col) for col in zip(*rows)] for rows in batches]
    sql = _summary_sql() if method == "unnest+summaries" else _unnest_sql()
    cols = ", ".join(COLUMNS)
    next_index = iter(range(len(prepared)))
    lock = threading.Lock()
    inserted = [0] * connections
    barrier = threading.Barrier(connections + 1)
    failures: list[BaseException] = []

    def worker(slot: int) -> None:
        try:
            with db.connect() as conn:
                if method == "copy":
                    conn.execute("CREATE TEMP TABLE events_in (LIKE events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
                    conn.commit()
                barrier.wait()
                while True:
                    with lock:
                        i = next(next_index, None)
                    if i is None:
                        return
                    with conn.cursor() as cur:
                        if method == "copy":
                            with cur.copy(f"COPY events_in ({cols}) FROM STDIN") as copy:
                                copy.write(prepared[i])
                            cur.execute(_keyed_insert("events_in") + " RETURNING event_id")
                            inserted[slot] += len(cur.fetchall())
                        elif method == "unnest":
                            cur.execute(sql, prepared[i], prepare=True)
                            inserted[slot] += len(cur.fetchall())
                        else:
                            cur.execute(sql, prepared[i], prepare=True)
                            inserted[slot] += len(batches[i])
                    conn.commit()
        except BaseException as exc:  # reported by the caller
            failures.append(exc)
            try:
                barrier.abort()
            except threading.BrokenBarrierError:
                pass

    threads = [threading.Thread(target=worker, args=(s,), daemon=True) for s in range(connections)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if failures:
        raise failures[0]
    return wall, sum(inserted)


def empty_outcome_tables(db: Database) -> None:
    db.execute("TRUNCATE events, event_keys, decision_outcomes, decision_custom_outcomes")
    db.execute("VACUUM ANALYZE events")
    db.execute("CHECKPOINT")


# --------------------------------------------------------------------------- main

def run(args: argparse.Namespace) -> None:
    with Bench("ingest") as bench:
        db = bench.database()
        api = bench.service(db)
        log(f"service on :{api.server.port}, database {db.name}")
        api.create_experiment(SPEC)
        t0 = time.perf_counter()
        assignments: list[str] = []
        for start in range(0, args.decisions, 50_000):
            subjects = [{"subject_id": f"c-{i}"} for i in range(start, min(args.decisions, start + 50_000))]
            assignments.extend(a["assignment_id"] for a in api.assign_batch("ingest", subjects))
        log(f"{len(assignments):,} decisions by POST /v1/assign/batch in {time.perf_counter() - t0:.1f} s")

        occurred = (datetime.now(timezone.utc) + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
        warm = event_batches(assignments, 2 * args.connections, "warm", occurred, seed=2)
        measured = event_batches(assignments, args.batches, "ev", occurred, seed=1)
        channel = api.headers("channel")
        bodies = [json.dumps({"events": b}).encode() for b in measured]
        warm_result = send_all(api.url("/v1/events"), [json.dumps({"events": b}).encode() for b in warm],
                               connections=args.connections, headers=channel)
        if warm_result.errors:
            raise RuntimeError(f"POST /v1/events failed: {warm_result.answers[0][:500]!r}")
        db.execute("CHECKPOINT")

        log(f"sending {args.batches} batches of {BATCH} events over {args.connections} connections")
        result = send_all(api.url("/v1/events"), bodies, connections=args.connections, headers=channel)
        if result.errors:
            bad = next(a for a, s in zip(result.answers, result.statuses) if s != 200)
            raise RuntimeError(f"POST /v1/events failed: {bad[:500]!r}")
        accepted = sum(json.loads(a)["accepted"] for a in result.answers)
        total = args.batches * BATCH
        api_rate = accepted / result.wall
        ordered = sorted(result.latencies)
        p50, p99 = ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        log(f"  service: {accepted:,} accepted of {total:,} in {result.wall:.2f} s = {api_rate:,.0f} events/s")
        stored = db.execute("SELECT count(*), count(*) FILTER (WHERE attribution = 'assignment') FROM events "
                            "WHERE event_id LIKE 'ev-%'")[0]
        summary = db.execute("SELECT coalesce(sum(opens + clicks + conversions), 0) FROM decision_outcomes")[0][0]
        log(f"  stored {stored[0]:,} events ({stored[1]:,} attributed); summaries count {summary:,} events "
            f"(incl. warm-up)")

        rows = db.execute(f"SELECT {', '.join(COLUMNS)} FROM events WHERE event_id LIKE 'ev-%' ORDER BY event_id")
        raw_batches = [rows[i:i + BATCH] for i in range(0, len(rows), BATCH)]
        raw_results: dict[str, tuple[float, int]] = {}
        for method in ("unnest", "copy", "unnest+summaries"):
            empty_outcome_tables(db)
            wall, inserted = run_raw(db, raw_batches, args.connections, method)
            raw_results[method] = (wall, inserted)
            log(f"  raw {method}: {inserted:,} rows in {wall:.2f} s = {inserted / wall:,.0f} rows/s")

    ceiling_method = max(("unnest", "copy"), key=lambda m: raw_results[m][1] / raw_results[m][0])
    ceiling = raw_results[ceiling_method][1] / raw_results[ceiling_method][0]
    labels = {
        "unnest": "raw psycopg: INSERT ... SELECT FROM unnest(arrays) ON CONFLICT DO NOTHING RETURNING",
        "copy": "raw psycopg: COPY into a temp table + INSERT ... ON CONFLICT DO NOTHING RETURNING",
        "unnest+summaries": "raw psycopg: the events insert + per-decision summary upsert in one statement",
    }
    table = [[f"service `POST /v1/events` ({args.connections} connections)", fmt_int(api_rate), fmt_s(result.wall),
              fmt_ms(p50 * 1000), fmt_ms(p99 * 1000), fmt_ratio(api_rate / ceiling), f">= {TARGET:,}/s",
              verdict(api_rate >= TARGET)]]
    for method in ("unnest", "copy", "unnest+summaries"):
        wall, inserted = raw_results[method]
        rate = inserted / wall
        mark = " (ceiling)" if method == ceiling_method else ""
        table.append([labels[method] + mark, fmt_int(rate), fmt_s(wall), "", "", fmt_ratio(rate / ceiling), "", ""])
    print_table(
        f"POST /v1/events: {total:,} events in batches of {BATCH:,}",
        ["writer", "events/s", "wall s", "p50 ms/batch", "p99 ms/batch", "x ceiling", "target", "met"],
        table,
        [machine_note(),
         f"{args.decisions:,} real decisions made first by POST /v1/assign/batch; each event attributed by "
         f"assignment_id; mix 60% open, 30% click, 10% conversion with a value; every event new",
         f"service: {accepted:,} of {total:,} accepted, stored {stored[0]:,}; the raw rows are the ones the service "
         f"stored, read back, in the same batches, one transaction each, over the same {args.connections} "
         f"connections, into the same emptied tables (all indexes in place)"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=50_000)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--connections", type=int, default=8, help="concurrent senders (the server has 2 x 4 threads)")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
