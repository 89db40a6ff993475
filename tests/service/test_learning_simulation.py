"""Seeded simulations of the learning loop through the real decision, ingestion and refit path.

Outcomes arrive late (Thompson sampling: 0-3 days; the contextual problem: 0.5-36 hours), as
they do in marketing. Time is simulated with `service.clock`: every six hours a wave of customers
is decided with one batch call, the outcomes that are due are sent through `POST /v1/events`, and
the refit job runs. Every setting is the default (one-day reward wait, two-week attribution
window, default grace). Many experiments run side by side in one service so that each seed is
cheap. The numbers these tests measure are printed (pytest -s) and quoted in the README.
"""

from __future__ import annotations

import itertools
import os

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service import clock, create_app
from service.store import db as db_module
from service.http.auth import create_key
from service.jobs.learning import refit_all
from service.store import experiments as store_experiments
from service.usecases import decisions as decisions_module
from tests.conftest import Api

DAY = 86400
TICKS_PER_DAY = 4


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Problem:
    """One experiment in the simulation: its spec, its customers and what each arm truly earns."""

    key: str
    spec: dict[str, Any]
    contexts: Callable[[np.random.Generator, int], list[dict[str, Any]]]
    truth: Callable[[str, dict[str, Any]], float]
    delay: Callable[[np.random.Generator], float]  # an outcome's delay in seconds
    rng: np.random.Generator


@pytest.fixture
def sim_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    # Every random number of the run comes from a seed, so a simulation gives the same numbers on every
    # run: experiment salts (which seed each policy) are counted out in order, and this thread's
    # decisions draw from a seeded generator instead of one seeded from the OS.
    salts = itertools.count(1)
    monkeypatch.setattr(store_experiments.secrets, "token_hex", lambda n=8: f"{next(salts):0{2 * n}x}")
    monkeypatch.setattr(decisions_module._RNG, "held", (os.getpid(), np.random.default_rng(2026)), raising=False)
    url = f"sqlite:///{tmp_path / 'simulation.sqlite3'}"
    db_module.upgrade(url)
    app = create_app({"DATABASE_URL": url, "TESTING": True, "NEXTBEST_POLICY_REFRESH_SECONDS": 0.0,
                      "NEXTBEST_ACCESS_LOG": "off"})
    tokens = {}
    with db_module.get_db(app).session() as session:
        for scope in ("channel", "analyst"):
            _, tokens[scope] = create_key(session, f"sim-{scope}", scope)
    yield app, Api(app.test_client(), tokens)
    db_module.get_db(app).dispose()
    clock.reset()


def simulate(app: Any, api: Api, problems: list[Problem], days: int, per_day: int
             ) -> tuple[dict[str, list[list[float]]], dict[str, list[list[str]]]]:
    """Run the problems side by side; per problem and day, each decision's true reward probability and its arm."""
    for problem in problems:
        api.create_experiment(problem.spec, start=True)
    pending: list[tuple[float, dict[str, Any]]] = []
    earned: dict[str, list[list[float]]] = {p.key: [] for p in problems}
    chosen: dict[str, list[list[str]]] = {p.key: [] for p in problems}
    per_tick = per_day // TICKS_PER_DAY
    for day in range(days):
        for problem in problems:
            earned[problem.key].append([])
            chosen[problem.key].append([])
        for tick in range(TICKS_PER_DAY):
            now = clock.utcnow()
            for problem in problems:
                contexts = problem.contexts(problem.rng, per_tick)
                subjects = [{"subject_id": f"{problem.key}-{day}-{tick}-{i}", "context": c}
                            for i, c in enumerate(contexts)]
                for decision, context in zip(api.assign_batch(problem.key, subjects), contexts):
                    p = problem.truth(decision["arm"], context)
                    if decision["holdout"]:
                        continue
                    earned[problem.key][day].append(p)
                    chosen[problem.key][day].append(decision["arm"])
                    if problem.rng.random() < p:
                        due = now.timestamp() + problem.delay(problem.rng)
                        pending.append((due, {"event_id": f"c-{decision['assignment_id']}", "type": "conversion",
                                              "assignment_id": decision["assignment_id"],
                                              "occurred_at": iso(datetime.fromtimestamp(due, now.tzinfo))}))
            clock.advance(DAY // TICKS_PER_DAY)
            moment = clock.utcnow().timestamp()
            due_now = [event for at, event in pending if at <= moment]
            pending = [(at, event) for at, event in pending if at > moment]
            for start in range(0, len(due_now), 5000):
                answer = api.send_events(due_now[start:start + 5000])
                assert answer["accepted"] == len(due_now[start:start + 5000]), answer
            with db_module.get_db(app).session() as session:
                results = refit_all(session, holder="simulation")
                assert all(r.status in ("refit", "nothing_new") for r in results), results
    return earned, chosen


def _email_delay(rng: np.random.Generator) -> float:
    """0-3 days late, most within hours as e-mail responses are: exponential, mean 12 hours, cut at 3 days.

    86% arrive within the one-day reward wait (1 - exp(-2))."""
    return min(float(rng.exponential(12 * 3600)), 3 * DAY)


# Hillstrom click (visit) rates, the demo's arms.
HILLSTROM = {"control": 0.106, "mens": 0.183, "womens": 0.151}


TS_PER_DAY = 900


def _hillstrom_problem(seed: int) -> Problem:
    arms = [{"key": "control", "is_control": True}, {"key": "mens"}, {"key": "womens"}]
    return Problem(
        key=f"ts-{seed}",
        spec={"key": f"ts-{seed}", "name": f"TS seed {seed}", "arms": arms,
              "allocation": {"type": "bandit", "policy": {"name": "thompson_sampling"}},
              "reward": {"event": "conversion"}},
        contexts=lambda rng, n: [{} for _ in range(n)],
        truth=lambda arm, ctx: HILLSTROM[arm],
        delay=_email_delay,
        rng=np.random.default_rng(seed),
    )


def test_thompson_sampling_finds_the_best_arm_by_day_5_with_outcomes_up_to_3_days_late(sim_api: Any) -> None:
    app, api = sim_api
    problems = [_hillstrom_problem(seed) for seed in range(20)]
    _, chosen = simulate(app, api, problems, days=5, per_day=TS_PER_DAY)
    day5 = {p.key: np.mean([arm == "mens" for arm in chosen[p.key][4]]) for p in problems}
    wins = sum(share > 0.5 for share in day5.values())
    print(f"\nThompson sampling, share of day-5 traffic on mens per seed: "
          f"{sorted(round(float(v), 2) for v in day5.values())}; majority in {wins} of 20 seeds")
    assert wins >= 19, day5


def _contextual_problem(policy: dict[str, Any], seed: int) -> Problem:
    # Offer x for the young, y for the old; control is mediocre for both. Oracle 0.12, uniform 0.07.
    truth = {("x", "young"): 0.12, ("x", "old"): 0.04, ("y", "young"): 0.04, ("y", "old"): 0.12,
             ("control", "young"): 0.05, ("control", "old"): 0.05}
    key = f"{policy['name'].replace('_', '-')}-{seed}"
    arms = [{"key": "control", "is_control": True}, {"key": "x"}, {"key": "y"}]
    features = [{"name": "age_band", "type": "categorical"}] if policy["name"] != "thompson_sampling" else []
    return Problem(
        key=key,
        spec={"key": key, "name": key, "arms": arms,
              "allocation": {"type": "bandit", "policy": policy, "features": features},
              "reward": {"event": "conversion"}},
        contexts=lambda rng, n: [{"age_band": "young" if rng.random() < 0.5 else "old"} for _ in range(n)],
        truth=lambda arm, ctx: truth[(arm, ctx["age_band"])],
        delay=lambda rng: rng.uniform(0.5 * 3600, 36 * 3600),
        rng=np.random.default_rng(1000 + seed),
    )


def test_linucb_beats_thompson_sampling_and_nears_the_oracle_by_day_7(sim_api: Any) -> None:
    app, api = sim_api
    seeds = range(2)
    problems = [_contextual_problem({"name": "lin_ucb"}, s) for s in seeds]
    problems += [_contextual_problem({"name": "thompson_sampling"}, s) for s in seeds]
    earned, _ = simulate(app, api, problems, days=7, per_day=600)
    oracle = 0.12
    lin = [float(np.mean(earned[f"lin-ucb-{s}"][6])) for s in seeds]
    ts = [float(np.mean(earned[f"thompson-sampling-{s}"][6])) for s in seeds]
    print(f"\nday-7 reward per decision: LinUCB {[round(v, 4) for v in lin]}, "
          f"Thompson sampling {[round(v, 4) for v in ts]}, oracle {oracle}, uniform 0.07")
    for s in seeds:
        assert lin[s] > ts[s], (lin, ts)
        assert lin[s] >= 0.8 * oracle, lin
