"""Policy state survives a JSON round trip unchanged, and bad state is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bandits import Policy
from experiments.spec import FeatureSpec, PolicySpec
from tests.bandits._data import ARMS, FAMILIES, FEATURES, spec, uniform_log

PROBES = [
    {"recency": 2, "spend": 120.0, "channel": "web"},
    {"recency": 9, "channel": "email"},
    {"recency": 12, "spend": 300.0, "channel": "fax"},
    {"recency": 1, "channel": None},
]


def _trained(name: str) -> Policy:
    log = uniform_log(400, seed=8)
    policy = Policy.train(spec(name), FEATURES, ARMS, log.contexts[:300], log.arms[:300], log.rewards[:300], seed=77)
    # An incremental update, a new cold arm and a disabled arm: all must survive the trip.
    policy = policy.update(log.contexts[300:], log.arms[300:], log.rewards[300:])
    return policy.with_arms(["mens", "womens", "kids"])


@pytest.mark.parametrize("name", FAMILIES)
def test_round_trip_through_json_is_exact(name: str) -> None:
    policy = _trained(name)

    text = json.dumps(policy.to_state(), allow_nan=False)
    loaded = Policy.from_state(spec(name), FEATURES, json.loads(text))

    assert loaded.arms == ("mens", "womens", "kids")
    contexts = PROBES if policy.contextual else None
    np.testing.assert_array_equal(loaded.probabilities(contexts), policy.probabilities(contexts))
    np.testing.assert_array_equal(loaded.expectations(contexts), policy.expectations(contexts))
    assert loaded.to_state() == policy.to_state()
    # The disabled arm's learning is still there.
    again = loaded.with_arms(ARMS)
    np.testing.assert_array_equal(
        again.probabilities(contexts), policy.with_arms(ARMS).probabilities(contexts)
    )


@pytest.mark.parametrize("name", FAMILIES)
def test_loaded_policy_keeps_learning_like_the_original(name: str) -> None:
    policy = _trained(name)
    loaded = Policy.from_state(spec(name), FEATURES, json.loads(json.dumps(policy.to_state())))
    more = uniform_log(200, seed=99)
    arms = ["kids" if a == "control" else a for a in more.arms]

    a = policy.update(more.contexts, arms, more.rewards)
    b = loaded.update(more.contexts, arms, more.rewards)

    contexts = PROBES if policy.contextual else None
    np.testing.assert_allclose(a.probabilities(contexts), b.probabilities(contexts), rtol=0, atol=1e-12)


def test_state_is_plain_data() -> None:
    state = _trained("lin_ucb").to_state()

    def walk(value: object) -> None:
        if isinstance(value, dict):
            assert all(isinstance(k, str) for k in value)
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        else:
            assert value is None or type(value) in (str, int, float, bool), type(value)

    walk(state)
    model = state["model"]["models"]["mens"]
    d = state["model"]["num_features"]
    # The matrices are MABWiser's: A = lambda I + X'X, A_inv its inverse, beta = A_inv X'y.
    a = np.array(model["A"])
    assert a.shape == (d, d)
    np.testing.assert_allclose(np.array(model["A_inv"]) @ a, np.eye(d), atol=1e-9)
    np.testing.assert_allclose(np.array(model["A_inv"]) @ np.array(model["Xty"]), model["beta"], atol=1e-12)


def test_cold_policy_round_trips() -> None:
    policy = Policy.cold(spec("lin_ts"), FEATURES, ARMS, seed=3)

    loaded = Policy.from_state(spec("lin_ts"), FEATURES, json.loads(json.dumps(policy.to_state())))

    assert not loaded.trained
    assert loaded.seed == 3
    np.testing.assert_array_equal(loaded.probabilities(PROBES), np.full((4, 3), 1 / 3))


def test_tuning_parameters_come_from_the_spec() -> None:
    policy = _trained("epsilon_greedy").with_arms(["mens", "womens"])
    looser = PolicySpec(name="epsilon_greedy", epsilon=0.5, exploration_floor=0)

    loaded = Policy.from_state(looser, FEATURES, policy.to_state())

    assert loaded.params["epsilon"] == 0.5
    assert sorted(loaded.probabilities()[0]) == [0.25, 0.75]


def test_state_of_another_policy_is_refused() -> None:
    state = _trained("ucb1").to_state()

    with pytest.raises(ValueError, match="belongs to policy 'ucb1'"):
        Policy.from_state(spec("softmax"), FEATURES, state)


def test_state_with_other_features_is_refused() -> None:
    state = _trained("lin_ucb").to_state()
    features = [*FEATURES, FeatureSpec(name="age", type="numeric")]

    with pytest.raises(ValueError, match="retrain"):
        Policy.from_state(spec("lin_ucb"), features, state)


def test_state_with_a_wrong_matrix_shape_is_refused() -> None:
    state = json.loads(json.dumps(_trained("lin_ucb").to_state()))
    state["model"]["models"]["mens"]["A"] = [[1.0]]

    with pytest.raises(ValueError, match="A of arm 'mens' must have shape"):
        Policy.from_state(spec("lin_ucb"), FEATURES, state)


def test_unknown_state_format_is_refused() -> None:
    with pytest.raises(ValueError, match="format"):
        Policy.from_state(spec("ucb1"), FEATURES, {"format": "pickle"})
