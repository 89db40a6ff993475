"""One-arm intervals, checked against statsmodels and scipy on the same data."""

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.proportion import proportion_confint

from reports.intervals import (
    NO_DATA,
    NOT_ENOUGH_DATA,
    ZERO_VARIANCE,
    mean_interval,
    rate_interval,
    wilson_interval,
    z_critical,
)
from reports.stats import MeanStats


def _stats(values: np.ndarray) -> MeanStats:
    return MeanStats(len(values), float(values.sum()), float((values**2).sum()))


@pytest.mark.parametrize(
    ("successes", "n", "confidence"),
    [(0, 10, 0.95), (10, 10, 0.95), (1, 3, 0.9), (122, 21306, 0.95), (267, 21307, 0.99), (5_000, 10_000, 0.8)],
)
def test_wilson_matches_statsmodels(successes, n, confidence):
    est = wilson_interval(successes, n, confidence)
    # statsmodels.stats.proportion.proportion_confint(method="wilson")
    low, high = proportion_confint(successes, n, alpha=1 - confidence, method="wilson")
    assert est.value == pytest.approx(successes / n)
    assert est.ci_low == pytest.approx(low, abs=1e-12)
    assert est.ci_high == pytest.approx(high, abs=1e-12)
    assert est.error is None


def test_rate_interval_reads_sufficient_statistics():
    est = rate_interval(MeanStats.proportion(200, 30), 0.95)
    low, high = proportion_confint(30, 200, alpha=0.05, method="wilson")
    assert (est.ci_low, est.ci_high) == pytest.approx((low, high))


def test_mean_interval_matches_scipy_t_interval():
    values = np.random.default_rng(7).gamma(0.3, 40.0, size=500)
    est = mean_interval(_stats(values), 0.9)
    # scipy.stats.t.interval with df = n - 1 and the standard error of the mean
    low, high = sps.t.interval(0.9, len(values) - 1, loc=values.mean(), scale=sps.sem(values))
    assert est.value == pytest.approx(values.mean())
    assert est.std_error == pytest.approx(sps.sem(values))
    assert (est.ci_low, est.ci_high) == pytest.approx((low, high))


def test_degenerate_means_give_error_codes_not_exceptions():
    assert mean_interval(MeanStats(0, 0.0, 0.0)).error == NO_DATA
    one = mean_interval(MeanStats(1, 5.0, 25.0))
    assert (one.value, one.ci_low, one.error) == (5.0, None, NOT_ENOUGH_DATA)
    flat = mean_interval(MeanStats(4, 8.0, 16.0))
    assert (flat.value, flat.ci_low, flat.ci_high, flat.error) == (2.0, None, None, ZERO_VARIANCE)
    empty = wilson_interval(0, 0)
    assert (empty.value, empty.ci_low, empty.error) == (None, None, NO_DATA)


def test_bad_input_raises_with_the_value():
    with pytest.raises(ValueError, match="successes=11, n=10"):
        wilson_interval(11, 10)
    with pytest.raises(ValueError, match="got 1.0"):
        z_critical(1.0)
