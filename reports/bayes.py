"""Bayesian summaries per metric: chance to beat control, chance to be best, expected loss.

Posteriors: Beta(1 + successes, 1 + failures) for rates (uniform prior), Normal(mean, standard
error^2) for means (flat prior, large-sample approximation). The probabilities are Monte Carlo
averages over seeded draws, so a report shows the same numbers every time it is built; with
100,000 draws their standard error is at most 0.0016.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from reports.inputs import MetricKind
from reports.intervals import NOT_ENOUGH_DATA, NO_DATA, ZERO_VARIANCE
from reports.stats import MeanStats

DRAWS = 100_000
SEED = 20_081_001


@dataclass(frozen=True, slots=True)
class BayesResult:
    """One arm's Bayesian summary on one metric; None where undefined, with the reason in ``error``."""

    chance_to_beat_control: float | None  # P(arm better than control); None for the control itself
    chance_to_be_best: float | None  # P(arm is the best of all arms with data)
    expected_loss: float | None  # E[best arm's value - this arm's value], in the metric's units
    error: str | None = None


def _posterior(kind: MetricKind, stats: MeanStats, rng: np.random.Generator, draws: int) -> np.ndarray | str:
    """Draw from an arm's posterior, or return the error code that prevents it."""
    if stats.n == 0:
        return NO_DATA
    if kind == "rate":
        deff = stats.design_effect
        if deff != 1.0:
            # Subject-clustered: the Beta posterior at the effective sample size n / deff.
            n_eff = stats.n / deff
            successes_eff = stats.mean * n_eff
            return rng.beta(1 + successes_eff, 1 + n_eff - successes_eff, draws)
        successes = round(stats.sum)
        return rng.beta(1 + successes, 1 + stats.n - successes, draws)
    if stats.n < 2:
        return NOT_ENOUGH_DATA
    if stats.std_error == 0.0:
        return ZERO_VARIANCE
    return rng.normal(stats.mean, stats.std_error, draws)


def bayes_compare(
    kind: MetricKind,
    arms: Mapping[str, MeanStats],
    control: str,
    higher_is_better: bool = True,
    draws: int = DRAWS,
    seed: int = SEED,
) -> dict[str, BayesResult]:
    """Summarise every arm's posterior against the control and against all arms.

    "Better" means higher unless ``higher_is_better`` is False (e.g. unsubscribe rate).
    Arms without a posterior (no data, zero variance) are left out of "best" and get an error.
    """
    if control not in arms:
        raise ValueError(f"control arm {control!r} is not among the arms {sorted(arms)}")
    rng = np.random.default_rng(seed)
    sign = 1.0 if higher_is_better else -1.0
    samples: dict[str, np.ndarray] = {}
    errors: dict[str, str] = {}
    for arm, stats in arms.items():
        drawn = _posterior(kind, stats, rng, draws)
        if isinstance(drawn, str):
            errors[arm] = drawn
        else:
            samples[arm] = sign * drawn
    names = list(samples)
    best_share: dict[str, float] = {}
    loss: dict[str, float] = {}
    if len(names) >= 2:
        matrix = np.vstack([samples[arm] for arm in names])
        winners = np.bincount(matrix.argmax(axis=0), minlength=len(names)) / draws
        shortfall = (matrix.max(axis=0) - matrix).mean(axis=1)
        best_share = dict(zip(names, winners.tolist(), strict=True))
        loss = dict(zip(names, shortfall.tolist(), strict=True))
    results: dict[str, BayesResult] = {}
    for arm in arms:
        beat = None
        if arm != control and arm in samples and control in samples:
            beat = float(np.mean(samples[arm] > samples[control]))
        error = errors.get(arm) or (errors.get(control) if arm != control else None)
        results[arm] = BayesResult(beat, best_share.get(arm), loss.get(arm), error)
    return results
