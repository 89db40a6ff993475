"""Promotion rules through the API: guardrail modes, stop for harm, subjects as units, life after promotion."""

from __future__ import annotations

import io
from typing import Any

import pytest
from sqlalchemy import select

from service import clock
from service.store import db as db_module
from service.store.models import WebhookDelivery
from service.jobs.promotion import evaluate_all

DAY = 86400


@pytest.fixture(autouse=True)
def simulated_clock() -> Any:
    yield clock
    clock.reset()


def _spec(key: str, **promotion: Any) -> dict[str, Any]:
    return {
        "key": key, "name": key,
        "arms": [{"key": "control", "is_control": True}, {"key": "b"}],
        "allocation": {"type": "fixed", "weights": {"control": 1, "b": 1}},
        "reward": {"event": "conversion"}, "attribution_window_seconds": 3600,
        "guardrails": [{"metric": "unsubscribe_rate", "max_relative_increase": 0.10}],
        "promotion": {"metric": "conversion_rate", "confidence": 0.95, "min_decisions_per_arm": 1000,
                      "min_runtime_seconds": 0, "action": "promote", **promotion},
    }  # fmt: skip


def _csv(rows: list[tuple[str, str, int, int]], decided_at: str | None = None) -> bytes:
    """subject_id, arm, conversion, unsubscribe (and revenue 3 per conversion) as an import body."""
    out = io.StringIO()
    out.write("subject_id,arm,conversion,unsubscribe,revenue" + (",decided_at" if decided_at else "") + "\n")
    for subject, arm, conv, unsub in rows:
        out.write(f"{subject},{arm},{conv},{unsub},{3.0 * conv}" + (f",{decided_at}" if decided_at else "") + "\n")
    return out.getvalue().encode()


def _arm_rows(arm: str, n: int, conversions: int, unsubscribes: int, prefix: str = "",
              per_subject: int = 1) -> list[tuple[str, str, int, int]]:  # fmt: skip
    return [(f"{prefix}{arm}-{i // per_subject}", arm, int(i < conversions), int(n - unsubscribes <= i))
            for i in range(n)]  # fmt: skip


def _import(api: Any, key: str, body: bytes) -> None:
    response = api.client.post(f"/v1/experiments/{key}/import", data=body, content_type="text/csv",
                               headers=api.headers("analyst"))  # fmt: skip
    assert response.status_code == 200 and response.get_json()["rejected"] == [], response.get_json()


def _decision(api: Any, key: str) -> dict[str, Any]:
    return api.call("GET", f"/v1/experiments/{key}/decision").get_json()


def _job(app: Any) -> list[dict[str, Any]]:
    with db_module.get_db(app).session() as session:
        return evaluate_all(session, holder="test")


def test_clear_winner_with_equal_unsubscribes_is_promoted_unless_non_inferiority(app: Any, api: Any) -> None:
    # 22% against 10% conversion, 1,000 decisions per arm, 10 unsubscribes in each.
    api.create_experiment(_spec("clear"), start=True)
    _import(api, "clear", _csv(_arm_rows("control", 1000, 100, 10) + _arm_rows("b", 1000, 220, 10)))
    decision = _decision(api, "clear")
    assert decision["action"] == "promote" and decision["winner"] == "b", decision["summary"]
    guard = next(c for c in decision["conditions"] if c["name"] == "guardrail:unsubscribe_rate")
    assert guard["passed"] and "rule: harm" in guard["detail"] and "no evidence of harm" in guard["detail"]
    strict = _spec("clear")["guardrails"][0] | {"mode": "non_inferiority"}
    patched = api.call("PATCH", "/v1/experiments/clear", json={"guardrails": [strict]})
    assert patched.status_code == 200, patched.get_json()
    decision = _decision(api, "clear")
    assert decision["action"] == "wait"
    guard = next(c for c in decision["conditions"] if c["name"] == "guardrail:unsubscribe_rate")
    assert not guard["passed"] and "rule: non-inferiority" in guard["detail"] and "cannot be ruled out" in (
        guard["detail"])


def test_harmful_treatment_gets_stop_and_on_harm_stop_pauses_it(app: Any, api: Any) -> None:
    api.create_experiment(_spec("harm", on_harm="stop"), start=True)
    hook = api.call("POST", "/v1/webhooks", scope="admin", json={"url": "http://127.0.0.1:9/hook"})
    assert hook.status_code == 201, hook.get_json()
    _import(api, "harm", _csv(_arm_rows("control", 1000, 220, 10) + _arm_rows("b", 1000, 100, 10)))
    decision = _decision(api, "harm")
    assert decision["action"] == "stop" and decision["winner"] is None
    assert decision["reason"].startswith("every treatment is clearly worse than control on conversion rate")
    assert "pauses the experiment" in decision["summary"]
    results = _job(app)
    assert results[0]["action"] == "stop" and results[0]["stopped"] is True
    assert api.call("GET", "/v1/experiments/harm").get_json()["status"] == "paused"
    entries = api.call("GET", "/v1/experiments/harm/audit").get_json()["entries"]
    stop = next(e for e in entries if e["action"] == "stop")
    assert stop["details"]["status_after"] == "paused" and "clearly worse" in stop["details"]["reason"]
    with db_module.get_db(app).session() as session:
        events = session.scalars(select(WebhookDelivery.event)).all()
    assert "experiment.stopped" in events
    assert _job(app) == []  # paused: nothing left to evaluate, nothing stopped twice


def test_repeat_subjects_are_one_unit_each(app: Any, api: Any) -> None:
    # The same outcomes twice: once from 2,000 subjects, once from 400 subjects with five decisions each
    # (a loyal subject converts on all of their decisions or none).
    rows = {"control": (1000, 100), "b": (1000, 140)}
    for key, per_subject in (("single", 1), ("repeat", 5)):
        api.create_experiment(_spec(key), start=True)
        body = []
        for arm, (n, conversions) in rows.items():
            body += _arm_rows(arm, n, conversions, 0, per_subject=per_subject)
        _import(api, key, _csv(body))
    single, repeat = (api.report(key) for key in ("single", "repeat"))

    def row(report: dict[str, Any]) -> dict[str, Any]:
        block = next(m for m in report["metrics"] if m["metric"] == "conversion_rate")
        return next(a for a in block["arms"] if a["arm"] == "b")

    a, b = row(single), row(repeat)
    assert a["diff"] == pytest.approx(b["diff"]) and a["value"] == b["value"]
    assert (b["diff_ci_high"] - b["diff_ci_low"]) > 2 * (a["diff_ci_high"] - a["diff_ci_low"])
    assert b["p_value"] > a["p_value"]
    seq_a, seq_b = (r["sequential"]["arms"][0] for r in (single, repeat))
    assert seq_b["ci_high"] - seq_b["ci_low"] > 2 * (seq_a["ci_high"] - seq_a["ci_low"])
    # With one decision per subject the numbers are the independent ones (statsmodels' proportions_ztest).
    from statsmodels.stats.proportion import proportions_ztest

    assert a["p_value"] == pytest.approx(float(proportions_ztest([140, 100], [1000, 1000])[1]), rel=1e-12)


def test_after_promotion_srm_counts_the_configured_split_and_a_regression_rolls_back(app: Any, api: Any) -> None:
    api.create_experiment(_spec("after", holdback=0.1, on_regression="rollback"), start=True)
    _import(api, "after", _csv(_arm_rows("control", 1000, 100, 10) + _arm_rows("b", 1000, 220, 10)))
    assert _job(app)[0]["promoted"] is True
    clock.advance(60)
    # After promotion b gets 90% of traffic: 1,800 decisions against 200 on the holdback, and b's customers
    # now unsubscribe at 6% against 1%.
    later = clock.utcnow().isoformat()
    _import(api, "after", _csv(_arm_rows("control", 200, 20, 2, prefix="p-")
                               + _arm_rows("b", 1800, 396, 108, prefix="p-"), decided_at=later))  # fmt: skip
    decision = _decision(api, "after")
    srm = decision["statistics"]["srm"]
    assert srm["warning"] is False and srm["counts"] == {"control": 1000, "b": 1000}
    # the attribution window (1 hour) has not closed on the new decisions: nothing has matured yet
    post = decision["post_promotion"]
    assert post["regression"] is None and "matured" in post["summary"]
    assert all(r["action"] != "regression" for r in _job(app))
    clock.advance(2 * 3600)
    post = _decision(api, "after")["post_promotion"]
    assert post["decisions"] == {"control": 200, "b": 1800}
    assert post["values"]["b"] == pytest.approx(0.22) and "unsubscribe rate guardrail" in post["regression"]
    results = _job(app)
    assert results[-1]["action"] == "regression" and results[-1]["rolled_back"] is True
    experiment = api.call("GET", "/v1/experiments/after").get_json()
    assert experiment["winner"] is None
    entries = api.call("GET", "/v1/experiments/after/audit").get_json()["entries"]
    assert [e["action"] for e in entries if e["action"] in ("promote", "rollback")] == ["promote", "rollback"]
    assert next(e for e in entries if e["action"] == "rollback")["details"]["statistics"]["regression"]


def test_guardrail_mode_is_validated(api: Any) -> None:
    spec = _spec("bad")
    spec["guardrails"][0]["mode"] = "lenient"
    response = api.call("POST", "/v1/experiments", json=spec)
    assert response.status_code == 422 and "mode" in str(response.get_json())


def test_power_endpoint_gives_both_plans(api: Any) -> None:
    body = {"metric_type": "rate", "baseline": 0.05, "mde_relative": 0.1, "daily_traffic": 10_000}
    result = api.call("POST", "/v1/power", json=body).get_json()
    assert result["sample_size_per_arm"] == 31_218 and result["sequential_sample_size_per_arm"] > 60_000
    assert result["sequential_power_at_sample_size"] == pytest.approx(0.35, abs=0.01)
    bad = api.call("POST", "/v1/power", json=body | {"sequential_tuning_n": 0})
    assert bad.status_code == 422


def test_bandit_decision_uses_ips_clustered_on_subjects(app: Any, api: Any) -> None:
    spec = _spec("ts")
    spec["allocation"] = {"type": "bandit", "policy": {"name": "thompson_sampling"}}
    spec["reward"] = {"event": "click"}
    spec["promotion"]["metric"] = "click_rate"
    spec["guardrails"] = []
    api.create_experiment(spec, start=True)
    events = []
    for round_ in range(4):  # 40 subjects, four decisions each
        for i in range(40):
            answer = api.assign("ts", f"s-{i}")
            if (i + round_) % 3 == 0:
                events.append({"event_id": f"e-{round_}-{i}", "type": "click", "assignment_id": answer["assignment_id"],
                               "occurred_at": clock.utcnow().isoformat()})  # fmt: skip
    sent = api.send_events(events)
    assert sent["accepted"] == len(events), sent["results"][:2]
    clock.advance(86400 + 600)  # past the reward wait and its grace: the bandit's estimators read matured decisions
    decision = _decision(api, "ts")
    assert decision["statistics"]["estimator"] == "ips"
    beats = next(c for c in decision["conditions"] if c["name"] == "beats_control")
    assert beats["values"]["n_total"] == 40 and beats["values"]["ci_low"] is not None, beats  # subjects, clustered
    report = api.report("ts")
    row = next(r for r in report["bandit"]["arms"] if r["arm"] == "b")
    assert (row["ips_diff_ci_low"], row["ips_diff_ci_high"]) == (beats["values"]["ci_low"], beats["values"]["ci_high"])
