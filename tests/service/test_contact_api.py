"""Contact policy through the real endpoints: no-offer answers, suppression after unsubscribe, counts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import update

from service.store import db as db_module
from service.clock import utcnow
from service.store.models import Assignment
from tests.conftest import spring_email

NOW: datetime  # the time each test starts, set by _now: never read at import, when a busy machine
# may start the test minutes later


@pytest.fixture(autouse=True)
def _now() -> None:
    global NOW
    NOW = utcnow()


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def policy_experiment(api: Any, key: str = "spring-email", **policy: Any) -> None:
    api.create_experiment(spring_email(key=key, contact_policy=policy or None), start=True)


def test_unsubscribe_suppresses_the_channel_everywhere_until_resubscribe(api: Any) -> None:
    policy_experiment(api, "first")
    policy_experiment(api, "second")
    decision = api.assign("first", "c-1", channel="email")
    answer = api.send_events([{"event_id": "u1", "type": "unsubscribe", "assignment_id": decision["assignment_id"],
                               "occurred_at": iso(NOW)}])
    assert answer["accepted"] == 1
    for experiment in ("first", "second"):
        refused = api.assign(experiment, "c-1", channel="email")
        assert refused == {"assignment_id": None, "experiment": experiment, "subject_id": "c-1", "arm": None,
                           "payload": None, "propensity": None, "policy_version": None, "holdout": False,
                           "no_offer": True, "reason": "unsubscribed", "retry_after": None}
    assert api.assign("second", "c-1", channel="sms")["no_offer"] is False  # other channels are untouched
    batch = api.assign_batch("second", [{"subject_id": "c-1"}, {"subject_id": "c-2"}], channel="email")
    assert [b["no_offer"] for b in batch] == [True, False]
    report = api.report("second")
    assert report["suppressed"] == {"unsubscribed": 2} and report["suppressed_total"] == 2
    resub = api.call("POST", "/v1/subjects/c-1/resubscribe", scope="channel", json={"channel": "email"})
    assert resub.status_code == 200 and resub.get_json()["resubscribed"] is True
    assert api.assign("first", "c-1", channel="email")["no_offer"] is False


def test_channel_wide_unsubscribe_without_an_experiment(api: Any) -> None:
    policy_experiment(api)
    answer = api.send_events([{"event_id": "esp-1", "type": "unsubscribe", "subject_id": "c-7", "channel": "email",
                               "occurred_at": iso(NOW)}])
    assert answer["results"][0]["status"] == "accepted"
    assert answer["results"][0]["reason"] == "no_experiment"
    assert api.assign("spring-email", "c-7", channel="email")["reason"] == "unsubscribed"


def test_frequency_cap_counts_across_experiments(app: Any, api: Any) -> None:
    cap = {"max_per_subject": {"count": 2, "per_seconds": 86400}}
    policy_experiment(api, "a", **cap)
    policy_experiment(api, "b", **cap)
    first = api.assign("a", "c-1")
    api.assign("b", "c-1")
    refused = api.assign("a", "c-1")
    assert refused["no_offer"] is True and refused["reason"] == "frequency_cap"
    retry = datetime.fromisoformat(refused["retry_after"].replace("Z", "+00:00"))
    with db_module.get_db(app).session() as session:
        created = session.get(Assignment, first["assignment_id"]).created_at  # type: ignore[union-attr]
    assert abs((retry - (created + timedelta(days=1))).total_seconds()) < 1
    assert api.assign("a", "c-1", channel="sms")["no_offer"] is False
    # once the oldest decision leaves the window the subject may be contacted again
    with db_module.get_db(app).session() as session:
        session.execute(update(Assignment).where(Assignment.id == first["assignment_id"])
                        .values(created_at=NOW - timedelta(days=2)))
    assert api.assign("a", "c-1")["no_offer"] is False


def test_cooldown_after_conversion(api: Any) -> None:
    policy_experiment(api, cooldown_after_conversion_seconds=3 * 86400)
    decision = api.assign("spring-email", "c-1")
    bought = datetime.now(timezone.utc)
    api.send_events([{"event_id": "buy", "type": "conversion", "assignment_id": decision["assignment_id"],
                      "value": 20, "occurred_at": iso(bought)}])
    refused = api.assign("spring-email", "c-1")
    assert refused["reason"] == "cooldown_after_conversion"
    retry = datetime.fromisoformat(refused["retry_after"].replace("Z", "+00:00"))
    assert abs((retry - (bought + timedelta(days=3))).total_seconds()) < 1


def test_quiet_hours_in_the_subjects_time_zone(api: Any) -> None:
    local_hour = datetime.now(timezone.utc).astimezone(__import__("zoneinfo").ZoneInfo("Asia/Tokyo")).hour
    start = f"{local_hour:02d}:00"
    end = f"{(local_hour + 1) % 24:02d}:00"
    policy_experiment(api, quiet_hours={"start": start, "end": end})
    refused = api.assign("spring-email", "c-1", context={"timezone": "Asia/Tokyo"})
    assert refused["reason"] == "quiet_hours"
    assert refused["retry_after"].endswith("Z")
    bad = api.assign("spring-email", "c-2", context={"timezone": "Mars/Base"}, expect=422)
    assert bad["error"]["details"][0]["field"] == "context.timezone"


def test_converted_arms_are_not_offered_again(api: Any) -> None:
    policy_experiment(api, exclude_converted_arms=True)
    decision = api.assign("spring-email", "c-1")
    api.send_events([{"event_id": "buy", "type": "conversion", "assignment_id": decision["assignment_id"],
                      "occurred_at": iso(NOW)}])
    for _ in range(5):
        again = api.assign("spring-email", "c-1")
        assert again["arm"] != decision["arm"] and again["no_offer"] is False
        assert 0 < again["propensity"] <= 1


def test_a_single_request_reads_the_same_history_as_a_batch(app: Any, api: Any) -> None:
    # One request reads its whole history in one statement; a batch reads it kind by kind.
    from service.usecases import contact
    from service.http.api.decisions import runtime_cache
    from service.usecases.decisions import Request

    policy_experiment(api, max_per_subject={"count": 2, "per_seconds": 86400},
                      cooldown_after_conversion_seconds=3 * 86400, exclude_converted_arms=True)
    capped = [api.assign("spring-email", "capped") for _ in range(2)]
    api.assign("spring-email", "busy")
    api.assign("spring-email", "busy")
    bought = api.assign("spring-email", "bought")
    api.send_events([{"event_id": "buy", "type": "conversion", "assignment_id": bought["assignment_id"],
                      "value": 5, "occurred_at": iso(NOW)}])
    api.call("POST", "/v1/events", scope="channel", json={"events": [
        {"event_id": "bye", "type": "unsubscribe", "assignment_id": capped[0]["assignment_id"],
         "occurred_at": iso(NOW)}]})
    requests = [Request("capped", None, "email"), Request("capped", None, "sms"), Request("busy", None, "email"),
                Request("bought", None, "email"), Request("new", None, "email"), Request("new", None, None)]
    now = utcnow()  # one clock for both paths: their messages quote it to the second
    with app.app_context():
        runtime = runtime_cache().get(db_module.session, "spring-email")
        database = db_module.get_db(app)
        with database.session() as session:
            batch = [contact.verdicts(session, runtime, [r], now).get(0) for r in requests]
        single = [contact.verdict_for_one(database, runtime, r, now).get(0) for r in requests]
    assert single == batch
    reasons = [v.reason if v is not None and not v.allowed else None for v in single]
    assert reasons == ["unsubscribed", None, "frequency_cap", "cooldown_after_conversion", None, None]
