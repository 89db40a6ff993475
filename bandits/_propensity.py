"""Choice probabilities: the exact chance that a policy picks each arm.

Pure numpy. Every function takes per-arm scores or posterior parameters as
arrays with one column per offered arm and returns row-stochastic matrices,
so a whole send list is one array operation.
"""

from __future__ import annotations

import numpy as np

# Scores within this relative distance of the best are a tie; it absorbs
# rounding differences between arithmetically equal means (2/6 vs 1/3).
TIE_TOLERANCE = 1e-12

# Monte Carlo draws for Thompson sampling (one probability vector per policy
# state): standard error sqrt(p(1-p)/M) <= 0.0016.
TS_DRAWS = 100_000

# Monte Carlo draws per distinct context for linear Thompson sampling: standard
# error sqrt(p(1-p)/M) <= 0.016 per context and arm; about 20,000 distinct
# contexts per second with 10 arms on one core.
LINTS_DRAWS = 1_000

# Upper bound on the floats one Monte Carlo chunk holds (about 32 MB).
_CHUNK_CELLS = 4_000_000


def argmax_split(scores: np.ndarray) -> np.ndarray:
    """Put all mass on the best arm of each row, split evenly between ties."""
    scores = np.asarray(scores, dtype=float)
    best = scores.max(axis=1, keepdims=True)
    if np.isposinf(best).any():
        winners = scores == best
    else:
        winners = scores >= best - TIE_TOLERANCE * np.maximum(1.0, np.abs(best))
    return winners / winners.sum(axis=1, keepdims=True)


def epsilon_greedy(scores: np.ndarray, epsilon: float) -> np.ndarray:
    """Best arm with probability 1 - epsilon (ties split), a uniform arm otherwise."""
    k = scores.shape[1]
    return (1.0 - epsilon) * argmax_split(scores) + epsilon / k


def softmax(scores: np.ndarray, tau: float) -> np.ndarray:
    """Boltzmann choice probabilities exp(score / tau) / sum exp(score / tau)."""
    z = (np.asarray(scores, dtype=float) - np.max(scores, axis=1, keepdims=True)) / tau
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def with_floor(p: np.ndarray, floor: float) -> np.ndarray:
    """Mix in the uniform exploration floor: (1 - floor) * p + floor / K."""
    k = p.shape[1]
    return (1.0 - floor) * p + floor / k


def symmetrise(p: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Average the columns of arms with identical posteriors, which are exchangeable."""
    groups = np.asarray(groups)
    if len(np.unique(groups)) == len(groups):
        return p
    out = p.copy()
    for g in np.unique(groups):
        cols = np.flatnonzero(groups == g)
        if len(cols) > 1:
            out[:, cols] = p[:, cols].mean(axis=1, keepdims=True)
    return out


def beta_argmax(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, draws: int = TS_DRAWS) -> np.ndarray:
    """Estimate P(arm k has the largest Beta(a_k, b_k) draw) by Monte Carlo, shape (K,)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    k = len(a)
    counts = np.zeros(k, dtype=np.int64)
    chunk = max(1, _CHUNK_CELLS // k)
    done = 0
    while done < draws:
        m = min(chunk, draws - done)
        theta = rng.beta(a, b, size=(m, k))
        counts += np.bincount(theta.argmax(axis=1), minlength=k)
        done += m
    return symmetrise((counts / draws)[None, :], _groups(np.column_stack([a, b])))[0]


def normal_argmax(
    mean: np.ndarray, sd: np.ndarray, rng: np.random.Generator, draws: int = LINTS_DRAWS
) -> np.ndarray:
    """Estimate P(arm k has the largest independent N(mean_k, sd_k^2) draw) per row by Monte Carlo.

    The same standard normal draws serve every row (common random numbers), so
    the result is a deterministic function of the inputs and the generator state.
    """
    mean = np.asarray(mean, dtype=float)
    sd = np.asarray(sd, dtype=float)
    n, k = mean.shape
    z = rng.standard_normal((draws, k))
    out = np.empty((n, k))
    chunk = max(1, _CHUNK_CELLS // (draws * k))
    for start in range(0, n, chunk):
        mu = mean[start : start + chunk]
        s = sd[start : start + chunk]
        m = len(mu)
        winners = (mu[:, None, :] + s[:, None, :] * z[None, :, :]).argmax(axis=2)
        flat = (np.arange(m)[:, None] * k + winners).ravel()
        out[start : start + m] = np.bincount(flat, minlength=m * k).reshape(m, k) / draws
    return out


def sample(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw one arm index per row from the row's probability vector (inverse CDF)."""
    cdf = np.cumsum(p, axis=1)
    cdf /= cdf[:, -1:]
    cdf[:, -1] = 1.0
    u = rng.random(len(p))
    return (u[:, None] >= cdf).sum(axis=1)


def _groups(params: np.ndarray) -> np.ndarray:
    """Label arms by their parameter rows: equal rows share a label."""
    _, labels = np.unique(params, axis=0, return_inverse=True)
    return labels.ravel()
