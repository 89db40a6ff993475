"""The one module that talks to MABWiser.

It maps policy names to ``LearningPolicy`` objects (always with a seed), trains
them, and reads their learned internals back as plain numpy arrays: Beta counts
for Thompson sampling, per-arm counts, sums and means for UCB1, epsilon-greedy
and softmax, and per-arm ridge matrices (A, A^-1, X'y, beta) for the linear
policies. It also writes those internals into a fresh MABWiser object, which is
how policy state is loaded without pickle.

A ``_Model`` is never mutated once built: reads only touch stored attributes and
pure per-arm predict functions (never MABWiser's ``predict`` or
``predict_expectations``, which draw from its random stream), and every change
(fit, partial fit, new arms) works on a deep copy. MABWiser's own random stream
is therefore unused and not part of the state.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from mabwiser.base_mab import IS_TRAINED
from mabwiser.mab import MAB, LearningPolicy

from experiments.spec import PolicySpec

# Parameter defaults where the spec leaves them unset (MABWiser's own defaults).
DEFAULTS: dict[str, dict[str, float]] = {
    "thompson_sampling": {},
    "ucb1": {"alpha": 1.0},
    "epsilon_greedy": {"epsilon": 0.1},
    "softmax": {"tau": 1.0},
    "lin_ucb": {"alpha": 0.25, "l2_lambda": 1.0},
    "lin_ts": {"alpha": 0.25, "l2_lambda": 1.0},
    "lin_greedy": {"epsilon": 0.1, "l2_lambda": 1.0},
}

_LEARNING: dict[str, Callable[[dict[str, float]], Any]] = {
    "thompson_sampling": lambda p: LearningPolicy.ThompsonSampling(),
    "ucb1": lambda p: LearningPolicy.UCB1(alpha=p["alpha"]),
    "epsilon_greedy": lambda p: LearningPolicy.EpsilonGreedy(epsilon=p["epsilon"]),
    "softmax": lambda p: LearningPolicy.Softmax(tau=p["tau"]),
    "lin_ucb": lambda p: LearningPolicy.LinUCB(alpha=p["alpha"], l2_lambda=p["l2_lambda"]),
    "lin_ts": lambda p: LearningPolicy.LinTS(alpha=p["alpha"], l2_lambda=p["l2_lambda"]),
    "lin_greedy": lambda p: LearningPolicy.LinGreedy(epsilon=p["epsilon"], l2_lambda=p["l2_lambda"]),
}

LINEAR = frozenset({"lin_ucb", "lin_ts", "lin_greedy"})


def params_of(spec: PolicySpec) -> dict[str, float]:
    """Return the policy's tuning parameters with defaults filled in."""
    params = {**DEFAULTS[spec.name], **{k: float(v) for k, v in spec.params().items()}}
    if spec.name == "lin_ts" and not params["alpha"] > 0:
        raise ValueError(f"lin_ts needs alpha > 0, got {params['alpha']}")
    if spec.name == "ucb1" and not params["alpha"] >= 0:
        raise ValueError(f"ucb1 needs alpha >= 0, got {params['alpha']}")
    return params


@dataclass(frozen=True, slots=True)
class _Model:
    """A MABWiser object plus what the facade needs to know about it."""

    name: str
    params: Mapping[str, float]
    seed: int
    mab: MAB

    @property
    def arms(self) -> tuple[str, ...]:
        return tuple(self.mab.arms)

    @property
    def fitted(self) -> bool:
        return bool(self.mab._is_initial_fit)

    @property
    def linear(self) -> bool:
        return self.name in LINEAR

    @property
    def imp(self) -> Any:
        return self.mab._imp


def build(spec: PolicySpec, arms: Sequence[str], seed: int) -> _Model:
    """Create an untrained MABWiser object for the spec."""
    params = params_of(spec)
    mab = MAB(list(arms), _LEARNING[spec.name](params), seed=int(seed))
    return _Model(spec.name, params, int(seed), mab)


def fit(model: _Model, decisions: np.ndarray, rewards: np.ndarray, x: np.ndarray | None, partial: bool) -> _Model:
    """Return a trained copy: ``fit`` from scratch, or ``partial_fit`` on top of what it knows."""
    mab = copy.deepcopy(model.mab)
    decisions = np.asarray(decisions, dtype=str)
    if partial and mab._is_initial_fit:
        mab.partial_fit(decisions, rewards, x)
    else:
        mab.fit(decisions, rewards, x)
    return _Model(model.name, model.params, model.seed, mab)


def add_arms(model: _Model, arms: Sequence[str]) -> _Model:
    """Return a copy with new, untrained arms."""
    if not arms:
        return model
    mab = copy.deepcopy(model.mab)
    for arm in arms:
        mab.add_arm(arm)
    return _Model(model.name, model.params, model.seed, mab)


# ---------------------------------------------------------------- reading state


def trained(model: _Model, arms: Sequence[str]) -> np.ndarray:
    """Whether each arm has seen at least one training example."""
    imp = model.imp
    if not model.fitted:
        return np.zeros(len(arms), dtype=bool)
    if model.name == "thompson_sampling":
        return np.array([imp.arm_to_success_count[a] + imp.arm_to_fail_count[a] > 2 for a in arms])
    if model.linear:
        return np.array([bool(imp.arm_to_status[a][IS_TRAINED]) for a in arms])
    return np.array([imp.arm_to_count[a] > 0 for a in arms])


def beta_params(model: _Model, arms: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Thompson sampling's Beta(successes + 1, failures + 1) parameters per arm."""
    imp = model.imp
    a = np.array([imp.arm_to_success_count[arm] for arm in arms], dtype=float)
    b = np.array([imp.arm_to_fail_count[arm] for arm in arms], dtype=float)
    return a, b


def means(model: _Model, arms: Sequence[str]) -> np.ndarray:
    """Sample mean reward per arm; 0 for arms without data, as MABWiser keeps it."""
    imp = model.imp
    if model.name == "epsilon_greedy":
        return np.array([imp.arm_to_expectation[a] for a in arms], dtype=float)
    return np.array([imp.arm_to_mean[a] for a in arms], dtype=float)


def ucb(model: _Model, arms: Sequence[str]) -> np.ndarray:
    """UCB1's upper confidence bounds as MABWiser computed them at the last fit."""
    return np.array([model.imp.arm_to_expectation[a] for a in arms], dtype=float)


def linear_means(model: _Model, arms: Sequence[str], x: np.ndarray) -> np.ndarray:
    """Ridge estimate x'beta of the mean reward per context and arm, shape (n, K)."""
    return x @ _stacked(model, arms)[0].T


def linear_scores(model: _Model, arms: Sequence[str], x: np.ndarray) -> np.ndarray:
    """The linear policy's deterministic score per context and arm, shape (n, K).

    LinUCB: x'beta + alpha * sqrt(x' A^-1 x), MABWiser's ``_LinUCB.predict``
    formula evaluated here for all arms at once, without its per-call overhead
    and random draws; LinGreedy and LinTS: the ridge estimate x'beta.
    """
    if model.name != "lin_ucb":
        return linear_means(model, arms, x)
    mean, quadratic = _linear_terms(model, arms, x)
    return mean + model.imp.alpha * np.sqrt(quadratic)


def linear_ts_posterior(model: _Model, arms: Sequence[str], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of LinTS's sampled score x'beta~ per context and arm.

    MABWiser draws beta~ ~ N(beta, alpha^2 A^-1) per arm, so x'beta~ is normal with
    mean x'beta and variance alpha^2 x'A^-1 x, independently across arms.
    """
    mean, quadratic = _linear_terms(model, arms, x)
    return mean, model.params["alpha"] * np.sqrt(np.maximum(quadratic, 0.0))


# Stacked per-arm ridge parameters of each MABWiser object, built on first use: a _Model never
# changes once built, so they stay valid for as long as the object lives.
_STACKS: weakref.WeakKeyDictionary[MAB, dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]]] = (
    weakref.WeakKeyDictionary())
_ROWS_AT_ONCE = 2048  # bounds the (K, rows, d) intermediate of the quadratic form


def _stacked(model: _Model, arms: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Every arm's beta (K, d) and A^-1 (K, d, d), in the order of `arms`."""
    key = tuple(arms)
    stacks = _STACKS.setdefault(model.mab, {})
    found = stacks.get(key)
    if found is None:
        regs = [model.imp.arm_to_model[arm] for arm in arms]
        found = stacks[key] = (np.array([r.beta for r in regs]), np.array([r.A_inv for r in regs]))
    return found


def _linear_terms(model: _Model, arms: Sequence[str], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x'beta and the quadratic form x' A^-1 x (as MABWiser computes it: sum((x A^-1) * x)) per
    context and arm, for all arms in one matrix product."""
    betas, a_inv = _stacked(model, arms)
    mean = x @ betas.T
    quadratic = np.empty_like(mean)
    for start in range(0, len(x), _ROWS_AT_ONCE):
        rows = x[start : start + _ROWS_AT_ONCE]
        quadratic[start : start + len(rows)] = (np.matmul(rows, a_inv) * rows).sum(axis=2).T
    return mean, quadratic


def linear_groups(model: _Model, arms: Sequence[str]) -> np.ndarray:
    """Label arms whose ridge models are identical (interchangeable for every context)."""
    labels: list[int] = []
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    for arm in arms:
        reg = model.imp.arm_to_model[arm]
        for i, (beta, a_inv) in enumerate(seen):
            if np.array_equal(beta, reg.beta) and np.array_equal(a_inv, reg.A_inv):
                labels.append(i)
                break
        else:
            seen.append((reg.beta, reg.A_inv))
            labels.append(len(seen) - 1)
    return np.array(labels)


# ------------------------------------------------------------ state round trip


def dump(model: _Model) -> dict[str, Any]:
    """Return the learned internals as plain JSON data."""
    imp = model.imp
    arms = list(model.arms)
    state: dict[str, Any] = {
        "arms": arms,
        "fitted": model.fitted,
        "trained_arms": [a for a in arms if imp.arm_to_status[a][IS_TRAINED]],
    }
    if model.name == "thompson_sampling":
        state["success"] = [float(imp.arm_to_success_count[a]) for a in arms]
        state["failure"] = [float(imp.arm_to_fail_count[a]) for a in arms]
    elif model.linear:
        state["num_features"] = imp.num_features
        if model.fitted:
            state["models"] = {
                a: {
                    "A": imp.arm_to_model[a].A.tolist(),
                    "A_inv": imp.arm_to_model[a].A_inv.tolist(),
                    "Xty": imp.arm_to_model[a].Xty.tolist(),
                    "beta": imp.arm_to_model[a].beta.tolist(),
                }
                for a in arms
            }
    else:
        state["count"] = [int(imp.arm_to_count[a]) for a in arms]
        state["sum"] = [float(imp.arm_to_sum[a]) for a in arms]
        if model.name == "ucb1":
            state["total_count"] = int(imp.total_count)
    return state


def load(spec: PolicySpec, seed: int, state: Mapping[str, Any]) -> _Model:
    """Build a MABWiser object and set its internals from ``dump`` data."""
    arms = [str(a) for a in state["arms"]]
    model = build(spec, arms, seed)
    if not state["fitted"]:
        return model
    mab, imp = model.mab, model.imp
    if model.name == "thompson_sampling":
        for arm, s, f in zip(arms, state["success"], state["failure"], strict=True):
            if not (s >= 1 and f >= 1):
                raise ValueError(f"Beta counts of arm {arm!r} must be >= 1, got {s}, {f}")
            imp.arm_to_success_count[arm] = float(s)
            imp.arm_to_fail_count[arm] = float(f)
    elif model.linear:
        d = int(state["num_features"])
        imp.num_features = d
        for arm in arms:
            reg = imp.arm_to_model[arm]
            reg.init(num_features=d)
            stored = state["models"][arm]
            for key, shape in (("A", (d, d)), ("A_inv", (d, d)), ("Xty", (d,)), ("beta", (d,))):
                value = np.array(stored[key], dtype=float)
                if value.shape != shape:
                    raise ValueError(f"{key} of arm {arm!r} must have shape {shape}, got {value.shape}")
                setattr(reg, key, value)
    else:
        for arm, n, total in zip(arms, state["count"], state["sum"], strict=True):
            if n < 0:
                raise ValueError(f"count of arm {arm!r} must be >= 0, got {n}")
            imp.arm_to_count[arm] = int(n)
            imp.arm_to_sum[arm] = float(total)
            mean = float(total) / int(n) if n else 0
            if model.name == "epsilon_greedy":
                imp.arm_to_expectation[arm] = mean
            else:
                imp.arm_to_mean[arm] = mean
        if model.name == "ucb1":
            imp.total_count = int(state["total_count"])
            for arm in arms:
                if imp.arm_to_count[arm]:
                    imp.arm_to_expectation[arm] = type(imp)._get_ucb(
                        imp.arm_to_mean[arm], imp.alpha, imp.total_count, imp.arm_to_count[arm]
                    )
        elif model.name == "softmax":
            imp._expectation_operation()
    trained = set(state["trained_arms"])
    for arm in arms:
        imp.arm_to_status[arm][IS_TRAINED] = arm in trained
    mab._is_initial_fit = True
    return model
