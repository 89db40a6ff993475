"""Arbitration across offer families: expected values, known choice probabilities, exploration."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chisquare

from experiments.arbitration import ArmOption, Candidate, arbitrate, choice_probabilities, score


def family(name: str, channel: str, arms: list[tuple[str, float, float, float]], **kw: float) -> Candidate:
    return Candidate(name, channel, tuple(ArmOption(*a) for a in arms), **kw)


def test_expected_value_is_the_policy_weighted_value_less_the_contact_cost() -> None:
    c = family("cards", "email", [("a", 0.25, 0.1, 40.0), ("b", 0.75, 0.02, 100.0)], priority=2.0, contact_cost=0.5)
    scored = score(c)
    assert scored.expected_value == pytest.approx(2 * (0.25 * 0.1 * 40 + 0.75 * 0.02 * 100) - 0.5)
    assert scored.arm_values == pytest.approx({"a": 2 * 4.0 - 0.5, "b": 2 * 2.0 - 0.5})


def test_choice_probabilities_argmax_with_even_exploration() -> None:
    assert choice_probabilities([3.0, 1.0, -1.0], 0.1) == pytest.approx([0.95, 0.05, 0.0])
    assert choice_probabilities([3.0, 3.0, 1.0], 0.3) == pytest.approx([0.45, 0.45, 0.1])
    assert choice_probabilities([-1.0, 0.0], 0.1) == [0.0, 0.0]
    assert sum(choice_probabilities([5.0, 4.0, 3.0, 2.0], 0.2)) == pytest.approx(1.0)


def test_the_higher_expected_value_wins_and_nobody_is_contacted_at_a_loss() -> None:
    rng = np.random.default_rng(1)
    cheap = family("socks", "email", [("x", 1.0, 0.2, 5.0)])
    dear = family("coats", "email", [("y", 1.0, 0.05, 120.0)])
    result = arbitrate([cheap, dear], exploration=0.0, rng=rng)
    assert result.chosen.candidate.experiment == "coats" and result.arm == "y" and result.arm_probability == 1.0
    assert [s.candidate.experiment for s in result.ranked] == ["coats", "socks"]
    loss = arbitrate([family("spam", "sms", [("z", 1.0, 0.001, 1.0)], contact_cost=0.05)], 0.1, rng)
    assert loss.chosen is None and loss.reason == "not_worth_contacting"
    assert arbitrate([], 0.1, rng).reason == "no_eligible_offer"


def test_drawn_actions_match_their_stated_probabilities() -> None:
    rng = np.random.default_rng(7)
    candidates = [family("coats", "email", [("c1", 0.7, 0.05, 120.0), ("c2", 0.3, 0.04, 120.0)]),
                  family("coats", "sms", [("c1", 0.7, 0.05, 120.0), ("c2", 0.3, 0.04, 120.0)], contact_cost=1.0),
                  family("socks", "email", [("s1", 1.0, 0.2, 5.0)])]
    draws = [arbitrate(candidates, exploration=0.3, rng=rng) for _ in range(6000)]
    first = draws[0]
    expected = {(s.candidate.experiment, s.candidate.channel, o.arm): s.probability * o.probability
                for s in first.ranked for o in s.candidate.arms}
    observed = {key: 0 for key in expected}
    for d in draws:
        observed[(d.chosen.candidate.experiment, d.chosen.candidate.channel, d.arm)] += 1
        assert d.action_probability == pytest.approx(expected[(d.chosen.candidate.experiment,
                                                               d.chosen.candidate.channel, d.arm)])
    keys = sorted(expected)
    result = chisquare([observed[k] for k in keys], [expected[k] * len(draws) for k in keys])
    assert result.pvalue > 0.001


def test_bad_candidates_are_refused() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        score(family("x", "email", [("a", 0.5, 0.1, 1.0)]))
    with pytest.raises(ValueError, match="value"):
        score(family("x", "email", [("a", 1.0, 0.1, float("nan"))]))
    with pytest.raises(ValueError, match="exploration"):
        choice_probabilities([1.0], 1.5)
