"""CUPED against statsmodels OLS, scipy's Welch test and the corr^2 variance reduction."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats as sps
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from reports.cuped import CovariateStats, CupedComparison, cuped_comparison, pooled_theta


def _stats(x: np.ndarray, y: np.ndarray) -> CovariateStats:
    return CovariateStats(
        n=len(x),
        sum_x=float(x.sum()),
        sum_x2=float((x * x).sum()),
        sum_y=float(y.sum()),
        sum_y2=float((y * y).sum()),
        sum_xy=float((x * y).sum()),
    )


def _simulate(seed: int, n_control: int = 5000, n_treatment: int = 5200, effect: float = 0.3):
    rng = np.random.default_rng(seed)
    x_c = rng.gamma(2.0, 5.0, size=n_control)
    x_t = rng.gamma(2.0, 5.0, size=n_treatment)
    y_c = 2.0 + 0.8 * x_c + rng.normal(0.0, 4.0, size=n_control)
    y_t = 2.0 + effect + 0.8 * x_t + rng.normal(0.0, 4.0, size=n_treatment)
    return x_c, y_c, x_t, y_t


def test_matches_ols_with_treatment_and_centred_covariate() -> None:
    x_c, y_c, x_t, y_t = _simulate(2013)
    control, treatment = _stats(x_c, y_c), _stats(x_t, y_t)
    theta = pooled_theta([control, treatment])
    result = cuped_comparison(control, treatment, theta)

    # statsmodels OLS: y ~ 1 + treatment + (x - mean x).
    x = np.concatenate([x_c, x_t])
    y = np.concatenate([y_c, y_t])
    is_treatment = np.concatenate([np.zeros(len(x_c)), np.ones(len(x_t))])
    design = sm.add_constant(np.column_stack([is_treatment, x - x.mean()]))
    fit = sm.OLS(y, design).fit()
    robust = sm.OLS(y, design).fit(cov_type="HC1")

    assert theta == pytest.approx(fit.params[2], rel=1e-9)
    assert result.difference == pytest.approx(fit.params[1], rel=1e-9)
    assert result.control_mean == pytest.approx(fit.params[0], rel=1e-9)
    assert result.std_error == pytest.approx(robust.bse[1], rel=0.01)
    assert result.std_error == pytest.approx(fit.bse[1], rel=0.02)
    ols_low, ols_high = fit.conf_int(alpha=0.05)[1]
    assert result.ci_low == pytest.approx(ols_low, abs=0.02 * (ols_high - ols_low))
    assert result.ci_high == pytest.approx(ols_high, abs=0.02 * (ols_high - ols_low))


def test_interval_is_welch_on_the_adjusted_metric() -> None:
    x_c, y_c, x_t, y_t = _simulate(7, n_control=800, n_treatment=1200)
    control, treatment = _stats(x_c, y_c), _stats(x_t, y_t)
    theta = pooled_theta([control, treatment])
    result = cuped_comparison(control, treatment, theta, alpha=0.1)

    mean_x = np.concatenate([x_c, x_t]).mean()
    adj_c = y_c - theta * (x_c - mean_x)
    adj_t = y_t - theta * (x_t - mean_x)
    welch = sps.ttest_ind(adj_t, adj_c, equal_var=False)
    low, high = CompareMeans(DescrStatsW(adj_t), DescrStatsW(adj_c)).tconfint_diff(alpha=0.1, usevar="unequal")
    assert result.treatment_mean == pytest.approx(adj_t.mean())
    assert result.control_mean == pytest.approx(adj_c.mean())
    assert result.p_value == pytest.approx(welch.pvalue, rel=1e-6)
    assert result.ci_low == pytest.approx(low, rel=1e-6)
    assert result.ci_high == pytest.approx(high, rel=1e-6)


def test_variance_reduction_is_squared_correlation() -> None:
    x_c, y_c, x_t, y_t = _simulate(42, n_control=20_000, n_treatment=20_000, effect=0.0)
    control, treatment = _stats(x_c, y_c), _stats(x_t, y_t)
    result = cuped_comparison(control, treatment, pooled_theta([control, treatment]))
    corr2 = np.corrcoef(np.concatenate([x_c, x_t]), np.concatenate([y_c, y_t]))[0, 1] ** 2
    assert 0.5 < corr2 < 0.7
    assert result.variance_reduction == pytest.approx(corr2, abs=0.01)


def test_no_adjustment_is_the_plain_welch_comparison() -> None:
    x_c, y_c, x_t, y_t = _simulate(3, n_control=300, n_treatment=400)
    result = cuped_comparison(_stats(x_c, y_c), _stats(x_t, y_t), theta=0.0)
    assert result.difference == pytest.approx(y_t.mean() - y_c.mean())
    assert result.p_value == pytest.approx(sps.ttest_ind(y_t, y_c, equal_var=False).pvalue, rel=1e-6)
    assert result.variance_reduction == pytest.approx(0.0, abs=1e-12)


def test_constant_covariate_means_no_adjustment() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(size=50)
    arm = _stats(np.ones(50), y)
    assert pooled_theta([arm, arm]) == 0.0


def test_degenerate_data_gives_error_not_exception() -> None:
    empty = CovariateStats(0, 0.0, 0.0, 0.0, 0.0, 0.0)
    one = CovariateStats(1, 1.0, 1.0, 2.0, 4.0, 2.0)
    flat = CovariateStats(10, 10.0, 10.0, 20.0, 40.0, 20.0)  # x = 1, y = 2 everywhere
    assert cuped_comparison(empty, flat, 0.5) == CupedComparison(
        None, None, None, None, None, None, None, "NO_DATA", theta=0.5
    )
    assert cuped_comparison(one, flat, 0.5).error == "NOT_ENOUGH_DATA"
    zero = cuped_comparison(flat, flat, 0.5)
    assert zero.error == "ZERO_VARIANCE" and zero.difference == 0.0 and zero.ci_low is None


def test_bad_input_raises() -> None:
    arm = CovariateStats(10, 10.0, 12.0, 20.0, 45.0, 22.0)
    with pytest.raises(ValueError, match="alpha"):
        cuped_comparison(arm, arm, 0.5, alpha=1.0)
    with pytest.raises(ValueError, match="theta"):
        cuped_comparison(arm, arm, float("nan"))
    with pytest.raises(ValueError, match="n must be >= 0"):
        cuped_comparison(CovariateStats(-1, 0.0, 0.0, 0.0, 0.0, 0.0), arm, 0.5)
    with pytest.raises(ValueError, match="arms"):
        pooled_theta([])
