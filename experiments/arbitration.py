"""Next best action: pick one offer family and channel for a subject, by expected value, still exploring.

Every eligible (offer family, channel) is a candidate. Its family's own policy gives
each arm a probability for this subject (a fixed split's hashed arm, or a bandit's
choice probabilities), and each arm a response probability (the bandit's estimate,
or the arm's measured rate) and a value (its margin, or its revenue per conversion).
A candidate is worth

    V(family, channel) = priority x sum over arms of P(arm) x P(response | arm) x value(arm) - cost(channel)

the expected value of sending that family on that channel. Arbitration picks the
candidate with the highest V with probability 1 - exploration (ties split evenly) and
spreads `exploration` evenly over every candidate worth more than nothing, so each
keeps a known, non-zero chance and the families' policies keep learning. The arm is
then drawn from the family's own policy, so a fixed split stays randomised and a
bandit's logged propensity is still its true choice probability. Nobody is contacted
when no candidate is worth its contact cost.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

TIE_TOLERANCE = 1e-12


@dataclass(frozen=True, slots=True)
class ArmOption:
    arm: str
    probability: float  # the family's policy's probability of this arm for this subject (its propensity)
    response: float  # probability the subject responds (converts) given this arm
    value: float  # what a response on this arm is worth


@dataclass(frozen=True, slots=True)
class Candidate:
    experiment: str
    channel: str | None
    arms: tuple[ArmOption, ...]
    priority: float = 1.0
    contact_cost: float = 0.0


@dataclass(frozen=True, slots=True)
class Scored:
    candidate: Candidate
    expected_value: float
    arm_values: dict[str, float]  # priority x P(response | arm) x value(arm) - cost, per arm
    probability: float = 0.0  # arbitration's probability of choosing this candidate


@dataclass(frozen=True, slots=True)
class Arbitration:
    ranked: tuple[Scored, ...]  # every candidate, best first, with its probability of being chosen
    chosen: Scored | None = None
    arm: str | None = None
    arm_probability: float | None = None  # the family policy's propensity of the arm (what its log records)
    reason: str | None = None  # why nobody is contacted, when chosen is None
    notes: list[str] = field(default_factory=list)

    @property
    def action_probability(self) -> float | None:
        """The joint probability of this family, channel and arm."""
        if self.chosen is None or self.arm_probability is None:
            return None
        return self.chosen.probability * self.arm_probability


def score(candidate: Candidate) -> Scored:
    """The candidate's expected value and each arm's value net of the contact cost."""
    _check(candidate)
    per_arm = {o.arm: candidate.priority * o.response * o.value - candidate.contact_cost for o in candidate.arms}
    expected = sum(o.probability * candidate.priority * o.response * o.value for o in candidate.arms)
    return Scored(candidate, expected - candidate.contact_cost, per_arm)


def choice_probabilities(values: Sequence[float], exploration: float) -> list[float]:
    """Arbitration's probability of each candidate: argmax (ties split) with 1 - exploration, the rest even."""
    if not 0 <= exploration <= 1:
        raise ValueError(f"exploration must be within [0, 1], got {exploration}")
    worth = [i for i, v in enumerate(values) if v > 0]
    probabilities = [0.0] * len(values)
    if not worth:
        return probabilities
    top = max(values[i] for i in worth)
    best = [i for i in worth if values[i] >= top - TIE_TOLERANCE * max(1.0, abs(top))]
    for i in best:
        probabilities[i] += (1 - exploration) / len(best)
    for i in worth:
        probabilities[i] += exploration / len(worth)
    return probabilities


def arbitrate(candidates: Sequence[Candidate], exploration: float, rng: np.random.Generator) -> Arbitration:
    """Score every candidate, draw one by its arbitration probability, then its arm from the family's policy."""
    scored = [score(c) for c in candidates]
    probabilities = choice_probabilities([s.expected_value for s in scored], exploration)
    ranked = sorted((Scored(s.candidate, s.expected_value, s.arm_values, p) for s, p in zip(scored, probabilities,
                                                                                              strict=True)),
                    key=lambda s: (-s.expected_value, s.candidate.experiment, s.candidate.channel or ""))
    if not candidates:
        return Arbitration((), reason="no_eligible_offer")
    if not any(p > 0 for p in probabilities):
        return Arbitration(tuple(ranked), reason="not_worth_contacting")
    weights = np.array([s.probability for s in ranked])
    chosen = ranked[int(rng.choice(len(ranked), p=weights / weights.sum()))]
    arm_weights = np.array([o.probability for o in chosen.candidate.arms])
    index = int(rng.choice(len(arm_weights), p=arm_weights / arm_weights.sum()))
    option = chosen.candidate.arms[index]
    return Arbitration(tuple(ranked), chosen, option.arm, option.probability)


def _check(candidate: Candidate) -> None:
    if not candidate.arms:
        raise ValueError(f"candidate {candidate.experiment!r} has no arms")
    total = sum(o.probability for o in candidate.arms)
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ValueError(f"arm probabilities of {candidate.experiment!r} must sum to 1, got {total}")
    for o in candidate.arms:
        for name, number in (("probability", o.probability), ("response", o.response)):
            if not (0 <= number <= 1):
                raise ValueError(f"{name} of arm {o.arm!r} must be within [0, 1], got {number}")
        if not math.isfinite(o.value) or o.value < 0:
            raise ValueError(f"value of arm {o.arm!r} must be a finite number >= 0, got {o.value}")
    if not (math.isfinite(candidate.priority) and candidate.priority > 0):
        raise ValueError(f"priority must be a finite number > 0, got {candidate.priority}")
    if not (math.isfinite(candidate.contact_cost) and candidate.contact_cost >= 0):
        raise ValueError(f"contact cost must be a finite number >= 0, got {candidate.contact_cost}")
