"""Decisions through the HTTP API: fixed splits, every experiment state, batches, storage."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from scipy.stats import chisquare
from sqlalchemy import func, select

from experiments.bucketing import Splitter
from service import create_app
from service.store import db as db_module
from service.store.models import Assignment
from tests.conftest import spring_email


def stored(app: Any, assignment_id: str) -> Assignment | None:
    with db_module.get_db(app).session() as session:
        return session.get(Assignment, assignment_id)


def count_assignments(app: Any) -> int:
    with db_module.get_db(app).session() as session:
        return session.scalar(select(func.count()).select_from(Assignment)) or 0


def test_design_example_assign(app: Any, api: Any) -> None:
    api.create_experiment(spring_email(contact_policy=None), start=True)
    decision = api.assign("spring-email", "c-123", context={"recency": 3, "channel_pref": "web"})
    assert set(decision) >= {"assignment_id", "experiment", "arm", "payload", "propensity", "policy_version",
                             "holdout"}
    assert decision["experiment"] == "spring-email"
    assert decision["arm"] in ("control", "mens", "womens")
    assert decision["payload"] == {"control": {"template": "none"}, "mens": {"template": "mens-v1"},
                                   "womens": {"template": "womens-v1"}}[decision["arm"]]
    assert abs(decision["propensity"] - 1 / 3) < 1e-6
    assert decision["policy_version"] == 0 and decision["holdout"] is False and decision["no_offer"] is False
    row = stored(app, decision["assignment_id"])
    assert row is not None and row.arm_key == decision["arm"] and row.subject_id == "c-123"
    assert row.channel == "email" and row.context == {"recency": 3, "channel_pref": "web"}


def test_fixed_split_is_sticky_across_workers_and_reproducible(app: Any, api: Any, database_url: str) -> None:
    created = api.create_experiment(spring_email(
        contact_policy=None, allocation={"type": "fixed", "weights": {"control": 2, "mens": 1, "womens": 1}}),
        start=True)
    first = {f"s{i}": api.assign("spring-email", f"s{i}")["arm"] for i in range(40)}
    other_worker = create_app({"DATABASE_URL": database_url})
    other = other_worker.test_client()
    for subject, arm in first.items():
        again = other.post("/v1/assign", json={"experiment": "spring-email", "subject_id": subject},
                           headers=api.headers("channel")).get_json()
        assert again["arm"] == arm
    # The documented algorithm reproduces every arm from the salt alone.
    splitter = Splitter({"control": 2, "mens": 1, "womens": 1})
    assert all(splitter.assign(created["salt"], s) == arm for s, arm in first.items())
    db_module.get_db(other_worker).dispose()


def test_batch_matches_weights_and_single_decisions(app: Any, api: Any) -> None:
    api.create_experiment(spring_email(
        contact_policy=None, allocation={"type": "fixed", "weights": {"control": 1, "mens": 2, "womens": 7}}),
        start=True)
    subjects = [{"subject_id": f"user-{i}"} for i in range(3000)]
    answers = api.assign_batch("spring-email", subjects)
    assert [a["subject_id"] for a in answers] == [s["subject_id"] for s in subjects]
    counts = Counter(a["arm"] for a in answers)
    observed = [counts["control"], counts["mens"], counts["womens"]]
    assert chisquare(observed, [300, 600, 2100]).pvalue > 0.001
    assert {round(a["propensity"], 4) for a in answers if a["arm"] == "womens"} == {0.7}
    assert len({a["assignment_id"] for a in answers}) == 3000
    assert count_assignments(app) == 3000
    for answer in answers[:25]:
        assert api.assign("spring-email", answer["subject_id"])["arm"] == answer["arm"]


def test_states_draft_paused_concluded(app: Any, api: Any) -> None:
    api.create_experiment(spring_email(contact_policy=None))
    draft = api.assign("spring-email", "c-1")
    assert draft["arm"] == "control" and draft["assignment_id"] is None and draft["reason"] == "experiment_draft"
    assert draft["payload"] == {"template": "none"}
    api.call("POST", "/v1/experiments/spring-email/start")
    assert api.assign("spring-email", "c-1")["assignment_id"] is not None
    api.call("POST", "/v1/experiments/spring-email/pause")
    paused = api.assign("spring-email", "c-1")
    assert paused["arm"] == "control" and paused["assignment_id"] is None and paused["reason"] == "experiment_paused"
    api.call("POST", "/v1/experiments/spring-email/conclude", json={"winner": "womens"})
    done = [api.assign("spring-email", f"c-{i}") for i in range(20)]
    assert {d["arm"] for d in done} == {"womens"}
    assert {d["reason"] for d in done} == {"experiment_concluded"}
    assert all(d["assignment_id"] is None for d in done)
    assert count_assignments(app) == 1


def test_concluded_without_winner_serves_control(api: Any) -> None:
    api.create_experiment(spring_email(contact_policy=None), start=True)
    api.call("POST", "/v1/experiments/spring-email/conclude")
    assert {api.assign("spring-email", f"c-{i}")["arm"] for i in range(10)} == {"control"}


def test_bad_requests(app: Any, api: Any) -> None:
    api.create_experiment(spring_email(contact_policy=None), start=True)
    assert api.assign("nope", "c-1", expect=404)["error"]["code"] == "not_found"
    missing = api.call("POST", "/v1/assign", scope="channel", json={"experiment": "spring-email"})
    assert missing.status_code == 422
    assert "subject_id" in missing.get_json()["error"]["message"]
    empty = api.call("POST", "/v1/assign", scope="channel", json={"experiment": "spring-email", "subject_id": ""})
    assert empty.status_code == 422
    app.config["NEXTBEST_MAX_BATCH_SUBJECTS"] = 5
    too_many = api.call("POST", "/v1/assign/batch", scope="channel",
                        json={"experiment": "spring-email", "subjects": [{"subject_id": str(i)} for i in range(6)]})
    assert too_many.status_code == 413
    assert count_assignments(app) == 0


def test_single_decision_row_holds_what_the_orm_would_write(app: Any, api: Any) -> None:
    # One decision is written straight on the driver; its bind processing must match the ORM's.
    from datetime import datetime, timedelta, timezone

    api.create_experiment(spring_email(contact_policy=None), start=True)
    before = datetime.now(timezone.utc)
    decision = api.assign("spring-email", "c-time", context={"recency": 2.5, "channel_pref": "sms"})
    row = stored(app, decision["assignment_id"])
    assert row is not None
    assert before - timedelta(seconds=1) <= row.created_at <= datetime.now(timezone.utc) + timedelta(seconds=1)
    assert row.created_at.tzinfo is not None and row.holdout is False and row.source == "live"
    assert row.propensity == 1 / 3 and row.covariate is None and row.notes is None


@pytest.mark.parametrize("dropped", ["kept", "pooled and kept"])
def test_a_dropped_database_connection_costs_at_most_one_503(app: Any, api: Any, database_url: str,
                                                             dropped: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("server-side connection termination: PostgreSQL only")
    from sqlalchemy import text

    api.create_experiment(spring_email(contact_policy=None), start=True)
    api.assign("spring-email", "warm-up")
    database = db_module.get_db(app)
    pids = [c.dbapi_connection.info.backend_pid for c in database.thread_connections._open]
    assert pids, "a decision is written on a connection its thread keeps"
    if dropped == "pooled and kept":
        pool = database.autocommit_engine.pool
        held = [database.autocommit_engine.raw_connection() for _ in range(max(2, pool.checkedin()))]
        pids += [c.dbapi_connection.info.backend_pid for c in held]
        for connection in held:
            connection.close()
    with database.engine.connect() as admin:  # the server drops this app's idle connections
        admin.execute(text("SELECT pg_terminate_backend(pid) FROM unnest(CAST(:pids AS int[])) AS pid"),
                      {"pids": pids})
    body = {"experiment": "spring-email", "channel": "email"}
    answers = [api.call("POST", "/v1/assign", scope="channel", json={**body, "subject_id": f"after-{i}"})
               for i in range(len(pids) + 1)]
    statuses = [a.status_code for a in answers]
    # A write that meets a dropped connection is a 503 (the channel may retry it); a read that meets
    # one first (here the key lookup) is run again by Flask on a fresh connection. Either way the
    # pool then replaces every connection made before it, pooled or kept by a thread, so no later
    # request meets another.
    expected = [503] + [200] * len(pids) if dropped == "kept" else [200] * (len(pids) + 1)
    assert statuses == expected, statuses
    for answer in answers:
        if answer.status_code == 503:
            assert answer.get_json()["error"]["code"] == "database_unavailable"
            assert answer.headers["Retry-After"]
        else:
            assert stored(app, answer.get_json()["assignment_id"]) is not None


def test_a_failed_background_write_fails_the_batch_after_the_answer_is_built() -> None:
    from service.http.api.decisions import _in_background

    built = []

    def write() -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        with _in_background(write):
            built.append("answer")
    assert built == ["answer"]  # the block ran; its answer is never sent


def test_the_batch_answer_is_written_exactly_as_json_dumps_would() -> None:
    import json
    from datetime import datetime, timezone
    from types import SimpleNamespace

    from service.usecases import decisions as core

    runtime = SimpleNamespace(key="spring-émail", policy_version=3,
                              payloads={"control": {"template": "none"}, "mens": {"text": "Grüße \"jetzt\"\n"}})
    outcomes = [
        core.Outcome("c-1", "control", 1 / 3, assignment_id="a" * 32),
        core.Outcome("Zoë \"quoted\" \\ \u2028", "mens", 2 / 3, assignment_id="b" * 32),
        core.Outcome("c-3", "mens", 0.05, holdout=True, assignment_id="c" * 32),
        core.Outcome("c-4", None, None, reason="frequency_cap", no_offer=True,
                     retry_after=datetime(2026, 12, 2, 10, 0, tzinfo=timezone.utc)),
        core.Outcome("c-5", "control", None, reason="experiment_paused"),
        core.Outcome("c-6", "control", 1 / 3, assignment_id="d" * 32),
        core.Outcome("c-7", None, None, reason="unsubscribed", no_offer=True),
        core.Outcome("c-8", "control", 1 / 3, holdout=True, assignment_id="e" * 32),  # shares all but holdout
        core.Outcome("c-9", "control", 1 / 3, reason="experiment_concluded"),  # and all but the logging
    ]
    for ensure_ascii, encode_string in ((True, json.encoder.encode_basestring_ascii),
                                        (False, json.encoder.encode_basestring)):
        def dumps(value: Any) -> str:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=ensure_ascii)

        expected = dumps({"experiment": runtime.key, "assignments": [core.to_json(runtime, o) for o in outcomes],
                          "suppressed": 2})
        assert core.batch_answer_json(runtime, outcomes, dumps, encode_string) == expected
