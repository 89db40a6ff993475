"""Treatment against control, checked against statsmodels and scipy on the same data."""

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats._delta_method import NonlinearDeltaCov
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from reports.comparison import compare, holm, proportion_difference
from reports.intervals import NO_DATA, NO_EVENTS, NOT_ENOUGH_DATA, ZERO_CONTROL_MEAN, ZERO_VARIANCE
from reports.stats import MeanStats


def _stats(values: np.ndarray) -> MeanStats:
    return MeanStats(len(values), float(values.sum()), float((values**2).sum()))


def _delta_lift(mc, var_c, mt, var_t, alpha):
    """statsmodels' generic delta method for treatment / control - 1 with independent arms."""
    delta = NonlinearDeltaCov(lambda p: np.array([p[1] / p[0] - 1.0]), np.array([mc, mt]), np.diag([var_c, var_t]))
    return delta.predicted()[0], *delta.conf_int(alpha=alpha)[0]


@pytest.mark.parametrize(("sc", "nc", "st", "nt"), [(122, 21306, 267, 21307), (30, 400, 22, 410), (3, 50, 9, 45)])
def test_rates_match_statsmodels(sc, nc, st, nt):
    c, t = MeanStats.proportion(nc, sc), MeanStats.proportion(nt, st)
    result = compare("rate", c, t, 0.95)
    # statsmodels: pooled two-proportion z-test and the unpooled Wald interval of the difference
    _, p = proportions_ztest([st, sc], [nt, nc])
    low, high = confint_proportions_2indep(st, nt, sc, nc, method="wald", compare="diff", alpha=0.05)
    pc, pt = sc / nc, st / nt
    lift, lift_low, lift_high = _delta_lift(pc, pc * (1 - pc) / nc, pt, pt * (1 - pt) / nt, 0.05)
    assert result.p_value == pytest.approx(p, rel=1e-9)
    assert result.diff == pytest.approx(pt - pc)
    assert (result.diff_ci_low, result.diff_ci_high) == pytest.approx((low, high))
    assert (result.lift, result.lift_ci_low, result.lift_ci_high) == pytest.approx((lift, lift_low, lift_high))
    assert result.error is None


def test_means_match_scipy_welch_and_statsmodels_interval():
    rng = np.random.default_rng(11)
    control = rng.lognormal(0.0, 1.0, 300)
    treatment = rng.lognormal(0.15, 1.3, 260)
    result = compare("mean", _stats(control), _stats(treatment), 0.9)
    # scipy.stats.ttest_ind(equal_var=False) on the raw values
    p = sps.ttest_ind(treatment, control, equal_var=False).pvalue
    # statsmodels CompareMeans: Welch interval of the difference
    low, high = CompareMeans(DescrStatsW(treatment), DescrStatsW(control)).tconfint_diff(alpha=0.1, usevar="unequal")
    se_c2, se_t2 = sps.sem(control) ** 2, sps.sem(treatment) ** 2
    lift, lift_low, lift_high = _delta_lift(control.mean(), se_c2, treatment.mean(), se_t2, 0.1)
    assert result.p_value == pytest.approx(p, rel=1e-9)
    assert result.diff == pytest.approx(treatment.mean() - control.mean())
    assert (result.diff_ci_low, result.diff_ci_high) == pytest.approx((low, high))
    assert (result.lift, result.lift_ci_low, result.lift_ci_high) == pytest.approx((lift, lift_low, lift_high))


def test_holm_matches_statsmodels_and_keeps_missing_values():
    p_values = [0.01, None, 0.04, 0.03, 0.0002, 0.5]
    present = [p for p in p_values if p is not None]
    # statsmodels.stats.multitest.multipletests(method="holm")
    expected = iter(multipletests(present, method="holm")[1])
    assert holm(p_values) == [None if p is None else pytest.approx(next(expected)) for p in p_values]
    assert holm([]) == []
    assert holm([None]) == [None]


def test_no_events_anywhere_is_a_result():
    result = compare("rate", MeanStats.proportion(1000, 0), MeanStats.proportion(900, 0))
    assert result.diff == 0.0
    assert (result.diff_ci_low, result.lift, result.p_value, result.error) == (None, None, None, NO_EVENTS)


def test_zero_control_rate_keeps_the_test_but_not_the_lift():
    result = compare("rate", MeanStats.proportion(1000, 0), MeanStats.proportion(1000, 8))
    _, p = proportions_ztest([8, 0], [1000, 1000])
    assert result.p_value == pytest.approx(p)
    assert (result.lift, result.lift_ci_low, result.error) == (None, None, ZERO_CONTROL_MEAN)


def test_degenerate_means():
    empty = MeanStats(0, 0.0, 0.0)
    flat = MeanStats(5, 10.0, 20.0)
    assert compare("mean", empty, flat).error == NO_DATA
    assert compare("mean", flat, empty).diff is None
    assert compare("mean", MeanStats(1, 3.0, 9.0), flat).error == NOT_ENOUGH_DATA
    both_flat = compare("mean", flat, MeanStats(4, 12.0, 36.0))
    assert both_flat.diff == pytest.approx(1.0)
    assert both_flat.lift == pytest.approx(0.5)
    assert (both_flat.diff_ci_low, both_flat.lift_ci_low, both_flat.p_value) == (None, None, None)
    assert both_flat.error == ZERO_VARIANCE
    assert proportion_difference(MeanStats.proportion(10, 10), MeanStats.proportion(10, 10)).error == ZERO_VARIANCE
