"""Bulk reads and writes: the driver-level lookup and the JSON documents, on both databases."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import select, text

from service.store import db as db_module
from service.store.bulk import bulk_write, column_recordset, json_columns, json_rows, select_in
from service.store.models import Assignment, DecisionOutcome, Experiment, unique_key
from tests.conftest import spring_email

MOMENT = datetime(2026, 11, 24, 9, 30, 0, 123456, tzinfo=timezone.utc)


@pytest.fixture
def decisions(api: Any) -> list[str]:
    api.create_experiment(spring_email(contact_policy=None), start=True)
    return [api.assign("spring-email", f"c-{i}")["assignment_id"] for i in range(3)]


def test_select_in_answers_what_a_select_would(app: Any, decisions: list[str]) -> None:
    columns = (Assignment.id, Assignment.experiment_id, Assignment.subject_id, Assignment.created_at,
               Assignment.propensity, Assignment.holdout, Assignment.covariate, Assignment.channel)
    with db_module.get_db(app).session() as session:
        expected = {row[0]: tuple(row) for row in session.execute(select(*columns))}
        found = select_in(session, columns, Assignment.id, [*decisions[:2], "0" * 32])
        assert {row[0]: row for row in found} == {k: expected[k] for k in decisions[:2]}
        assert all(row[3].utcoffset() is not None for row in found)  # aware timestamps
        experiment_id = expected[decisions[0]][1]
        by_int = select_in(session, (Experiment.key, Experiment.spec), Experiment.id, [experiment_id, 10**6])
        assert [(key, spec["reward"]["event"]) for key, spec in by_int] == [("spring-email", "conversion")]
        assert select_in(session, columns, Assignment.id, []) == []


def test_json_documents_hold_the_same_rows() -> None:
    rows = [{"a": "x", "b": MOMENT, "c": 1.5}, {"a": "y", "b": None, "c": None}]
    assert json.loads(json_rows(rows, ("a", "b", "c"))) == [
        {"a": "x", "b": MOMENT.isoformat(), "c": 1.5}, {"a": "y", "b": None, "c": None}]
    assert json.loads(json_rows(rows, ("a",))) == [{"a": "x"}, {"a": "y"}]  # only the named columns
    with pytest.raises(KeyError):
        json_rows([{"a": "x"}, {"b": "y"}], ("a",))
    assert json.loads(json_columns(rows, ("c", "b"))) == [[1.5, None], [MOMENT.isoformat(), None]]
    with pytest.raises(ValueError):
        json_columns([{"c": float("nan")}], ("c",))


def test_a_column_document_reads_back_typed(app: Any, database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("ROWS FROM over JSON arrays is the PostgreSQL path")
    columns = ("assignment_id", "experiment_id", "day", "propensity", "holdout", "covariate", "first_reward_at")
    rows = [{"assignment_id": "a'1\\\"", "experiment_id": 7, "day": date(2026, 11, 24), "propensity": 1 / 3,
             "holdout": True, "covariate": None, "first_reward_at": MOMENT},
            {"assignment_id": "é-2", "experiment_id": 8, "day": date(2026, 1, 1), "propensity": 1e-9,
             "holdout": False, "covariate": -2.5, "first_reward_at": MOMENT + timedelta(days=1)}]
    sql = f"SELECT * FROM {column_recordset(DecisionOutcome.__table__, columns, ':document')}"
    with db_module.get_db(app).session() as session:
        found = [tuple(r) for r in session.execute(text(sql), {"document": json_columns(rows, columns)})]
    assert found == [tuple(row[c] for c in columns) for row in rows]


def test_bulk_write_merges_as_before(app: Any, decisions: list[str]) -> None:
    with db_module.get_db(app).session() as session:
        experiment_id = session.scalar(select(Experiment.id))
        base = {"experiment_id": experiment_id, "arm_key": "mens", "day": MOMENT.date(), "propensity": 0.5,
                "holdout": False, "covariate": None, "opens": 1, "clicks": 0, "conversions": 0, "unsubscribes": 0,
                "custom": 0, "revenue": 2.0, "first_reward_at": MOMENT, "reward_received_at": None,
                "updated_at": MOMENT}
        for first in (MOMENT, MOMENT - timedelta(hours=1)):
            bulk_write(session, DecisionOutcome, [{"assignment_id": decisions[0], **base, "first_reward_at": first}],
                       conflict=unique_key(DecisionOutcome, session.get_bind().dialect.name), on_conflict="merge",
                       add=["opens", "revenue"],
                       keep_min=["first_reward_at"])
        session.commit()
        row = session.get(DecisionOutcome, decisions[0])
        assert row is not None and (row.opens, row.revenue) == (2, 4.0)
        assert row.first_reward_at == MOMENT - timedelta(hours=1)


def test_a_copied_batch_reads_back_as_the_orm_wrote_it(app: Any, api: Any) -> None:
    # Past _COPY_FROM rows a bulk write is a COPY on PostgreSQL (executemany on SQLite).
    api.create_experiment(spring_email(contact_policy=None), start=True)
    subjects = [{"subject_id": f"copy-{i}", "context": {"recency": i, "channel_pref": "web"} if i % 2 else None}
                for i in range(2500)]
    answers = api.assign_batch("spring-email", subjects)
    with db_module.get_db(app).session() as session:
        rows = {r.id: r for r in session.scalars(select(Assignment).where(Assignment.subject_id.like("copy-%")))}
    assert len(rows) == 2500
    for subject, answer in zip(subjects, answers):
        row = rows[answer["assignment_id"]]
        assert (row.subject_id, row.arm_key, row.channel) == (subject["subject_id"], answer["arm"], "email")
        assert row.context == subject["context"] and row.created_at.utcoffset() is not None


def test_a_lost_connection_under_a_driver_statement_is_sqlalchemys_disconnect(app: Any, database_url: str) -> None:
    # Statements run on the driver directly must fail like SQLAlchemy's own (answered 503, not 500),
    # and leave the pool to replace the dropped connections.
    if not database_url.startswith("postgresql"):
        pytest.skip("server-side connection termination: PostgreSQL only")
    from sqlalchemy.exc import OperationalError

    database = db_module.get_db(app)
    with database.session() as session:
        pid = session.connection().connection.driver_connection.info.backend_pid
        with database.engine.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(OperationalError) as raised:
            select_in(session, (Assignment.id,), Assignment.id, ["x"])
        assert raised.value.connection_invalidated
        session.rollback()
    with database.session() as session:  # a fresh connection serves the next caller
        assert select_in(session, (Assignment.id,), Assignment.id, ["x"]) == []
