"""Deterministic bucketing for fixed splits.

A subject's position in an experiment is

    u = int(sha256(f"{salt}:{subject_id}").hexdigest()[:15], 16) / 16**15    (0 <= u < 1)

and the arm is the first one, in the experiment's arm order, whose cumulative
normalised weight exceeds u. The same subject gets the same arm on every
worker, host and restart, and a channel can reproduce it from the salt. Each
experiment has its own random salt, so positions in two experiments are
independent.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from itertools import accumulate

_SCALE = float(16**15)


def unit_position(salt: str, subject_id: str) -> float:
    """The subject's uniform position in [0, 1) for this salt."""
    digest = hashlib.sha256(f"{salt}:{subject_id}".encode()).hexdigest()
    return int(digest[:15], 16) / _SCALE


class Splitter:
    """Maps positions onto arms by cumulative weight; build once, use for many subjects."""

    __slots__ = ("arms", "shares", "_bounds")

    def __init__(self, weights: Mapping[str, float]):
        if not weights:
            raise ValueError("a split needs at least one arm")
        total = float(sum(weights.values()))
        if not total > 0:
            raise ValueError(f"weights must sum to a positive number, got {total}")
        self.arms: list[str] = list(weights)
        self.shares: dict[str, float] = {arm: w / total for arm, w in weights.items()}
        bounds = list(accumulate(self.shares.values()))
        bounds[-1] = 1.0
        self._bounds = bounds

    def arm_at(self, position: float) -> str:
        return self.arms[min(bisect.bisect_right(self._bounds, position), len(self.arms) - 1)]

    def assign(self, salt: str, subject_id: str) -> str:
        return self.arm_at(unit_position(salt, subject_id))

    def assign_many(self, salt: str, subject_ids: Iterable[str]) -> list[str]:
        return [self.arm_at(unit_position(salt, s)) for s in subject_ids]


def winner_split(winner: str, control: str, holdback: float) -> dict[str, float]:
    """Weights after promotion: the winner gets everything but the holdback, which stays on control."""
    if winner == control or holdback <= 0:
        return {winner: 1.0}
    return {winner: 1.0 - holdback, control: holdback}


def in_holdout(salt: str, subject_id: str, share: float) -> bool:
    """Sticky uniform-random holdout membership, independent of the arm position."""
    return share > 0 and unit_position(f"{salt}:holdout", subject_id) < share


def uniform_arm(salt: str, subject_id: str, arms: Sequence[str], nonce: str = "") -> str:
    """A uniform arm choice from a salted hash (used for holdout subjects)."""
    position = unit_position(f"{salt}:uniform:{nonce}", subject_id)
    return arms[min(int(position * len(arms)), len(arms) - 1)]
