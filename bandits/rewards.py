"""Rewards: what a matured decision earned.

Rewards arrive late, so a decision is learned from only once it has matured: once it is
the reward wait old, the same age for every decision whatever its outcome (the service
decides when; see service/jobs/learning.py). Its reward is then what arrived within the wait:
1 for a binary reward when the rewarding event arrived (the revenue for a value reward),
else the definition's default (0 unless configured). Learning a success the moment it
arrives, and a failure only when a window closes, would show a policy successes without
their failures. ``window_closed`` below means "matured": until then the reward is not yet
known (None) and must not be learned from. An LTV-adjusted reward follows the same rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from experiments.spec import RewardSpec

RewardKind = Literal["event", "ltv_adjusted"]


@dataclass(frozen=True, slots=True)
class RewardDefinition:
    """What a decision earns: its event (binary or its value), or the LTV-adjusted value."""

    event: str = "conversion"
    value: Literal["revenue"] | None = None
    default: float = 0.0
    kind: RewardKind = "event"

    def __post_init__(self) -> None:
        if self.kind not in ("event", "ltv_adjusted"):
            raise ValueError(f"reward kind must be 'event' or 'ltv_adjusted', got {self.kind!r}")
        if self.value not in (None, "revenue"):
            raise ValueError(f"reward value must be None or 'revenue', got {self.value!r}")
        if not math.isfinite(self.default):
            raise ValueError(f"default reward must be a finite number, got {self.default}")

    @classmethod
    def from_spec(cls, spec: RewardSpec) -> RewardDefinition:
        """Build the definition from an experiment's reward spec."""
        return cls(event=spec.event, value=spec.value, default=float(spec.default), kind=spec.type)

    @property
    def binary(self) -> bool:
        """Whether every reward is 0 or 1 (what Thompson sampling can learn from)."""
        return self.kind == "event" and self.value is None and self.default in (0.0, 1.0)


@dataclass(frozen=True, slots=True)
class OutcomeSummary:
    """What one decision has led to so far: event counts, revenue, and whether its window closed."""

    counts: Mapping[str, int] = field(default_factory=dict)
    revenue: float = 0.0
    window_closed: bool = False
    ltv_adjusted_value: float | None = None


def reward_for(definition: RewardDefinition, outcome: OutcomeSummary) -> float | None:
    """Return the decision's reward, or None while it is not yet known."""
    for event, count in outcome.counts.items():
        if count < 0:
            raise ValueError(f"event counts must be >= 0, got {count} for {event!r}")
    if not math.isfinite(outcome.revenue):
        raise ValueError(f"revenue must be a finite number, got {outcome.revenue}")
    if definition.kind == "ltv_adjusted":
        if not outcome.window_closed:
            return None
        if outcome.ltv_adjusted_value is None or not math.isfinite(outcome.ltv_adjusted_value):
            got = outcome.ltv_adjusted_value
            raise ValueError(f"an ltv_adjusted reward needs a finite ltv_adjusted_value, got {got}")
        return float(outcome.ltv_adjusted_value)
    if outcome.counts.get(definition.event, 0) > 0:
        return float(outcome.revenue) if definition.value == "revenue" else 1.0
    if outcome.window_closed:
        return float(definition.default)
    return None


def rewards_for(
    definition: RewardDefinition,
    event_counts: Sequence[int] | np.ndarray,
    revenue: Sequence[float] | np.ndarray,
    window_closed: Sequence[bool] | np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised ``reward_for`` for event rewards: (rewards, known) arrays, reward NaN where unknown.

    ``event_counts`` holds each decision's count of the rewarding event.
    """
    if definition.kind != "event":
        raise ValueError(f"rewards_for handles event rewards, got kind {definition.kind!r}; use reward_for")
    counts = np.asarray(event_counts, dtype=float)
    value = np.asarray(revenue, dtype=float)
    closed = np.asarray(window_closed, dtype=bool)
    if not (counts.shape == value.shape == closed.shape) or counts.ndim != 1:
        raise ValueError(
            f"event_counts, revenue and window_closed must be 1-D of equal length, "
            f"got shapes {counts.shape}, {value.shape}, {closed.shape}"
        )
    if (counts < 0).any():
        raise ValueError(f"event counts must be >= 0, got {counts[counts < 0][0]}")
    if not np.isfinite(value).all():
        raise ValueError(f"revenue must be finite numbers, got {value[~np.isfinite(value)][0]}")
    reached = counts > 0
    earned = value if definition.value == "revenue" else np.ones_like(value)
    rewards = np.where(reached, earned, np.where(closed, definition.default, np.nan))
    return rewards, reached | closed
