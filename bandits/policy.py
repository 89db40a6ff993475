"""The bandit policy facade: decide, learn, change arms, save and load.

Propensities are exact by construction. MABWiser returns no choice
probabilities, so a policy first computes, from its learned state, the
probability that it picks each arm in each context (rules in ``_choice``), mixes
in the exploration floor, ``p = (1 - floor) * p_policy + floor / K``, and then
draws the decision from exactly that vector with the caller's seeded numpy
Generator. The logged propensity is therefore the true probability of the
logged choice, which is what inverse-propensity reports need, and every arm
keeps at least ``floor / K``.

Thompson sampling and LinTS have no closed form: the probability that an arm
wins the posterior draw is estimated by Monte Carlo (``_propensity.TS_DRAWS`` =
100,000 draws once per policy state, standard error sqrt(p(1-p)/M) <= 0.0016;
``_propensity.LINTS_DRAWS`` = 1,000 draws per distinct context, standard error
<= 0.016). The draws come from a generator seeded by the policy's seed, so the
vector is a deterministic function of state and context and can be recomputed
for an audit. Because the decision is drawn from the estimate itself, the
logged propensity stays exact; the Monte Carlo error only makes the policy
differ slightly from textbook Thompson sampling.

Learning: ``update`` adds examples with MABWiser's ``partial_fit`` and keeps
the context encoder fixed, so the ridge matrices learned so far stay in the
same coordinates. ``Policy.train`` is the full retrain: it refits the encoder's
scaling and grows its vocabularies (append-only when ``previous`` is given)
and fits MABWiser from scratch. The first training of a never-trained policy is
a full training, whichever of the two is called. Linear policies get an
intercept column in front of the encoded context, so every arm learns its base
rate.

Arms: ``with_arms`` adds cold arms, which explore (the Thompson and LinTS priors,
an infinite UCB1 and LinUCB bound, optimism for the greedy and softmax
families), and disables arms that are no longer listed: they are offered with
probability 0 but their learned state is kept, so re-enabling one restores it
and late rewards for its decisions can still be learned.

Thread safety: a ``Policy`` is immutable. Reads never call a MABWiser method
that mutates the object or draws from its random stream, and ``update``,
``with_arms`` and ``train`` work on deep copies, so one policy may serve many
threads without a lock. The Generator passed to ``decide`` is the caller's; use
one per thread.
"""

from __future__ import annotations

import math

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bandits import _choice
from bandits import _mabwiser as mw
from bandits import _propensity as prop
from bandits.encoding import Encoder
from experiments.spec import FeatureSpec, PolicySpec

STATE_FORMAT = "nextbest.policy/1"

# Stream label that separates the Monte Carlo generator from other uses of the seed.
_MC_STREAM = 0x7072_6F70

Contexts = Sequence[Mapping[str, Any] | None]


@dataclass(frozen=True, slots=True)
class Decision:
    """One chosen arm with the exact probability it had, and the whole probability vector."""

    arm: str
    propensity: float
    probabilities: dict[str, float]


class Policy:
    """A bandit policy in one learned state; every change returns a new policy."""

    __slots__ = ("_spec", "_features", "_arms", "_model", "_encoder", "_vector")

    def __init__(
        self,
        spec: PolicySpec,
        features: tuple[FeatureSpec, ...],
        arms: tuple[str, ...],
        model: mw._Model,
        encoder: Encoder,
    ) -> None:
        self._spec = spec
        self._features = features
        self._arms = arms
        self._model = model
        self._encoder = encoder
        self._vector: np.ndarray | None = None  # cached choice vector of a context-free policy

    # ------------------------------------------------------------ construction

    @classmethod
    def cold(
        cls,
        spec: PolicySpec | Mapping[str, Any],
        features: Sequence[FeatureSpec | Mapping[str, Any]],
        arms: Sequence[str],
        seed: int = 0,
    ) -> Policy:
        """Create an untrained policy, which chooses uniformly."""
        spec = _policy_spec(spec)
        arms = _arm_list(arms)
        encoder = Encoder.cold(features)
        return cls(spec, encoder.features, arms, mw.build(spec, arms, _seed(seed)), encoder)

    @classmethod
    def train(
        cls,
        spec: PolicySpec | Mapping[str, Any],
        features: Sequence[FeatureSpec | Mapping[str, Any]],
        arms: Sequence[str],
        contexts: Contexts | None,
        arms_chosen: Sequence[str],
        rewards: Sequence[float],
        seed: int = 0,
        previous: Policy | None = None,
    ) -> Policy:
        """Train from scratch on logged decisions; rows for arms not in ``arms`` are left out.

        Pass the policy being replaced as ``previous`` to keep its category
        columns in place (vocabularies only grow).
        """
        policy = cls.cold(spec, features, arms, seed)
        if previous is not None and previous._features == policy._features:
            policy = cls(policy._spec, policy._features, policy._arms, policy._model, previous._encoder)
        chosen, reward, ctx = policy._examples(contexts, arms_chosen, rewards)
        offered = set(policy._arms)
        keep = [i for i, arm in enumerate(chosen) if arm in offered]
        if len(keep) < len(chosen):
            chosen = [chosen[i] for i in keep]
            reward = reward[keep]
            ctx = [ctx[i] for i in keep] if ctx is not None else None
        return policy._fit(ctx, chosen, reward, partial=False)

    def __repr__(self) -> str:
        state = "trained" if self.trained else "cold"
        return f"Policy({self._spec.name!r}, arms={list(self._arms)!r}, {state})"

    # ------------------------------------------------------------ properties

    @property
    def spec(self) -> PolicySpec:
        return self._spec

    @property
    def features(self) -> tuple[FeatureSpec, ...]:
        return self._features

    @property
    def arms(self) -> tuple[str, ...]:
        """The offered arms, in the column order of every probability matrix."""
        return self._arms

    @property
    def seed(self) -> int:
        return self._model.seed

    @property
    def params(self) -> dict[str, float]:
        """Tuning parameters in effect, defaults filled in."""
        return dict(self._model.params)

    @property
    def contextual(self) -> bool:
        return self._spec.contextual

    @property
    def trained(self) -> bool:
        return self._model.fitted

    @property
    def encoder(self) -> Encoder:
        return self._encoder

    # ------------------------------------------------------------ deciding

    def probabilities(self, contexts: Contexts | None = None, n: int = 1) -> np.ndarray:
        """Probability of choosing each arm per context, exploration floor included, shape (rows, K).

        Rows are the contexts; without contexts (context-free policies only) ``n`` rows.
        """
        rows = self._rows(contexts, n)
        if self.contextual:
            x = self._design(contexts)  # type: ignore[arg-type]
            p = _choice.choice_probabilities(self._model, self._arms, x, rows, self._mc_rng)
        else:
            if self._vector is None:
                self._vector = _choice.choice_probabilities(self._model, self._arms, None, 1, self._mc_rng)[0]
            p = np.broadcast_to(self._vector, (rows, len(self._arms)))
        return prop.with_floor(p, self._spec.exploration_floor)

    def expectations(self, contexts: Contexts | None = None, n: int = 1) -> np.ndarray:
        """Estimated mean reward of each arm per context (no exploration bonus), shape (rows, K)."""
        rows = self._rows(contexts, n)
        x = self._design(contexts) if self.contextual else None  # type: ignore[arg-type]
        return _choice.expected_rewards(self._model, self._arms, x, rows)

    def decide(self, contexts: Contexts | None, rng: np.random.Generator, n: int = 1) -> list[Decision]:
        """Choose one arm per context by sampling from ``probabilities``; the propensity is exact.

        Without contexts (context-free policies only) make ``n`` decisions.
        """
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng must be a numpy Generator, got {type(rng).__name__}")
        p = self.probabilities(contexts, n)
        chosen = prop.sample(p, rng)
        propensity = p[np.arange(len(p)), chosen].tolist()
        arms = self._arms
        rows = _rows_as_tuples(p)
        return [Decision(arms[i], q, dict(zip(arms, row))) for i, q, row in zip(chosen.tolist(), propensity, rows)]

    # ------------------------------------------------------------ learning

    def update(self, contexts: Contexts | None, arms: Sequence[str], rewards: Sequence[float]) -> Policy:
        """Return a policy that has also learned from these examples (encoder kept fixed)."""
        chosen, reward, ctx = self._examples(contexts, arms, rewards)
        known = set(self._model.arms)
        unknown = sorted({arm for arm in chosen if arm not in known})
        if unknown:
            raise ValueError(f"rewards name arms the policy does not have: {unknown}")
        if not chosen:
            return self
        return self._fit(ctx, chosen, reward, partial=self._model.fitted)

    def with_arms(self, arms: Sequence[str]) -> Policy:
        """Offer exactly these arms: new ones start cold, unlisted ones are disabled, learning is kept."""
        arms = _arm_list(arms)
        new = [arm for arm in arms if arm not in self._model.arms]
        return Policy(self._spec, self._features, arms, mw.add_arms(self._model, new), self._encoder)

    # ------------------------------------------------------------ state

    def to_state(self) -> dict[str, Any]:
        """Return the learned state as plain JSON data (no pickle); ValueError if a number is not finite.

        JSON has no infinities or NaN, so such a state could not be stored (or read back)."""
        state = {
            "format": STATE_FORMAT,
            "policy": self._spec.name,
            "params": dict(self._model.params),
            "exploration_floor": self._spec.exploration_floor,
            "seed": self._model.seed,
            "arms": list(self._arms),
            "model": mw.dump(self._model),
            "encoder": self._encoder.to_state(),
        }
        where = _non_finite(state)
        if where is not None:
            raise ValueError(f"policy state has a non-finite number at {where}; it cannot be stored as JSON")
        return state

    @classmethod
    def from_state(
        cls,
        spec: PolicySpec | Mapping[str, Any],
        features: Sequence[FeatureSpec | Mapping[str, Any]],
        state: Mapping[str, Any],
    ) -> Policy:
        """Rebuild a policy from ``to_state`` data; tuning parameters come from the spec."""
        spec = _policy_spec(spec)
        if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
            got = state.get("format") if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(f"policy state format must be {STATE_FORMAT!r}, got {got!r}")
        if state["policy"] != spec.name:
            raise ValueError(f"state belongs to policy {state['policy']!r}, the spec names {spec.name!r}")
        # A context-free policy never fits its encoder, so changed features do not matter to it.
        encoder = Encoder.from_state(features, state["encoder"]) if spec.contextual else Encoder.cold(features)
        model = mw.load(spec, _seed(state["seed"]), state["model"])
        arms = _arm_list(state["arms"])
        missing = [arm for arm in arms if arm not in model.arms]
        if missing:
            raise ValueError(f"offered arms {missing} have no learned state")
        if model.fitted and spec.contextual and model.imp.num_features != encoder.dim + 1:
            raise ValueError(
                f"linear models have {model.imp.num_features} columns, the encoder gives {encoder.dim} + intercept"
            )
        return cls(spec, encoder.features, arms, model, encoder)

    # ------------------------------------------------------------ internals

    def _mc_rng(self) -> np.random.Generator:
        return np.random.default_rng([self._model.seed, _MC_STREAM])

    def _rows(self, contexts: Contexts | None, n: int) -> int:
        if contexts is None:
            if self.contextual:
                raise ValueError(f"policy {self._spec.name!r} is contextual and needs contexts")
            if not (isinstance(n, int) and n >= 0):
                raise ValueError(f"n must be an integer >= 0, got {n!r}")
            return n
        if isinstance(contexts, Mapping) or isinstance(contexts, str):
            raise ValueError("contexts must be a sequence of mappings, one per decision")
        return len(contexts)

    def _design(self, contexts: Contexts) -> np.ndarray:
        """Encoded contexts with the intercept column in front."""
        x = self._encoder.encode(contexts)
        return np.hstack([np.ones((len(x), 1)), x])

    def _examples(
        self, contexts: Contexts | None, arms: Sequence[str], rewards: Sequence[float]
    ) -> tuple[list[str], np.ndarray, list[Mapping[str, Any] | None] | None]:
        """Check training examples: equal lengths, string arms, finite rewards."""
        if isinstance(arms, str):
            raise ValueError("arms must be a sequence of arm keys, one per example")
        chosen = list(arms)
        for arm in chosen:
            if not isinstance(arm, str):
                raise ValueError(f"arm keys must be strings, got {arm!r}")
        reward = np.asarray(rewards, dtype=float).reshape(-1)
        if len(reward) != len(chosen):
            raise ValueError(f"need one reward per arm: {len(chosen)} arms, {len(reward)} rewards")
        if not np.isfinite(reward).all():
            raise ValueError(f"rewards must be finite numbers, got {reward[~np.isfinite(reward)][0]}")
        if self._spec.name == "thompson_sampling" and not np.isin(reward, (0.0, 1.0)).all():
            bad = reward[~np.isin(reward, (0.0, 1.0))][0]
            raise ValueError(f"thompson_sampling learns from rewards 0 or 1, got {bad}")
        ctx: list[Mapping[str, Any] | None] | None = None
        if self.contextual:
            if contexts is None:
                raise ValueError(f"policy {self._spec.name!r} is contextual and needs contexts")
            ctx = list(contexts)
            if len(ctx) != len(chosen):
                raise ValueError(f"need one context per arm: {len(chosen)} arms, {len(ctx)} contexts")
        return chosen, reward, ctx

    def _fit(
        self, contexts: list[Mapping[str, Any] | None] | None, chosen: list[str], reward: np.ndarray, partial: bool
    ) -> Policy:
        if not chosen:
            return self
        encoder = self._encoder
        x = None
        if self.contextual:
            assert contexts is not None
            if not partial:
                encoder = encoder.fit(contexts)
            x = np.hstack([np.ones((len(chosen), 1)), encoder.encode(contexts)])
        model = mw.fit(self._model, np.asarray(chosen, dtype=str), reward, x, partial=partial)
        return Policy(self._spec, self._features, self._arms, model, encoder)


def _rows_as_tuples(p: np.ndarray) -> list[tuple[float, ...]]:
    """Rows of p as Python tuples, converting each distinct row once (most policies repeat a few rows)."""
    if len(p) < 64:
        return [tuple(row) for row in p.tolist()]
    fingerprint = p @ np.linspace(1.0, 2.0, p.shape[1])
    _, first, inverse = np.unique(fingerprint, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    if 4 * len(first) > len(p) or not np.array_equal(p[first][inverse], p):
        return [tuple(row) for row in p.tolist()]
    distinct = [tuple(row) for row in p[first].tolist()]
    return [distinct[i] for i in inverse.tolist()]


def _policy_spec(spec: PolicySpec | Mapping[str, Any]) -> PolicySpec:
    return spec if isinstance(spec, PolicySpec) else PolicySpec.model_validate(spec)


def _arm_list(arms: Sequence[str]) -> tuple[str, ...]:
    if isinstance(arms, str):
        raise ValueError(f"arms must be a sequence of arm keys, got the string {arms!r}")
    out = tuple(arms)
    if not out:
        raise ValueError("a policy needs at least one arm, got none")
    for arm in out:
        if not isinstance(arm, str) or not arm:
            raise ValueError(f"arm keys must be non-empty strings, got {arm!r}")
    if len(set(out)) != len(out):
        dupes = sorted({a for a in out if out.count(a) > 1})
        raise ValueError(f"arm keys must be unique, repeated: {dupes}")
    return out


def _seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    return seed


__all__ = ["Decision", "Policy", "STATE_FORMAT"]


def _non_finite(value: Any, where: str = "state") -> str | None:
    """The path of the first non-finite float in nested JSON data, or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else where
    if isinstance(value, Mapping):
        for key, item in value.items():
            found = _non_finite(item, f"{where}.{key}")
            if found is not None:
                return found
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = _non_finite(item, f"{where}[{i}]")
            if found is not None:
                return found
    return None
