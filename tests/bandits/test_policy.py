"""Policy behaviour: cold start, the exploration floor, learning, and input checks."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from bandits import Policy
from experiments.spec import PolicySpec
from tests.bandits._data import ARMS, FAMILIES, FEATURES, contexts, spec, uniform_log

PROBES = [
    {"recency": 2, "spend": 120.0, "channel": "web"},
    {"recency": 9, "channel": "email"},
    {"recency": 12, "channel": "fax"},
]


def _ctx(policy: Policy) -> list[dict] | None:
    return PROBES if policy.contextual else None


@pytest.mark.parametrize("name", FAMILIES)
def test_cold_policy_is_uniform(name: str) -> None:
    policy = Policy.cold(spec(name), FEATURES, ARMS, seed=4)

    p = policy.probabilities(PROBES)

    assert not policy.trained
    np.testing.assert_array_equal(p, np.full((3, 3), 1 / 3))
    decisions = policy.decide(PROBES * 2000, np.random.default_rng(0))
    counts = np.bincount([ARMS.index(d.arm) for d in decisions], minlength=3)
    # Binomial(6000, 1/3): 4 standard errors is about 146.
    assert np.abs(counts - 2000).max() < 4 * np.sqrt(6000 * (1 / 3) * (2 / 3))
    assert all(d.propensity == 1 / 3 for d in decisions)


@pytest.mark.parametrize("name", FAMILIES)
def test_floor_keeps_every_arm_above_floor_over_k(name: str) -> None:
    # 5,000 examples where 'mens' always converts and the others never do.
    log = uniform_log(5000, seed=3, rates={"control": 0.0, "mens": 1.0, "womens": 0.0})
    policy = Policy.train(spec(name, 0.06), FEATURES, ARMS, log.contexts, log.arms, log.rewards)

    p = policy.probabilities(PROBES)

    assert (p >= 0.06 / 3 - 1e-15).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)


@pytest.mark.parametrize("name", FAMILIES)
def test_learns_to_prefer_the_clearly_better_arm(name: str) -> None:
    rates = {"control": 0.1, "mens": 0.5, "womens": 0.1}
    rng = np.random.default_rng(12)
    policy = Policy.cold(spec(name), FEATURES, ARMS, seed=2)
    for _ in range(8):
        batch = contexts(250, rng)
        decided = policy.decide(batch, rng)
        chosen = [d.arm for d in decided]
        rewards = (rng.random(len(chosen)) < [rates[a] for a in chosen]).astype(float)
        policy = policy.update(batch, chosen, rewards)

    p = policy.probabilities(contexts(200, rng))

    assert p[:, ARMS.index("mens")].mean() > 0.6, p.mean(axis=0)


def test_contextual_policy_learns_the_best_arm_per_channel() -> None:
    log = uniform_log(6000, seed=4)  # 'mens' is best on the web, 'womens' by e-mail
    policy = Policy.train(spec("lin_ucb"), FEATURES, ARMS, log.contexts, log.arms, log.rewards)

    p = policy.probabilities([{"recency": 5, "channel": "web"}, {"recency": 5, "channel": "email"}])

    assert p[0].argmax() == ARMS.index("mens")
    assert p[1].argmax() == ARMS.index("womens")


def test_update_keeps_the_encoder_and_train_refits_it() -> None:
    first = uniform_log(300, seed=1)
    policy = Policy.train(spec("lin_greedy"), FEATURES, ARMS, first.contexts, first.arms, first.rewards)
    shifted = [{**c, "recency": c["recency"] + 100, "channel": "sms"} for c in first.contexts]

    updated = policy.update(shifted, first.arms, first.rewards)
    retrained = Policy.train(
        spec("lin_greedy"), FEATURES, ARMS, first.contexts + shifted, first.arms * 2,
        np.concatenate([first.rewards, first.rewards]), previous=policy,
    )

    assert updated.encoder == policy.encoder
    assert retrained.encoder.numeric[0].mean == pytest.approx(np.mean([c["recency"] for c in first.contexts]) + 50)
    assert retrained.encoder.columns[: len(policy.encoder.columns)] == policy.encoder.columns
    assert retrained.encoder.columns[-1] == "channel=sms"


def test_first_update_of_a_cold_policy_fits_the_encoder() -> None:
    log = uniform_log(200, seed=6)

    policy = Policy.cold(spec("lin_ts"), FEATURES, ARMS).update(log.contexts, log.arms, log.rewards)

    assert policy.trained
    assert set(policy.encoder.columns[2:]) == {"channel=web", "channel=email", "channel=phone"}
    assert policy.encoder.numeric[0].mean == pytest.approx(np.mean([c["recency"] for c in log.contexts]))


def test_updates_return_new_policies_and_leave_the_old_one_alone() -> None:
    log = uniform_log(400, seed=9)
    policy = Policy.train(spec("thompson_sampling"), FEATURES, ARMS, None, log.arms[:200], log.rewards[:200])
    before = policy.to_state()
    p_before = policy.probabilities()

    policy.update(None, log.arms[200:], log.rewards[200:])
    policy.with_arms(["mens"])

    assert policy.to_state() == before
    np.testing.assert_array_equal(policy.probabilities(), p_before)


def test_probabilities_are_a_deterministic_function_of_state_and_context() -> None:
    log = uniform_log(300, seed=2)
    policy = Policy.train(spec("lin_ts"), FEATURES, ARMS, log.contexts, log.arms, log.rewards)

    alone = policy.probabilities(PROBES[:1])
    in_batch = policy.probabilities(PROBES[::-1] + PROBES)[-3]

    np.testing.assert_array_equal(alone[0], in_batch)


def test_one_policy_serves_many_threads() -> None:
    log = uniform_log(300, seed=2)
    policy = Policy.train(spec("lin_ucb"), FEATURES, ARMS, log.contexts, log.arms, log.rewards)
    expected = [d.arm for d in policy.decide(PROBES * 50, np.random.default_rng(1))]

    with ThreadPoolExecutor(4) as pool:
        runs = [pool.submit(policy.decide, PROBES * 50, np.random.default_rng(1)) for _ in range(8)]
        results = [[d.arm for d in run.result()] for run in runs]

    assert all(r == expected for r in results)


def test_thompson_sampling_needs_binary_rewards() -> None:
    policy = Policy.cold(spec("thompson_sampling"), FEATURES, ARMS)

    with pytest.raises(ValueError, match="thompson_sampling learns from rewards 0 or 1, got 29.9"):
        policy.update(None, ["mens"], [29.9])


def test_value_rewards_work_for_mean_based_policies() -> None:
    policy = Policy.cold(PolicySpec(name="ucb1"), FEATURES, ARMS).update(None, ARMS, [0.0, 29.9, -3.5])

    np.testing.assert_allclose(policy.expectations()[0], [0.0, 29.9, -3.5])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda p: p.probabilities(None), "contextual and needs contexts"),
        (lambda p: p.update(PROBES, ["mens"], [1.0]), "one context per arm"),
        (lambda p: p.update(PROBES[:1], ["mens"], [1.0, 0.0]), "one reward per arm"),
        (lambda p: p.update(PROBES[:1], ["mens"], [float("nan")]), "finite"),
        (lambda p: p.decide(PROBES, 42), "numpy Generator"),
        (lambda p: p.probabilities({"recency": 1}), "sequence of mappings"),
    ],
)
def test_bad_input_is_refused_with_a_message(call: object, message: str) -> None:
    policy = Policy.cold(spec("lin_ucb"), FEATURES, ARMS)

    with pytest.raises(ValueError, match=message):
        call(policy)  # type: ignore[operator]


def test_spec_given_as_plain_data() -> None:
    policy = Policy.cold({"name": "lin_ts", "alpha": 0.3}, [{"name": "x", "type": "numeric"}], ["a", "b"], seed=1)

    assert policy.params == {"alpha": 0.3, "l2_lambda": 1.0}
    assert policy.contextual


def test_lin_ts_alpha_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="lin_ts needs alpha > 0, got 0.0"):
        Policy.cold(PolicySpec(name="lin_ts", alpha=0), FEATURES, ARMS)
