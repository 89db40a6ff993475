"""The analyst's day on the dashboard: the promotion checklist with promote and roll-back buttons,
a subject's page with its decisions and their explanations, and a history without refit noise."""

from __future__ import annotations

import re
from typing import Any

from service.store import db as db_module
from service.store.models import AuditEntry
from service.store import experiments as store
from tests.dashboard._data import balanced_csv, csrf_of, three_arm_spec
from tests.dashboard.test_pages import import_csv, page_csrf, sign_in


def test_promotion_checklist_and_buttons(client: Any, api: Any, keys: dict[str, str]) -> None:
    api.create_experiment(three_arm_spec("spring", "Spring offer"), start=True)
    import_csv(api, "spring", balanced_csv())
    sign_in(client, keys["analyst"])
    page = client.get("/dashboard/experiments/spring").text
    panel = re.search(r'<section class="card" id="promotion">(.*?)</section>', page, re.S).group(1)
    conditions = re.findall(r'<li class="(passed|failed)" data-condition="([a-z_]+)"', panel)
    decision = api.call("GET", "/v1/experiments/spring/decision").get_json()
    assert conditions == [("passed" if c["passed"] else "failed", c["name"]) for c in decision["conditions"]]
    assert decision["action"].capitalize() in panel and 'id="action-promote"' in panel
    assert 'id="action-rollback"' not in panel

    promoted = client.post("/dashboard/experiments/spring/promote",
                           data={"csrf_token": page_csrf(client, "/dashboard/experiments/spring"), "winner": "mens",
                                 "reason": "clear enough"})
    assert promoted.status_code == 303
    after = client.get("/dashboard/experiments/spring").text
    assert "Promoted mens." in after and ">promoted: mens</span>" in after
    assert 'id="action-rollback"' in after and 'id="action-promote"' not in after
    experiment = api.call("GET", "/v1/experiments/spring").get_json()
    assert experiment["winner"] == "mens"
    audit = api.call("GET", "/v1/experiments/spring/audit").get_json()["entries"]
    assert audit[-1]["action"] == "promote" and audit[-1]["actor"] == "test-analyst"

    rolled = client.post("/dashboard/experiments/spring/rollback",
                         data={"csrf_token": csrf_of(after), "reason": "second thoughts"})
    assert rolled.status_code == 303
    assert api.call("GET", "/v1/experiments/spring").get_json()["winner"] is None
    assert api.call("GET", "/v1/experiments/spring/audit").get_json()["entries"][-1]["action"] == "rollback"


def test_promote_needs_the_csrf_token(client: Any, api: Any, keys: dict[str, str]) -> None:
    api.create_experiment(three_arm_spec("spring", "Spring offer"), start=True)
    sign_in(client, keys["analyst"])
    refused = client.post("/dashboard/experiments/spring/promote", data={"winner": "mens"})
    assert refused.status_code in (400, 403)
    assert api.call("GET", "/v1/experiments/spring").get_json()["winner"] is None


def test_subject_page_shows_profile_decisions_and_explanations(client: Any, api: Any, keys: dict[str, str]) -> None:
    api.create_experiment(three_arm_spec("spring", "Spring offer"), start=True)
    put = api.call("PUT", "/v1/subjects/c-42", scope="channel",
                   json={"timezone": "Europe/Berlin", "loyalty_tier": "gold", "consent": {"email": True}})
    assert put.status_code == 200, put.get_json()
    decision = api.assign("spring", "c-42")
    api.send_events([{"event_id": "u-1", "type": "unsubscribe", "assignment_id": decision["assignment_id"],
                      "occurred_at": decision_time(api, decision["assignment_id"])}])
    sign_in(client, keys["analyst"])
    looked_up = client.get("/dashboard/subjects?subject_id=c-42")
    assert looked_up.status_code == 303 and looked_up.headers["Location"].endswith("/dashboard/subjects/c-42")
    page = client.get("/dashboard/subjects/c-42")
    assert page.status_code == 200
    assert "Europe/Berlin" in page.text and "gold" in page.text
    assert re.search(r'<ul id="suppressions"><li><b>email</b>', page.text)
    link = f'/dashboard/assignments/{decision["assignment_id"]}'
    assert link in page.text
    explained = client.get(link)
    assert explained.status_code == 200
    why = api.call("GET", f"/v1/assignments/{decision['assignment_id']}").get_json()["explanation"]
    assert why.replace("'", "&#39;") in explained.text
    unknown = client.get("/dashboard/subjects/nobody-here")
    assert unknown.status_code == 200 and 'id="unknown"' in unknown.text
    assert client.get("/dashboard/assignments/" + "0" * 32).status_code == 404


def test_history_folds_refits_and_names_jobs_in_words(app: Any, client: Any, api: Any, keys: dict[str, str]) -> None:
    api.create_experiment(three_arm_spec("spring", "Spring offer"), start=True)
    with db_module.get_db(app).session() as session:
        experiment = store.get(session, "spring")
        for version in range(1, 31):
            store.audit(session, experiment, "jobs:host-a:1234:5678", "refit", version=version, examples=10)
    sign_in(client, keys["analyst"])
    page = client.get("/dashboard/experiments/spring").text
    history = re.search(r'<section id="audit">(.*?)</section>', page, re.S).group(1)
    assert history.count('class="audit-refit"') == 1
    assert "30 refits; the newest: version 30" in history
    assert "jobs:host-a" not in history and "service jobs on host-a" in history


def test_missing_pages_say_not_found(client: Any, keys: dict[str, str]) -> None:
    sign_in(client, keys["analyst"])
    missing = client.get("/dashboard/experiments/no-such")
    assert missing.status_code == 404 and "404 · Not found" in missing.text


def decision_time(api: Any, assignment_id: str) -> str:
    return api.call("GET", f"/v1/assignments/{assignment_id}").get_json()["decided_at"]


def test_subject_page_shows_what_next_best_action_would_pick_and_why(client: Any, api: Any,
                                                                     keys: dict[str, str]) -> None:
    api.create_experiment(three_arm_spec("spring", "Spring offer"), start=True)
    api.create_experiment(three_arm_spec("gold-only", "Gold offer",
                                         eligibility=[{"field": "profile.loyalty_tier", "eq": "gold"}]), start=True)
    api.call("PUT", "/v1/subjects/c-7", scope="channel", json={"loyalty_tier": "silver"})
    sign_in(client, keys["analyst"])
    page = client.get("/dashboard/subjects/c-7").text
    section = re.search(r'<section id="next-best-action">(.*?)</section>', page, re.S).group(1)
    assert re.search(r'id="nba-choice"><b>spring</b> on <b>(email|sms|push)</b>', section)  # equal on every channel
    assert "gold-only" in section and "not eligible" in section and "profile.loyalty_tier is &#39;silver&#39;" in section
    assert api.call("GET", "/v1/subjects/c-7").get_json()["recent_decisions"] == []  # a dry run stores nothing
