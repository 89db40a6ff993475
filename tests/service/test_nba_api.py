"""Next best action through the HTTP API: expected value across offers, eligibility, contact rules
across offers and channels, true propensities, and the moment."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from scipy.stats import chisquare

from experiments.sendtime import quiet_mask
from service.clock import utcnow


def offer(key: str, value: float, **extra: Any) -> dict[str, Any]:
    """A two-arm offer family whose conversions are worth `value`."""
    spec = {"key": key, "name": f"{key} offer",
            "arms": [{"key": "control", "is_control": True, "value": value},
                     {"key": "variant", "value": value}],
            "allocation": {"type": "fixed"}, "reward": {"event": "conversion"}}
    spec.update(extra)
    return spec


def nba(api: Any, subject_id: str, expect: int = 200, **body: Any) -> dict[str, Any]:
    response = api.call("POST", "/v1/next-best-action", scope="channel", json={"subject_id": subject_id, **body})
    assert response.status_code == expect, response.get_json()
    return response.get_json()


def test_the_offer_with_the_higher_expected_value_wins_and_is_logged(api: Any) -> None:
    api.create_experiment(offer("socks", 5.0), start=True)
    api.create_experiment(offer("coats", 120.0), start=True)
    answer = nba(api, "c-1", channels=["email"], exploration=0.0)
    assert answer["experiment"] == "coats" and answer["channel"] == "email" and not answer["no_offer"]
    assert answer["propensity"] == pytest.approx(0.5)  # the fixed split's share, as /assign logs it
    assert answer["arbitration_probability"] == 1.0
    assert [r["experiment"] for r in answer["runners_up"]] == ["socks"]
    assert answer["score"]["expected_value"] > answer["runners_up"][0]["expected_value"]
    explained = api.call("GET", f"/v1/assignments/{answer['assignment_id']}").get_json()
    assert explained["experiment"] == "coats" and explained["channel"] == "email"
    assert explained["arbitration"]["probability"] == 1.0 and explained["arbitration"]["runners_up"][0][
        "experiment"] == "socks"
    assert "Next best action chose this offer and channel with probability 1.0000" in explained["explanation"]
    report = api.report("coats")
    assert sum(arm["decisions"] for arm in report["arms"]) == 1


def test_an_ineligible_offer_is_never_chosen(api: Any) -> None:
    api.create_experiment(offer("socks", 5.0), start=True)
    api.create_experiment(offer("coats", 120.0, eligibility=[{"field": "profile.loyalty_tier", "in": ["gold"]}]),
                          start=True)
    assert api.call("PUT", "/v1/subjects/c-b", scope="channel", json={"loyalty_tier": "bronze"}).status_code == 200
    assert api.call("PUT", "/v1/subjects/c-g", scope="channel", json={"loyalty_tier": "gold"}).status_code == 200
    for _ in range(40):
        answer = nba(api, "c-b", channels=["email"], exploration=0.5, dry_run=True)
        assert answer["experiment"] == "socks"
    assert answer["excluded"] == [{"experiment": "coats", "reason": "not_eligible",
                                   "detail": "profile.loyalty_tier is 'bronze', not in ['gold']"}]
    assert nba(api, "c-g", channels=["email"], exploration=0.0, dry_run=True)["experiment"] == "coats"
    assert api.call("GET", "/v1/subjects/c-b").get_json()["recent_decisions"] == []  # dry runs store nothing


def test_consent_and_the_cross_channel_cap_hold_across_offers(api: Any) -> None:
    policy = {"max_per_subject_all_channels": {"count": 1, "per_seconds": 86400}}
    api.create_experiment(offer("socks", 5.0, contact_policy=policy), start=True)
    api.create_experiment(offer("coats", 120.0, contact_policy=policy), start=True)
    api.call("PUT", "/v1/subjects/c-1", scope="channel", json={"consent": {"sms": False}})
    first = nba(api, "c-1", channels=["email", "sms"], exploration=0.0)
    assert first["channel"] == "email" and first["experiment"] == "coats"
    assert {(e["experiment"], e["channel"], e["reason"]) for e in first["excluded"]} == {
        ("socks", "sms", "no_consent"), ("coats", "sms", "no_consent")}
    second = nba(api, "c-1", channels=["email", "sms"], exploration=0.0)
    assert second["no_offer"] and second["assignment_id"] is None
    assert {e["reason"] for e in second["excluded"]} == {"no_consent", "frequency_cap_all_channels"}
    decisions = api.call("GET", "/v1/subjects/c-1").get_json()["recent_decisions"]
    assert len(decisions) == 1


def test_logged_propensities_match_observed_frequencies(api: Any) -> None:
    api.create_experiment({"key": "banner", "name": "banner", "arms": [
        {"key": "a", "is_control": True, "value": 10}, {"key": "b", "value": 10}, {"key": "c", "value": 10}],
        "allocation": {"type": "bandit", "policy": {"name": "epsilon_greedy", "epsilon": 0.3,
                                                    "exploration_floor": 0.2}},
        "reward": {"event": "click"}}, start=True)
    api.create_experiment(offer("socks", 5.0), start=True)
    answers = [nba(api, f"s-{i}", channels=["email"], exploration=0.4) for i in range(240)]
    families = Counter(a["experiment"] for a in answers)
    stated = {a["experiment"]: a["arbitration_probability"] for a in answers}
    expected = np.array([stated[k] for k in sorted(stated)])
    assert chisquare([families[k] for k in sorted(stated)], expected / expected.sum() * len(answers)).pvalue > 0.001
    banner = [a for a in answers if a["experiment"] == "banner"]
    arms = Counter(a["arm"] for a in banner)
    propensity = {a["arm"]: a["propensity"] for a in banner}
    assert sum(propensity.values()) == pytest.approx(1.0, abs=1e-5)  # answers round to six digits
    shares = np.array([propensity[k] for k in sorted(propensity)])
    assert chisquare([arms[k] for k in sorted(propensity)], shares / shares.sum() * len(banner)).pvalue > 0.001


def test_send_at_lands_in_the_subjects_most_active_hour_and_never_in_quiet_hours(api: Any) -> None:
    policy = {"quiet_hours": {"start": "21:00", "end": "08:00"}}
    api.create_experiment(offer("coats", 120.0, contact_policy=policy), start=True)
    history = offer("history", 1.0)
    api.create_experiment(history)
    rng = np.random.default_rng(11)
    tokyo = ZoneInfo("Asia/Tokyo")
    today = utcnow().astimezone(tokyo).replace(minute=10, second=0, microsecond=0)
    lines = ["subject_id,arm,decided_at,open"]
    for day in range(1, 21):
        lines.append(f"evening,variant,{(today - timedelta(days=day)).replace(hour=19).isoformat()},1")
        lines.append(f"night-owl,variant,{(today - timedelta(days=day)).replace(hour=3).isoformat()},1")
        for i in range(10):  # the population reads at all hours, most around noon
            hour = int(np.clip(rng.normal(12, 4), 0, 23))
            lines.append(f"p-{i},variant,{(today - timedelta(days=day)).replace(hour=hour).isoformat()},1")
    imported = api.client.post("/v1/experiments/history/import", data="\n".join(lines) + "\n",
                               content_type="text/csv", headers=api.headers("analyst"))
    assert imported.status_code == 200 and imported.get_json()["rejected"] == []
    for subject in ("evening", "night-owl"):
        api.call("PUT", f"/v1/subjects/{subject}", scope="channel", json={"timezone": "Asia/Tokyo"})
    quiet = quiet_mask("21:00", "08:00")
    evening = nba(api, "evening", channels=["email"], exploration=0.0, dry_run=True)
    at = datetime.fromisoformat(evening["send_at"].replace("Z", "+00:00"))
    assert at.astimezone(tokyo).hour == 19 and at >= utcnow() - timedelta(minutes=1)
    owl = nba(api, "night-owl", channels=["email"], exploration=0.0, dry_run=True)
    owl_hour = datetime.fromisoformat(owl["send_at"].replace("Z", "+00:00")).astimezone(tokyo).hour
    assert not quiet[owl_hour]
    assert "Asia/Tokyo" == evening["score"]["time_zone"] and "19:00" in evening["score"]["send_time"]


def test_bad_requests_are_refused(api: Any) -> None:
    for body in ({}, {"subject_id": ""}, {"subject_id": "x", "channels": []}, {"subject_id": "x", "exploration": 2},
                 {"subject_id": "x", "channels": ["e mail"]}, {"subject_id": "x", "costs": {"sms": -1}},
                 {"subject_id": "x", "surprise": 1}):
        response = api.call("POST", "/v1/next-best-action", scope="channel", json=body)
        assert response.status_code == 422, (body, response.get_json())
    assert api.call("POST", "/v1/next-best-action", scope="analyst", json={"subject_id": "x"}).status_code == 403
    empty = nba(api, "x")
    assert empty["no_offer"] and empty["reason"] == "no_eligible_offer"


def test_a_fixed_split_is_scored_by_its_measured_rate_of_the_reward_event(api: Any) -> None:
    from service.usecases.nba import PRIOR_WEIGHT

    api.create_experiment(offer("coupons", 10.0, custom_events=["coupon_used"],
                                reward={"event": "coupon_used"}), start=True)
    decisions = [api.assign("coupons", f"c-{i}") for i in range(30)]
    used = [d for d in decisions if d["arm"] == "variant"][:4]
    opened = next(d for d in decisions if d["arm"] == "control")  # other events are no reward
    api.send_events([{"event_id": f"u-{i}", "type": "coupon_used", "assignment_id": d["assignment_id"],
                      "occurred_at": datetime.now(timezone.utc).isoformat()} for i, d in enumerate(used)]
                    + [{"event_id": "o-1", "type": "open", "assignment_id": opened["assignment_id"],
                        "occurred_at": datetime.now(timezone.utc).isoformat()}])
    answer = nba(api, "someone-new", channels=["email"], exploration=0.0, dry_run=True)
    per_arm = Counter(d["arm"] for d in decisions)
    pooled = len(used) / len(decisions)
    responses = {arm["arm"]: arm["response"] for arm in answer["score"]["arms"]}
    for arm, rewarded in (("variant", len(used)), ("control", 0)):
        expected = (rewarded + PRIOR_WEIGHT * pooled) / (per_arm[arm] + PRIOR_WEIGHT)
        assert responses[arm] == pytest.approx(expected, abs=1e-6), (arm, responses)
