"""Subject profiles through the API: supplied and computed fields, profile features, explanation, export, erasure."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from service import clock
from service.store import db as db_module
from tests.conftest import spring_email


def iso(moment: Any) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@pytest.fixture(autouse=True)
def simulated_clock() -> Any:
    yield clock
    clock.reset()


def test_put_and_get_a_profile_with_engagement(api: Any) -> None:
    api.create_experiment(spring_email(contact_policy=None), start=True)
    put = api.call("PUT", "/v1/subjects/c-1", scope="channel", json={
        "timezone": "Europe/Berlin", "lifetime_value": 250.0, "loyalty_tier": "gold",
        "consent": {"email": True, "sms": False}, "attributes": {"segment": "outdoor"}})
    assert put.status_code == 200, put.get_json()
    bad = api.call("PUT", "/v1/subjects/c-1", scope="channel", json={"timezone": "Mars/Base"})
    assert bad.status_code == 422
    decision = api.assign("spring-email", "c-1")
    now = clock.utcnow()
    api.send_events([
        {"event_id": "o", "type": "open", "assignment_id": decision["assignment_id"], "occurred_at": iso(now)},
        {"event_id": "c", "type": "click", "assignment_id": decision["assignment_id"], "occurred_at": iso(now)}])
    clock.advance(30 * 86400)  # one half-life later: (1 open + 3 click) / 2
    body = api.call("GET", "/v1/subjects/c-1").get_json()
    assert body["attributes"]["lifetime_value"] == 250.0 and body["attributes"]["loyalty_tier"] == "gold"
    assert body["computed"]["engagement"]["score"] == pytest.approx(2.0, rel=1e-3)
    assert body["recent_decisions"][0]["assignment_id"] == decision["assignment_id"]
    assert api.call("GET", "/v1/subjects/c-1", scope="channel").status_code == 403


def test_best_channel_skips_unsubscribed_and_non_consented_channels(api: Any) -> None:
    api.create_experiment(spring_email(contact_policy=None), start=True)
    api.call("PUT", "/v1/subjects/c-1", scope="channel", json={"consent": {"sms": False}})
    events = []
    for channel in ("email", "sms", "push"):
        for i in range(3):
            d = api.assign("spring-email", "c-1", channel=channel)
            events.append({"event_id": f"{channel}-{i}", "type": "click", "assignment_id": d["assignment_id"],
                           "occurred_at": iso(clock.utcnow())})
    for i in range(40):  # a population, so the channel priors can be fitted
        for channel in ("email", "sms", "push"):
            d = api.assign("spring-email", f"p{i}", channel=channel)
            if i % 4 == 0:
                events.append({"event_id": f"p{i}-{channel}", "type": "click", "assignment_id": d["assignment_id"],
                               "occurred_at": iso(clock.utcnow())})
    api.send_events(events)
    api.send_events([{"event_id": "bye", "type": "unsubscribe", "subject_id": "c-1", "channel": "email",
                      "occurred_at": iso(clock.utcnow())}])
    body = api.call("GET", "/v1/subjects/c-1").get_json()
    channel = body["computed"]["channel"]
    assert channel["skipped"] == {"email": "unsubscribed", "sms": "no_consent"}
    assert channel["best"] == "push"
    assert [s["channel"] for s in body["suppressions"]] == ["email"]


def test_profile_features_reach_a_contextual_policy_and_are_logged(api: Any) -> None:
    spec = spring_email(contact_policy=None, allocation={"type": "bandit", "policy": {"name": "lin_ucb"}, "features": [
        {"name": "loyalty_points", "type": "numeric", "source": "profile"},
        {"name": "segment", "type": "categorical", "source": "profile", "required": False}]})
    api.create_experiment(spec, start=True)
    api.call("PUT", "/v1/subjects/c-9", scope="channel", json={"loyalty_points": 1200,
                                                                "attributes": {"segment": "outdoor"}})
    decision = api.assign("spring-email", "c-9")  # the channel sends only the subject id
    why = api.call("GET", f"/v1/assignments/{decision['assignment_id']}").get_json()
    assert why["features"] == {"loyalty_points": 1200.0, "segment": "outdoor"}
    assert why["profile_features"] == {"loyalty_points": 1200.0, "segment": "outdoor"}
    assert why["propensity"] == pytest.approx(decision["propensity"], abs=1e-6)
    assert "lin_ucb" in why["explanation"] and why["policy_version"] == 0
    missing = api.assign("spring-email", "nobody", expect=422)  # a required profile feature it cannot find
    assert missing["error"]["details"][0]["field"] == "context.loyalty_points"
    assert api.call("GET", "/v1/assignments/0000").status_code == 404


def test_export_holds_every_row_and_erasure_leaves_nothing(app: Any, api: Any) -> None:
    api.create_experiment(spring_email(contact_policy=None), start=True)
    api.call("PUT", "/v1/subjects/c-1", scope="channel", json={"lifetime_value": 99.0})
    decisions = [api.assign("spring-email", "c-1") for _ in range(2)]
    api.send_events([{"event_id": "e1", "type": "conversion", "assignment_id": decisions[0]["assignment_id"],
                      "value": 12.0, "occurred_at": iso(clock.utcnow())},
                     {"event_id": "e2", "type": "unsubscribe", "subject_id": "c-1", "channel": "sms",
                      "occurred_at": iso(clock.utcnow())}])
    api.client.post("/v1/transactions/import", data=b"subject_id,date,amount\nc-1,2026-01-05,30\n",
                    content_type="text/csv", headers=api.headers("analyst"))
    export = api.call("GET", "/v1/subjects/c-1/export", scope="admin").get_json()
    tables = {"decisions": "assignments", "events": "events", "suppressions": "suppressions",
              "transactions": "transactions"}
    with db_module.get_db(app).engine.connect() as conn:
        for key, table in tables.items():
            stored = conn.execute(text(f"SELECT COUNT(*) FROM {table} WHERE subject_id = 'c-1'")).scalar()
            assert len(export[key]) == stored > 0, key
        summaries = conn.execute(text("SELECT COUNT(*) FROM decision_outcomes o JOIN assignments a "
                                      "ON a.id = o.assignment_id WHERE a.subject_id = 'c-1'")).scalar()
    assert len(export["outcome_summaries"]) == summaries == 1
    assert export["profile"]["supplied_value"] == 99.0
    assert api.call("GET", "/v1/subjects/c-1/export", scope="analyst").status_code == 403
    assert api.call("DELETE", "/v1/subjects/c-1", scope="admin").status_code == 200
    with db_module.get_db(app).engine.connect() as conn:
        for table in ("assignments", "events", "suppressions", "transactions", "subjects", "subject_values"):
            assert conn.execute(text(f"SELECT COUNT(*) FROM {table} WHERE subject_id = 'c-1'")).scalar() == 0, table
    empty = api.call("GET", "/v1/subjects/c-1/export", scope="admin").get_json()
    assert empty["decisions"] == [] and empty["profile"] is None


def test_bulk_profile_import(api: Any) -> None:
    body = (b"subject_id,timezone,lifetime_value,loyalty_tier,consent.email,attributes.segment\n"
            b"a,Europe/Paris,10,silver,yes,city\nb,Nowhere/Land,5,,no,\n,UTC,1,,,\n")
    response = api.client.post("/v1/subjects/import", data=body, content_type="text/csv",
                               headers=api.headers("channel"))
    result = response.get_json()
    assert result["stored"] == 1 and [r["line"] for r in result["rejected"]] == [3, 4]
    profile = api.call("GET", "/v1/subjects/a").get_json()["attributes"]
    assert profile["consent"] == {"email": True} and profile["attributes"] == {"segment": "city"}


def test_report_breaks_down_by_a_profile_attribute(api: Any) -> None:
    from tests.service.test_events_api import iso as iso_

    api.create_experiment(spring_email(contact_policy=None), start=True)
    tiers = {f"s{i}": ("gold" if i % 3 == 0 else "silver" if i % 3 == 1 else None) for i in range(300)}
    for subject, tier in tiers.items():
        if tier:
            api.call("PUT", f"/v1/subjects/{subject}", scope="channel", json={"loyalty_tier": tier})
    decisions = api.assign_batch("spring-email", [{"subject_id": s} for s in tiers])
    api.send_events([{"event_id": f"c{i}", "type": "conversion", "assignment_id": d["assignment_id"],
                      "occurred_at": iso_(clock.utcnow())}
                     for i, d in enumerate(decisions) if tiers[d["subject_id"]] == "gold"])
    body = api.call("GET", "/v1/experiments/spring-email/report/segments?by=loyalty_tier").get_json()
    by_value = {s["value"]: s["report"] for s in body["segments"]}
    assert set(by_value) == {None, "gold", "silver"}
    for value, report in by_value.items():
        decided = sum(a["decisions"] for a in report["arms"])
        assert decided == sum(1 for t in tiers.values() if t == value)
        conversion = next(m for m in report["metrics"] if m["metric"] == "conversion_rate")
        rates = {row["value"] for row in conversion["arms"]}
        assert rates == ({1.0} if value == "gold" else {0.0})
    assert api.call("GET", "/v1/experiments/spring-email/report/segments?by=shoe_size").status_code == 422
