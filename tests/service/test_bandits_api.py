"""Bandit decisions and the learning loop through the real API, outcome ingestion and refit."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pytest
from scipy.stats import binomtest, chisquare
from sqlalchemy import func, select, update

from experiments.bucketing import in_holdout
from service import clock, create_app
from service.store import db as db_module
from service.jobs.learning import REWARD_GRACE_SECONDS, known_decisions, refit, training_examples
from service.jobs.leases import acquire
from service.store.models import Assignment, Experiment, JobLease, PolicySnapshot
from service.store.experiments import spec_of

ARMS = [{"key": "control", "is_control": True, "payload": {"offer": "none"}},
        {"key": "a", "payload": {"offer": "a"}}, {"key": "b", "payload": {"offer": "b"}}]
WINDOW = 3600


def bandit_spec(key: str = "nbo", policy: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    allocation = {"type": "bandit", "policy": policy or {"name": "thompson_sampling"}}
    allocation.update(extra.pop("allocation_extra", {}))
    return {"key": key, "name": "Next best offer", "arms": [dict(a) for a in ARMS], "allocation": allocation,
            "reward": {"event": "conversion"}, "attribution_window_seconds": WINDOW, **extra}


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def run_refit(app: Any, key: str, **kw: Any) -> Any:
    with db_module.get_db(app).session() as session:
        experiment = session.scalars(select(Experiment).where(Experiment.key == key)).one()
        return refit(session, experiment, **kw)


@pytest.fixture(autouse=True)
def simulated_clock() -> Any:
    yield clock
    clock.reset()


def close_windows(app: Any, ids: list[str]) -> None:
    """Let time pass until these decisions have matured (their reward wait is the window here) and a refit may read them."""
    clock.advance(WINDOW + REWARD_GRACE_SECONDS + 5)


def play_round(app: Any, api: Any, key: str, subjects: list[dict[str, Any]], reward_prob: Any,
               rng: np.random.Generator) -> list[dict[str, Any]]:
    """Assign a wave, report the conversions that happen, close the windows, refit."""
    decisions = api.assign_batch(key, subjects)
    now = clock.utcnow()
    events = []
    for subject, decision in zip(subjects, decisions):
        if rng.random() < reward_prob(decision["arm"], subject.get("context") or {}):
            events.append({"event_id": f"conv-{decision['assignment_id']}", "type": "conversion",
                           "assignment_id": decision["assignment_id"], "occurred_at": iso(now)})
    if events:
        assert api.send_events(events)["accepted"] == len(events)
    close_windows(app, [d["assignment_id"] for d in decisions])
    assert run_refit(app, key).status == "refit"
    return decisions


def test_thompson_decisions_log_propensities_and_a_marked_holdout(app: Any, api: Any) -> None:
    created = api.create_experiment(bandit_spec(allocation_extra={"holdout": 0.2}), start=True)
    answers = api.assign_batch("nbo", [{"subject_id": f"u{i}"} for i in range(2000)])
    holdout = [a for a in answers if a["holdout"]]
    # membership is the documented sticky hash of the salt and subject (its balance is tested in the core)
    assert [a["holdout"] for a in answers] == [in_holdout(created["salt"], a["subject_id"], 0.2) for a in answers]
    assert binomtest(len(holdout), 2000, 0.2).pvalue > 1e-6
    assert {round(a["propensity"], 6) for a in holdout} == {round(1 / 3, 6)}
    assert all(abs(a["propensity"] - 1 / 3) < 1e-6 for a in answers)  # a cold policy explores uniformly
    assert {a["policy_version"] for a in answers} == {0}
    with db_module.get_db(app).session() as session:
        stored = session.scalar(select(func.count()).select_from(Assignment).where(Assignment.holdout.is_(True)))
    assert stored == len(holdout)
    again = api.assign_batch("nbo", [{"subject_id": a["subject_id"]} for a in holdout[:50]])
    assert all(a["holdout"] for a in again)  # holdout membership is sticky per subject


def test_observed_frequencies_match_logged_propensities_after_learning(app: Any, api: Any) -> None:
    api.create_experiment(bandit_spec(), start=True)
    rng = np.random.default_rng(7)
    play_round(app, api, "nbo", [{"subject_id": f"w{i}"} for i in range(600)],
               lambda arm, ctx: {"control": 0.05, "a": 0.10, "b": 0.25}[arm], rng)
    answers = api.assign_batch("nbo", [{"subject_id": f"z{i}"} for i in range(6000)])
    assert {a["policy_version"] for a in answers} == {1}
    counts = Counter(a["arm"] for a in answers)
    # The state is fixed, so every decision shares one probability vector: each arm's logged propensity.
    per_arm = {arm: {round(a["propensity"], 6) for a in answers if a["arm"] == arm} for arm in counts}
    assert all(len(values) == 1 for values in per_arm.values()), per_arm
    expected = {arm: next(iter(per_arm.get(arm, {0.0}))) for arm in ("control", "a", "b")}
    observed = [counts[arm] for arm in expected]
    total = sum(expected.values())
    assert abs(total - 1) < 1e-5  # the logged vector sums to one
    assert chisquare(observed, [p * len(answers) / total for p in expected.values()]).pvalue > 0.001
    assert counts["b"] > counts["control"]


def test_context_is_validated_against_declared_features(api: Any) -> None:
    api.create_experiment(bandit_spec(policy={"name": "lin_ucb", "alpha": 1.0}, allocation_extra={"features": [
        {"name": "recency", "type": "numeric"}, {"name": "channel_pref", "type": "categorical"}]}), start=True)
    ok = api.assign("nbo", "c-1", context={"recency": 3, "channel_pref": "web"})
    assert ok["arm"] in ("control", "a", "b")
    unseen = api.assign("nbo", "c-2", context={"recency": 3, "channel_pref": "pigeon"})
    assert unseen["arm"] in ("control", "a", "b")
    missing = api.assign("nbo", "c-3", context={"channel_pref": "web"}, expect=422)
    assert missing["error"]["details"] == [{"field": "context.recency",
                                            "message": "required numeric feature is missing"}]
    wrong = api.assign("nbo", "c-4", context={"recency": "three", "channel_pref": "web"}, expect=422)
    assert wrong["error"]["details"][0]["field"] == "context.recency"
    batch = api.call("POST", "/v1/assign/batch", scope="channel", json={
        "experiment": "nbo", "subjects": [{"subject_id": "x", "context": {"recency": 1, "channel_pref": "a"}},
                                          {"subject_id": "y", "context": {"recency": True, "channel_pref": "a"}}]})
    assert batch.status_code == 422
    assert batch.get_json()["error"]["details"][0]["field"] == "subjects.1.context.recency"


def test_three_armed_bandit_learns_the_better_arm(app: Any, api: Any) -> None:
    api.create_experiment(bandit_spec(), start=True)
    rng = np.random.default_rng(2026)
    truth = {"control": 0.04, "a": 0.06, "b": 0.20}
    last: list[dict[str, Any]] = []
    for wave in range(8):
        last = play_round(app, api, "nbo", [{"subject_id": f"r{wave}-{i}"} for i in range(250)],
                          lambda arm, ctx: truth[arm], rng)
    share_b = sum(d["arm"] == "b" for d in last) / len(last)
    assert share_b > 0.6, share_b


def test_linucb_beats_the_best_single_arm_when_the_best_arm_depends_on_a_feature(app: Any, api: Any) -> None:
    api.create_experiment(bandit_spec(policy={"name": "lin_ucb", "alpha": 0.5}, allocation_extra={
        "features": [{"name": "segment", "type": "categorical"}]}), start=True)
    truth = {("a", "young"): 0.30, ("a", "old"): 0.03, ("b", "young"): 0.03, ("b", "old"): 0.30,
             ("control", "young"): 0.08, ("control", "old"): 0.08}
    rng = np.random.default_rng(11)

    def subjects(wave: int) -> list[dict[str, Any]]:
        return [{"subject_id": f"s{wave}-{i}", "context": {"segment": "young" if i % 2 else "old"}}
                for i in range(300)]

    for wave in range(6):
        play_round(app, api, "nbo", subjects(wave), lambda arm, ctx: truth[(arm, ctx["segment"])], rng)
    final = subjects(99)
    decisions = api.assign_batch("nbo", final)
    value = np.mean([truth[(d["arm"], s["context"]["segment"])] for d, s in zip(decisions, final)])
    best_single_arm = max(np.mean([truth[(arm, seg)] for seg in ("young", "old")]) for arm in ("control", "a", "b"))
    assert value > best_single_arm + 0.05, (value, best_single_arm)


def test_delayed_rewards_and_idempotent_refits(app: Any, api: Any) -> None:
    api.create_experiment(bandit_spec(), start=True)
    d = api.assign_batch("nbo", [{"subject_id": f"u{i}"} for i in range(3)])
    decided = clock.utcnow()
    rewarded, silent, late = (x["assignment_id"] for x in d)
    api.send_events([{"event_id": "r", "type": "conversion", "assignment_id": rewarded,
                      "occurred_at": iso(clock.utcnow())}])
    database = db_module.get_db(app)
    with database.session() as session:
        experiment = session.scalars(select(Experiment)).one()
        spec = spec_of(experiment)
        assert spec.reward_wait_seconds == WINDOW  # the default one day, capped by the shorter window
        now = clock.utcnow()
        _, arms, rewards = training_examples(session, experiment, spec, None, now)
        assert list(rewards) == []  # a success waits like a failure: nothing has matured yet
        matured = decided + timedelta(seconds=WINDOW)
        _, arms, rewards = training_examples(session, experiment, spec, None, matured)
        assert sorted(rewards) == [0.0, 0.0, 1.0]  # all three mature together, whatever their outcome
        _, arms, rewards = training_examples(session, experiment, spec, matured, matured + timedelta(days=1))
        assert list(rewards) == []  # and only once
    # A conversion after the window closed is unattributed and changes nothing.
    close_windows(app, [late])
    answer = api.send_events([{"event_id": "too-late", "type": "conversion", "assignment_id": late,
                               "occurred_at": iso(clock.utcnow())}])
    assert answer["results"][0]["reason"] == "outside_attribution_window"
    first = run_refit(app, "nbo")
    assert (first.status, first.version, first.examples) == ("refit", 1, 3)
    again = run_refit(app, "nbo")
    assert again.status == "nothing_new"
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(PolicySnapshot)) == 1


def test_a_reward_received_after_the_wait_does_not_train(app: Any, api: Any) -> None:
    spec = bandit_spec(attribution_window_seconds=3 * 86400)
    spec["reward"] = {"event": "conversion", "wait_seconds": 3600}
    api.create_experiment(spec, start=True)
    d = api.assign_batch("nbo", [{"subject_id": f"u{i}"} for i in range(2)])
    early, late = (x["assignment_id"] for x in d)
    clock.advance(3599)
    api.send_events([{"event_id": "e", "type": "conversion", "assignment_id": early,
                      "occurred_at": iso(clock.utcnow())}])
    clock.advance(2)
    api.send_events([{"event_id": "l", "type": "conversion", "assignment_id": late,
                      "occurred_at": iso(clock.utcnow())}])  # attributed (reports count it), not learned
    clock.advance(REWARD_GRACE_SECONDS + 1)
    database = db_module.get_db(app)
    with database.session() as session:
        experiment = session.scalars(select(Experiment)).one()
        spec_ = spec_of(experiment)
        known = known_decisions(session, experiment, spec_, None, clock.utcnow())
        by_id = dict(zip(sorted(x["assignment_id"] for x in d), known.rewards))  # same decision time: id order
        assert by_id == {early: 1.0, late: 0.0} and known.pending == 0


def test_refit_lease_and_snapshot_pickup_by_another_worker(app: Any, api: Any, database_url: str) -> None:
    api.create_experiment(bandit_spec(), start=True)
    d = api.assign_batch("nbo", [{"subject_id": f"u{i}"} for i in range(20)])
    close_windows(app, [x["assignment_id"] for x in d])
    database = db_module.get_db(app)
    with database.session() as session:
        experiment_id = session.scalars(select(Experiment.id)).one()
        assert acquire(session, f"refit:{experiment_id}", "someone-else", 60)
    assert run_refit(app, "nbo").status == "locked"
    with database.session() as session:
        session.execute(update(JobLease).values(expires_at=clock.utcnow() - timedelta(seconds=1)))
    other = create_app({"DATABASE_URL": database_url, "NEXTBEST_POLICY_REFRESH_SECONDS": 0.0})
    before = other.test_client().post("/v1/assign", json={"experiment": "nbo", "subject_id": "p"},
                                      headers=api.headers("channel")).get_json()
    assert before["policy_version"] == 0
    assert run_refit(app, "nbo").status == "refit"  # the expired lease is taken over
    after = other.test_client().post("/v1/assign", json={"experiment": "nbo", "subject_id": "p"},
                                     headers=api.headers("channel")).get_json()
    assert after["policy_version"] == 1
    db_module.get_db(other).dispose()


@pytest.mark.postgres
def test_concurrent_refits_store_one_snapshot(app: Any, api: Any, database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("real concurrent connections: PostgreSQL only")
    api.create_experiment(bandit_spec(), start=True)
    d = api.assign_batch("nbo", [{"subject_id": f"u{i}"} for i in range(50)])
    close_windows(app, [x["assignment_id"] for x in d])
    workers = [create_app({"DATABASE_URL": database_url}) for _ in range(4)]
    barrier = threading.Barrier(len(workers))
    statuses: list[str] = []

    def work(worker: Any) -> None:
        barrier.wait()
        with db_module.get_db(worker).session() as session:
            experiment = session.scalars(select(Experiment)).one()
            statuses.append(refit(session, experiment, holder=f"w{id(worker)}").status)

    threads = [threading.Thread(target=work, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses.count("refit") == 1, statuses
    assert set(statuses) <= {"refit", "locked", "nothing_new"}
    with db_module.get_db(app).session() as session:
        assert session.scalar(select(func.count()).select_from(PolicySnapshot)) == 1
    for w in workers:
        db_module.get_db(w).dispose()


def test_arms_added_to_a_running_bandit_start_cold_and_explore(app: Any, api: Any) -> None:
    api.create_experiment(bandit_spec(), start=True)
    rng = np.random.default_rng(3)
    play_round(app, api, "nbo", [{"subject_id": f"w{i}"} for i in range(300)],
               lambda arm, ctx: {"control": 0.02, "a": 0.02, "b": 0.3}[arm], rng)
    arms = [dict(a) for a in ARMS] + [{"key": "c", "payload": {"offer": "c"}}]
    patched = api.call("PATCH", "/v1/experiments/nbo", json={"arms": arms})
    assert patched.status_code == 200, patched.get_json()
    removed = api.call("PATCH", "/v1/experiments/nbo", json={"arms": [arms[0], *arms[2:]]})
    assert removed.status_code == 409
    answers = api.assign_batch("nbo", [{"subject_id": f"n{i}"} for i in range(3000)])
    assert any(a["arm"] == "c" for a in answers)
    disabled = [dict(a) for a in arms]
    disabled[1]["enabled"] = False
    assert api.call("PATCH", "/v1/experiments/nbo", json={"arms": disabled}).status_code == 200
    answers = api.assign_batch("nbo", [{"subject_id": f"m{i}"} for i in range(500)])
    assert "a" not in {a["arm"] for a in answers}
