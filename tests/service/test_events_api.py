"""Outcomes through the HTTP API: exactly once, attribution rules, per-event reasons, erasure."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import func, select, text, update

from service.store import db as db_module
from service.clock import utcnow
from service.store.models import Assignment, AuditEntry, DecisionCustomOutcome, DecisionOutcome, Event
from tests.conftest import send_at_once, spring_email

NOW: datetime  # the time each test starts, set by _now: never read at import, when a busy machine
# may start the test minutes later


@pytest.fixture(autouse=True)
def _now() -> None:
    global NOW
    NOW = utcnow()


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def backdate(app: Any, assignment_id: str, when: datetime) -> None:
    with db_module.get_db(app).session() as session:
        session.execute(update(Assignment).where(Assignment.id == assignment_id).values(created_at=when))


def summary(app: Any, assignment_id: str) -> DecisionOutcome | None:
    with db_module.get_db(app).session() as session:
        return session.get(DecisionOutcome, assignment_id)


def count(app: Any, model: Any) -> int:
    with db_module.get_db(app).session() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


@pytest.fixture
def running(api: Any) -> Any:
    api.create_experiment(spring_email(contact_policy=None, attribution_window_seconds=3600,
                                       custom_events=["coupon_used"]), start=True)
    return api


def test_design_example_events(app: Any, running: Any) -> None:
    decision = running.assign("spring-email", "c-123")
    answer = running.send_events([
        {"event_id": "e-1", "type": "conversion", "assignment_id": decision["assignment_id"], "value": 29.90,
         "occurred_at": iso(NOW)},
        {"event_id": "e-2", "type": "open", "experiment": "spring-email", "subject_id": "c-123",
         "occurred_at": NOW.astimezone(timezone(timedelta(hours=1))).isoformat()},
    ])
    assert answer["accepted"] == 2 and answer["duplicates"] == 0 and answer["rejected"] == 0
    assert [r["status"] for r in answer["results"]] == ["accepted", "accepted"]
    assert [r["attribution"] for r in answer["results"]] == ["assignment", "subject"]
    row = summary(app, decision["assignment_id"])
    assert row is not None and row.conversions == 1 and row.opens == 1 and row.revenue == pytest.approx(29.90)


def test_retries_and_in_batch_duplicates_are_stored_once(app: Any, running: Any) -> None:
    decision = running.assign("spring-email", "c-1")
    events = [{"event_id": f"x-{i}", "type": "click", "assignment_id": decision["assignment_id"],
               "occurred_at": iso(NOW)} for i in range(3)]
    first = running.send_events(events + [events[0]])
    assert (first["accepted"], first["duplicates"]) == (3, 1)
    again = running.send_events(events)
    assert (again["accepted"], again["duplicates"]) == (0, 3)
    assert count(app, Event) == 3
    assert summary(app, decision["assignment_id"]).clicks == 3  # type: ignore[union-attr]


def test_per_event_rejections_keep_the_rest(app: Any, running: Any) -> None:
    decision = running.assign("spring-email", "c-1")
    aid = decision["assignment_id"]
    events: list[Any] = [
        {"event_id": "ok", "type": "click", "assignment_id": aid, "occurred_at": iso(NOW)},
        {"event_id": "no-type", "assignment_id": aid, "occurred_at": iso(NOW)},
        {"event_id": "naive", "type": "click", "assignment_id": aid, "occurred_at": "2026-11-24T10:00:00"},
        {"event_id": "future", "type": "click", "assignment_id": aid, "occurred_at": iso(NOW + timedelta(days=2))},
        {"event_id": "bad-value", "type": "conversion", "assignment_id": aid, "value": "lots",
         "occurred_at": iso(NOW)},
        {"event_id": "nowhere", "type": "click", "occurred_at": iso(NOW)},
        {"event_id": "undeclared", "type": "purchase", "assignment_id": aid, "occurred_at": iso(NOW)},
        {"event_id": "custom", "type": "coupon_used", "assignment_id": aid, "occurred_at": iso(NOW)},
        {"event_id": "ghost-exp", "type": "click", "experiment": "ghost", "subject_id": "c-1",
         "occurred_at": iso(NOW)},
        "not an object",
    ]
    answer = running.send_events(events)
    by_id = {r["event_id"]: r for r in answer["results"]}
    assert by_id["ok"]["status"] == "accepted" and by_id["custom"]["status"] == "accepted"
    reasons = {
        "no-type": "type is required", "naive": "time zone", "future": "future", "bad-value": "finite number",
        "nowhere": "assignment_id, or experiment and subject_id", "undeclared": "purchase",
        "ghost-exp": "unknown experiment",
    }
    for event_id, fragment in reasons.items():
        assert by_id[event_id]["status"] == "rejected" and fragment in by_id[event_id]["reason"], by_id[event_id]
    assert answer["results"][-1]["status"] == "rejected" and answer["results"][-1]["event_id"] is None
    assert (answer["accepted"], answer["rejected"]) == (2, 8)


def test_malformed_envelope_fails_the_whole_batch(app: Any, running: Any) -> None:
    response = running.call("POST", "/v1/events", scope="channel", json={"evnts": []})
    assert response.status_code == 422
    app.config["NEXTBEST_MAX_EVENTS_PER_BATCH"] = 2
    response = running.call("POST", "/v1/events", scope="channel", json={"events": [{}, {}, {}]})
    assert response.status_code == 413


def test_attribution_window_edges_by_assignment(app: Any, running: Any) -> None:
    decision = running.assign("spring-email", "c-1")
    created = NOW - timedelta(hours=5)
    backdate(app, decision["assignment_id"], created)
    aid = decision["assignment_id"]
    answer = running.send_events([
        {"event_id": "edge", "type": "click", "assignment_id": aid, "occurred_at": iso(created + timedelta(hours=1))},
        {"event_id": "late", "type": "click", "assignment_id": aid,
         "occurred_at": iso(created + timedelta(hours=1, microseconds=1))},
        {"event_id": "early", "type": "click", "assignment_id": aid,
         "occurred_at": iso(created - timedelta(minutes=10))},
        {"event_id": "unknown", "type": "click", "assignment_id": "0" * 32, "occurred_at": iso(NOW)},
    ])
    by_id = {r["event_id"]: r for r in answer["results"]}
    assert by_id["edge"]["attribution"] == "assignment"
    assert by_id["late"]["attribution"] == "unattributed" and by_id["late"]["reason"] == "outside_attribution_window"
    assert by_id["early"]["reason"] == "before_decision"
    assert by_id["unknown"]["reason"] == "unknown_assignment"
    assert answer["accepted"] == 4  # unattributed events are kept, never dropped
    assert summary(app, aid).clicks == 1  # type: ignore[union-attr]
    report = running.report("spring-email")
    assert sum(report["unattributed_events"].values()) == 2  # the unknown assignment has no experiment


def test_subject_attribution_picks_the_decision_whose_window_covers_the_event(app: Any, running: Any) -> None:
    old = running.assign("spring-email", "c-9")
    new = running.assign("spring-email", "c-9")
    backdate(app, old["assignment_id"], NOW - timedelta(hours=3))
    backdate(app, new["assignment_id"], NOW - timedelta(minutes=30))
    answer = running.send_events([
        # arrives late and out of order: happened between the two decisions, inside the old one's window
        {"event_id": "between", "type": "open", "experiment": "spring-email", "subject_id": "c-9",
         "occurred_at": iso(NOW - timedelta(hours=2, minutes=30))},
        {"event_id": "recent", "type": "open", "experiment": "spring-email", "subject_id": "c-9",
         "occurred_at": iso(NOW - timedelta(minutes=5))},
        {"event_id": "gap", "type": "open", "experiment": "spring-email", "subject_id": "c-9",
         "occurred_at": iso(NOW - timedelta(hours=1))},
        {"event_id": "stranger", "type": "open", "experiment": "spring-email", "subject_id": "nobody",
         "occurred_at": iso(NOW)},
    ])
    by_id = {r["event_id"]: r for r in answer["results"]}
    assert by_id["between"]["attribution"] == "subject"
    assert by_id["recent"]["attribution"] == "subject"
    assert by_id["gap"]["reason"] == "outside_attribution_window"
    assert by_id["stranger"]["reason"] == "no_decision_for_subject"
    assert summary(app, old["assignment_id"]).opens == 1  # type: ignore[union-attr]
    assert summary(app, new["assignment_id"]).opens == 1  # type: ignore[union-attr]


def test_repeated_events_count_once_in_rates_and_fully_in_sums(app: Any, running: Any) -> None:
    decision = running.assign("spring-email", "c-1")
    aid = decision["assignment_id"]
    running.send_events([
        {"event_id": f"o{i}", "type": "open", "assignment_id": aid, "occurred_at": iso(NOW)} for i in range(3)
    ] + [
        {"event_id": "c1", "type": "conversion", "assignment_id": aid, "value": 10, "occurred_at": iso(NOW)},
        {"event_id": "c2", "type": "conversion", "assignment_id": aid, "value": 20, "occurred_at": iso(NOW)},
    ])
    report = running.report("spring-email")
    arm = next(a for a in report["arms"] if a["arm"] == decision["arm"])
    assert arm["decisions"] == 1
    assert arm["reached"]["open"] == 1 and arm["event_counts"]["open"] == 3
    revenue = next(m for m in report["metrics"] if m["metric"] == "revenue_per_decision")
    row = next(a for a in revenue["arms"] if a["arm"] == decision["arm"])
    assert row["value"] == pytest.approx(30.0)


@pytest.mark.postgres
def test_concurrent_duplicate_batches_store_once(app: Any, running: Any, database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("real concurrent connections: PostgreSQL only")
    decisions = running.assign_batch("spring-email", [{"subject_id": f"s{i}"} for i in range(200)])
    events = [{"event_id": f"ev-{d['assignment_id']}-{k}", "type": "click", "assignment_id": d["assignment_id"],
               "occurred_at": iso(NOW)} for d in decisions for k in range(2)]
    responses = send_at_once(database_url, events, running.headers("channel"))
    assert all(r.status_code == 200 for r in responses), [r.get_json() for r in responses]
    answers = [r.get_json() for r in responses]
    assert sum(a["accepted"] for a in answers) == len(events)
    assert sum(a["duplicates"] for a in answers) == 3 * len(events)
    assert count(app, Event) == len(events)
    with db_module.get_db(app).session() as session:
        total = session.scalar(select(func.sum(DecisionOutcome.clicks)))
    assert total == len(events)


def test_erasure_removes_every_row_of_the_subject(app: Any, running: Any) -> None:
    keep = running.assign("spring-email", "keeper")
    gone = [running.assign("spring-email", "leaver") for _ in range(3)]
    running.send_events([
        {"event_id": f"g{i}", "type": "click", "assignment_id": d["assignment_id"], "occurred_at": iso(NOW)}
        for i, d in enumerate(gone)
    ] + [{"event_id": "k", "type": "click", "assignment_id": keep["assignment_id"], "occurred_at": iso(NOW)},
         {"event_id": "stray", "type": "open", "experiment": "spring-email", "subject_id": "leaver",
          "occurred_at": iso(NOW - timedelta(days=30))}])
    assert running.call("DELETE", "/v1/subjects/leaver", scope="analyst").status_code == 403
    response = running.call("DELETE", "/v1/subjects/leaver", scope="admin")
    assert response.status_code == 200
    assert response.get_json()["erased"]["decisions"] == 3
    with db_module.get_db(app).engine.connect() as conn:
        for table in ("assignments", "events"):
            rows = conn.execute(text(f"SELECT COUNT(*) FROM {table} WHERE subject_id = 'leaver'")).scalar()
            assert rows == 0, table
        ids = tuple(d["assignment_id"] for d in gone)
        left = conn.execute(select(func.count()).select_from(DecisionOutcome).where(
            DecisionOutcome.assignment_id.in_(ids))).scalar()
        assert left == 0
        audit_rows = conn.execute(select(AuditEntry.details).where(AuditEntry.action == "erase_subject")).fetchall()
    assert len(audit_rows) == 1 and "leaver" not in repr(audit_rows)
    assert count(app, Assignment) == 1 and summary(app, keep["assignment_id"]) is not None


def custom_count(app: Any, assignment_id: str, event_type: str) -> DecisionCustomOutcome | None:
    with db_module.get_db(app).session() as session:
        return session.get(DecisionCustomOutcome, (assignment_id, event_type))


def test_summaries_add_exactly_the_stored_attributed_events(app: Any, running: Any) -> None:
    decision = running.assign("spring-email", "c-1")
    aid = decision["assignment_id"]
    created = NOW - timedelta(minutes=50)  # the window (one hour) covers the last 50 minutes and 10 more
    backdate(app, aid, created)
    late, early = NOW - timedelta(minutes=40), NOW - timedelta(minutes=45)
    first = running.send_events([
        {"event_id": "o1", "type": "open", "assignment_id": aid, "occurred_at": iso(NOW)},
        {"event_id": "k1", "type": "click", "assignment_id": aid, "value": 5, "occurred_at": iso(NOW)},
        {"event_id": "c1", "type": "conversion", "assignment_id": aid, "value": 10, "occurred_at": iso(late)},
        {"event_id": "u1", "type": "coupon_used", "assignment_id": aid, "occurred_at": iso(NOW)},
        {"event_id": "u2", "type": "coupon_used", "assignment_id": aid, "occurred_at": iso(NOW)},
        {"event_id": "old", "type": "open", "assignment_id": aid, "occurred_at": iso(NOW - timedelta(hours=2))},
    ])
    assert (first["accepted"], first["duplicates"], first["rejected"]) == (6, 0, 0)
    row = summary(app, aid)
    assert row is not None
    assert (row.opens, row.clicks, row.conversions, row.unsubscribes, row.custom) == (1, 1, 1, 0, 2)
    assert row.revenue == pytest.approx(10.0)  # a click's value is stored, not summed
    assert row.first_reward_at == datetime.fromisoformat(iso(late))
    assert row.arm_key == decision["arm"] and row.day == created.date() and row.reward_received_at is not None
    first_received = row.reward_received_at
    assert custom_count(app, aid, "coupon_used").count == 2  # type: ignore[union-attr]

    second = running.send_events([
        {"event_id": "c1", "type": "conversion", "assignment_id": aid, "value": 10, "occurred_at": iso(late)},
        {"event_id": "c2", "type": "conversion", "assignment_id": aid, "value": 20, "occurred_at": iso(early)},
        {"event_id": "u3", "type": "coupon_used", "assignment_id": aid, "occurred_at": iso(NOW)},
    ])
    assert (second["accepted"], second["duplicates"]) == (2, 1)
    row = summary(app, aid)
    assert row is not None
    assert (row.opens, row.clicks, row.conversions, row.custom) == (1, 1, 2, 3)
    assert row.revenue == pytest.approx(30.0)
    assert row.first_reward_at == datetime.fromisoformat(iso(early))  # the earliest reward, whichever batch
    assert row.reward_received_at == first_received  # when the reward first became known
    assert custom_count(app, aid, "coupon_used").count == 3  # type: ignore[union-attr]
    assert count(app, Event) == 8


def test_each_experiment_rewards_its_own_event(app: Any, running: Any) -> None:
    running.create_experiment(spring_email(key="autumn", contact_policy=None, reward={"event": "click"}), start=True)
    spring = running.assign("spring-email", "c-1")["assignment_id"]
    autumn = running.assign("autumn", "c-1")["assignment_id"]
    running.send_events([
        {"event_id": "s-click", "type": "click", "assignment_id": spring, "occurred_at": iso(NOW)},
        {"event_id": "a-click", "type": "click", "assignment_id": autumn, "occurred_at": iso(NOW)},
        {"event_id": "a-conv", "type": "conversion", "assignment_id": autumn, "value": 3, "occurred_at": iso(NOW)},
    ])
    spring_row, autumn_row = summary(app, spring), summary(app, autumn)
    assert spring_row is not None and autumn_row is not None
    assert spring_row.first_reward_at is None and spring_row.reward_received_at is None
    assert autumn_row.first_reward_at == datetime.fromisoformat(iso(NOW)) and autumn_row.revenue == pytest.approx(3)


def test_per_event_results_keep_their_shape(app: Any, running: Any) -> None:
    aid = running.assign("spring-email", "c-1")["assignment_id"]
    answer = running.send_events([
        {"event_id": "a", "type": "click", "assignment_id": aid, "occurred_at": iso(NOW)},
        {"event_id": "a", "type": "click", "assignment_id": aid, "occurred_at": iso(NOW)},
        {"event_id": "b", "type": "click", "assignment_id": "0" * 32, "occurred_at": iso(NOW)},
        {"event_id": "c", "type": "cl\x00ick", "assignment_id": aid, "occurred_at": iso(NOW)},
        {"event_id": "d", "type": "click", "assignment_id": aid, "occurred_at": iso(NOW), "colour": "red"},
    ])
    assert answer == {"accepted": 2, "duplicates": 1, "rejected": 2, "results": [
        {"event_id": "a", "status": "accepted", "attribution": "assignment"},
        {"event_id": "a", "status": "duplicate"},
        {"event_id": "b", "status": "accepted", "attribution": "unattributed", "reason": "unknown_assignment"},
        {"event_id": "c", "status": "rejected", "reason": "type may not contain NUL (U+0000) characters"},
        {"event_id": "d", "status": "rejected", "reason": "unknown field 'colour'"},
    ]}
    again = running.send_events([{"event_id": "a", "type": "click", "assignment_id": aid, "occurred_at": iso(NOW)}])
    assert again["results"] == [{"event_id": "a", "status": "duplicate", "attribution": "assignment"}]
    with db_module.get_db(app).session() as session:
        stored = session.scalars(select(Event).order_by(Event.event_id)).all()
        assert [(e.event_id, e.attribution, e.unattributed_reason, e.experiment_id is None) for e in stored] == [
            ("a", "assignment", None, False), ("b", "unattributed", "unknown_assignment", True)]
        assert stored[0].occurred_at == datetime.fromisoformat(iso(NOW)) and stored[0].received_at is not None


class _Deadlock(Exception):
    sqlstate = "40P01"


def _deadlock() -> Exception:
    from sqlalchemy.exc import OperationalError

    return OperationalError("INSERT INTO events ...", {}, _Deadlock("deadlock detected"))


def test_a_batch_the_database_rolled_back_is_run_again(api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A deadlock broken by the database rolls the batch back; the service runs it again, and a batch that
    keeps failing so is answered 503 with Retry-After, never 500."""
    import service.http.api.events as events_api

    api.create_experiment(spring_email(contact_policy=None), start=True)
    decision = api.assign("spring-email", "dl-1")
    real = events_api.ingest
    failures = [1]

    def flaky(session: Any, events: Any, now: Any = None) -> Any:
        result = real(session, events, now=now)
        if failures[0]:
            failures[0] -= 1
            raise _deadlock()
        return result

    monkeypatch.setattr(events_api, "ingest", flaky)
    body = api.send_events([{"event_id": "dl-e1", "type": "click", "assignment_id": decision["assignment_id"],
                            "occurred_at": datetime.now(timezone.utc).isoformat()}])
    assert body["accepted"] == 1 and failures == [0], body
    report = api.report("spring-email")
    assert sum(a["event_counts"]["click"] for a in report["arms"]) == 1  # stored once, not twice

    def always(session: Any, events: Any, now: Any = None) -> Any:
        raise _deadlock()

    monkeypatch.setattr(events_api, "ingest", always)
    response = api.call("POST", "/v1/events", scope="channel",
                        json={"events": [{"event_id": "dl-e2", "type": "open",
                                          "assignment_id": decision["assignment_id"],
                                          "occurred_at": datetime.now(timezone.utc).isoformat()}]})
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert response.get_json()["error"]["code"] == "database_busy"
