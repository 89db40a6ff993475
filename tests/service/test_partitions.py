"""Partitioned decision and event logs (PostgreSQL): the migration, the write paths, exactly-once
ingestion, partitions kept ahead, retention by dropping partitions, and its refusal rule."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from service import clock, create_app
from service.cli import main
from service.jobs.scheduler import run_once
from service.store import db as db_module
from service.store import rollups
from service.store.partitions import (RetentionRefused, ensure, is_partitioned, list_partitions, maintain,
                                      needs_of_running, retire, retired_before, week_of)
from tests.conftest import PG_URL, Api, _fresh_database, api_for, send_at_once
from tests.examples import spring_email

LOGS = ("assignments", "events", "decision_outcomes", "decision_custom_outcomes")
# The revision 0014 follows (the report rollups' 0013, whose triggers on the logs must survive it, once merged).
BEFORE = ScriptDirectory.from_config(db_module.alembic_config("sqlite://")).get_revision("0014").down_revision
DAY = 86400


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    if not PG_URL:
        pytest.skip("TEST_DATABASE_URL is not set")
    yield from _fresh_database("postgresql", tmp_path)


@pytest.fixture
def pg_app(pg_url: str) -> Iterator[Any]:
    db_module.upgrade(pg_url)
    app = create_app({"DATABASE_URL": pg_url, "TESTING": True, "NEXTBEST_POLICY_REFRESH_SECONDS": 0.0})
    yield app
    db_module.get_db(app).dispose()


@pytest.fixture
def api(pg_app: Any) -> Api:
    return api_for(pg_app)


def sql(url: str, statement: str, **params: Any) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


def add_counting_triggers(url: str, table: str = "assignments") -> None:
    """Statement-level triggers with transition tables, as the report rollups use: they log how many rows
    each INSERT and DELETE on `table` carried."""
    sql(url, "CREATE TABLE IF NOT EXISTS trigger_log (tab text, op text, n bigint)")
    sql(url, f"""CREATE OR REPLACE FUNCTION count_{table}_in() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO trigger_log SELECT '{table}', 'insert', count(*) FROM new_rows; RETURN NULL; END $$""")
    sql(url, f"""CREATE OR REPLACE FUNCTION count_{table}_out() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO trigger_log SELECT '{table}', 'delete', count(*) FROM old_rows; RETURN NULL; END $$""")
    sql(url, f"""CREATE OR REPLACE FUNCTION count_{table}_up() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO trigger_log SELECT '{table}', 'update', count(*) FROM new_rows; RETURN NULL; END $$""")
    sql(url, f"CREATE TRIGGER nb_test_{table}_up AFTER UPDATE ON {table} REFERENCING OLD TABLE AS old_rows "
             f"NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION count_{table}_up()")
    sql(url, f"CREATE TRIGGER nb_test_{table}_in AFTER INSERT ON {table} REFERENCING NEW TABLE AS new_rows "
             f"FOR EACH STATEMENT EXECUTE FUNCTION count_{table}_in()")
    sql(url, f"CREATE TRIGGER nb_test_{table}_out AFTER DELETE ON {table} REFERENCING OLD TABLE AS old_rows "
             f"FOR EACH STATEMENT EXECUTE FUNCTION count_{table}_out()")


def trigger_rows(url: str, table: str, op: str) -> int:
    rows = sql(url, "SELECT coalesce(sum(n), 0) FROM trigger_log WHERE tab = :t AND op = :op", t=table, op=op)
    return int(rows[0][0])


def where(url: str, table: str, column: str, value: Any) -> list[str]:
    """The partitions holding `table`'s rows whose `column` is `value`."""
    return sorted(r[0] for r in sql(url, f"SELECT tableoid::regclass::text FROM {table} WHERE {column} = :v", v=value))


def week_name(table: str, moment: datetime | date) -> str:
    moment = moment if isinstance(moment, datetime) else datetime(moment.year, moment.month, moment.day,
                                                                   tzinfo=timezone.utc)
    return f"{table}_p{week_of(moment):%Y%m%d}"


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def session_of(app: Any) -> Any:
    return db_module.get_db(app).session()


# --------------------------------------------------------------------------- the migration


@pytest.mark.postgres
def triggers_on(url: str, table: str) -> set[str]:
    return {r[0] for r in sql(url, "SELECT tgname FROM pg_trigger WHERE tgrelid = to_regclass(:t) AND NOT tgisinternal",
                              t=table)}


def test_the_migration_partitions_the_logs_keeping_rows_and_triggers(pg_url: str) -> None:
    db_module.upgrade(pg_url, BEFORE)
    now = datetime.now(timezone.utc)
    old, recent = now - timedelta(days=800), now - timedelta(days=8)
    sql(pg_url, "INSERT INTO experiments (id, key, name, description, status, spec, salt, holdback, revision, "
                "created_at, updated_at) VALUES (1, 'x', 'x', '', 'running', '{}', 's', 0, 1, now(), now())")
    for n, moment in enumerate((old, recent, now)):
        sql(pg_url, "INSERT INTO assignments (id, experiment_id, arm_key, subject_id, propensity, policy_version, "
                    "holdout, source, created_at) VALUES (:id, 1, 'a', :s, 0.5, 0, false, 'live', :t)",
            id=f"d{n}", s=f"s{n}", t=moment)
        sql(pg_url, "INSERT INTO decision_outcomes (assignment_id, experiment_id, arm_key, day, propensity, holdout, "
                    "opens, clicks, conversions, unsubscribes, custom, revenue, updated_at) "
                    "VALUES (:id, 1, 'a', :day, 0.5, false, 0, 1, 0, 0, 1, 0, now())", id=f"d{n}", day=moment.date())
        sql(pg_url, "INSERT INTO decision_custom_outcomes (assignment_id, event_type, experiment_id, arm_key, count) "
                    "VALUES (:id, 'coupon', 1, 'a', 1)", id=f"d{n}")
        sql(pg_url, "INSERT INTO events (event_id, experiment_id, assignment_id, subject_id, type, occurred_at, "
                    "received_at, attribution) VALUES (:e, 1, :id, :s, 'click', :t, :t, 'assignment')",
            e=f"e{n}", id=f"d{n}", s=f"s{n}", t=moment)
    add_counting_triggers(pg_url)
    before = {table: triggers_on(pg_url, table) for table in LOGS}
    assert {"nb_test_assignments_in", "nb_test_assignments_out", "nb_test_assignments_up"} <= before["assignments"]

    db_module.upgrade(pg_url)
    kinds = dict(sql(pg_url, "SELECT relname, relkind::text FROM pg_class WHERE oid IN (SELECT to_regclass(t) "
                             "FROM unnest(CAST(:t AS text[])) AS t)", t=list(LOGS)))
    assert kinds == {table: "p" for table in LOGS}
    for table in LOGS:
        assert sql(pg_url, f"SELECT count(*) FROM {table}")[0][0] == 3, table
    assert where(pg_url, "assignments", "id", "d0") == [week_name("assignments", old)]
    assert where(pg_url, "events", "event_id", "e1") == [week_name("events", recent)]
    assert where(pg_url, "decision_outcomes", "assignment_id", "d2") == [week_name("decision_outcomes", now.date())]
    assert sql(pg_url, "SELECT assignment_id, day FROM decision_custom_outcomes ORDER BY 1") == \
        [("d0", old.date()), ("d1", recent.date()), ("d2", now.date())]
    assert sorted(r[0] for r in sql(pg_url, "SELECT event_id FROM event_keys")) == ["e0", "e1", "e2"]
    assert sql(pg_url, "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'assignments_pkey' "
                       "AND conrelid = to_regclass('assignments')") == [("PRIMARY KEY (id, created_at)",)]

    # The copy into the partitions fired nothing; the triggers are on the partitioned table and fire for
    # rows routed into its partitions (including the default one).
    assert trigger_rows(pg_url, "assignments", "insert") == 0
    assert {table: triggers_on(pg_url, table) for table in LOGS} == before
    sql(pg_url, "INSERT INTO assignments (id, experiment_id, arm_key, subject_id, propensity, policy_version, holdout, "
                "source, created_at) VALUES ('n1', 1, 'a', 's', 0.5, 0, false, 'live', now()), "
                "('n2', 1, 'a', 's', 0.5, 0, false, 'import', '1999-01-01T00:00:00Z')")
    assert trigger_rows(pg_url, "assignments", "insert") == 2
    assert where(pg_url, "assignments", "id", "n2") == ["assignments_default"]

    command.downgrade(db_module.alembic_config(pg_url), BEFORE)
    kinds = dict(sql(pg_url, "SELECT relname, relkind::text FROM pg_class WHERE oid IN (SELECT to_regclass(t) "
                             "FROM unnest(CAST(:t AS text[])) AS t)", t=list(LOGS)))
    assert kinds == {table: "r" for table in LOGS}
    assert sql(pg_url, "SELECT count(*) FROM assignments")[0][0] == 5
    assert sql(pg_url, "SELECT count(*) FROM events")[0][0] == 3
    assert trigger_rows(pg_url, "assignments", "insert") == 2  # the copy back fired nothing either
    assert {table: triggers_on(pg_url, table) for table in LOGS} == before
    assert sql(pg_url, "SELECT count(*) FROM pg_constraint WHERE conname = 'events_event_id_key'")[0][0] == 1
    db_module.upgrade(pg_url)
    assert sql(pg_url, "SELECT count(*) FROM assignments")[0][0] == 5


# --------------------------------------------------------------------------- the write paths


@pytest.mark.postgres
def test_decisions_events_and_imports_land_in_partitions(pg_app: Any, pg_url: str, api: Api) -> None:
    api.create_experiment(spring_email(contact_policy=None, custom_events=["coupon_used"]), start=True)
    now = clock.utcnow()
    single = api.assign("spring-email", "s-1")
    batch = api.assign_batch("spring-email", [{"subject_id": f"b-{i}"} for i in range(2500)])  # COPY
    assert where(pg_url, "assignments", "id", single["assignment_id"]) == [week_name("assignments", now)]
    assert sql(pg_url, "SELECT count(DISTINCT tableoid) FROM assignments WHERE subject_id LIKE 'b-%'") == [(1,)]
    answer = api.send_events([
        {"event_id": "ev-1", "type": "click", "assignment_id": single["assignment_id"], "occurred_at": iso(now)},
        {"event_id": "ev-2", "type": "coupon_used", "assignment_id": batch[0]["assignment_id"],
         "occurred_at": iso(now)}])
    assert answer["accepted"] == 2
    assert where(pg_url, "events", "event_id", "ev-1") == [week_name("events", now)]
    assert where(pg_url, "decision_outcomes", "assignment_id", single["assignment_id"]) == \
        [week_name("decision_outcomes", now.date())]
    assert where(pg_url, "decision_custom_outcomes", "assignment_id", batch[0]["assignment_id"]) == \
        [week_name("decision_custom_outcomes", now.date())]

    # History years old, and a row without a time (stamped with the import's), both accepted; sent again,
    # nothing is imported twice.
    history = "\n".join(json.dumps(row) for row in (
        {"subject_id": "h-1", "arm": "mens", "decided_at": "2019-03-04T10:00:00Z", "click": 1},
        {"subject_id": "h-2", "arm": "womens", "decided_at": "2019-03-05T10:00:00Z", "coupon_used": 2},
        {"subject_id": "h-3", "arm": "control"})).encode()
    for expected in (3, 0):
        response = api.client.post("/v1/experiments/spring-email/import", data=history,
                                   content_type="application/x-ndjson", headers=api.headers("analyst"))
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["imported"] == expected
    (old_id,), = sql(pg_url, "SELECT id FROM assignments WHERE subject_id = 'h-1'")
    assert where(pg_url, "assignments", "id", old_id) == ["assignments_default"]
    assert where(pg_url, "decision_outcomes", "assignment_id", old_id) == ["decision_outcomes_default"]
    assert sql(pg_url, "SELECT count(*) FROM decision_custom_outcomes WHERE day = '2019-03-05'") == [(1,)]
    answer = api.send_events([{"event_id": "late", "type": "open", "assignment_id": old_id, "occurred_at": iso(now)}])
    assert answer["accepted"] == 1 and answer["results"][0]["attribution"] == "unattributed"

    # A decision stamped three years ahead lands in the default partition; making that week's partition
    # moves it there, without firing the table's statement triggers (a DELETE would have undone rollups).
    add_counting_triggers(pg_url)
    clock.advance(3 * 365 * DAY)
    try:
        future = api.assign("spring-email", "s-future")
        future_at = clock.utcnow()
    finally:
        clock.reset()
    assert where(pg_url, "assignments", "id", future["assignment_id"]) == ["assignments_default"]
    assert trigger_rows(pg_url, "assignments", "insert") == 1
    with session_of(pg_app) as session:
        created = ensure(session, future_at, ahead_weeks=0)
    assert week_name("assignments", future_at) in created
    assert where(pg_url, "assignments", "id", future["assignment_id"]) == [week_name("assignments", future_at)]
    assert (trigger_rows(pg_url, "assignments", "insert"), trigger_rows(pg_url, "assignments", "delete")) == (1, 0)
    with session_of(pg_app) as session:
        assert ensure(session, future_at, ahead_weeks=0) == []  # idempotent


@pytest.mark.postgres
def test_each_event_is_stored_once_through_the_key_table(pg_app: Any, pg_url: str, api: Api) -> None:
    add_counting_triggers(pg_url, "decision_outcomes")
    api.create_experiment(spring_email(contact_policy=None), start=True)
    decisions = api.assign_batch("spring-email", [{"subject_id": f"s{i}"} for i in range(100)])
    now = iso(clock.utcnow())
    events = [{"event_id": f"ev-{d['assignment_id']}", "type": "click", "assignment_id": d["assignment_id"],
               "occurred_at": now} for d in decisions]
    assert api.send_events(events[:10])["accepted"] == 10
    again = api.send_events(events[:10] + events[:10])
    assert (again["accepted"], again["duplicates"]) == (0, 20)
    opens = [{**e, "event_id": f"open-{e['event_id']}", "type": "open"} for e in events[:5]]
    assert api.send_events(opens)["accepted"] == 5
    # Statement triggers on the partitioned summaries see the upsert's inserts and updates.
    assert (trigger_rows(pg_url, "decision_outcomes", "insert"), trigger_rows(pg_url, "decision_outcomes", "update")) \
        == (10, 5)

    answers = [r.get_json() for r in send_at_once(pg_url, events, api.headers("channel"))]
    assert sum(a["accepted"] for a in answers) == 90
    assert sql(pg_url, "SELECT count(*), count(DISTINCT event_id) FROM events") == [(105, 105)]
    assert sql(pg_url, "SELECT count(*) FROM event_keys") == [(105,)]
    assert sql(pg_url, "SELECT sum(clicks) FROM decision_outcomes") == [(100,)]


# --------------------------------------------------------------------------- retention


@pytest.mark.postgres
def test_retention_drops_old_partitions_keeps_new_ones_and_records_them(pg_app: Any, pg_url: str, api: Api) -> None:
    add_counting_triggers(pg_url, "assignments")
    add_counting_triggers(pg_url, "decision_outcomes")
    api.create_experiment(spring_email(key="old-offer", contact_policy=None, custom_events=["coupon_used"]),
                          start=True)
    clock.advance(-120 * DAY)  # decisions and events of four months ago: in the default partitions
    try:
        old = [api.assign("old-offer", subject) for subject in ("a-1", "a-2")]
        old_at = clock.utcnow()
        api.send_events([{"event_id": f"old-{i}-{t}", "type": t, "assignment_id": d["assignment_id"],
                          "occurred_at": iso(old_at)} for i, d in enumerate(old) for t in ("click", "coupon_used")])
    finally:
        clock.reset()
    assert api.call("POST", "/v1/experiments/old-offer/conclude", json={}).status_code == 200
    api.create_experiment(spring_email(key="new-offer", contact_policy=None, attribution_window_seconds=DAY),
                          start=True)
    new = [api.assign("new-offer", subject) for subject in ("a-1", "a-3")]
    api.send_events([{"event_id": f"new-{i}", "type": "click", "assignment_id": d["assignment_id"],
                      "occurred_at": iso(clock.utcnow())} for i, d in enumerate(new)])
    inserted = trigger_rows(pg_url, "assignments", "insert")
    report_before = api.report("old-offer")

    now = clock.utcnow()
    old_week = week_of(old_at)
    with session_of(pg_app) as session:
        plan = retire(session, 30, now, dry_run=True)
    assert {(p["table"], p["from"]) for p in plan["retired"]} >= {
        (table, f"{old_week.isoformat()}T00:00:00+00:00") for table in LOGS}
    assert sql(pg_url, "SELECT count(*) FROM assignments") == [(4,)]  # a dry run drops nothing

    with session_of(pg_app) as session:
        result = retire(session, 30, now)
    retired = {p["partition"] for p in result["retired"]}
    assert {week_name(table, old_week) for table in LOGS} <= retired
    assert all(datetime.fromisoformat(p["to"]) <= now - timedelta(days=30) for p in result["retired"])
    for table, column in (("assignments", "id"), ("decision_outcomes", "assignment_id")):
        assert sql(pg_url, f"SELECT {column} FROM {table} ORDER BY 1") == sorted((d["assignment_id"],) for d in new)
    assert sql(pg_url, "SELECT event_id FROM events ORDER BY 1") == [("new-0",), ("new-1",)]
    assert sql(pg_url, "SELECT count(*) FROM decision_custom_outcomes") == [(0,)]
    assert sql(pg_url, "SELECT event_id FROM event_keys ORDER BY 1") == [("new-0",), ("new-1",)]
    assert result["event_keys_pruned"] == 4
    # Dropping fired no DELETE trigger: rollups kept by such triggers keep the retired rows' totals.
    for table in ("assignments", "decision_outcomes"):
        assert trigger_rows(pg_url, table, "delete") == 0
    assert trigger_rows(pg_url, "assignments", "insert") == inserted  # moving out of the default fired nothing
    recorded = sql(pg_url, "SELECT table_name, partition_name, retired_before FROM log_retention")
    assert {(t, n) for t, n, _ in recorded} >= {(table, week_name(table, old_week)) for table in LOGS}
    with session_of(pg_app) as session:
        assert retired_before(session, "assignments") == max(b for t, _, b in recorded if t == "assignments")
        assert retired_before(session, "assignments") <= now - timedelta(days=30)
        assert not [p for p in list_partitions(session) if p.end and p.end <= now - timedelta(days=30)]

    # The report keeps the retired decisions' totals (its rollups), and refuses to be rebuilt without them.
    # Custom events are counted from the logs (README): those retired are gone from the report.
    report_after = api.report("old-offer")

    def built_in(report: dict[str, Any]) -> list[Any]:
        return [(a["arm"], a["decisions"], a["subjects"], {k: a["event_counts"][k] for k in
                 ("open", "click", "conversion", "unsubscribe")}, a["revenue_total"]) for a in report["arms"]]

    assert built_in(report_after) == built_in(report_before)
    assert sum(a["event_counts"]["click"] for a in report_after["arms"]) == 2
    assert sum(a["decisions"] for a in report_after["arms"]) == 2
    with session_of(pg_app) as session:
        ids = dict(session.execute(text("SELECT key, id FROM experiments")).all())
        with pytest.raises(ValueError, match="cannot be rebuilt"):
            rollups.rebuild(session, [ids["old-offer"]])
        session.rollback()
        rollups.rebuild(session, [ids["new-offer"]])  # nothing of it was retired
        assert rollups.verify(session, ids["new-offer"]) == []

    # An event sent again after its key was pruned is stored again (its decision is gone: unattributed).
    again = api.send_events([{"event_id": "old-0-click", "type": "click", "assignment_id": old[0]["assignment_id"],
                              "occurred_at": iso(now)}])
    assert again["accepted"] == 1 and again["results"][0]["reason"] == "unknown_assignment"

    # Erasure still finds the subject's rows in every partition left.
    response = api.call("DELETE", "/v1/subjects/a-1", scope="admin")
    assert response.status_code == 200 and response.get_json()["erased"]["decisions"] == 1
    assert sql(pg_url, "SELECT count(*) FROM assignments WHERE subject_id = 'a-1'") == [(0,)]
    assert sql(pg_url, "SELECT count(*) FROM events WHERE subject_id = 'a-1'") == [(0,)]
    assert sql(pg_url, "SELECT subject_id FROM assignments") == [("a-3",)]


@pytest.mark.postgres
def test_retention_refuses_a_cutoff_running_experiments_still_read(pg_app: Any, api: Api) -> None:
    now = clock.utcnow()
    api.create_experiment(spring_email(key="ab-test", contact_policy=None), start=True)  # window: 14 days
    with session_of(pg_app) as session:
        with pytest.raises(RetentionRefused, match="ab-test"):
            retire(session, 7, now)
        assert retire(session, 15, now)["retired"] == []
    assert api.call("POST", "/v1/experiments/ab-test/conclude", json={}).status_code == 200

    bandit = {"key": "windowed", "name": "windowed bandit", "arms": spring_email()["arms"],
              "allocation": {"type": "bandit", "policy": {"name": "thompson_sampling"}, "training_window_days": 10},
              "reward": {"event": "conversion"}, "attribution_window_seconds": DAY}
    api.create_experiment(bandit, start=True)
    with session_of(pg_app) as session:
        needs = {n["experiment"]: n["since"] for n in needs_of_running(session, now)}
        assert needs["windowed"] == now - timedelta(days=11, minutes=5)
        with pytest.raises(RetentionRefused, match="windowed"):
            retire(session, 11, now)  # 11 days < 1 day of attribution + 5 min of skew + 10 days of training
        retire(session, 12, now)

    # A bandit without a training window trains on every decision it ever made.
    api.create_experiment({**bandit, "key": "unwindowed", "allocation": {
        "type": "bandit", "policy": {"name": "thompson_sampling"}}}, start=True)
    clock.advance(-60 * DAY)
    try:
        api.assign("unwindowed", "early-bird")
    finally:
        clock.reset()
    with session_of(pg_app) as session:
        with pytest.raises(RetentionRefused, match="unwindowed"):
            retire(session, 30, now)
        retire(session, 61, now)
    assert api.call("POST", "/v1/experiments/unwindowed/conclude", json={}).status_code == 200
    with session_of(pg_app) as session:
        retire(session, 30, now)  # concluded: its reports read the rollups


# --------------------------------------------------------------------------- the command line and the job


def nextbest(url: str, *args: str, **env: str) -> Any:
    return CliRunner().invoke(main, list(args), env={"DATABASE_URL": url, "NEXTBEST_LOG_RETENTION_DAYS": "", **env})


@pytest.mark.postgres
def test_the_partitions_commands_and_job(pg_app: Any, pg_url: str, api: Api) -> None:
    listed = nextbest(pg_url, "partitions", "list")
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.output.splitlines()]
    assert {r["partition"] for r in rows if r["default"]} == {f"{t}_default" for t in LOGS}
    assert sum(1 for r in rows if r["table"] == "assignments" and not r["default"]) == 6  # last week to 4 ahead

    ensured = nextbest(pg_url, "partitions", "ensure", "--ahead-weeks", "6")
    assert ensured.exit_code == 0, ensured.output
    assert len(json.loads(ensured.output)["created"]) == 2 * len(LOGS)

    assert nextbest(pg_url, "partitions", "retire").exit_code == 1  # no retention set, none given
    dry = nextbest(pg_url, "partitions", "retire", "--dry-run", NEXTBEST_LOG_RETENTION_DAYS="30")
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.output)["dry_run"] is True
    api.create_experiment(spring_email(contact_policy=None), start=True)
    refused = nextbest(pg_url, "partitions", "retire", "--days", "3")
    assert refused.exit_code == 4 and "spring-email" in refused.output

    summary = run_once(db_module.get_db(pg_app), "test-holder")
    assert summary["partitions"] == {"partitioned": True, "created": []}
    with session_of(pg_app) as session:
        assert is_partitioned(session)
        assert maintain(session, "test-holder", 3) == {"partitioned": True, "created": [], "retention": "refused"}
        assert maintain(session, "test-holder", 3) == {"partitioned": True, "created": []}  # once an hour


def test_sqlite_keeps_single_tables_and_retention_does_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nextbest.sqlite3'}"
    db_module.upgrade(url)
    result = nextbest(url, "partitions", "retire", "--days", "30")
    assert result.exit_code == 0 and "does nothing on SQLite" in result.output
    assert "single tables" in nextbest(url, "partitions", "list").output
    database = db_module.Database(url)
    try:
        assert run_once(database, "test-holder")["partitions"] == {"partitioned": False}
        with database.session() as session:
            assert not is_partitioned(session) and retire(session, 30)["retired"] == []
    finally:
        database.dispose()
