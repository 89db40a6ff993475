"""Experiments through the HTTP API: create, read, list, patch, lifecycle, audit, errors."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import spring_email


def error_of(response: Any) -> dict[str, Any]:
    body = response.get_json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    return body["error"]


def test_design_example_creates_a_draft(api: Any) -> None:
    created = api.create_experiment(spring_email())
    assert created["status"] == "draft"
    assert created["key"] == "spring-email"
    assert [a["key"] for a in created["arms"]] == ["control", "mens", "womens"]
    assert created["arms"][1]["payload"] == {"template": "mens-v1"}
    assert created["allowed_actions"] == ["start"]
    assert len(created["salt"]) == 16
    fetched = api.call("GET", "/v1/experiments/spring-email").get_json()
    assert fetched["contact_policy"]["quiet_hours"] == {"start": "21:00", "end": "08:00"}
    assert fetched["promotion"]["min_decisions_per_arm"] == 1000


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda s: s.update(arms=s["arms"][:1]), "arms"),
        (lambda s: s["arms"].append({"key": "mens"}), "arms"),
        (lambda s: s["arms"][0].update(is_control=False), "is_control"),
        (lambda s: s["allocation"]["weights"].update(mens=0), "weights"),
        (lambda s: s["allocation"]["weights"].pop("mens"), "weights"),
        (lambda s: s.update(allocation={"type": "bandit", "policy": {"name": "magic"}}), "allocation.bandit.policy.name"),
        (lambda s: s.update(allocation={"type": "bandit", "policy": {"name": "lin_ucb"}}), "features"),
        (lambda s: s.update(allocation={"type": "bandit", "policy": {"name": "ucb1", "epsilon": 0.1}}), "epsilon"),
        (lambda s: s.update(reward={"event": "purchase"}), "purchase"),
        (lambda s: s.update(key="Not A Slug"), "key"),
        (lambda s: s.update(attribution_window_seconds=5), "attribution_window_seconds"),
        (lambda s: s.update(surprise=True), "surprise"),
        (lambda s: s["promotion"].update(confidence=1.5), "promotion.confidence"),
        (lambda s: s["contact_policy"]["quiet_hours"].update(start="25:00"), "contact_policy.quiet_hours.start"),
    ],
)
def test_bad_spec_is_422_naming_the_field(api: Any, mutate: Any, field: str) -> None:
    spec = spring_email()
    mutate(spec)
    response = api.call("POST", "/v1/experiments", json=spec)
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "validation_error"
    text = error["message"] + " ".join(f"{d.get('field')} {d.get('message')}" for d in error["details"])
    assert field in text, error


def test_duplicate_key_is_409(api: Any) -> None:
    api.create_experiment(spring_email())
    response = api.call("POST", "/v1/experiments", json=spring_email())
    assert response.status_code == 409
    assert error_of(response)["code"] == "duplicate_key"


def test_unknown_experiment_is_404(api: Any) -> None:
    response = api.call("GET", "/v1/experiments/nope")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


def test_malformed_json_is_400_and_nan_is_refused(api: Any) -> None:
    response = api.client.post("/v1/experiments", data="{bad", content_type="application/json",
                               headers=api.headers("analyst"))
    assert response.status_code == 400
    assert error_of(response)["code"] == "malformed_json"
    response = api.client.post("/v1/experiments", data='{"key": NaN}', content_type="application/json",
                               headers=api.headers("analyst"))
    assert response.status_code == 400


def test_oversized_body_is_413(app: Any, api: Any) -> None:
    app.config["MAX_CONTENT_LENGTH"] = 1000
    response = api.call("POST", "/v1/experiments", json=spring_email(description="x" * 2000))
    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"


def test_list_is_paginated_and_filtered(api: Any) -> None:
    for i in range(5):
        api.create_experiment(spring_email(key=f"exp-{i}", name=f"Experiment {i}"))
    api.call("POST", "/v1/experiments/exp-3/start")
    page = api.call("GET", "/v1/experiments?limit=2").get_json()
    assert [e["key"] for e in page["experiments"]] == ["exp-0", "exp-1"]
    assert page["total"] == 5
    page2 = api.call("GET", f"/v1/experiments?limit=2&cursor={page['next_cursor']}").get_json()
    assert [e["key"] for e in page2["experiments"]] == ["exp-2", "exp-3"]
    last = api.call("GET", f"/v1/experiments?limit=2&cursor={page2['next_cursor']}").get_json()
    assert [e["key"] for e in last["experiments"]] == ["exp-4"] and last["next_cursor"] is None
    running = api.call("GET", "/v1/experiments?status=running").get_json()
    assert [e["key"] for e in running["experiments"]] == ["exp-3"]
    assert api.call("GET", "/v1/experiments?limit=0").status_code == 422


ACTIONS = ["start", "pause", "conclude"]
ALLOWED = {
    ("draft", "start"): "running", ("running", "pause"): "paused", ("paused", "start"): "running",
    ("running", "conclude"): "concluded", ("paused", "conclude"): "concluded",
}
PATH_TO = {"draft": [], "running": ["start"], "paused": ["start", "pause"], "concluded": ["start", "conclude"]}


@pytest.mark.parametrize("state", ["draft", "running", "paused", "concluded"])
@pytest.mark.parametrize("action", ACTIONS)
def test_every_lifecycle_transition(api: Any, state: str, action: str) -> None:
    api.create_experiment(spring_email())
    for step in PATH_TO[state]:
        assert api.call("POST", f"/v1/experiments/spring-email/{step}").status_code == 200
    response = api.call("POST", f"/v1/experiments/spring-email/{action}")
    if (state, action) in ALLOWED:
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["status"] == ALLOWED[(state, action)]
    else:
        assert response.status_code == 409
        error = error_of(response)
        assert error["code"] == "invalid_transition"
        assert state in error["message"]


def test_conclude_with_winner_and_unknown_winner(api: Any) -> None:
    api.create_experiment(spring_email(), start=True)
    bad = api.call("POST", "/v1/experiments/spring-email/conclude", json={"winner": "nobody"})
    assert bad.status_code == 422
    assert api.call("GET", "/v1/experiments/spring-email").get_json()["status"] == "running"
    done = api.call("POST", "/v1/experiments/spring-email/conclude", json={"winner": "mens", "reason": "clear"})
    assert done.status_code == 200
    assert done.get_json()["winner"] == "mens"
    assert done.get_json()["concluded_at"] is not None


def test_patch_respects_what_may_change_in_each_state(api: Any) -> None:
    api.create_experiment(spring_email())
    new_arms = spring_email()["arms"] + [{"key": "kids", "payload": {"template": "kids"}}]
    draft = api.call("PATCH", "/v1/experiments/spring-email",
                     json={"arms": new_arms, "allocation": {"type": "fixed"}})
    assert draft.status_code == 200, draft.get_json()
    assert [a["key"] for a in draft.get_json()["arms"]] == ["control", "mens", "womens", "kids"]
    api.call("POST", "/v1/experiments/spring-email/start")
    frozen = api.call("PATCH", "/v1/experiments/spring-email", json={"arms": spring_email()["arms"]})
    assert frozen.status_code == 409
    error = error_of(frozen)
    assert error["code"] == "frozen_field" and error["details"] == [{"field": "arms"}]
    renamed = api.call("PATCH", "/v1/experiments/spring-email", json={"name": "Renamed", "guardrails": []})
    assert renamed.status_code == 200
    assert renamed.get_json()["name"] == "Renamed" and renamed.get_json()["guardrails"] == []
    assert api.call("PATCH", "/v1/experiments/spring-email", json={"key": "other"}).status_code == 409
    invalid = api.call("PATCH", "/v1/experiments/spring-email", json={"promotion": {"confidence": 2}})
    assert invalid.status_code == 422


def test_audit_records_every_change_with_the_key_name(api: Any) -> None:
    api.create_experiment(spring_email(), start=True)
    api.call("POST", "/v1/experiments/spring-email/pause", json={"reason": "holiday"})
    api.call("PATCH", "/v1/experiments/spring-email", json={"name": "New name"})
    entries = api.call("GET", "/v1/experiments/spring-email/audit").get_json()["entries"]
    assert [e["action"] for e in entries] == ["create", "start", "pause", "update"]
    assert {e["actor"] for e in entries} == {"test-analyst"}
    assert entries[2]["details"]["reason"] == "holiday"
    assert entries[3]["details"]["after"] == {"name": "New name"}
