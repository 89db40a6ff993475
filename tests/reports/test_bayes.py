"""Bayesian summaries, checked against numerical integration with scipy."""

import numpy as np
import pytest
from scipy import integrate
from scipy import stats as sps

from reports.bayes import bayes_compare
from reports.intervals import NO_DATA, ZERO_VARIANCE
from reports.stats import MeanStats

# Monte Carlo with 100,000 draws: a probability's standard error is at most 0.0016.
PROB_TOL = 0.006

RATES = {"control": (1000, 100), "a": (1000, 118), "b": (980, 108)}


def _beta(n, s):
    return sps.beta(1 + s, 1 + n - s)


def _integrate(f, dists):
    """Integrate f over the region where the posteriors have mass (scipy.integrate.quad)."""
    lo = min(d.ppf(1e-12) for d in dists)
    hi = max(d.isf(1e-12) for d in dists)
    return integrate.quad(f, lo, hi, limit=500, epsabs=1e-10)[0], lo


def _reference(dists: dict):
    """Chance to beat the first arm, chance to be best, expected loss by numerical integration."""
    names = list(dists)
    control = names[0]
    beat = {a: _integrate(lambda x, a=a: dists[a].pdf(x) * dists[control].cdf(x), dists.values())[0] for a in names[1:]}
    best = {
        a: _integrate(
            lambda x, a=a: dists[a].pdf(x) * np.prod([dists[b].cdf(x) for b in names if b != a]), dists.values()
        )[0]
        for a in names
    }
    # E[max] = lo + integral over [lo, hi] of P(max > x); expected loss = E[max] - E[arm]
    tail, lo = _integrate(lambda x: 1.0 - np.prod([d.cdf(x) for d in dists.values()]), dists.values())
    loss = {a: lo + tail - dists[a].mean() for a in names}
    return beat, best, loss


def test_rates_match_numerical_integration():
    result = bayes_compare("rate", {a: MeanStats.proportion(n, s) for a, (n, s) in RATES.items()}, "control")
    beat, best, loss = _reference({a: _beta(n, s) for a, (n, s) in RATES.items()})
    for arm in ("a", "b"):
        assert result[arm].chance_to_beat_control == pytest.approx(beat[arm], abs=PROB_TOL)
    for arm in RATES:
        assert result[arm].chance_to_be_best == pytest.approx(best[arm], abs=PROB_TOL)
        assert result[arm].expected_loss == pytest.approx(loss[arm], rel=0.03, abs=2e-5)
    assert result["control"].chance_to_beat_control is None
    assert sum(r.chance_to_be_best for r in result.values()) == pytest.approx(1.0)


def test_lower_is_better_counts_a_fall_as_a_win():
    arms = {"control": MeanStats.proportion(5000, 40), "t": MeanStats.proportion(5000, 55)}
    result = bayes_compare("rate", arms, "control", higher_is_better=False)
    beat, _, _ = _reference({"control": _beta(5000, 40), "t": _beta(5000, 55)})
    assert result["t"].chance_to_beat_control == pytest.approx(1.0 - beat["t"], abs=PROB_TOL)
    # the loss of keeping the arm with more unsubscribes is in rate units and positive
    assert result["t"].expected_loss > result["control"].expected_loss > 0


def test_means_use_normal_posteriors():
    arms = {"control": (2.0, 0.10), "a": (2.15, 0.12), "b": (2.05, 0.08)}
    stats = {a: MeanStats(400, m * 400, (s * s * 400 + m * m) * 400) for a, (m, s) in arms.items()}
    # the normal posterior is N(mean, standard error^2): build the reference from the same numbers
    dists = {a: sps.norm(stats[a].mean, stats[a].std_error) for a in arms}
    result = bayes_compare("mean", stats, "control")
    beat, best, loss = _reference(dists)
    closed_form = sps.norm.cdf(
        (stats["a"].mean - stats["control"].mean) / np.hypot(stats["a"].std_error, stats["control"].std_error)
    )
    assert beat["a"] == pytest.approx(closed_form, abs=1e-6)
    for arm in arms:
        assert result[arm].chance_to_be_best == pytest.approx(best[arm], abs=PROB_TOL)
        assert result[arm].expected_loss == pytest.approx(loss[arm], rel=0.03, abs=1e-4)
    assert result["a"].chance_to_beat_control == pytest.approx(beat["a"], abs=PROB_TOL)


def test_seeded_and_degenerate_arms_left_out():
    arms = {
        "control": MeanStats.proportion(1000, 50),
        "empty": MeanStats.proportion(0, 0),
        "t": MeanStats.proportion(1000, 60),
    }
    first = bayes_compare("rate", arms, "control")
    assert first == bayes_compare("rate", arms, "control")
    assert first["empty"].error == NO_DATA
    assert first["empty"].chance_to_be_best is None
    assert first["control"].chance_to_be_best + first["t"].chance_to_be_best == pytest.approx(1.0)
    flat = bayes_compare("mean", {"control": MeanStats(3, 3.0, 3.0), "t": MeanStats(3, 6.0, 14.0)}, "control")
    assert flat["control"].error == ZERO_VARIANCE
    assert flat["t"].error == ZERO_VARIANCE  # its comparison needs the control's posterior
    assert flat["t"].chance_to_beat_control is None


def test_unknown_control_is_bad_input():
    with pytest.raises(ValueError, match="'nope'"):
        bayes_compare("rate", {"a": MeanStats.proportion(1, 1)}, "nope")
