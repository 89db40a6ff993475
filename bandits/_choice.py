"""How each policy family chooses: learned state in, choice probabilities out.

One rule per policy name, picked from a registry. A rule reads the learned
state through the MABWiser adapter and turns it into the probability that the
policy picks each offered arm (before the exploration floor is mixed in):

- ``epsilon_greedy`` / ``lin_greedy``: 1 - epsilon on the best arm (ties split
  evenly) plus epsilon / K on every arm.
- ``ucb1`` / ``lin_ucb``: all mass on the arm with the highest upper confidence
  bound, ties split evenly. An arm without data has an infinite bound.
- ``softmax``: exp(mean / tau) normalised; this is the true Boltzmann choice
  probability (MABWiser's own predict draws from a Dirichlet instead).
- ``thompson_sampling`` / ``lin_ts``: the probability that the arm wins the
  posterior draw, estimated by Monte Carlo (see ``_propensity``), with arms
  whose posteriors are identical given exactly equal shares. For LinTS each
  arm's coefficients are an independent draw from N(beta, alpha^2 A^-1)
  (Agrawal & Goyal 2013), so the score x'beta~ is a univariate normal and is
  sampled as one. (MABWiser's own LinTS predict gives every arm's model a copy
  of the same random generator, which correlates the arms' draws; its predict
  is not used.)

An arm without data explores. Thompson policies get this from their priors;
UCB1 and LinUCB give it an infinite bound; for epsilon-greedy, LinGreedy and
softmax it counts as tied with the best arm that has data (optimism that does
not depend on the reward scale; MABWiser itself would score it 0). A policy that
has never been trained chooses uniformly.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bandits import _mabwiser as mw
from bandits import _propensity as prop

# The last argument makes the Monte Carlo generator; only the sampled rules call it (creating one costs
# more than a LinUCB decision).
Draws = Callable[[], np.random.Generator]
Rule = Callable[[mw._Model, tuple[str, ...], np.ndarray | None, Draws], np.ndarray]


def choice_probabilities(
    model: mw._Model, arms: tuple[str, ...], x: np.ndarray | None, n: int, mc_rng: Draws
) -> np.ndarray:
    """Probability of each arm per row, shape (n, K), before the exploration floor."""
    k = len(arms)
    if not model.fitted:
        return np.full((n, k), 1.0 / k)
    p = _RULES[model.name](model, arms, x, mc_rng)
    return np.broadcast_to(p, (n, k)).copy() if p.ndim == 1 else p


def expected_rewards(model: mw._Model, arms: tuple[str, ...], x: np.ndarray | None, n: int) -> np.ndarray:
    """Point estimate of each arm's mean reward per row, shape (n, K).

    Beta posterior mean for Thompson sampling, the sample mean for UCB1,
    epsilon-greedy and softmax (0 without data), x'beta for the linear policies
    (0 before any training): no exploration bonus and no sampling.
    """
    k = len(arms)
    if model.name == "thompson_sampling":
        a, b = mw.beta_params(model, arms)
        return np.broadcast_to(a / (a + b), (n, k)).copy()
    if model.linear:
        if not model.fitted:
            return np.zeros((n, k))
        assert x is not None
        return mw.linear_means(model, arms, x)
    return np.broadcast_to(mw.means(model, arms), (n, k)).copy()


def _optimistic(scores: np.ndarray, trained: np.ndarray) -> np.ndarray:
    """Score arms without data like the best arm with data (per row)."""
    if trained.all() or not trained.any():
        return scores
    scores = np.array(scores, dtype=float, ndmin=2)
    scores[:, ~trained] = scores[:, trained].max(axis=1, keepdims=True)
    return scores


def _thompson(model: mw._Model, arms: tuple[str, ...], x: np.ndarray | None, rng: Draws) -> np.ndarray:
    a, b = mw.beta_params(model, arms)
    return prop.beta_argmax(a, b, rng())


def _ucb1(model: mw._Model, arms: tuple[str, ...], x: np.ndarray | None, rng: Draws) -> np.ndarray:
    scores = mw.ucb(model, arms)
    scores[~mw.trained(model, arms)] = np.inf
    return prop.argmax_split(scores[None, :])[0]


def _epsilon_greedy(
    model: mw._Model, arms: tuple[str, ...], x: np.ndarray | None, rng: Draws
) -> np.ndarray:
    scores = _optimistic(mw.means(model, arms)[None, :], mw.trained(model, arms))
    return prop.epsilon_greedy(scores, model.params["epsilon"])[0]


def _softmax(model: mw._Model, arms: tuple[str, ...], x: np.ndarray | None, rng: Draws) -> np.ndarray:
    scores = _optimistic(mw.means(model, arms)[None, :], mw.trained(model, arms))
    return prop.softmax(scores, model.params["tau"])[0]


def _lin_ucb(model: mw._Model, arms: tuple[str, ...], x: np.ndarray | None, rng: Draws) -> np.ndarray:
    assert x is not None
    # The ridge prior's bound alpha * |x| / sqrt(l2_lambda) only beats trained arms when alpha is
    # large against the reward scale; an infinite bound explores a new arm at any alpha, as in UCB1.
    scores = mw.linear_scores(model, arms, x)
    scores[:, ~mw.trained(model, arms)] = np.inf
    return prop.argmax_split(scores)


def _lin_greedy(
    model: mw._Model, arms: tuple[str, ...], x: np.ndarray | None, rng: Draws
) -> np.ndarray:
    assert x is not None
    scores = _optimistic(mw.linear_scores(model, arms, x), mw.trained(model, arms))
    return prop.epsilon_greedy(scores, model.params["epsilon"])


def _lin_ts(model: mw._Model, arms: tuple[str, ...], x: np.ndarray | None, rng: Draws) -> np.ndarray:
    assert x is not None
    # Send lists repeat contexts; estimate each distinct context once.
    unique, inverse = np.unique(x, axis=0, return_inverse=True)
    mean, sd = mw.linear_ts_posterior(model, arms, unique)
    p = prop.normal_argmax(mean, sd, rng())
    p = prop.symmetrise(p, mw.linear_groups(model, arms))
    return p[inverse.ravel()]


_RULES: dict[str, Rule] = {
    "thompson_sampling": _thompson,
    "ucb1": _ucb1,
    "epsilon_greedy": _epsilon_greedy,
    "softmax": _softmax,
    "lin_ucb": _lin_ucb,
    "lin_greedy": _lin_greedy,
    "lin_ts": _lin_ts,
}
