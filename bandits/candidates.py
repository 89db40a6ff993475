"""Candidate policies for off-policy evaluation, replayed on logged decisions.

A candidate is a fixed arm, uniform random choice, or any bandit policy the
service runs (a ``PolicySpec`` plus its features). ``replay_candidate`` says,
for every logged decision, with what probability the candidate would have
chosen each arm there. ``evaluate_candidates`` turns those probabilities into
IPS, SNIPS, DM and DR estimates (``reports.ope``), one row per candidate and
one for the logging policy itself.

A learning candidate is replayed in time order and refitted every
``refit_every`` decisions: its probabilities for a block of decisions come from
the policy trained on all decisions logged before that block, so it never sees
the future. Between refits it learns incrementally (``Policy.update``; for every
supported policy the same as a full fit on all data so far), and whenever the
data seen has doubled it is trained from scratch (``Policy.train``), so its
context encoder's scaling and vocabularies follow the data at a cost that stays
linear in the number of decisions.

Caveat: the candidate learns from every logged decision, including those where
it would have chosen another arm, i.e. from data the logging policy collected.
Live, it would have collected its own data and learned differently (typically
faster on the arms it favours, slower elsewhere). The estimate is therefore the
value of the candidate's decisions given the logging policy's data stream, the
standard target when evaluating learning policies offline; it also assumes each
reward was known by the next refit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from bandits.encoding import Encoder
from bandits.policy import Policy
from experiments.spec import FeatureSpec, PolicySpec
from reports import ope

__all__ = [
    "CandidateEvaluation",
    "CandidateSpec",
    "EvaluationConfig",
    "OpeWarning",
    "evaluate_candidates",
    "parse_candidates",
    "replay_candidate",
]

CandidateKind = Literal["fixed", "uniform", "policy"]
Contexts = Sequence[Mapping[str, Any] | None]


@dataclass(frozen=True, slots=True)
class CandidateSpec:
    """A fixed arm, uniform random choice, or a bandit policy with its features."""

    kind: CandidateKind
    arm: str | None = None
    policy: PolicySpec | None = None
    features: tuple[FeatureSpec, ...] = ()

    def __post_init__(self) -> None:
        if self.kind == "fixed" and not (isinstance(self.arm, str) and self.arm):
            raise ValueError(f"a fixed candidate needs an arm key, got {self.arm!r}")
        if self.kind == "policy":
            if self.policy is None:
                raise ValueError("a policy candidate needs a policy spec")
            if self.policy.contextual and not self.features:
                raise ValueError(f"policy {self.policy.name!r} is contextual and needs at least one feature")
        elif self.kind not in ("fixed", "uniform"):
            raise ValueError(f"candidate kind must be 'fixed', 'uniform' or 'policy', got {self.kind!r}")

    @classmethod
    def parse(
        cls, spec: CandidateSpec | Mapping[str, Any], features: Sequence[FeatureSpec | Mapping[str, Any]] = ()
    ) -> CandidateSpec:
        """Read ``{"name": "fixed", "arm": ...}``, ``{"name": "uniform"}`` or a policy spec (+ ``features``).

        A policy spec without its own ``features`` gets ``features`` (the experiment's).
        """
        if isinstance(spec, CandidateSpec):
            return spec
        if not isinstance(spec, Mapping):
            raise ValueError(f"a candidate policy must be a mapping, got {type(spec).__name__}")
        body = dict(spec)
        name = body.get("name")
        if name == "fixed":
            extra = sorted(set(body) - {"name", "arm"})
            if extra:
                raise ValueError(f"a fixed candidate takes only 'arm', got {extra}")
            return cls("fixed", arm=body.get("arm"))
        if name == "uniform":
            extra = sorted(set(body) - {"name"})
            if extra:
                raise ValueError(f"a uniform candidate takes no parameters, got {extra}")
            return cls("uniform")
        own = body.pop("features", None)
        feats = tuple(_feature(f) for f in (own if own is not None else features))
        return cls("policy", policy=PolicySpec.model_validate(body), features=feats)

    @property
    def label(self) -> str:
        """A default display name: ``fixed:<arm>``, ``uniform`` or the policy name."""
        if self.kind == "fixed":
            return f"fixed:{self.arm}"
        if self.kind == "uniform":
            return "uniform"
        assert self.policy is not None
        return self.policy.name


def parse_candidates(
    items: Sequence[CandidateSpec | Mapping[str, Any]], features: Sequence[FeatureSpec | Mapping[str, Any]] = ()
) -> list[tuple[str, CandidateSpec]]:
    """Read the evaluate request's candidates: ``{"name": label, "policy": {...}}`` or a bare policy mapping."""
    if isinstance(items, (str, Mapping)):
        raise ValueError("candidates must be a list of candidate mappings")
    out: list[tuple[str, CandidateSpec]] = []
    for i, item in enumerate(items):
        if isinstance(item, Mapping) and "policy" in item:
            extra = sorted(set(item) - {"name", "policy", "features"})
            if extra:
                raise ValueError(f"candidate {i} has unknown fields {extra}")
            policy = dict(item["policy"]) if isinstance(item["policy"], Mapping) else item["policy"]
            if isinstance(policy, dict) and "features" in item and "features" not in policy:
                policy["features"] = item["features"]
            spec = CandidateSpec.parse(policy, features)
            label = str(item.get("name") or spec.label)
        else:
            spec = CandidateSpec.parse(item, features)
            label = spec.label
        out.append((label, spec))
    labels = [label for label, _ in out]
    if len(set(labels)) != len(labels):
        raise ValueError(f"candidate names must be unique, got {labels}")
    return out


# --------------------------------------------------------------------- replay


def replay_candidate(
    candidate: CandidateSpec | Mapping[str, Any],
    arms: Sequence[str],
    contexts: Contexts | None,
    logged_arms: Sequence[str] | np.ndarray,
    rewards: ArrayLike,
    order: ArrayLike | None = None,
    refit_every: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """Return the candidate's probability of each arm at each logged decision, shape (n, K), in input order.

    ``order`` (timestamps or any sortable key; default: the given order) sets
    the time order. A learning candidate's row i uses only decisions before the
    refit block that holds i. ``logged_arms`` are arm keys or indices into ``arms``.
    """
    spec = CandidateSpec.parse(candidate)
    arm_keys = _arms(arms)
    k = len(arm_keys)
    chosen = _logged_index(logged_arms, arm_keys)
    n = len(chosen)
    if spec.kind == "fixed":
        if spec.arm not in arm_keys:
            raise ValueError(f"candidate arm {spec.arm!r} is not one of the arms {list(arm_keys)}")
        out = np.zeros((n, k))
        out[:, arm_keys.index(spec.arm)] = 1.0
        return out
    if spec.kind == "uniform":
        return np.full((n, k), 1.0 / k)
    if not (isinstance(refit_every, int) and refit_every >= 1):
        raise ValueError(f"refit_every must be an integer >= 1, got {refit_every!r}")
    r = np.asarray(rewards, dtype=float).reshape(-1)
    if len(r) != n:
        raise ValueError(f"need one reward per logged decision: {n:,} arms, {len(r):,} rewards")
    assert spec.policy is not None
    contextual = spec.policy.contextual
    if contextual:
        if contexts is None or len(contexts) != n:
            got = "none" if contexts is None else f"{len(contexts):,}"
            raise ValueError(f"policy {spec.policy.name!r} is contextual and needs one context per decision: "
                             f"{n:,} decisions, {got} contexts")
    idx = _time_order(order, n)
    names = np.asarray(arm_keys, dtype=object)[chosen]
    policy = Policy.cold(spec.policy, spec.features, arm_keys, seed=seed)
    out = np.empty((n, k))
    trained_on = 0  # decisions in the last full training
    for start in range(0, n, refit_every):
        block = idx[start : start + refit_every]
        ctx = [contexts[i] for i in block.tolist()] if contextual else None  # type: ignore[index]
        out[block] = policy.probabilities(ctx, n=len(block))
        end = start + len(block)
        if end >= n:
            break
        if contextual and end >= 2 * trained_on:
            seen = idx[:end]
            policy = Policy.train(
                spec.policy, spec.features, arm_keys, [contexts[i] for i in seen.tolist()],  # type: ignore[index]
                names[seen].tolist(), r[seen], seed=seed, previous=policy if trained_on else None,
            )
            trained_on = end
        else:
            policy = policy.update(ctx, names[block].tolist(), r[block])
    return out


# --------------------------------------------------------------------- evaluation


@dataclass(frozen=True, slots=True)
class EvaluationConfig:
    """Settings of an evaluation; the defaults suit marketing logs with an exploration floor."""

    refit_every: int = 1000
    seed: int = 0
    max_weight: float = ope.DEFAULT_MAX_WEIGHT
    confidence: float = 0.95
    support_threshold: float = 0.01
    support_max_share: float = 0.05
    min_effective_share: float = 0.01  # warn when ESS < this share of the decisions
    l2: float = 1.0

    def __post_init__(self) -> None:
        if not (isinstance(self.refit_every, int) and self.refit_every >= 1):
            raise ValueError(f"refit_every must be an integer >= 1, got {self.refit_every!r}")
        if not 0.0 <= self.min_effective_share <= 1.0:
            raise ValueError(f"min_effective_share must be between 0 and 1, got {self.min_effective_share}")
        ope.OpeConfig(self.max_weight, self.confidence)


@dataclass(frozen=True, slots=True)
class OpeWarning:
    """Why a row's estimates deserve caution, as a code and a sentence."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class CandidateEvaluation:
    """One candidate's estimated value per decision by four estimators, with warnings.

    The logging policy's own row (kind ``logging``) holds its on-policy mean in
    ``ips`` and ``snips`` (weights are all 1); its ``dm`` and ``dr`` are None
    because only the logged arm's probability is known, not the whole vector.
    """

    name: str
    kind: str
    ips: ope.OpeEstimate
    snips: ope.OpeEstimate
    dm: ope.OpeEstimate | None
    dr: ope.OpeEstimate | None
    support: ope.SupportCheck | None
    warnings: tuple[OpeWarning, ...]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Return plain JSON data, non-finite numbers as None."""
        return _clean(asdict(self))


def evaluate_candidates(
    candidates: Sequence[CandidateSpec | Mapping[str, Any]],
    arms: Sequence[str],
    logged_arms: Sequence[str] | np.ndarray,
    rewards: ArrayLike,
    logging_propensity: ArrayLike,
    contexts: Contexts | None = None,
    order: ArrayLike | None = None,
    features: Sequence[FeatureSpec | Mapping[str, Any]] = (),
    config: EvaluationConfig = EvaluationConfig(),
) -> list[CandidateEvaluation]:
    """Estimate what each candidate would have earned per decision on these logs; the logging policy first.

    ``candidates`` as in the evaluate request (see ``parse_candidates``);
    ``features`` are the experiment's: the default for contextual candidates and
    the regressors of the DM/DR reward model (per-arm means when empty or
    without contexts). Bad input raises ValueError.
    """
    parsed = parse_candidates(candidates, features)
    arm_keys = _arms(arms)
    chosen = _logged_index(logged_arms, arm_keys)
    n = len(chosen)
    r = np.asarray(rewards, dtype=float).reshape(-1)
    if len(r) != n:
        raise ValueError(f"need one reward per logged decision: {n:,} arms, {len(r):,} rewards")
    bad = ~np.isfinite(r)
    if bad.any():
        raise ValueError(f"rewards must be finite numbers: {int(bad.sum()):,} of {n:,} rows are not")
    p = ope.check_propensities(logging_propensity)
    if len(p) != n:
        raise ValueError(f"need one propensity per logged decision: {n:,} arms, {len(p):,} propensities")
    if contexts is not None and len(contexts) != n:
        raise ValueError(f"need one context per logged decision: {n:,} arms, {len(contexts):,} contexts")
    cfg = ope.OpeConfig(config.max_weight, config.confidence)

    model = _reward_model(chosen, r, len(arm_keys), contexts, features, config)
    start = time.perf_counter()
    rows = [
        CandidateEvaluation(
            name="logging policy",
            kind="logging",
            ips=ope.inverse_propensity(r, p, p, cfg),
            snips=ope.self_normalised(r, p, p, cfg),
            dm=None,
            dr=None,
            support=None,
            warnings=(),
            seconds=time.perf_counter() - start,
        )
    ]
    positions = np.arange(n)
    for label, spec in parsed:
        start = time.perf_counter()
        target = replay_candidate(spec, arm_keys, contexts, chosen, r, order, config.refit_every, config.seed)
        t = target[positions, chosen]
        ips = ope.inverse_propensity(r, p, t, cfg)
        snips = ope.self_normalised(r, p, t, cfg)
        dm = ope.direct_method(target, model, cfg)
        dr = ope.doubly_robust(r, p, chosen, target, model, cfg)
        support = ope.support_warning(p, t, config.support_threshold, config.support_max_share)
        kind = spec.kind if spec.kind != "policy" else spec.policy.name  # type: ignore[union-attr]
        rows.append(
            CandidateEvaluation(
                name=label,
                kind=kind,
                ips=ips,
                snips=snips,
                dm=dm,
                dr=dr,
                support=support,
                warnings=_warnings(ips, support, n, config),
                seconds=time.perf_counter() - start,
            )
        )
    return rows


def _reward_model(
    chosen: np.ndarray,
    rewards: np.ndarray,
    k: int,
    contexts: Contexts | None,
    features: Sequence[FeatureSpec | Mapping[str, Any]],
    config: EvaluationConfig,
) -> ope.RewardModel:
    """Cross-fitted per-arm ridge on the experiment's encoded features, or per-arm means without them."""
    if contexts is None or not features:
        return ope.fit_reward_model(chosen, rewards, k, None, config.l2, config.seed)
    # The encoder learns scaling and vocabularies from contexts only, never rewards,
    # so fitting it on all rows leaks nothing into the cross-fitted predictions.
    encoder = Encoder.cold([_feature(f) for f in features])
    encoder = encoder.fit(contexts)
    x = encoder.encode(contexts)
    return ope.fit_reward_model(chosen, rewards, k, x, config.l2, config.seed, encoder.columns)


def _warnings(
    ips: ope.OpeEstimate, support: ope.SupportCheck, n: int, config: EvaluationConfig
) -> tuple[OpeWarning, ...]:
    out = []
    if support.warn and support.message:
        out.append(OpeWarning("LOW_SUPPORT", support.message))
    if ips.clipped_share > 0:
        out.append(
            OpeWarning(
                "WEIGHTS_CLIPPED",
                f"{ips.clipped_share:.2%} of the importance weights exceeded {config.max_weight:g} and were clipped; "
                "IPS and DR lean towards zero and SNIPS towards the well-supported decisions",
            )
        )
    ess = ips.effective_sample_size
    if ess is not None and n and ess < config.min_effective_share * n:
        out.append(
            OpeWarning(
                "LOW_EFFECTIVE_SAMPLE_SIZE",
                f"the weighted estimates rest on an effective {ess:,.0f} of {n:,} decisions",
            )
        )
    return tuple(out)


# --------------------------------------------------------------------- helpers


def _feature(f: FeatureSpec | Mapping[str, Any]) -> FeatureSpec:
    return f if isinstance(f, FeatureSpec) else FeatureSpec.model_validate(f)


def _arms(arms: Sequence[str]) -> tuple[str, ...]:
    if isinstance(arms, str):
        raise ValueError(f"arms must be a sequence of arm keys, got the string {arms!r}")
    out = tuple(arms)
    if not out:
        raise ValueError("need at least one arm, got none")
    if len(set(out)) != len(out):
        raise ValueError(f"arm keys must be unique, got {list(out)}")
    return out


def _logged_index(logged_arms: Sequence[str] | np.ndarray, arm_keys: tuple[str, ...]) -> np.ndarray:
    """Logged arms as column indices; arm keys are looked up, integer arrays checked."""
    a = np.asarray(logged_arms)
    if a.ndim != 1:
        raise ValueError(f"logged_arms must be one arm per decision, got shape {a.shape}")
    if np.issubdtype(a.dtype, np.integer):
        bad = (a < 0) | (a >= len(arm_keys))
        if bad.any():
            raise ValueError(f"logged arm indices must be in 0..{len(arm_keys) - 1}: {int(bad.sum()):,} rows are not")
        return a.astype(np.intp)
    keys, inverse = np.unique(a.astype(str), return_inverse=True)
    lookup = {key: i for i, key in enumerate(arm_keys)}
    unknown = [str(key) for key in keys if key not in lookup]
    if unknown:
        count = int(np.isin(a.astype(str), unknown).sum())
        raise ValueError(f"{count:,} logged decisions name arms not in {list(arm_keys)}: {unknown[:5]}")
    return np.array([lookup[str(key)] for key in keys], dtype=np.intp)[inverse.ravel()]


def _time_order(order: ArrayLike | None, n: int) -> np.ndarray:
    if order is None:
        return np.arange(n)
    keys = np.asarray(order)
    if keys.shape != (n,):
        raise ValueError(f"order must hold one timestamp or key per decision: {n:,} decisions, shape {keys.shape}")
    return np.argsort(keys, kind="stable")


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value
