"""Report latency: GET /v1/experiments/{key}/report at 1 million and at 20 million decisions (3 events each).

For each size:
1. A fresh, migrated PostgreSQL database; one running fixed-split experiment
   with 3 arms, created through the API.
2. Loaded straight in SQL with generate_series (secondary indexes dropped during
   the load and rebuilt after, triggers off for the load session): the decisions
   spread over 14 days, the events on them (open, click, conversion with a value,
   unsubscribe; conversion rate differing by arm; 0.1% unattributed), and
   decision_outcomes built from those events by the same aggregation ingestion
   keeps up to date, so the two agree. The load bypasses the triggers that keep
   the report rollups, so the rollups are then rebuilt from the logs, timed (what
   `nextbest rollups rebuild` does). Then VACUUM ANALYZE, as autovacuum would.
3. The report through gunicorn (JSON), --repeat times per size after one warm-up call, the sizes
   in turn (each sample of every size sees the same machine);
   the median is compared with the floor: the queries the report runs (captured
   from service/store/report_queries.py as it builds the report, then replayed
   directly through psycopg 3), summed.

Targets: under 0.5 s at each size, and the 20M/1M ratio under 1.5: the report reads
O(arms x days) rollup rows, not the logs.

Run: .venv/bin/python bench/report_bench.py [--sizes 1e6,2e7] [--events-per-decision 3] [--repeat 15]
(20 million decisions take about half an hour to load on a 2-core machine and some 25 GB of disk.)
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (  # noqa: E402
    Bench,
    Database,
    fmt_ratio,
    fmt_s,
    log,
    machine_note,
    print_table,
    verdict,
)

SPEC = {
    "key": "spring-email", "name": "Spring e-mail offer",
    "arms": [{"key": "control", "is_control": True, "payload": {"template": "none"}},
             {"key": "mens", "payload": {"template": "mens-v1"}},
             {"key": "womens", "payload": {"template": "womens-v1"}}],
    "allocation": {"type": "fixed", "weights": {"control": 1, "mens": 1, "womens": 1}},
    "reward": {"event": "conversion"},
    "attribution_window_seconds": 1209600,
    "guardrails": [{"metric": "unsubscribe_rate", "max_relative_increase": 0.10}],
    "promotion": {"metric": "conversion_rate", "confidence": 0.95, "min_decisions_per_arm": 1000,
                  "min_runtime_seconds": 604800, "action": "promote"},
}
TABLES = ("assignments", "events", "decision_outcomes")
DAYS = 14


def _columns(conn: Any, table: str) -> set[str]:
    return {r[0] for r in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = %s",
        (table,))}


def _parallel(db: Database, statements: list[tuple[str, Any]]) -> None:
    """Run statements side by side, one connection each (the load uses both cores)."""
    errors: list[BaseException] = []

    def one(sql: str, params: Any) -> None:
        try:
            with db.connect(options="-c timezone=UTC") as conn:
                conn.execute("SET synchronous_commit = off")
                conn.execute("SET work_mem = '256MB'")
                conn.execute("SET session_replication_role = replica")  # no FK triggers for the load
                conn.execute(sql, params)
                conn.commit()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=st) for st in statements]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


ASSIGNMENTS_SQL = f"""
    INSERT INTO assignments (id, experiment_id, arm_key, subject_id, propensity, policy_version, holdout,
                             context, channel, covariate, source, created_at)
    SELECT lpad(to_hex(g), 32, '0'), %(eid)s, (ARRAY['control', 'mens', 'womens'])[1 + ((g - 1) / 4) %% 3],
           's-' || ((g - 1) / 4), 1.0 / 3, 0, false, NULL, 'email', NULL, 'live',
           date_trunc('day', now()) - interval '{DAYS} days' + (g * %(step)s) * interval '1 second'
    FROM generate_series(CAST(%(lo)s AS bigint), CAST(%(hi)s AS bigint)) g"""

# Decision g goes to subject (g - 1) / 4 (four decisions per subject, each subject always in one arm).
# Event k belongs to a random decision d; its type depends on a uniform draw, conversions a little more
# likely on mens and womens than on control; one in a thousand is unattributed.
EVENTS_SQL = f"""
    INSERT INTO events (event_id, experiment_id, assignment_id, subject_id, type, value, occurred_at,
                        received_at, attribution, unattributed_reason)
    SELECT 'e-' || k, %(eid)s,
           CASE WHEN unattributed THEN NULL ELSE lpad(to_hex(d), 32, '0') END, 's-' || ((d - 1) / 4), type,
           CASE WHEN type = 'conversion' THEN round((10 + 90 * r2)::numeric, 2)::float8 END,
           occurred, occurred + interval '30 seconds',
           CASE WHEN unattributed THEN 'unattributed' ELSE 'assignment' END,
           CASE WHEN unattributed THEN 'outside_window' END
    FROM (
      SELECT k, d, r2, k %% 1000 = 0 AS unattributed,
             date_trunc('day', now()) - interval '{DAYS} days' + (d * %(step)s) * interval '1 second'
               + r2 * interval '2 days' AS occurred,
             CASE WHEN r < 0.60 THEN 'open'
                  WHEN r < 0.88 THEN 'click'
                  WHEN r < 0.91 + 0.006 * (((d - 1) / 4) %% 3) THEN 'conversion'
                  WHEN r < 0.995 THEN 'open'
                  ELSE 'unsubscribe' END AS type
      FROM (SELECT k, 1 + floor(random() * %(n)s)::int AS d, random() AS r, random() AS r2
            FROM (SELECT setseed(%(seed)s)) seeded, generate_series(CAST(%(lo)s AS bigint), CAST(%(hi)s AS bigint)) k) raw
    ) e"""

OUTCOMES_SQL = """
    INSERT INTO decision_outcomes (assignment_id, experiment_id, arm_key, day, propensity, holdout,
                                   covariate, opens, clicks, conversions, unsubscribes, custom, revenue,
                                   first_reward_at{received}, updated_at)
    SELECT a.id, a.experiment_id, a.arm_key, (a.created_at AT TIME ZONE 'UTC')::date, a.propensity,
           a.holdout, a.covariate, e.opens, e.clicks, e.conversions, e.unsubscribes, 0, e.revenue,
           e.first_reward_at{received_value}, now()
    FROM (SELECT assignment_id,
                 count(*) FILTER (WHERE type = 'open') AS opens,
                 count(*) FILTER (WHERE type = 'click') AS clicks,
                 count(*) FILTER (WHERE type = 'conversion') AS conversions,
                 count(*) FILTER (WHERE type = 'unsubscribe') AS unsubscribes,
                 coalesce(sum(value) FILTER (WHERE type = 'conversion'), 0) AS revenue,
                 min(occurred_at) FILTER (WHERE type = 'conversion') AS first_reward_at,
                 min(received_at) FILTER (WHERE type = 'conversion') AS reward_received_at
          FROM events WHERE attribution <> 'unattributed' AND assignment_id >= %(lo)s AND assignment_id < %(hi)s
          GROUP BY assignment_id) e
    JOIN assignments a ON a.id = e.assignment_id
    ORDER BY a.id"""


def load(db: Database, experiment_id: int, decisions: int, events: int, parts: int = 2) -> dict[str, float]:
    """Fill the three tables consistently, `parts` connections side by side; returns seconds per step."""
    steps: dict[str, float] = {}

    def timed(name: str, statements: list[tuple[str, Any]]) -> None:
        t0 = time.perf_counter()
        _parallel(db, statements)
        steps[name] = time.perf_counter() - t0
        log(f"  {name}: {steps[name]:.1f} s")

    def ranges(n: int) -> list[tuple[int, int]]:
        bounds = [1 + n * i // parts for i in range(parts + 1)]
        return [(bounds[i], bounds[i + 1] - 1) for i in range(parts)]

    with db.connect(autocommit=True) as conn:
        # Secondary indexes that no constraint needs: drop now, rebuild after the load.
        indexes = conn.execute(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = 'public' AND i.tablename = ANY(%s) "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)", (list(TABLES),)).fetchall()
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        outcome_columns = _columns(conn, "decision_outcomes")

    step = DAYS * 86400.0 / decisions
    common = {"eid": experiment_id, "n": decisions, "step": step}
    timed("assignments", [(ASSIGNMENTS_SQL, {**common, "lo": lo, "hi": hi}) for lo, hi in ranges(decisions)])
    timed("events", [(EVENTS_SQL, {**common, "lo": lo, "hi": hi, "seed": 0.1 + 0.1 * i})
                     for i, (lo, hi) in enumerate(ranges(events))])
    received = ", reward_received_at" if "reward_received_at" in outcome_columns else ""
    sql = OUTCOMES_SQL.format(received=received, received_value=", e.reward_received_at" if received else "")
    id_bounds = ["0" * 32] + [f"{lo:032x}" for lo, _ in ranges(decisions)[1:]] + ["g" * 32]
    timed("decision_outcomes", [(sql, {"lo": id_bounds[i], "hi": id_bounds[i + 1]}) for i in range(parts)])
    with db.connect(autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '512MB'")
        t0 = time.perf_counter()
        for _, definition in indexes:
            conn.execute(definition)
        steps["indexes"] = time.perf_counter() - t0
        log(f"  rebuilt {len(indexes)} indexes: {steps['indexes']:.1f} s")
        t0 = time.perf_counter()
        for table in TABLES:
            conn.execute(f"VACUUM ANALYZE {table}")
        steps["vacuum analyze"] = time.perf_counter() - t0
        log(f"  vacuum analyze: {steps['vacuum analyze']:.1f} s")
    return steps


def check_consistency(db: Database, experiment_id: int) -> str:
    with db.connect() as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM assignments WHERE experiment_id = %(e)s), "
            "(SELECT count(*) FROM events WHERE experiment_id = %(e)s), "
            "(SELECT count(*) FROM decision_outcomes WHERE experiment_id = %(e)s)", {"e": experiment_id}).fetchone()
        by_type = dict(conn.execute(
            "SELECT type, count(*) FROM events WHERE experiment_id = %s AND attribution <> 'unattributed' "
            "GROUP BY type", (experiment_id,)).fetchall())
        sums = conn.execute(
            "SELECT sum(opens), sum(clicks), sum(conversions), sum(unsubscribes) FROM decision_outcomes "
            "WHERE experiment_id = %s", (experiment_id,)).fetchone()
    expected = (by_type.get("open", 0), by_type.get("click", 0), by_type.get("conversion", 0),
                by_type.get("unsubscribe", 0))
    if tuple(int(x or 0) for x in sums) != expected:
        raise RuntimeError(f"decision_outcomes disagree with events: {sums} vs {expected}")
    return (f"{counts[0]:,} decisions, {counts[1]:,} events, {counts[2]:,} decisions with outcomes; summaries agree "
            f"with the events (open {expected[0]:,}, click {expected[1]:,}, conversion {expected[2]:,}, "
            f"unsubscribe {expected[3]:,})")


def in_process(db: Database, key: str) -> tuple[list[tuple[str, Any]], dict[str, float]]:
    """Build the report in this process as the endpoint does, capturing every SQL statement report_queries runs."""
    from sqlalchemy import event

    from reports import build_report, report_to_dict
    from service.store import db as db_module
    from service.app import create_app
    from service.store.report_queries import report_input
    from service.store import experiments as store

    app = create_app({"DATABASE_URL": db.url})
    engine = db_module.get_db(app).engine
    captured: list[tuple[str, Any]] = []
    capturing = [False]

    @event.listens_for(engine, "before_cursor_execute")
    def _capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if capturing[0]:
            captured.append((statement, parameters))

    times: dict[str, list[float]] = {"queries (SQLAlchemy)": [], "statistics": [], "to JSON": []}
    for attempt in range(3):
        with app.app_context():
            session = db_module.session()
            experiment = store.get(session, key)
            spec = store.spec_of(experiment)
            capturing[0] = attempt == 0
            t0 = time.perf_counter()
            inputs = report_input(session, experiment, spec)
            t1 = time.perf_counter()
            capturing[0] = False
            report = build_report(inputs)
            t2 = time.perf_counter()
            app.json.dumps(report_to_dict(report))
            t3 = time.perf_counter()
            session.close()
        times["queries (SQLAlchemy)"].append(t1 - t0)
        times["statistics"].append(t2 - t1)
        times["to JSON"].append(t3 - t2)
    db_module.get_db(app).dispose()
    return captured, {k: statistics.median(v) for k, v in times.items()}


def short(sql: str) -> str:
    """A statement's gist for the table: the table it aggregates and its grouping."""
    flat = re.sub(r"\b[a-z_]+\.", "", " ".join(sql.split()))
    source = flat.split(" FROM ", 1)[1].split(" ", 1)[0] if " FROM " in flat else "?"
    group = flat.split(" GROUP BY ", 1)[1].split(" ORDER BY")[0] if " GROUP BY " in flat else ""
    distinct = " (count distinct subject_id)" if "count(distinct" in flat else ""
    return source + (f" GROUP BY {group}" if group else " (no GROUP BY)") + distinct


def rebuild_rollups(db: Database) -> float:
    """The load bypassed the triggers (replica role): fill the rollups from the logs, as `nextbest rollups
    rebuild` does; returns the seconds it took."""
    from sqlalchemy.orm import Session

    from service.store import rollups
    from service.store.db import make_engine

    engine = make_engine(db.url)
    try:
        with Session(engine) as session:
            t0 = time.perf_counter()
            rollups.rebuild(session)
            session.commit()
            seconds = time.perf_counter() - t0
        with engine.connect() as conn:
            for table in ("subject_arm_sums", "arm_day_rollups", "arm_cluster_sums"):
                conn.exec_driver_sql(f"ANALYZE {table}")
            conn.commit()
    finally:
        engine.dispose()
    log(f"  rollups rebuilt from the logs: {seconds:.1f} s")
    return seconds


def prepare(bench: Bench, args: argparse.Namespace, decisions: int) -> dict[str, Any]:
    """A database with `decisions` decisions (and their events), its rollups rebuilt, and a service on it."""
    events = decisions * args.events_per_decision
    db = bench.database()
    api = bench.service(db, name=f"report-{decisions}")
    log(f"service on :{api.server.port}, database {db.name}")
    experiment = api.create_experiment(SPEC)
    eid = int(experiment["id"])
    log(f"loading {decisions:,} decisions and {events:,} events")
    t0 = time.perf_counter()
    steps = load(db, eid, decisions, events)
    steps["rollups rebuild"] = rebuild_rollups(db)
    load_seconds = time.perf_counter() - t0
    consistency = check_consistency(db, eid)
    log(f"loaded in {load_seconds:.1f} s; {consistency}")
    statements, stages = in_process(db, SPEC["key"])
    warm = api.call("GET", f"/v1/experiments/{SPEC['key']}/report")
    body = warm.json()
    with db.connect() as conn:
        sizes = conn.execute(
            "SELECT pg_total_relation_size('assignments') + pg_total_relation_size('events') "
            "+ pg_total_relation_size('decision_outcomes'), pg_total_relation_size('subject_arm_sums'), "
            "pg_total_relation_size('arm_day_rollups') + pg_total_relation_size('arm_cluster_sums')").fetchone()
    return {"decisions": decisions, "events": events, "db": db, "api": api, "statements": statements,
            "stages": stages, "first": warm.elapsed.total_seconds(), "steps": steps, "load": load_seconds,
            "consistency": consistency, "arms": [a.get("arm") for a in body.get("arms", [])],
            "reported_decisions": sum(a.get("decisions", 0) for a in body.get("arms", [])),
            "log_bytes": int(sizes[0]), "subject_bytes": int(sizes[1]), "rollup_bytes": int(sizes[2]),
            "samples": [], "floors": [], "per_query": [[] for _ in statements]}


def sample(state: dict[str, Any], conn: Any) -> None:
    """One report through the service, then its queries replayed directly (the floor)."""
    t0 = time.perf_counter()
    response = state["api"].call("GET", f"/v1/experiments/{SPEC['key']}/report")
    response.content  # noqa: B018 - read it all
    state["samples"].append(time.perf_counter() - t0)
    floor = 0.0
    for i, (sql, params) in enumerate(state["statements"]):
        t0 = time.perf_counter()
        cursor = conn.execute(sql, params)
        if cursor.description is not None:  # settings such as SET LOCAL return no rows
            cursor.fetchall()
        state["per_query"][i].append(time.perf_counter() - t0)
        floor += state["per_query"][i][-1]
    conn.rollback()
    state["floors"].append(floor)


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every size loaded first, then the reports of all sizes requested in turn, so that each size's
    samples see the same machine (its speed drifts by a third within minutes here)."""
    with Bench("report") as bench:
        states = [prepare(bench, args, n) for n in args.sizes]
        connections = [state["db"].connect(options="-c timezone=UTC") for state in states]
        try:
            for _ in range(args.repeat):
                for state, conn in zip(states, connections):
                    sample(state, conn)
        finally:
            for conn in connections:
                conn.close()
        for state in states:
            state["endpoint"] = statistics.median(state["samples"])
            state["floor"] = statistics.median(state["floors"])
            state["statements"] = [(sql, statistics.median(t))
                                   for (sql, _), t in zip(state["statements"], state["per_query"])]
            log(f"  {state['decisions']:,}: endpoint median {state['endpoint']:.3f} s of "
                f"{[round(x, 3) for x in state['samples']]}; floor median {state['floor']:.4f} s")
            for key in ("db", "api", "per_query"):
                del state[key]
    return states


def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MB" if n >= 2**20 else f"{n / 2**10:,.0f} kB"


def run(args: argparse.Namespace) -> None:
    results = measure(args)
    rows = []
    for r in results:
        ratio = r["endpoint"] / r["floor"] if r["floor"] else float("nan")
        rows.append([f"{r['decisions']:,}", f"{r['events']:,}", fmt_s(r["endpoint"], 3), fmt_s(r["floor"], 3),
                     fmt_ratio(ratio), fmt_s(r["stages"]["queries (SQLAlchemy)"], 3), fmt_s(r["first"], 3),
                     fmt_s(r["steps"]["rollups rebuild"], 1), _mb(r["log_bytes"]), _mb(r["subject_bytes"]),
                     _mb(r["rollup_bytes"]), "< 0.5 s", verdict(r["endpoint"] < 0.5)])
    notes = [machine_note()]
    if len(results) > 1:
        small, large = results[0], results[-1]
        growth = large["endpoint"] / small["endpoint"] if small["endpoint"] else float("nan")
        notes.append(f"report time at {large['decisions']:,} / at {small['decisions']:,} decisions: "
                     f"{fmt_ratio(growth)} (target < 1.5: {verdict(growth < 1.5)})")
    for r in results:
        notes.append(f"{r['decisions']:,}: {r['consistency']}; report counts {r['reported_decisions']:,} decisions "
                     f"(arms {', '.join(map(str, r['arms']))}); loaded in {r['load']:.1f} s ("
                     + ", ".join(f"{k} {v:.1f} s" for k, v in r["steps"].items()) + "); endpoint samples (s): "
                     + ", ".join(f"{s:.3f}" for s in r["samples"]) + "; floor samples (s): "
                     + ", ".join(f"{s:.3f}" for s in r["floors"]))
    print_table(
        "GET /v1/experiments/{key}/report, fixed split with 3 arms over 14 days, served from the rollups",
        ["decisions", "events", "report (median)", "floor", "x floor", "report_input in process", "first call",
         "rollups rebuild (s)", "logs on disk", "subject sums", "rollups", "target", "met"],
        rows, notes)
    for r in results:
        ranked = sorted(r["statements"], key=lambda x: -x[1])
        print_table(f"The report's queries at {r['decisions']:,} decisions, slowest first (median of direct runs)",
                    ["#", "query", "seconds"],
                    [[str(i + 1), short(sql), fmt_s(t, 4)] for i, (sql, t) in enumerate(ranked)])
        if args.show_sql:
            for sql, t in ranked:
                print(f"\n-- {t:.3f} s\n{sql}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=lambda text: [int(float(x)) for x in text.split(",")],
                        default=[1_000_000, 20_000_000], help="decision counts, comma-separated (default 1e6,2e7)")
    parser.add_argument("--events-per-decision", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--show-sql", action="store_true", help="print each captured statement to stderr")
    run(parser.parse_args())


if __name__ == "__main__":
    os.environ.setdefault("NEXTBEST_LOG_LEVEL", "WARNING")
    main()
