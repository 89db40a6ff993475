"""Subjects as the unit of analysis: clustered intervals checked against statsmodels' cluster-robust OLS.

statsmodels ``OLS(y, [1, treatment]).fit(cov_type="cluster", cov_kwds={"groups": subject})`` with
its default small-sample correction G / (G - 1) * (N - 1) / (N - k); ours is the per-arm delta
method (K / (K - 1) per arm), so the two agree within a few per mille here, well inside the 5 %
the tolerance allows.
"""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm

from reports.comparison import compare, mean_difference, proportion_difference
from reports.cuped import CovariateStats, cuped_comparison, pooled_theta
from reports.intervals import mean_interval, rate_interval
from reports.sequential import always_valid_difference
from reports.stats import MeanStats, SubjectSums


def _arm(subject: np.ndarray, y: np.ndarray) -> MeanStats:
    """Per-decision and per-subject sufficient statistics, as the SQL produces them."""
    _, inverse = np.unique(subject, return_inverse=True)
    n_i = np.bincount(inverse).astype(float)
    y_i = np.bincount(inverse, weights=y)
    clusters = SubjectSums(len(n_i), float(n_i @ n_i), float(y_i @ y_i), float(n_i @ y_i))
    return MeanStats(len(y), float(y.sum()), float(y @ y), clusters)


def _covariates(subject: np.ndarray, x: np.ndarray, y: np.ndarray) -> CovariateStats:
    _, inverse = np.unique(subject, return_inverse=True)
    n_i = np.bincount(inverse).astype(float)
    x_i, y_i = np.bincount(inverse, weights=x), np.bincount(inverse, weights=y)
    return CovariateStats(
        len(y), float(x.sum()), float(x @ x), float(y.sum()), float(y @ y), float(x @ y),
        subjects=len(n_i), subject_n2=float(n_i @ n_i), subject_y2=float(y_i @ y_i), subject_x2=float(x_i @ x_i),
        subject_xy=float(x_i @ y_i), subject_ny=float(n_i @ y_i), subject_nx=float(n_i @ x_i),
    )  # fmt: skip


def _data(seed: int, subjects: int = 600, per_subject: int = 5, binary: bool = False):
    """Two arms, each subject decided ``per_subject`` times with a strong subject effect (loyal customers)."""
    rng = np.random.default_rng(seed)
    arms = []
    for arm, effect in ((0, 0.0), (1, 0.04)):
        subject = np.repeat(np.arange(subjects) + arm * subjects, per_subject)
        taste = np.repeat(rng.normal(0.0, 1.0, subjects), per_subject)
        x = taste + rng.normal(0.0, 0.5, subject.size)  # pre-period covariate, correlated with the subject
        if binary:
            p = 1.0 / (1.0 + np.exp(-(-1.5 + 1.2 * taste + effect * 5)))
            y = (rng.random(subject.size) < p).astype(float)
        else:
            y = 3.0 + effect * 10 + 2.0 * taste + rng.normal(0.0, 1.0, subject.size)
        arms.append((subject, x, y))
    return arms


def _statsmodels(arms, with_x: bool = False) -> float:
    subject = np.concatenate([a[0] for a in arms])
    y = np.concatenate([a[2] for a in arms])
    treat = np.concatenate([np.full(a[0].size, i, float) for i, a in enumerate(arms)])
    columns = [np.ones_like(y), treat] + ([np.concatenate([a[1] for a in arms])] if with_x else [])
    fit = sm.OLS(y, np.column_stack(columns)).fit(cov_type="cluster", cov_kwds={"groups": subject})
    return float(fit.bse[1])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mean_difference_matches_cluster_robust_ols_within_5_percent(seed: int) -> None:
    arms = _data(seed)
    control, treatment = (_arm(s, y) for s, _, y in arms)
    est = mean_difference(control, treatment)
    reference = _statsmodels(arms)
    assert est.std_error == pytest.approx(reference, rel=0.05)
    assert est.std_error == pytest.approx(reference, rel=0.005)  # in fact within a few per mille
    # five correlated decisions per subject: far wider than the independent interval
    plain = mean_difference(MeanStats(control.n, control.sum, control.sum_squares),
                            MeanStats(treatment.n, treatment.sum, treatment.sum_squares))  # fmt: skip
    assert est.std_error > 1.5 * plain.std_error


@pytest.mark.parametrize("seed", [4, 5])
def test_rate_difference_and_sequential_match_cluster_robust_ols(seed: int) -> None:
    arms = _data(seed, binary=True)
    control, treatment = (_arm(s, y) for s, _, y in arms)
    reference = _statsmodels(arms)
    assert proportion_difference(control, treatment).std_error == pytest.approx(reference, rel=0.05)
    seq = always_valid_difference(control, treatment)
    assert seq.std_error == pytest.approx(reference, rel=0.05)
    assert seq.n_total == 1200  # subjects, not decisions
    cmp = compare("rate", control, treatment)
    plain = compare("rate", MeanStats.proportion(control.n, round(control.sum)),
                    MeanStats.proportion(treatment.n, round(treatment.sum)))  # fmt: skip
    assert cmp.p_value > plain.p_value  # independence made the p-value too small
    wilson = rate_interval(control)
    plain_wilson = rate_interval(MeanStats.proportion(control.n, round(control.sum)))
    assert wilson.ci_high - wilson.ci_low > plain_wilson.ci_high - plain_wilson.ci_low


def test_cuped_matches_cluster_robust_ols_with_the_covariate() -> None:
    arms = _data(6)
    control, treatment = (_covariates(s, x, y) for s, x, y in arms)
    result = cuped_comparison(control, treatment, pooled_theta([control, treatment]))
    assert result.std_error == pytest.approx(_statsmodels(arms, with_x=True), rel=0.05)


def test_one_decision_per_subject_gives_exactly_todays_numbers() -> None:
    rng = np.random.default_rng(7)
    arms = []
    for effect in (0.0, 0.3):
        y = rng.normal(1.0 + effect, 2.0, 500)
        arms.append((np.arange(500) + len(arms) * 500, y))
    clustered = [_arm(s, y) for s, y in arms]
    plain = [MeanStats(c.n, c.sum, c.sum_squares) for c in clustered]
    assert clustered[0].design_effect == 1.0
    assert compare("mean", *clustered) == compare("mean", *plain)
    assert mean_interval(clustered[1]) == mean_interval(plain[1])
    assert always_valid_difference(*clustered) == always_valid_difference(*plain)
    rates = [MeanStats.proportion(500, k, SubjectSums(500, 500.0, float(k), float(k))) for k in (40, 61)]
    plain_rates = [MeanStats.proportion(500, k) for k in (40, 61)]
    assert compare("rate", *rates) == compare("rate", *plain_rates)
    assert rate_interval(rates[0]) == rate_interval(plain_rates[0])


def test_bandit_ips_difference_matches_cluster_robust_ols() -> None:
    """A bandit log where each of 800 subjects is decided five times (a subject may get either arm): the IPS
    difference's standard error is statsmodels' cluster-robust SE of the mean per-decision IPS term."""
    from reports.bandit import IpsSubjectSums, IpwArmStats, ips_difference

    rng = np.random.default_rng(9)
    subjects, per_subject = 800, 5
    subject = np.repeat(np.arange(subjects), per_subject)
    taste = np.repeat(rng.normal(0.0, 1.0, subjects), per_subject)
    p_b = rng.uniform(0.2, 0.8, subject.size)  # logged propensity of b, varying decision to decision
    chose_b = rng.random(subject.size) < p_b
    propensity = np.where(chose_b, p_b, 1.0 - p_b)
    reward = (rng.random(subject.size) < 1.0 / (1.0 + np.exp(-(-1.0 + 1.5 * taste + 0.2 * chose_b)))).astype(float)
    wr = reward / propensity
    z = np.where(chose_b, wr, -wr)  # b minus a
    n = subject.size

    def arm_sums(mask: np.ndarray, name: str) -> IpwArmStats:
        w = 1.0 / propensity[mask]
        r = reward[mask]
        return IpwArmStats(name, w.sum(), (w * r).sum(), (w * w).sum(), (w * w * r).sum(), (w * w * r * r).sum())

    ipw = {"a": arm_sums(~chose_b, "a"), "b": arm_sums(chose_b, "b")}
    za = np.bincount(subject, weights=np.where(chose_b, 0.0, wr))
    zb = np.bincount(subject, weights=np.where(chose_b, wr, 0.0))
    n_s = np.bincount(subject).astype(float)
    clusters = IpsSubjectSums(subjects, float(n_s @ n_s), {"a": float(za @ za), "b": float(zb @ zb)},
                              {"a": float(n_s @ za), "b": float(n_s @ zb)}, {"a|b": float(za @ zb)})  # fmt: skip
    seq = ips_difference(ipw, n, "a", "b", 0.05, 10_000, clusters)
    fit = sm.OLS(z, np.ones(n)).fit(cov_type="cluster", cov_kwds={"groups": subject})
    assert seq.estimate == pytest.approx(float(fit.params[0]), rel=1e-12)
    assert seq.std_error == pytest.approx(float(fit.bse[0]), rel=0.05)
    assert seq.n_total == subjects
    # Here the arm of each decision is random, so a subject's terms of either sign cancel and the standard
    # error barely moves; the sequence counts 800 subjects, not 4,000 decisions, so the interval is wider.
    plain = ips_difference(ipw, n, "a", "b", 0.05, 10_000)
    assert seq.ci_high - seq.ci_low > 1.2 * (plain.ci_high - plain.ci_low)
