"""Delayed rewards: known at the rewarding event or at the end of the attribution window."""

from __future__ import annotations

import numpy as np
import pytest

from bandits import OutcomeSummary, RewardDefinition, reward_for, rewards_for
from experiments.spec import RewardSpec

BINARY = RewardDefinition(event="conversion")
REVENUE = RewardDefinition(event="conversion", value="revenue")


@pytest.mark.parametrize(
    "definition, outcome, expected",
    [
        (BINARY, OutcomeSummary({"open": 1, "click": 1}), None),  # window open, no conversion yet
        (BINARY, OutcomeSummary({"conversion": 1}), 1.0),  # known as soon as the event arrives
        (BINARY, OutcomeSummary({"conversion": 3}, window_closed=True), 1.0),
        (BINARY, OutcomeSummary({"open": 2}, window_closed=True), 0.0),  # default reward
        (RewardDefinition(event="click", default=-0.5), OutcomeSummary({}, window_closed=True), -0.5),
        (RewardDefinition(event="click"), OutcomeSummary({"click": 1, "conversion": 0}), 1.0),
        (REVENUE, OutcomeSummary({"conversion": 1}, revenue=29.9), 29.9),
        (REVENUE, OutcomeSummary({"conversion": 2}, revenue=45.0, window_closed=True), 45.0),
        (REVENUE, OutcomeSummary({"click": 1}, revenue=0.0, window_closed=True), 0.0),
        (REVENUE, OutcomeSummary({"click": 1}), None),
    ],
)
def test_reward_for(definition: RewardDefinition, outcome: OutcomeSummary, expected: float | None) -> None:
    assert reward_for(definition, outcome) == expected


def test_ltv_adjusted_reward_waits_for_the_window_to_close() -> None:
    ltv = RewardDefinition(kind="ltv_adjusted")

    assert reward_for(ltv, OutcomeSummary({"conversion": 1}, revenue=20.0, ltv_adjusted_value=20.0)) is None
    counts = {"conversion": 1, "unsubscribe": 1}
    closed = OutcomeSummary(counts, revenue=20, window_closed=True, ltv_adjusted_value=-80.0)
    assert reward_for(ltv, closed) == -80.0
    with pytest.raises(ValueError, match="needs a finite ltv_adjusted_value"):
        reward_for(ltv, OutcomeSummary({}, window_closed=True))


def test_definition_from_the_experiment_spec() -> None:
    definition = RewardDefinition.from_spec(RewardSpec(event="click", value="revenue", default=0.25))

    assert definition == RewardDefinition(event="click", value="revenue", default=0.25, kind="event")
    assert not definition.binary
    assert RewardDefinition.from_spec(RewardSpec()).binary


def test_vectorised_rewards() -> None:
    counts = [0, 1, 0, 2]
    revenue = [0.0, 10.0, 0.0, 5.0]
    closed = [False, False, True, True]

    binary, known = rewards_for(BINARY, counts, revenue, closed)
    value, _ = rewards_for(REVENUE, counts, revenue, closed)

    assert known.tolist() == [False, True, True, True]
    np.testing.assert_array_equal(binary, [np.nan, 1.0, 0.0, 1.0])
    np.testing.assert_array_equal(value, [np.nan, 10.0, 0.0, 5.0])


def test_bad_outcomes_are_refused() -> None:
    with pytest.raises(ValueError, match="event counts must be >= 0, got -1"):
        reward_for(BINARY, OutcomeSummary({"conversion": -1}))
    with pytest.raises(ValueError, match="revenue must be a finite number"):
        reward_for(REVENUE, OutcomeSummary({"conversion": 1}, revenue=float("nan")))
    with pytest.raises(ValueError, match="equal length"):
        rewards_for(BINARY, [1, 0], [0.0], [True, False])
    with pytest.raises(ValueError, match="reward kind"):
        RewardDefinition(kind="other")  # type: ignore[arg-type]
