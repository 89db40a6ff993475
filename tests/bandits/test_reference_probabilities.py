"""Choice probabilities against independent references.

Closed forms are recomputed here from the raw training data (sample means,
ridge regression solved with numpy); the Thompson probabilities are checked
against numerical integration with scipy.integrate.quad and against MABWiser's
own samplers.
"""

from __future__ import annotations

import numpy as np
import pytest
from mabwiser.mab import MAB, LearningPolicy
from scipy import integrate, stats

from bandits import Policy
from bandits._propensity import LINTS_DRAWS, TS_DRAWS
from tests.bandits._data import ARMS, CHANNELS, FEATURES, spec, uniform_log

PROBES = [
    {"recency": 2, "spend": 120.0, "channel": "web"},
    {"recency": 9, "channel": "email"},
    {"recency": 12, "spend": 300.0, "channel": "fax"},
]


def _beta_argmax_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """P(arm k has the largest Beta draw) = integral of f_k(t) * prod_j F_j(t) dt."""
    out = []
    for k in range(len(a)):
        others = [j for j in range(len(a)) if j != k]

        def integrand(t: float, k: int = k, others: list[int] = others) -> float:
            return stats.beta.pdf(t, a[k], b[k]) * np.prod([stats.beta.cdf(t, a[j], b[j]) for j in others])

        mode = (a[k] - 1) / (a[k] + b[k] - 2)
        value, _ = integrate.quad(integrand, 0, 1, points=[mode], epsabs=1e-10, limit=200)
        out.append(value)
    return np.array(out)


def _normal_argmax_reference(mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """P(arm k has the largest independent normal draw), by quad over the standard normal."""
    out = []
    for k in range(len(mu)):
        others = [j for j in range(len(mu)) if j != k]

        def integrand(z: float, k: int = k, others: list[int] = others) -> float:
            t = mu[k] + sd[k] * z
            return stats.norm.pdf(z) * np.prod([stats.norm.cdf((t - mu[j]) / sd[j]) for j in others])

        value, _ = integrate.quad(integrand, -np.inf, np.inf, epsabs=1e-10)
        out.append(value)
    return np.array(out)


def _design(log_contexts: list[dict], train_contexts: list[dict]) -> np.ndarray:
    """Intercept, standardised numerics (missing -> 0), one-hot channel: built from the raw data."""
    rec = np.array([c["recency"] for c in train_contexts], dtype=float)
    spend = np.array([c["spend"] for c in train_contexts if "spend" in c], dtype=float)
    rows = []
    for c in log_contexts:
        row = [1.0, (c["recency"] - rec.mean()) / rec.std()]
        row.append((c["spend"] - spend.mean()) / spend.std() if "spend" in c else 0.0)
        row.extend(1.0 if c["channel"] == ch else 0.0 for ch in CHANNELS)
        rows.append(row)
    return np.array(rows)


def _ridge(x: np.ndarray, arms: list[str], rewards: np.ndarray, lam: float = 1.0) -> dict[str, tuple]:
    out = {}
    chosen = np.array(arms)
    for arm in ARMS:
        xa, ya = x[chosen == arm], rewards[chosen == arm]
        a_inv = np.linalg.inv(lam * np.eye(x.shape[1]) + xa.T @ xa)
        out[arm] = (a_inv @ xa.T @ ya, a_inv)
    return out


def _sample_means(arms: list[str], rewards: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    chosen = np.array(arms)
    n = np.array([np.sum(chosen == a) for a in ARMS], dtype=float)
    mean = np.array([rewards[chosen == a].mean() for a in ARMS])
    return mean, n


def _train(name: str, n: int = 500, seed: int = 21, floor: float = 0.0, context: bool = True) -> tuple:
    log = uniform_log(n, seed=seed)
    policy = Policy.train(
        spec(name, floor), FEATURES, ARMS, log.contexts if context else None, log.arms, log.rewards, seed=9
    )
    return log, policy


# ------------------------------------------------------------------ Thompson sampling


def test_two_arm_thompson_matches_numerical_integration() -> None:
    arms = ["a", "b"]
    # 30/100 conversions on a, 36/100 on b: Beta(31, 71) against Beta(37, 65).
    chosen = ["a"] * 100 + ["b"] * 100
    rewards = [1] * 30 + [0] * 70 + [1] * 36 + [0] * 64
    policy = Policy.train({"name": "thompson_sampling", "exploration_floor": 0}, [], arms, None, chosen, rewards)

    p = policy.probabilities()[0]

    ref_b, _ = integrate.quad(lambda t: stats.beta.pdf(t, 37, 65) * stats.beta.cdf(t, 31, 71), 0, 1, epsabs=1e-12)
    se = np.sqrt(ref_b * (1 - ref_b) / TS_DRAWS)
    assert abs(p[1] - ref_b) < 4 * se
    assert p.sum() == pytest.approx(1.0, abs=1e-12)


def test_three_arm_thompson_matches_numerical_integration_and_mabwiser_sampling() -> None:
    log = uniform_log(900, seed=4)
    policy = Policy.train(spec("thompson_sampling", 0.0), FEATURES, ARMS, None, log.arms, log.rewards)
    chosen = np.array(log.arms)
    a = np.array([1 + log.rewards[chosen == arm].sum() for arm in ARMS])
    b = np.array([1 + (1 - log.rewards[chosen == arm]).sum() for arm in ARMS])

    p = policy.probabilities()[0]

    reference = _beta_argmax_reference(a, b)
    se = np.sqrt(reference * (1 - reference) / TS_DRAWS)
    assert np.all(np.abs(p - reference) < 4 * se + 1e-9), (p, reference)
    # MABWiser's own Thompson sampler, 20,000 decisions: the same distribution.
    mab = MAB(list(ARMS), LearningPolicy.ThompsonSampling(), seed=3)
    mab.fit(log.arms, log.rewards)
    picks = mab.predict(np.zeros((20_000, 1)))
    observed = np.array([picks.count(arm) for arm in ARMS])
    assert stats.chisquare(observed, 20_000 * reference).pvalue > 0.001


def test_identical_thompson_posteriors_get_exactly_equal_shares() -> None:
    chosen = ["a", "b", "c", "c"]
    rewards = [1, 1, 0, 0]
    ts = {"name": "thompson_sampling", "exploration_floor": 0}
    policy = Policy.train(ts, [], ["a", "b", "c"], None, chosen, rewards)

    p = policy.probabilities()[0]

    assert p[0] == p[1]
    # Beta(2,1), Beta(2,1), Beta(1,3): c wins with probability
    # integral of 3(1-t)^2 * t^2 * t^2 dt = 3 B(5, 3) = 1/35.
    assert p[2] == pytest.approx(1 / 35, abs=4 * np.sqrt((1 / 35) * (34 / 35) / TS_DRAWS))


# ------------------------------------------------------------------ LinTS


def test_lin_ts_matches_numerical_integration_and_posterior_sampling() -> None:
    log, policy = _train("lin_ts", n=400)
    x_train = _design(log.contexts, log.contexts)
    model = _ridge(x_train, log.arms, log.rewards)
    x_probe = _design(PROBES, log.contexts)
    alpha = 0.5
    rng = np.random.default_rng(17)
    # Agrawal & Goyal (2013): each arm draws its coefficients from N(beta, alpha^2 A^-1).
    draws = {arm: rng.multivariate_normal(model[arm][0], alpha**2 * model[arm][1], size=20_000) for arm in ARMS}

    p = policy.probabilities(PROBES)

    for i, x in enumerate(x_probe):
        mu = np.array([x @ model[arm][0] for arm in ARMS])
        sd = np.array([alpha * np.sqrt(x @ model[arm][1] @ x) for arm in ARMS])
        reference = _normal_argmax_reference(mu, sd)
        se = np.sqrt(reference * (1 - reference) / LINTS_DRAWS)
        assert np.all(np.abs(p[i] - reference) < 4 * se + 1e-9), (i, p[i], reference)
        winners = np.column_stack([draws[arm] @ x for arm in ARMS]).argmax(axis=1)
        observed = np.bincount(winners, minlength=len(ARMS))
        keep = reference * 20_000 > 5
        expected = reference[keep] * observed[keep].sum() / reference[keep].sum()
        assert stats.chisquare(observed[keep], expected).pvalue > 0.001, (i, observed, reference)


# ------------------------------------------------------------------ closed forms


def test_lin_ucb_is_the_argmax_of_the_ridge_upper_bound() -> None:
    log, policy = _train("lin_ucb", floor=0.05)
    x_train = _design(log.contexts, log.contexts)
    model = _ridge(x_train, log.arms, log.rewards)
    rng = np.random.default_rng(0)
    pairs = zip(rng.integers(1, 13, 30).tolist(), rng.integers(0, 3, 30).tolist())
    probes = PROBES + [{"recency": r, "channel": CHANNELS[c]} for r, c in pairs]
    x = _design(probes, log.contexts)

    p = policy.probabilities(probes)

    ucb = np.column_stack([x @ model[a][0] + 0.5 * np.sqrt(np.einsum("ij,jk,ik->i", x, model[a][1], x)) for a in ARMS])
    best = ucb.argmax(axis=1)
    expected = np.full_like(ucb, 0.05 / 3)
    expected[np.arange(len(x)), best] += 0.95
    np.testing.assert_allclose(p, expected, atol=1e-12)
    means = np.column_stack([x @ model[a][0] for a in ARMS])
    np.testing.assert_allclose(policy.expectations(probes), means, atol=1e-9)


def test_lin_greedy_puts_one_minus_epsilon_on_the_ridge_argmax() -> None:
    log, policy = _train("lin_greedy", floor=0.1)
    x = _design(PROBES, log.contexts)
    model = _ridge(_design(log.contexts, log.contexts), log.arms, log.rewards)

    p = policy.probabilities(PROBES)

    best = np.column_stack([x @ model[a][0] for a in ARMS]).argmax(axis=1)
    greedy = np.full((len(x), 3), 0.2 / 3)
    greedy[np.arange(len(x)), best] += 0.8
    np.testing.assert_allclose(p, 0.9 * greedy + 0.1 / 3, atol=1e-12)


def test_ucb1_is_the_argmax_of_mean_plus_bonus() -> None:
    log, policy = _train("ucb1", floor=0.05, context=False)
    mean, n = _sample_means(log.arms, log.rewards)

    p = policy.probabilities()[0]

    # Auer et al. (2002), scaled by alpha: mean + alpha * sqrt(2 ln N / n).
    bound = mean + 0.5 * np.sqrt(2 * np.log(n.sum()) / n)
    expected = np.full(3, 0.05 / 3)
    expected[bound.argmax()] += 0.95
    np.testing.assert_allclose(p, expected, atol=1e-12)
    np.testing.assert_allclose(policy.expectations()[0], mean, atol=1e-12)


def test_epsilon_greedy_probabilities() -> None:
    log, policy = _train("epsilon_greedy", floor=0.05, context=False)
    mean, _ = _sample_means(log.arms, log.rewards)

    p = policy.probabilities()[0]

    greedy = np.full(3, 0.2 / 3)
    greedy[mean.argmax()] += 0.8
    np.testing.assert_allclose(p, 0.95 * greedy + 0.05 / 3, atol=1e-12)


def test_softmax_probabilities_are_the_boltzmann_distribution() -> None:
    log, policy = _train("softmax", floor=0.05, context=False)
    mean, _ = _sample_means(log.arms, log.rewards)

    p = policy.probabilities()[0]

    boltzmann = np.exp(mean / 0.1) / np.exp(mean / 0.1).sum()
    np.testing.assert_allclose(p, 0.95 * boltzmann + 0.05 / 3, atol=1e-12)


def test_ties_split_evenly() -> None:
    chosen = ["a", "b", "c"]
    rewards = [1.0, 1.0, 0.0]
    greedy = {"name": "epsilon_greedy", "epsilon": 0.0, "exploration_floor": 0}
    policy = Policy.train(greedy, [], ["a", "b", "c"], None, chosen, rewards)

    assert policy.probabilities()[0].tolist() == [0.5, 0.5, 0.0]
