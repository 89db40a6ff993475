"""Logged propensities are the real choice frequencies, for every policy family.

From one fixed trained state, draw 20,000 decisions and compare how often each
arm was chosen with the sum of the logged propensities (chi-square goodness of
fit, scipy.stats.chisquare, p > 0.001).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from bandits import Policy
from tests.bandits._data import ARMS, FAMILIES, FEATURES, spec, uniform_log

DRAWS = 20_000
PROBES = [
    {"recency": 2, "spend": 120.0, "channel": "web"},
    {"recency": 9, "channel": "email"},
    {"recency": 5, "spend": 10.0, "channel": "phone"},
    {"recency": 12, "spend": 300.0, "channel": "fax"},  # a channel never seen in training
]


@pytest.mark.parametrize("name", FAMILIES)
def test_observed_frequencies_match_logged_propensities(name: str) -> None:
    log = uniform_log(600, seed=11)
    policy = Policy.train(spec(name), FEATURES, ARMS, log.contexts, log.arms, log.rewards, seed=5)
    contexts = [PROBES[i % len(PROBES)] for i in range(DRAWS)]

    decisions = policy.decide(contexts, np.random.default_rng(2024))

    p = policy.probabilities(contexts)
    logged = np.array([[d.probabilities[a] for a in ARMS] for d in decisions])
    np.testing.assert_array_equal(logged, p)
    chosen = np.array([ARMS.index(d.arm) for d in decisions])
    assert [d.propensity for d in decisions] == p[np.arange(DRAWS), chosen].tolist()
    group = np.arange(DRAWS) % len(PROBES)
    observed = np.zeros((len(PROBES), len(ARMS)))
    np.add.at(observed, (group, chosen), 1)
    expected = np.zeros_like(observed)
    np.add.at(expected, group, p)
    assert expected.min() > 50  # the floor keeps every cell well populated
    result = stats.chisquare(observed.ravel(), expected.ravel())
    assert result.pvalue > 0.001, (name, observed, expected)


@pytest.mark.parametrize("name", ["thompson_sampling", "ucb1", "epsilon_greedy", "softmax"])
def test_context_free_decisions_need_no_contexts(name: str) -> None:
    log = uniform_log(600, seed=3)
    policy = Policy.train(spec(name), FEATURES, ARMS, None, log.arms, log.rewards)

    decisions = policy.decide(None, np.random.default_rng(1), n=DRAWS)

    p = policy.probabilities(None)[0]
    observed = np.bincount([ARMS.index(d.arm) for d in decisions], minlength=len(ARMS))
    assert stats.chisquare(observed, DRAWS * p).pvalue > 0.001
    assert all(d.probabilities == dict(zip(ARMS, p.tolist())) for d in decisions[:100])


def test_same_generator_seed_gives_same_decisions() -> None:
    log = uniform_log(300, seed=1)
    policy = Policy.train(spec("lin_ts"), FEATURES, ARMS, log.contexts, log.arms, log.rewards)

    first = policy.decide(PROBES, np.random.default_rng(7))
    second = policy.decide(PROBES, np.random.default_rng(7))

    assert first == second
