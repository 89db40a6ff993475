"""Off-policy evaluation: what a candidate policy would have earned on logged decisions.

Every decision logs the probability the logging policy gave the arm it chose
(its propensity). From the rewards, those propensities and the probability the
candidate gives the same arm in the same context, four estimators say what the
candidate would have earned per decision, each with a normal (CLT) interval:

* IPS, inverse propensity scoring (Horvitz & Thompson 1952): mean of w_i r_i with
  w_i = target_prob_i / logging_propensity_i. Unbiased when the propensities are
  right and the candidate only chooses arms the logging policy could choose.
* SNIPS, self-normalised IPS (Swaminathan & Joachims 2015): sum w r / sum w, with
  the delta-method standard error sqrt(sum w^2 (r - v)^2) / sum w (Owen 2013,
  ch. 9). A small bias, much less variance; exactly an arm's plain mean when a
  fixed-arm candidate is judged on uniformly logged data.
* DM, the direct method: mean over the logged contexts of sum_k pi(k|x) f(x, k)
  with a reward model f. Low variance; biased where the model is wrong.
* DR, doubly robust (Dudik, Langford & Li 2011): DM plus the IPS-weighted model
  residual of the logged arm. Unbiased if either the propensities or the model
  are right; its rows are independent given a cross-fitted model, so its
  interval is the plain CLT one (Chernozhukov et al. 2018).

Weight clipping: weights above ``OpeConfig.max_weight`` (default 100, i.e. a
candidate choosing with certainty an arm the logging policy chose with
probability 1%) are cut to it (truncated importance sampling, Ionides 2008).
This bounds the variance a handful of rare decisions can cause, at the price
of a bias: clipped decisions count less than they should, so IPS and DR lean
towards zero (for rewards >= 0) and SNIPS towards the well-supported decisions.
Each estimate reports the share of clipped weights; ``max_weight=inf`` turns
clipping off.

Support: where the candidate chooses arms the logging policy almost never chose,
every estimator rests on a few heavily weighted decisions (or on the model
alone); ``support_warning`` says how much of the candidate's choices fall there.

Bad input raises ValueError (missing, NaN, zero or > 1 propensities name how many
rows are wrong); degenerate data is a result with ``error`` set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from reports.intervals import NO_DATA, NOT_ENOUGH_DATA, ZERO_VARIANCE, check_confidence, z_critical

__all__ = [
    "DEFAULT_MAX_WEIGHT",
    "NO_OVERLAP",
    "OpeConfig",
    "OpeEstimate",
    "RewardModel",
    "SupportCheck",
    "check_propensities",
    "direct_method",
    "doubly_robust",
    "fit_reward_model",
    "importance_weights",
    "inverse_propensity",
    "on_policy",
    "self_normalised",
    "support_warning",
]

DEFAULT_MAX_WEIGHT = 100.0
NO_OVERLAP = "NO_OVERLAP"  # the candidate never gives any logged arm a positive probability

# Row sums of a probability matrix may differ from 1 by this much (float rounding).
_SUM_TOLERANCE = 1e-6
# Propensities up to this far above 1 are rounding, not bad data.
_ONE_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class OpeConfig:
    """How to weigh and report: the weight cap and the interval's confidence."""

    max_weight: float = DEFAULT_MAX_WEIGHT
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if not (self.max_weight > 0):  # inf allowed: no clipping
            raise ValueError(f"max_weight must be > 0 (inf for no clipping), got {self.max_weight}")
        check_confidence(self.confidence)


@dataclass(frozen=True, slots=True)
class OpeEstimate:
    """One estimator's value per decision of the candidate, with its interval; None where undefined."""

    name: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    std_error: float | None
    effective_sample_size: float | None
    clipped_share: float
    error: str | None = None
    n: int = 0


@dataclass(frozen=True, slots=True)
class SupportCheck:
    """How much of the candidate's choices land where the logging policy rarely went."""

    share_below: float | None  # estimated share of the candidate's choices with logging propensity < threshold
    threshold: float
    max_share: float
    warn: bool
    message: str | None = None


@dataclass(frozen=True, slots=True, eq=False)
class RewardModel:
    """Cross-fitted predicted reward per logged decision and arm, plus what its uncertainty needs.

    ``predictions[i, k]`` comes from a model fitted on the other fold, never on
    row i. ``coef_cov[f, k]`` is the (sandwich) covariance of the coefficients
    that predict fold f for arm k; ``design`` holds the rows' regressors
    (intercept first), so ``mean_variance`` can say how uncertain the direct
    method's mean is because the coefficients were estimated.
    """

    predictions: np.ndarray  # (n, K)
    design: np.ndarray  # (n, d + 1)
    fold: np.ndarray  # (n,) fold of each row, 0 or 1
    coef_cov: np.ndarray  # (2, K, d + 1, d + 1)
    columns: tuple[str, ...] = field(default=())

    @property
    def n_arms(self) -> int:
        return self.predictions.shape[1]

    def mean_variance(self, target_probs: np.ndarray) -> float:
        """Variance of mean_i sum_k pi_ik f_k(x_i) due to the coefficient estimates (contexts held fixed).

        The mean is sum_f sum_k zbar_fk' beta_k^(-f) with zbar_fk = sum_{i in f} pi_ik x_i / n;
        the two folds' coefficients come from disjoint data, so the variances add.
        """
        n = len(self.predictions)
        total = 0.0
        for f in range(self.coef_cov.shape[0]):
            rows = self.fold == f
            if not rows.any():
                continue
            z = self.design[rows].T @ target_probs[rows] / n  # (d + 1, K)
            total += float(np.einsum("dk,kde,ek->", z, self.coef_cov[f], z))
        return max(total, 0.0)


# --------------------------------------------------------------------- input checks


def check_propensities(logging_propensity: ArrayLike, name: str = "logging_propensity") -> np.ndarray:
    """Return the propensities as floats, or raise naming how many rows are missing, zero or above 1."""
    try:
        p = np.asarray(logging_propensity, dtype=float).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numbers, one per logged decision: {exc}") from None
    missing = np.isnan(p)
    low = ~missing & (p <= 0.0)
    high = ~missing & (p > 1.0 + _ONE_TOLERANCE)
    bad = missing | low | high
    if bad.any():
        parts = []
        if missing.any():
            parts.append(f"{int(missing.sum()):,} missing or NaN")
        if low.any():
            parts.append(f"{int(low.sum()):,} zero or negative")
        if high.any():
            parts.append(f"{int(high.sum()):,} above 1")
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name} must be in (0, 1] for every logged decision: {int(bad.sum()):,} of {len(p):,} rows are bad "
            f"({', '.join(parts)}; first at row {first}: {p[first]}). Off-policy estimates need the probability "
            f"the logging policy gave each logged arm."
        )
    return np.minimum(p, 1.0)


def _target_prob(target_prob: ArrayLike, n: int) -> np.ndarray:
    t = np.asarray(target_prob, dtype=float).reshape(-1)
    if len(t) != n:
        raise ValueError(f"need one target probability per logged decision: {n:,} rows, {len(t):,} given")
    bad = ~np.isfinite(t) | (t < 0.0) | (t > 1.0 + _ONE_TOLERANCE)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"target_prob must be in [0, 1]: {int(bad.sum()):,} of {n:,} rows are not (first at row {first}: {t[first]})"
        )
    return np.minimum(t, 1.0)


def _rewards(rewards: ArrayLike) -> np.ndarray:
    r = np.asarray(rewards, dtype=float).reshape(-1)
    bad = ~np.isfinite(r)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"rewards must be finite numbers: {int(bad.sum()):,} of {len(r):,} rows are not (first at row {first})"
        )
    return r


def _same_length(n: int, other: np.ndarray, name: str) -> None:
    if len(other) != n:
        raise ValueError(f"need one {name} per logged decision: {n:,} rewards, {len(other):,} {name}")


def _prob_matrix(target_probs: ArrayLike, n: int) -> np.ndarray:
    p = np.asarray(target_probs, dtype=float)
    if p.ndim != 2 or p.shape[0] != n:
        raise ValueError(f"target_probs must have shape (n, K) with n = {n:,}, got {p.shape}")
    bad = ~np.isfinite(p).all(axis=1) | (p < 0.0).any(axis=1) | (np.abs(p.sum(axis=1) - 1.0) > _SUM_TOLERANCE)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"each row of target_probs must be probabilities summing to 1: {int(bad.sum()):,} of {n:,} rows are not "
            f"(first at row {first})"
        )
    return p


def _predictions(reward_model: RewardModel | ArrayLike, shape: tuple[int, int]) -> np.ndarray:
    f = reward_model.predictions if isinstance(reward_model, RewardModel) else np.asarray(reward_model, dtype=float)
    if f.shape != shape:
        raise ValueError(f"reward_model predictions must have shape {shape} like target_probs, got {f.shape}")
    if not np.isfinite(f).all():
        raise ValueError("reward_model predictions must be finite numbers")
    return f


def _arm_index(logged_arm: ArrayLike, n: int, k: int) -> np.ndarray:
    a = np.asarray(logged_arm).reshape(-1)
    if len(a) != n:
        raise ValueError(f"need one logged arm per decision: {n:,} rewards, {len(a):,} arms")
    if n and (not np.issubdtype(a.dtype, np.integer) or a.min() < 0 or a.max() >= k):
        raise ValueError(f"logged_arm must hold arm indices 0..{k - 1}")
    return a.astype(np.intp)


# --------------------------------------------------------------------- weights


def importance_weights(
    logging_propensity: ArrayLike, target_prob: ArrayLike, max_weight: float = DEFAULT_MAX_WEIGHT
) -> tuple[np.ndarray, float]:
    """Return the clipped weights min(target / logging, max_weight) and the share of weights clipped."""
    p = check_propensities(logging_propensity)
    t = _target_prob(target_prob, len(p))
    w = t / p
    clipped = w > max_weight
    share = float(clipped.mean()) if len(w) else 0.0
    return (np.minimum(w, max_weight) if clipped.any() else w), share


def _ess(w: np.ndarray) -> float:
    """Kish's effective sample size (sum w)^2 / sum w^2."""
    s2 = float(np.dot(w, w))
    return float(w.sum()) ** 2 / s2 if s2 > 0.0 else 0.0


def _result(
    name: str, value: float, se: float, n: int, ess: float | None, clipped: float, confidence: float
) -> OpeEstimate:
    if not (se > 0.0 and math.isfinite(se)):
        return OpeEstimate(name, value, None, None, None, ess, clipped, ZERO_VARIANCE, n)
    z = z_critical(confidence)
    return OpeEstimate(name, value, value - z * se, value + z * se, se, ess, clipped, None, n)


def _degenerate(name: str, n: int) -> OpeEstimate | None:
    if n == 0:
        return OpeEstimate(name, None, None, None, None, None, 0.0, NO_DATA, 0)
    return None


# --------------------------------------------------------------------- estimators


def on_policy(rewards: ArrayLike, config: OpeConfig = OpeConfig()) -> OpeEstimate:
    """Estimate the logging policy's own value: the plain mean reward with its CLT interval."""
    r = _rewards(rewards)
    n = len(r)
    if (d := _degenerate("on_policy", n)) is not None:
        return d
    if n < 2:
        return OpeEstimate("on_policy", float(r[0]), None, None, None, 1.0, 0.0, NOT_ENOUGH_DATA, n)
    return _result("on_policy", float(r.mean()), float(r.std(ddof=1)) / math.sqrt(n), n, float(n), 0.0, config.confidence)


def inverse_propensity(
    rewards: ArrayLike, logging_propensity: ArrayLike, target_prob: ArrayLike, config: OpeConfig = OpeConfig()
) -> OpeEstimate:
    """Estimate the candidate's value by IPS: mean of w_i r_i, standard error sd(w r) / sqrt(n)."""
    r = _rewards(rewards)
    p = check_propensities(logging_propensity)
    _same_length(len(r), p, "propensities")
    n = len(r)
    if (d := _degenerate("ips", n)) is not None:
        return d
    w, clipped = importance_weights(p, target_prob, config.max_weight)
    wr = w * r
    value = float(wr.mean())
    if n < 2:
        return OpeEstimate("ips", value, None, None, None, _ess(w), clipped, NOT_ENOUGH_DATA, n)
    return _result("ips", value, float(wr.std(ddof=1)) / math.sqrt(n), n, _ess(w), clipped, config.confidence)


def self_normalised(
    rewards: ArrayLike, logging_propensity: ArrayLike, target_prob: ArrayLike, config: OpeConfig = OpeConfig()
) -> OpeEstimate:
    """Estimate the candidate's value by SNIPS: sum w r / sum w, with the delta-method standard error."""
    r = _rewards(rewards)
    p = check_propensities(logging_propensity)
    _same_length(len(r), p, "propensities")
    n = len(r)
    if (d := _degenerate("snips", n)) is not None:
        return d
    w, clipped = importance_weights(p, target_prob, config.max_weight)
    sw = float(w.sum())
    if sw <= 0.0:
        return OpeEstimate("snips", None, None, None, None, 0.0, clipped, NO_OVERLAP, n)
    value = float(np.dot(w, r)) / sw
    if n < 2:
        return OpeEstimate("snips", value, None, None, None, _ess(w), clipped, NOT_ENOUGH_DATA, n)
    # Delta method for a ratio of means (Owen 2013, eq. 9.9): sqrt(sum w^2 (r - v)^2) / sum w.
    resid = w * (r - value)
    se = math.sqrt(float(np.dot(resid, resid))) / sw
    return _result("snips", value, se, n, _ess(w), clipped, config.confidence)


def direct_method(
    target_probs: ArrayLike, reward_model: RewardModel | ArrayLike, config: OpeConfig = OpeConfig()
) -> OpeEstimate:
    """Estimate the candidate's value from a reward model: mean of sum_k pi(k|x_i) f(x_i, k).

    The variance adds the spread over contexts, var(v_i) / n, and, for a
    ``RewardModel``, the coefficients' own estimation variance. Given a bare
    prediction array the model's uncertainty is unknown and the interval covers
    only the contexts' sampling, so it is too narrow. Either way the interval
    assumes the model is right: DM is biased where it is not (DR is not).
    """
    pi = np.asarray(target_probs, dtype=float)
    n = pi.shape[0] if pi.ndim == 2 else len(pi)
    pi = _prob_matrix(pi, n)
    f = _predictions(reward_model, pi.shape)
    if (d := _degenerate("dm", n)) is not None:
        return d
    v = np.einsum("ik,ik->i", pi, f)
    value = float(v.mean())
    if n < 2:
        return OpeEstimate("dm", value, None, None, None, float(n), 0.0, NOT_ENOUGH_DATA, n)
    var = float(v.var(ddof=1)) / n
    if isinstance(reward_model, RewardModel):
        var += reward_model.mean_variance(pi)
    return _result("dm", value, math.sqrt(var), n, float(n), 0.0, config.confidence)


def doubly_robust(
    rewards: ArrayLike,
    logging_propensity: ArrayLike,
    logged_arm: ArrayLike,
    target_probs: ArrayLike,
    reward_model: RewardModel | ArrayLike,
    config: OpeConfig = OpeConfig(),
) -> OpeEstimate:
    """Estimate the candidate's value by DR: DM plus w_i (r_i - f(x_i, a_i)), standard error sd / sqrt(n).

    ``logged_arm`` holds column indices into ``target_probs``. Use a cross-fitted
    model (``fit_reward_model``) so no row's residual comes from a model fitted on it.
    """
    r = _rewards(rewards)
    n = len(r)
    p = check_propensities(logging_propensity)
    _same_length(n, p, "propensities")
    pi = _prob_matrix(target_probs, n)
    f = _predictions(reward_model, pi.shape)
    a = _arm_index(logged_arm, n, pi.shape[1])
    if (d := _degenerate("dr", n)) is not None:
        return d
    rows = np.arange(n)
    w, clipped = importance_weights(p, pi[rows, a], config.max_weight)
    v = np.einsum("ik,ik->i", pi, f) + w * (r - f[rows, a])
    value = float(v.mean())
    if n < 2:
        return OpeEstimate("dr", value, None, None, None, _ess(w), clipped, NOT_ENOUGH_DATA, n)
    return _result("dr", value, float(v.std(ddof=1)) / math.sqrt(n), n, _ess(w), clipped, config.confidence)


# --------------------------------------------------------------------- support


def support_warning(
    logging_propensity: ArrayLike, target_prob: ArrayLike, threshold: float = 0.01, max_share: float = 0.05
) -> SupportCheck:
    """Flag a candidate that puts mass where the logging policy almost never chose.

    The share is sum_i w_i 1[p_i < threshold] / sum_i w_i (unclipped weights):
    a self-normalised estimate of how often the candidate's own choice would be
    one the logging policy made with probability below ``threshold``. Above
    ``max_share`` the estimates rest on a few heavily weighted decisions. Arms
    the logging policy never chose at all (propensity 0) are invisible in the
    logs, which is why logging policies keep an exploration floor.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
    if not 0.0 <= max_share <= 1.0:
        raise ValueError(f"max_share must be between 0 and 1, got {max_share}")
    p = check_propensities(logging_propensity)
    t = _target_prob(target_prob, len(p))
    w = t / p
    total = float(w.sum())
    if total <= 0.0:
        message = "the candidate gives no logged decision a positive probability: nothing to evaluate it on"
        return SupportCheck(None, threshold, max_share, True, message)
    share = float(w[p < threshold].sum()) / total
    warn = share > max_share
    message = None
    if warn:
        message = (
            f"an estimated {share:.1%} of the candidate's choices are ones the logging policy made with probability "
            f"below {threshold:.0%}; its estimates rest on few, heavily weighted decisions"
        )
    return SupportCheck(share, threshold, max_share, warn, message)


# --------------------------------------------------------------------- reward model


def fit_reward_model(
    logged_arm: ArrayLike,
    rewards: ArrayLike,
    n_arms: int,
    features: ArrayLike | None = None,
    l2: float = 1.0,
    seed: int = 0,
    columns: tuple[str, ...] = (),
) -> RewardModel:
    """Fit a per-arm ridge regression of reward on the encoded context, cross-fitted on two folds.

    Rows are split at random into two folds; each fold's predictions come from
    models fitted on the other fold only, so DR's residuals are honest and its
    rows independent. Each arm's model is least squares (numpy ``lstsq``) on
    [1, x] with an L2 penalty ``l2`` on every coefficient but the intercept.
    Without ``features`` it is the arm's mean reward. An arm with no data in a
    fold's training half predicts that half's overall mean.
    """
    r = _rewards(rewards)
    n = len(r)
    if not (isinstance(n_arms, int) and n_arms >= 1):
        raise ValueError(f"n_arms must be an integer >= 1, got {n_arms!r}")
    if not l2 >= 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")
    a = _arm_index(logged_arm, n, n_arms)
    if features is None:
        x = np.ones((n, 1))
    else:
        feats = np.asarray(features, dtype=float)
        if feats.ndim != 2 or feats.shape[0] != n:
            raise ValueError(f"features must have shape (n, d) with n = {n:,}, got {feats.shape}")
        if not np.isfinite(feats).all():
            raise ValueError("features must be finite numbers (encode missing values first)")
        x = np.hstack([np.ones((n, 1)), feats])
    d1 = x.shape[1]
    fold = np.zeros(n, dtype=np.int8)
    fold[np.random.default_rng(seed).permutation(n)[: n // 2]] = 1
    penalty = np.sqrt(l2) * np.eye(d1)[1:]  # rows appended to the design: ridge without touching the intercept
    predictions = np.empty((n, n_arms))
    cov = np.zeros((2, n_arms, d1, d1))
    for f in (0, 1):
        train = fold != f
        test = ~train
        base = float(r[train].mean()) if train.any() else 0.0
        base_var = float(r[train].var()) / max(int(train.sum()), 1)
        for k in range(n_arms):
            rows = train & (a == k)
            nk = int(rows.sum())
            if nk == 0:
                beta = np.zeros(d1)
                beta[0] = base
                cov[f, k, 0, 0] = base_var
            else:
                xk, yk = x[rows], r[rows]
                design = np.vstack([xk, penalty])
                target = np.concatenate([yk, np.zeros(d1 - 1)])
                beta = np.linalg.lstsq(design, target, rcond=None)[0]
                # Heteroskedasticity-robust (HC1) sandwich for ridge:
                # (X'X + L)^-1 X' diag(e^2) X (X'X + L)^-1 * n / (n - d).
                bread = np.linalg.pinv(design.T @ design)
                e = yk - xk @ beta
                meat = xk.T @ (xk * (e * e)[:, None])
                cov[f, k] = bread @ meat @ bread * (nk / max(nk - d1, 1))
            predictions[test, k] = x[test] @ beta
    return RewardModel(predictions, x, fold, cov, tuple(columns))
