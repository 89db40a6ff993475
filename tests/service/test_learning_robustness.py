"""A bad row cannot stop learning: contexts are checked at the door, and one failing refit does not stop the others."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select, update

from service import clock
from service.store import db as db_module
from service.jobs.scheduler import refit_due
from service.jobs.learning import REWARD_GRACE_SECONDS, refit_all
from service.store.models import Assignment, AuditEntry, Experiment, PolicySnapshot
from tests.service.test_bandits_api import ARMS, bandit_spec


@pytest.fixture(autouse=True)
def simulated_clock() -> Any:
    yield clock
    clock.reset()


def linucb(key: str) -> dict[str, Any]:
    return bandit_spec(key, policy={"name": "lin_ucb"},
                       allocation_extra={"features": [{"name": "recency", "type": "numeric"},
                                                      {"name": "tier", "type": "categorical"}]})


EXTREMES = [1.7e308, -1.7e308, 1e13, -1e13, 10**400, 2**70]


def test_a_context_number_beyond_the_bound_is_refused_at_the_door(api: Any) -> None:
    api.create_experiment(linucb("nbo"), start=True)
    for value in EXTREMES:
        bad = api.call("POST", "/v1/assign", scope="channel", json={
            "experiment": "nbo", "subject_id": "c-1", "context": {"recency": value, "tier": "gold"}})
        assert bad.status_code in (400, 422), (value, bad.get_json())  # 400: JSON numbers beyond a float
        if bad.status_code == 422:
            assert bad.get_json()["error"]["details"][0]["field"] == "context.recency"
        # Numbers the spec does not declare may still be used (covariate, subject value): same rule.
        extra = api.call("POST", "/v1/assign", scope="channel", json={
            "experiment": "nbo", "subject_id": "c-2", "context": {"recency": 1, "tier": "gold", "spend": value}})
        assert extra.status_code in (400, 422), (value, extra.get_json())
        batch = api.call("POST", "/v1/assign/batch", scope="channel", json={
            "experiment": "nbo", "subjects": [{"subject_id": "x", "context": {"recency": 1, "tier": "a"}},
                                              {"subject_id": "y", "context": {"recency": value, "tier": "a"}}]})
        assert batch.status_code in (400, 422), value


def test_numbers_within_the_bound_and_categorical_integers_are_accepted(api: Any) -> None:
    api.create_experiment(linucb("nbo"), start=True)
    assert api.assign("nbo", "c-1", context={"recency": 1e12, "tier": 10**15})["arm"] in ("control", "a", "b")
    assert api.assign("nbo", "c-2", context={"recency": -1e12, "tier": "gold", "label": "x"})["arm"]


def test_import_applies_the_same_context_rule(api: Any) -> None:
    api.create_experiment(linucb("nbo"))
    body = "subject_id,arm,conversion,context.recency,context.tier\ns1,a,1,3,gold\ns2,b,0,1.7e308,gold\ns3,b,0,-2e12,x\n"
    response = api.call("POST", "/v1/experiments/nbo/import", data=body, headers={"Content-Type": "text/csv"})
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    assert answer["imported"] == 1
    assert [r["line"] for r in answer["rejected"]] == [3, 4]
    assert "1e+12" in answer["rejected"][0]["reason"]


def test_one_failing_refit_is_recorded_and_the_others_go_on(app: Any, api: Any, database_url: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    api.create_experiment(linucb("poisoned"), start=True)
    api.create_experiment(bandit_spec("healthy"), start=True)
    for key in ("poisoned", "healthy"):
        api.assign_batch(key, [{"subject_id": f"s{i}", "context": {"recency": i, "tier": "gold"}} for i in range(30)])
    database = db_module.get_db(app)
    with database.session() as session:  # a row stored before the rule (or written around it)
        poisoned = session.scalars(select(Experiment.id).where(Experiment.key == "poisoned")).one()
        session.execute(update(Assignment).where(Assignment.experiment_id == poisoned)
                        .values(context={"recency": 1.7e308, "tier": "gold"}))
        session.commit()
    clock.advance(3600 + REWARD_GRACE_SECONDS + 5)
    results = {r.experiment: r for r in refit_due(database, "job")}
    assert results["poisoned"].status == "failed" and "non-finite" in (results["poisoned"].error or "")
    assert results["healthy"].status == "refit"
    with database.session() as session:
        results = {r.experiment: r for r in refit_all(session, holder="cli")}
        assert results["poisoned"].status == "failed" and results["healthy"].status == "nothing_new"
        assert session.scalars(select(PolicySnapshot.experiment_id)).all() == [
            session.scalars(select(Experiment.id).where(Experiment.key == "healthy")).one()]
        failures = session.scalars(select(AuditEntry).where(AuditEntry.action == "refit_failed")).all()
        assert len(failures) == 2 and all("non-finite" in f.details["error"] for f in failures)
    metrics = api.call("GET", "/metrics", scope="admin")
    if metrics.status_code == 200:
        assert 'nextbest_refits_total{status="failed"}' in metrics.get_data(as_text=True)
    from click.testing import CliRunner

    from service.cli import main as cli
    from service.http.dashboard.present import audit_summary

    monkeypatch.setenv("DATABASE_URL", database_url)
    clock.advance(3600)
    command = CliRunner().invoke(cli, ["refit"])
    lines = [json.loads(line) for line in command.output.strip().splitlines()]
    assert command.exit_code == 1  # cron learns that one failed; the other was still refitted
    assert {line["experiment"]: line["status"] for line in lines} == {"poisoned": "failed", "healthy": "nothing_new"}

    assert audit_summary("refit_failed", failures[0].details).startswith("refit failed, the previous policy keeps")
    audit = api.call("GET", "/v1/experiments/poisoned/audit").get_json()
    assert any(entry.get("action") == "refit_failed" for entry in (audit.get("entries") or audit.get("audit") or []))


def test_a_training_window_shorter_than_the_reward_wait_is_refused(api: Any) -> None:
    spec = bandit_spec("nbo", attribution_window_seconds=14 * 86400, allocation_extra={"training_window_days": 2})
    spec["reward"] = {"event": "conversion", "wait_seconds": 3 * 86400}
    response = api.call("POST", "/v1/experiments", json=spec)
    assert response.status_code == 422
    assert "training_window_days" in response.get_data(as_text=True)
    spec["reward"]["wait_seconds"] = 20 * 86400
    spec["allocation"].pop("training_window_days")
    response = api.call("POST", "/v1/experiments", json=spec)
    assert response.status_code == 422 and "wait_seconds" in response.get_data(as_text=True)
    assert ARMS


def test_the_bandit_report_and_evaluation_count_only_matured_decisions(app: Any, api: Any) -> None:
    api.create_experiment(bandit_spec("nbo"), start=True)
    old = api.assign_batch("nbo", [{"subject_id": f"o{i}"} for i in range(60)])
    clock.advance(3600 + REWARD_GRACE_SECONDS + 5)
    young = api.assign_batch("nbo", [{"subject_id": f"y{i}"} for i in range(40)])
    # Successes of the young decisions have arrived, their failures have not had time to: not counted.
    api.send_events([{"event_id": f"c{d['assignment_id']}", "type": "conversion", "assignment_id": d["assignment_id"],
                      "occurred_at": clock.utcnow().isoformat().replace("+00:00", "Z")} for d in young[:20]])
    report = api.report("nbo")
    assert report["bandit"]["pending"] == 40
    assert sum(arm["decisions"] for arm in report["bandit"]["arms"]) == len(old)
    assert all((arm["naive_mean"] or 0) == 0 for arm in report["bandit"]["arms"])
    assert any("younger than the reward wait" in note for note in report["bandit"]["notes"])
    answer = api.call("POST", "/v1/experiments/nbo/evaluate", json={"candidates": [
        {"name": "always-a", "policy": {"name": "fixed", "arm": "a"}}]}).get_json()
    assert (answer["decisions"], answer["pending"]) == (60, 40)
    assert answer["candidates"][0]["ips"]["value"] == 0.0
