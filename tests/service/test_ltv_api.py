"""Lifetime value through the API: the seed scenario, value sources, the CLV fit on real purchases."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from tests.conftest import DATA


def seed_history(n: int, seed: int) -> bytes:
    """Arm b doubles revenue per decision and doubles unsubscribes against arm a."""
    rng = np.random.default_rng(seed)
    lines = []
    for arm, conversion, unsubscribe in (("a", 0.05, 0.005), ("b", 0.10, 0.010)):
        converted = rng.random(n) < conversion
        unsubscribed = rng.random(n) < unsubscribe
        for i in range(n):
            lines.append(json.dumps({"subject_id": f"{arm}-{i}", "arm": arm, "conversion": int(converted[i]),
                                     "revenue": 20.0 if converted[i] else 0.0, "unsubscribe": int(unsubscribed[i]),
                                     "context": {"clv": 500.0}}))
    return "\n".join(lines).encode()


def ltv_experiment(api: Any, key: str, **extra: Any) -> dict[str, Any]:
    spec = {"key": key, "name": key, "arms": [{"key": "a", "is_control": True}, {"key": "b"}],
            "allocation": {"type": "fixed"}, "unsubscribe_value_share": 1.0, **extra}
    api.create_experiment(spec)
    response = api.client.post(f"/v1/experiments/{key}/import", data=seed_history(12000, 5),
                               content_type="application/x-ndjson", headers=api.headers("analyst"))
    assert response.status_code == 200 and response.get_json()["imported"] == 24000
    return api.report(key)


@pytest.mark.parametrize("value, b_wins", [(500.0, False), (20.0, True)])
def test_twice_the_revenue_with_twice_the_unsubscribes(api: Any, value: float, b_wins: bool) -> None:
    report = ltv_experiment(api, "seed", default_subject_value=value)
    b = next(arm for arm in report["ltv"]["arms"] if arm["arm"] == "b")
    diff = b["diff"]
    assert (diff["ci_low"] > 0) if b_wins else (diff["ci_high"] < 0), b
    revenue = b["components"]["revenue"]["diff"]
    loss = b["components"]["unsubscribe_loss"]["diff"]
    assert revenue["value"] == pytest.approx(1.0, abs=0.25)      # b brings about one more per decision
    assert loss["value"] < 0                                      # and loses more to unsubscribes
    assert ("less" in b["verdict"]) != b_wins and "unsubscribe" in b["verdict"]
    ltv_metric = next(m for m in report["metrics"] if m["metric"] == "ltv_adjusted_value")
    assert {row["arm"] for row in ltv_metric["arms"]} == {"a", "b"}


def test_a_value_supplied_in_the_context_takes_precedence_over_the_default(api: Any) -> None:
    # the default alone (20) would make b win; the context says each subject is worth 500
    report = ltv_experiment(api, "ctx", default_subject_value=20.0, subject_value_field="clv")
    b = next(arm for arm in report["ltv"]["arms"] if arm["arm"] == "b")
    assert b["diff"]["ci_high"] < 0


def test_clv_fit_on_real_cdnow_purchases(api: Any) -> None:
    lines = ["subject_id,date,amount"]
    for raw in (DATA / "cdnow" / "CDNOW_sample.txt").read_text().splitlines():
        fields = raw.split()
        day = fields[2]
        lines.append(f"{fields[0]},{day[:4]}-{day[4:6]}-{day[6:]},{fields[4]}")
    body = "\n".join(lines).encode()
    imported = api.client.post("/v1/transactions/import", data=body, content_type="text/csv",
                               headers=api.headers("analyst"))
    assert imported.status_code == 200 and imported.get_json()["imported"] == 6919
    again = api.client.post("/v1/transactions/import", data=body, content_type="text/csv",
                            headers=api.headers("analyst"))
    assert again.get_json()["duplicates"] == 6919
    fitted = api.call("POST", "/v1/clv/fit", json={"horizon_weeks": 52})
    assert fitted.status_code == 200, fitted.get_json()
    body = fitted.get_json()
    assert body["customers"] == 2357 and body["bgnbd"]["converged"] is True
    assert api.call("POST", "/v1/clv/fit", scope="channel").status_code == 403


def test_a_bandit_can_learn_from_the_ltv_adjusted_value(app: Any, api: Any) -> None:
    from service import clock
    from service.store import db as db_module
    from service.jobs.learning import refit
    from service.store.models import Experiment
    from sqlalchemy import select

    api.create_experiment({
        "key": "ltv-bandit", "name": "LTV bandit", "arms": [{"key": "a", "is_control": True}, {"key": "b"}],
        "allocation": {"type": "bandit", "policy": {"name": "epsilon_greedy", "epsilon": 0.1}},
        "reward": {"type": "ltv_adjusted"}, "attribution_window_seconds": 3600, "default_subject_value": 500.0,
        "unsubscribe_value_share": 1.0}, start=True)
    try:
        decisions = api.assign_batch("ltv-bandit", [{"subject_id": f"s{i}"} for i in range(400)])
        now = clock.utcnow().isoformat().replace("+00:00", "Z")
        events = []
        for d in decisions:  # b brings revenue but makes everyone unsubscribe; a brings a little, keeps them
            if d["arm"] == "b":
                events += [{"event_id": f"c-{d['assignment_id']}", "type": "conversion", "value": 50.0,
                            "assignment_id": d["assignment_id"], "occurred_at": now},
                           {"event_id": f"u-{d['assignment_id']}", "type": "unsubscribe",
                            "assignment_id": d["assignment_id"], "occurred_at": now}]
            else:
                events.append({"event_id": f"c-{d['assignment_id']}", "type": "conversion", "value": 5.0,
                               "assignment_id": d["assignment_id"], "occurred_at": now})
        api.send_events(events)
        with db_module.get_db(app).session() as session:  # not matured: an unsubscribe may still come
            experiment = session.scalars(select(Experiment)).one()
            assert refit(session, experiment).examples == 0
        clock.advance(3600 + 400)  # known once the decisions matured (the wait: the 1-hour window) and a grace passed
        with db_module.get_db(app).session() as session:
            experiment = session.scalars(select(Experiment)).one()
            result = refit(session, experiment)
        assert result.status == "refit" and result.examples == 400
        later = api.assign_batch("ltv-bandit", [{"subject_id": f"t{i}"} for i in range(300)])
        assert sum(d["arm"] == "a" for d in later) > 240  # revenue 50 minus 500 lost is worse than 5
    finally:
        clock.reset()
