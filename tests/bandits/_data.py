"""Synthetic logged decisions with known reward rates, shared by the bandit tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from experiments.spec import FeatureSpec, PolicySpec

ARMS = ("control", "mens", "womens")
FEATURES = (
    FeatureSpec(name="recency", type="numeric"),
    FeatureSpec(name="spend", type="numeric", required=False),
    FeatureSpec(name="channel", type="categorical"),
)
CHANNELS = ("web", "email", "phone")

# Per-family tuning used across the tests.
SPECS = {
    "thompson_sampling": PolicySpec(name="thompson_sampling"),
    "ucb1": PolicySpec(name="ucb1", alpha=0.5),
    "epsilon_greedy": PolicySpec(name="epsilon_greedy", epsilon=0.2),
    "softmax": PolicySpec(name="softmax", tau=0.1),
    "lin_ucb": PolicySpec(name="lin_ucb", alpha=0.5),
    "lin_ts": PolicySpec(name="lin_ts", alpha=0.5),
    "lin_greedy": PolicySpec(name="lin_greedy", epsilon=0.2),
}
FAMILIES = tuple(SPECS)


@dataclass(frozen=True)
class Log:
    contexts: list[dict]
    arms: list[str]
    rewards: np.ndarray


def contexts(n: int, rng: np.random.Generator) -> list[dict]:
    """Random customer contexts; a third of them lack the optional 'spend'."""
    out = []
    for _ in range(n):
        ctx = {"recency": int(rng.integers(1, 13)), "channel": CHANNELS[int(rng.integers(3))]}
        if rng.random() < 2 / 3:
            ctx["spend"] = float(np.round(rng.gamma(2.0, 50.0), 2))
        out.append(ctx)
    return out


def true_rate(ctx: dict, arm: str) -> float:
    """Conversion probability: 'mens' is best on the web, 'womens' by e-mail, control worst."""
    base = {"control": 0.10, "mens": 0.20, "womens": 0.20}[arm]
    if arm == "mens" and ctx["channel"] == "web":
        base += 0.25
    if arm == "womens" and ctx["channel"] == "email":
        base += 0.25
    return base


def uniform_log(n: int, seed: int, rates: dict[str, float] | None = None) -> Log:
    """Decisions made uniformly at random with Bernoulli rewards."""
    rng = np.random.default_rng(seed)
    ctx = contexts(n, rng)
    arms = [ARMS[i] for i in rng.integers(len(ARMS), size=n)]
    p = np.array([rates[a] if rates else true_rate(c, a) for c, a in zip(ctx, arms)])
    rewards = (rng.random(n) < p).astype(float)
    return Log(ctx, arms, rewards)


def spec(name: str, floor: float | None = None) -> PolicySpec:
    base = SPECS[name]
    if floor is None:
        return base
    return base.model_copy(update={"exploration_floor": floor})
