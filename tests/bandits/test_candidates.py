"""Candidate replay: closed forms, no look-ahead, training on all past data, and honest estimates."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bandits import Policy
from bandits.candidates import (
    CandidateSpec,
    EvaluationConfig,
    evaluate_candidates,
    parse_candidates,
    replay_candidate,
)
from experiments.spec import FeatureSpec, PolicySpec

ARMS = ("control", "mens", "womens")
FEATURES = (FeatureSpec(name="segment", type="categorical"), FeatureSpec(name="recency", type="numeric"))
# Visit probability per segment and offer; the best offer differs by segment.
RATES = np.array([[0.05, 0.20, 0.10], [0.10, 0.05, 0.25], [0.30, 0.10, 0.10]])


def _log(n: int, seed: int) -> dict:
    """Uniformly logged decisions over three segments with Bernoulli visits."""
    rng = np.random.default_rng(seed)
    seg = rng.integers(3, size=n)
    arm = rng.integers(3, size=n)
    return {
        "seg": seg,
        "arm": arm,
        "contexts": [{"segment": f"s{s}", "recency": int(x)} for s, x in zip(seg, rng.integers(1, 13, size=n))],
        "rewards": (rng.random(n) < RATES[seg, arm]).astype(float),
        "propensity": np.full(n, 1 / 3),
    }


def test_fixed_and_uniform_are_closed_form() -> None:
    log = _log(50, 0)
    fixed = replay_candidate({"name": "fixed", "arm": "womens"}, ARMS, None, log["arm"], log["rewards"])
    assert fixed.shape == (50, 3) and np.all(fixed[:, 2] == 1.0) and np.all(fixed[:, :2] == 0.0)
    uniform = replay_candidate({"name": "uniform"}, ARMS, None, np.asarray(ARMS)[log["arm"]], log["rewards"])
    assert np.all(uniform == 1 / 3)
    with pytest.raises(ValueError, match="not one of the arms"):
        replay_candidate({"name": "fixed", "arm": "kids"}, ARMS, None, log["arm"], log["rewards"])


@pytest.mark.parametrize("spec", [PolicySpec(name="thompson_sampling"), PolicySpec(name="epsilon_greedy", epsilon=0.2)])
def test_each_block_uses_a_policy_trained_on_all_earlier_decisions(spec: PolicySpec) -> None:
    log = _log(2500, 1)
    every = 500
    probs = replay_candidate(CandidateSpec("policy", policy=spec), ARMS, None, log["arm"], log["rewards"],
                             refit_every=every, seed=3)
    names = [ARMS[a] for a in log["arm"]]
    assert np.allclose(probs[:every], 1 / 3)  # nothing learned yet: a cold policy is uniform
    for start in range(every, 2500, every):
        # An independent full training on exactly the decisions before the block.
        trained = Policy.train(spec, (), ARMS, None, names[:start], log["rewards"][:start], seed=3)
        expected = trained.probabilities(n=1)[0]
        assert np.array_equal(probs[start : start + every], np.broadcast_to(expected, (every, 3))), start


@pytest.mark.parametrize(
    "spec", [{"name": "thompson_sampling"}, {"name": "lin_ucb", "alpha": 0.5}, {"name": "lin_greedy", "epsilon": 0.1}]
)
def test_a_candidate_never_sees_the_future(spec: dict) -> None:
    log = _log(3000, 2)
    candidate = CandidateSpec.parse(spec, FEATURES)
    every = 400
    before = replay_candidate(candidate, ARMS, log["contexts"], log["arm"], log["rewards"], refit_every=every)
    # Rewrite every outcome from decision 1,205 on: blocks starting at or before it cannot change.
    changed = log["rewards"].copy()
    changed[1205:] = 1.0 - changed[1205:]
    after = replay_candidate(candidate, ARMS, log["contexts"], log["arm"], changed, refit_every=every)
    assert np.array_equal(before[:1600], after[:1600])
    assert not np.array_equal(before[1600:], after[1600:])


def test_time_order_comes_from_the_timestamps() -> None:
    log = _log(2000, 4)
    candidate = CandidateSpec.parse({"name": "lin_ucb", "alpha": 1.0}, FEATURES)
    in_order = replay_candidate(candidate, ARMS, log["contexts"], log["arm"], log["rewards"], refit_every=300)
    shuffle = np.random.default_rng(0).permutation(2000)
    stamps = np.datetime64("2026-11-01T00:00:00") + np.arange(2000).astype("timedelta64[s]")
    shuffled = replay_candidate(
        candidate, ARMS, [log["contexts"][i] for i in shuffle], log["arm"][shuffle], log["rewards"][shuffle],
        order=stamps[shuffle], refit_every=300,
    )
    assert np.array_equal(shuffled, in_order[shuffle])


def test_learning_candidates_are_estimated_honestly() -> None:
    # The true value of the replayed candidate is exactly computable: at each decision it
    # chooses arm k with the replayed probability, and arm k's visit probability is known.
    log = _log(30_000, 5)
    rows = evaluate_candidates(
        [{"name": "ts", "policy": {"name": "thompson_sampling"}},
         {"name": "linucb", "policy": {"name": "lin_ucb", "alpha": 0.5}}],
        ARMS, log["arm"], log["rewards"], log["propensity"], contexts=log["contexts"], features=FEATURES,
        config=EvaluationConfig(refit_every=1000),
    )
    truth = {}
    for name, spec in (("ts", {"name": "thompson_sampling"}), ("linucb", {"name": "lin_ucb", "alpha": 0.5})):
        probs = replay_candidate(CandidateSpec.parse(spec, FEATURES), ARMS, log["contexts"], log["arm"],
                                 log["rewards"], refit_every=1000)
        truth[name] = float(np.mean((probs * RATES[log["seg"]]).sum(axis=1)))
    by_name = {row.name: row for row in rows}
    for name, value in truth.items():
        for est in (by_name[name].ips, by_name[name].snips, by_name[name].dm, by_name[name].dr):
            assert abs(est.value - value) < 3 * est.std_error, (name, est.name, est.value, value)
    # LinUCB learns the per-segment best offer (value 0.25); TS only the best single offer (0.15).
    assert by_name["linucb"].dr.ci_low > by_name["ts"].dr.ci_high
    assert truth["linucb"] > 0.22


def test_evaluate_returns_the_logging_policy_then_each_candidate_as_json() -> None:
    log = _log(3000, 6)
    rows = evaluate_candidates(
        [{"name": "always-mens", "policy": {"name": "fixed", "arm": "mens"}},
         {"name": "uniform"},
         {"name": "greedy", "policy": {"name": "lin_greedy", "epsilon": 0.1}, "features": [f.model_dump() for f in FEATURES]}],
        ARMS, np.asarray(ARMS)[log["arm"]], log["rewards"], log["propensity"], contexts=log["contexts"],
        features=FEATURES,
    )
    assert [row.name for row in rows] == ["logging policy", "always-mens", "uniform", "greedy"]
    assert [row.kind for row in rows] == ["logging", "fixed", "uniform", "lin_greedy"]
    assert rows[0].dm is None and rows[0].ips.value == pytest.approx(log["rewards"].mean())
    data = json.loads(json.dumps([row.to_dict() for row in rows]))
    assert data[1]["snips"]["value"] == pytest.approx(log["rewards"][log["arm"] == 1].mean())
    assert set(data[1]) >= {"ips", "snips", "dm", "dr", "support", "warnings"}


def test_candidate_specs_parse_the_wire_format() -> None:
    parsed = parse_candidates(
        [{"name": "always-mens", "policy": {"name": "fixed", "arm": "mens"}},
         {"name": "ts", "policy": {"name": "thompson_sampling"}},
         {"name": "lin_ts", "alpha": 0.5}],
        features=FEATURES,
    )
    assert [label for label, _ in parsed] == ["always-mens", "ts", "lin_ts"]
    assert parsed[0][1] == CandidateSpec("fixed", arm="mens")
    assert parsed[2][1].policy == PolicySpec(name="lin_ts", alpha=0.5) and parsed[2][1].features == FEATURES
    with pytest.raises(ValueError, match="needs an arm"):
        CandidateSpec.parse({"name": "fixed"})
    with pytest.raises(ValueError, match="contextual and needs at least one feature"):
        CandidateSpec.parse({"name": "lin_ucb"})
    with pytest.raises(ValueError, match="takes no parameters"):
        CandidateSpec.parse({"name": "uniform", "arm": "mens"})
    with pytest.raises(ValueError):
        CandidateSpec.parse({"name": "no_such_policy"})
    with pytest.raises(ValueError, match="unique"):
        parse_candidates([{"name": "uniform"}, {"name": "uniform"}])


def test_bad_logs_raise() -> None:
    log = _log(10, 7)
    with pytest.raises(ValueError, match="name arms not in"):
        evaluate_candidates([{"name": "uniform"}], ARMS, ["kids"] * 10, log["rewards"], log["propensity"])
    with pytest.raises(ValueError, match="one reward per logged decision"):
        evaluate_candidates([{"name": "uniform"}], ARMS, log["arm"], log["rewards"][:5], log["propensity"])
    with pytest.raises(ValueError, match="contextual and needs one context"):
        replay_candidate(CandidateSpec.parse({"name": "lin_ucb"}, FEATURES), ARMS, None, log["arm"], log["rewards"])
    with pytest.raises(ValueError, match="refit_every"):
        EvaluationConfig(refit_every=0)
