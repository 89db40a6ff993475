"""Changing the arms of a trained policy: new arms explore, removed arms keep what they learned."""

from __future__ import annotations

import numpy as np
import pytest

from bandits import Policy
from tests.bandits._data import ARMS, FAMILIES, FEATURES, spec, uniform_log

PROBES = [{"recency": 2, "spend": 120.0, "channel": "web"}, {"recency": 9, "channel": "email"}]
RATES = {"control": 0.1, "mens": 0.3, "womens": 0.2}


def _trained(name: str, floor: float = 0.0) -> Policy:
    log = uniform_log(3000, seed=5, rates=RATES)
    return Policy.train(spec(name, floor), FEATURES, ARMS, log.contexts, log.arms, log.rewards, seed=1)


def _contexts(policy: Policy) -> list[dict] | None:
    return PROBES if policy.contextual else None


@pytest.mark.parametrize("name", FAMILIES)
def test_new_arm_is_added_cold_and_old_arms_keep_their_learning(name: str) -> None:
    policy = _trained(name)

    grown = policy.with_arms([*ARMS, "kids"])

    assert grown.arms == (*ARMS, "kids")
    ctx = _contexts(policy)
    np.testing.assert_array_equal(grown.expectations(ctx)[:, :3], policy.expectations(ctx))
    state = grown.to_state()["model"]
    assert "kids" not in state["trained_arms"]
    assert set(ARMS) <= set(state["trained_arms"])


@pytest.mark.parametrize(
    "name, least",
    [
        ("thompson_sampling", 0.2),  # Beta(1, 1) prior against arms near 0.3 with 1,000 examples each
        ("ucb1", 1.0),  # infinite bonus
        ("epsilon_greedy", 0.3),  # tied with the best arm: half of 1 - epsilon
        ("softmax", 0.3),  # tied with the best arm's mean
        ("lin_ucb", 1.0),  # the prior's wide bound beats every trained arm
        ("lin_ts", 0.2),
        ("lin_greedy", 0.3),
    ],
)
def test_new_arm_explores(name: str, least: float) -> None:
    grown = _trained(name).with_arms([*ARMS, "kids"])

    p = grown.probabilities(_contexts(grown))

    assert (p[:, 3] >= least - 1e-12).all(), p


@pytest.mark.parametrize("reward_scale", [1.0, 100.0])
def test_new_arm_gets_lin_ucb_traffic_at_any_alpha_and_reward_scale(reward_scale: float) -> None:
    # With alpha 0.05 the ridge prior's bound (about 0.1) is below the trained arms' means, so
    # without an infinite bound the new arm would only ever get the exploration floor.
    log = uniform_log(3000, seed=5, rates=RATES)
    lin_ucb = spec("lin_ucb", 0.0).model_copy(update={"alpha": 0.05})
    policy = Policy.train(lin_ucb, FEATURES, ARMS, log.contexts, log.arms, reward_scale * log.rewards, seed=1)

    p = policy.with_arms([*ARMS, "kids"]).probabilities(PROBES)

    np.testing.assert_array_equal(p[:, 3], 1.0)


@pytest.mark.parametrize("name", FAMILIES)
def test_removed_arm_is_never_chosen_and_comes_back_with_its_learning(name: str) -> None:
    policy = _trained(name, floor=0.05)
    ctx = _contexts(policy)

    shrunk = policy.with_arms(["control", "womens"])
    p = shrunk.probabilities(ctx)
    decisions = shrunk.decide(ctx, np.random.default_rng(0), n=1000)

    assert p.shape[1] == 2
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert {d.arm for d in decisions} <= {"control", "womens"}
    restored = shrunk.with_arms(ARMS)
    np.testing.assert_array_equal(restored.probabilities(ctx), policy.probabilities(ctx))


def test_removed_arm_still_learns_from_late_rewards() -> None:
    policy = _trained("epsilon_greedy").with_arms(["control", "womens"])

    updated = policy.update(None, ["mens", "mens"], [1.0, 1.0])

    before = policy.to_state()["model"]
    after = updated.to_state()["model"]
    i = after["arms"].index("mens")
    assert after["count"][i] == before["count"][i] + 2


def test_training_ignores_rows_of_arms_no_longer_offered() -> None:
    log = uniform_log(600, seed=2, rates=RATES)
    keep = [i for i, a in enumerate(log.arms) if a != "control"]

    with_rows = Policy.train(spec("ucb1"), FEATURES, ["mens", "womens"], None, log.arms, log.rewards)
    without = Policy.train(
        spec("ucb1"), FEATURES, ["mens", "womens"], None, [log.arms[i] for i in keep], log.rewards[keep]
    )

    assert with_rows.to_state() == without.to_state()


def test_unknown_arm_in_an_update_is_an_error() -> None:
    policy = _trained("ucb1")

    with pytest.raises(ValueError, match=r"arms the policy does not have: \['kids'\]"):
        policy.update(None, ["kids"], [1.0])


@pytest.mark.parametrize(
    "arms, message", [([], "at least one arm"), (["a", "a"], "unique"), ("ab", "sequence"), ([1], "strings")]
)
def test_bad_arm_lists_are_refused(arms: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Policy.cold(spec("ucb1"), FEATURES, arms)  # type: ignore[arg-type]
