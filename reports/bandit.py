"""Arm values from adaptively allocated (bandit) data, where naive per-arm means mislead.

A bandit shifts traffic towards the arm that looks best, so each arm's decisions come
from a different mix of days (and contexts). If the base rate drifts over time, an
arm that got most of its traffic on good days looks better than it is: Simpson's
paradox. Two remedies, both from sufficient statistics the database aggregates:

* period_weighted_means: compare arms over the same mix of periods (post-stratification).
* ipw_estimates: inverse propensity weighting with the logged propensities, the value
  of the policy "always play this arm" (Horvitz & Thompson 1952; self-normalised form
  as in Swaminathan & Joachims 2015), plus propensity_balance, a sample-ratio check
  that the logged propensities explain the allocation that happened.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from scipy import stats as sps

from reports.sequential import SequentialResult, from_estimate
from reports.stats import MeanStats

__all__ = [
    "PeriodArmStats",
    "WeightedMean",
    "period_weighted_means",
    "IpwArmStats",
    "IpwEstimate",
    "ipw_estimates",
    "BalanceCheck",
    "propensity_balance",
    "BALANCE_WARNING_P",
    "IpsSubjectSums",
    "ips_difference",
]

BALANCE_WARNING_P = 0.001


# --- period-weighted (post-stratified) means ---------------------------------------


@dataclass(frozen=True, slots=True)
class PeriodArmStats:
    """One arm's reward statistics within one period (e.g. a day)."""

    period: str
    arm: str
    reward: MeanStats


@dataclass(frozen=True, slots=True)
class WeightedMean:
    """An arm's mean reward averaged over a common mix of periods."""

    mean: float | None
    std_error: float | None
    ci_low: float | None
    ci_high: float | None
    periods_used: int
    error: str | None = None
    decisions_covered: float | None = None


def period_weighted_means(cells: Sequence[PeriodArmStats], alpha: float = 0.05) -> dict[str, WeightedMean]:
    """Average each arm's per-period means over the same period mix, so allocation shifts cannot bias them.

    Only periods in which every arm has at least two decisions are used (a cell needs two
    to estimate its variance); each such period p gets the weight N_p / sum N_q, its share
    of all decisions in the used periods. Arm a's estimate is sum_p w_p * mean_{a,p} with
    variance sum_p w_p^2 * var_{a,p} / n_{a,p}, the weights taken as fixed. The estimate
    targets the arm's mean over the traffic the experiment actually saw. Cells repeated
    for the same period and arm are pooled; an arm with no decisions at all gets the error
    NO_DATA and is left out of the common-period rule. ``decisions_covered`` is the share
    of all decisions that fall in the used periods.
    """
    _check_alpha(alpha)
    pooled: dict[tuple[str, str], MeanStats] = {}
    for cell in cells:
        if cell.reward.n < 0:
            raise ValueError(f"reward.n must be >= 0, got {cell.reward.n} for period {cell.period!r}, arm {cell.arm!r}")
        key = (cell.period, cell.arm)
        pooled[key] = pooled[key] + cell.reward if key in pooled else cell.reward

    totals: dict[str, int] = {}
    for (_, arm), stats in pooled.items():
        totals[arm] = totals.get(arm, 0) + stats.n
    # An arm without a single decision (e.g. disabled) cannot be estimated and must not
    # empty the common periods of the others.
    result: dict[str, WeightedMean] = {
        arm: WeightedMean(None, None, None, None, 0, "NO_DATA", 0.0) for arm in sorted(totals) if totals[arm] == 0
    }
    arms = sorted(arm for arm in totals if totals[arm] > 0)
    if not arms:
        return result
    periods = sorted({period for period, _ in pooled})
    all_decisions = sum(totals.values())
    empty = MeanStats(0, 0.0, 0.0)
    used = [p for p in periods if all(pooled.get((p, a), empty).n >= 2 for a in arms)]
    if not used:
        result.update({a: WeightedMean(None, None, None, None, 0, "NO_COMMON_PERIODS", 0.0) for a in arms})
        return result

    period_n = {p: sum(pooled[(p, a)].n for a in arms) for p in used}
    used_total = sum(period_n.values())
    covered = used_total / all_decisions
    z = float(sps.norm.ppf(1.0 - alpha / 2.0))
    for arm in arms:
        mean = 0.0
        variance = 0.0
        for p in used:
            weight = period_n[p] / used_total
            stats = pooled[(p, arm)]
            mean += weight * stats.mean
            variance += weight * weight * stats.variance / stats.n
        if not variance > 0.0:
            result[arm] = WeightedMean(mean, None, None, None, len(used), "ZERO_VARIANCE", covered)
            continue
        std_error = math.sqrt(variance)
        result[arm] = WeightedMean(
            mean, std_error, mean - z * std_error, mean + z * std_error, len(used), None, covered
        )
    return result


# --- inverse propensity weighting ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class IpwArmStats:
    """Weighted sums over the decisions that chose ``arm``; w = 1 / logged propensity, r = reward."""

    arm: str
    sum_w: float
    sum_wr: float
    sum_w2: float
    sum_w2r: float
    sum_w2r2: float


@dataclass(frozen=True, slots=True)
class IpwEstimate:
    """Estimated value per decision of always playing one arm, with normal (CLT) intervals."""

    ips: float | None
    ips_ci_low: float | None
    ips_ci_high: float | None
    snips: float | None
    snips_ci_low: float | None
    snips_ci_high: float | None
    effective_sample_size: float | None
    error: str | None = None
    ips_std_error: float | None = None
    snips_std_error: float | None = None


def ipw_estimates(stats: Sequence[IpwArmStats], n_total: int, alpha: float = 0.05) -> dict[str, IpwEstimate]:
    """Estimate what each arm would earn if it were always played, from logged propensities.

    With z_i = 1[A_i = a] w_i r_i over all n_total logged decisions:
    IPS = sum z_i / n with standard error sqrt(var(z) / n), var(z) with ddof=1;
    SNIPS = sum z_i / sum 1[A_i = a] w_i with the delta-method standard error
    sqrt(sum w^2 (r - SNIPS)^2) / sum w (Owen 2013, Monte Carlo theory, methods and examples, ch. 9);
    effective sample size (sum w)^2 / sum w^2 (Kish). IPS is unbiased when the
    propensities are right; SNIPS trades a small bias for much less variance.
    """
    _check_alpha(alpha)
    _check_n_total(n_total)
    _check_ipw_stats(stats)
    z = float(sps.norm.ppf(1.0 - alpha / 2.0))
    result: dict[str, IpwEstimate] = {}
    for s in stats:
        if n_total < 1 or s.sum_w <= 0.0:
            result[s.arm] = IpwEstimate(None, None, None, None, None, None, None, "NO_DATA")
            continue
        ips = s.sum_wr / n_total
        snips = s.sum_wr / s.sum_w
        ess = s.sum_w * s.sum_w / s.sum_w2 if s.sum_w2 > 0.0 else None
        if n_total < 2:
            result[s.arm] = IpwEstimate(ips, None, None, snips, None, None, ess, "NOT_ENOUGH_DATA")
            continue
        ips_var = max(s.sum_w2r2 - n_total * ips * ips, 0.0) / (n_total - 1) / n_total
        snips_ss = max(s.sum_w2r2 - 2.0 * snips * s.sum_w2r + snips * snips * s.sum_w2, 0.0)
        snips_se = math.sqrt(snips_ss) / s.sum_w
        if not (ips_var > 0.0 and snips_se > 0.0):
            result[s.arm] = IpwEstimate(ips, None, None, snips, None, None, ess, "ZERO_VARIANCE")
            continue
        ips_se = math.sqrt(ips_var)
        result[s.arm] = IpwEstimate(
            ips=ips,
            ips_ci_low=ips - z * ips_se,
            ips_ci_high=ips + z * ips_se,
            snips=snips,
            snips_ci_low=snips - z * snips_se,
            snips_ci_high=snips + z * snips_se,
            effective_sample_size=ess,
            ips_std_error=ips_se,
            snips_std_error=snips_se,
        )
    return result


# --- always-valid IPS differences (what promotion of a bandit arm uses) -----------

NO_PROPENSITIES = "NO_PROPENSITIES"  # an arm has no logged-propensity sums


@dataclass(frozen=True, slots=True)
class IpsSubjectSums:
    """Per-subject sums of the IPS terms, so a bandit's IPS comparisons are clustered on subjects.

    With Z_s[a] = sum over subject s's decisions of 1[A = a] w r and n_s its decisions:
    ``sum_z2[a]`` = sum_s Z_s[a]^2, ``sum_nz[a]`` = sum_s n_s Z_s[a], ``cross["a|b"]`` = sum_s Z_s[a] Z_s[b]
    (a < b), ``sum_n2`` = sum_s n_s^2 over the ``subjects`` subjects.
    """

    subjects: int
    sum_n2: float
    sum_z2: Mapping[str, float]
    sum_nz: Mapping[str, float]
    cross: Mapping[str, float]

    def pair(self, a: str, b: str) -> float:
        return self.cross.get(f"{a}|{b}" if a < b else f"{b}|{a}", 0.0)


def ips_difference(
    ipw: Mapping[str, IpwArmStats],
    n_total: int,
    reference: str,
    arm: str,
    alpha: float,
    tuning_n: float,
    clusters: IpsSubjectSums | None = None,
) -> SequentialResult:
    """Always-valid interval of arm minus reference by IPS over all logged decisions (martingale differences).

    z_i = 1[A_i = arm] w_i r_i - 1[A_i = reference] w_i r_i; a decision picks one arm, so
    sum z_i^2 = sum_w2r2[arm] + sum_w2r2[reference]. With per-subject sums (``clusters``) and a
    subject decided more than once, the variance is the cluster-robust one over subjects,
    K / (K - 1) sum_s (Z_s - d n_s)^2 / N^2 (statsmodels' CR0 times K / (K - 1)), and the
    sequence counts subjects.
    """
    a, b = ipw.get(arm), ipw.get(reference)
    if a is None or b is None or n_total < 1:
        return SequentialResult(None, None, None, None, alpha, tuning_n, error=NO_PROPENSITIES, n_total=n_total)
    if a.sum_w <= 0.0 or b.sum_w <= 0.0:
        return SequentialResult(None, None, None, None, alpha, tuning_n, error="NO_DATA", n_total=n_total)
    if n_total < 2:
        return SequentialResult(None, None, None, None, alpha, tuning_n, error="NOT_ENOUGH_DATA", n_total=n_total)
    estimate = (a.sum_wr - b.sum_wr) / n_total
    c = clusters
    if c is not None and c.subjects >= 2 and c.sum_n2 > n_total * (1.0 + 1e-12) and arm in c.sum_z2 and (
            reference in c.sum_z2):
        sum_z2 = c.sum_z2[arm] + c.sum_z2[reference] - 2.0 * c.pair(arm, reference)
        sum_nz = c.sum_nz[arm] - c.sum_nz[reference]
        residual = max(sum_z2 - 2.0 * estimate * sum_nz + estimate * estimate * c.sum_n2, 0.0)
        k = c.subjects
        std_error = math.sqrt(k / (k - 1) * residual) / n_total
        return from_estimate(estimate, std_error, k, alpha, tuning_n)
    variance = max(a.sum_w2r2 + b.sum_w2r2 - n_total * estimate * estimate, 0.0) / (n_total - 1)
    std_error = math.sqrt(variance / n_total)
    return from_estimate(estimate, std_error, n_total, alpha, tuning_n)


# --- propensity balance (sample ratio mismatch for logged propensities) -------------


@dataclass(frozen=True, slots=True)
class BalanceCheck:
    """Whether the logged propensities explain how often each arm was chosen."""

    statistic: float | None
    df: float | None
    p_value: float | None
    warning: bool
    per_arm: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    per_arm_z: dict[str, float] = field(default_factory=dict)


def propensity_balance(stats: Sequence[IpwArmStats], n_total: int) -> BalanceCheck:
    """Test whether the logged propensities match the allocation, so broken logging is caught before IPW is trusted.

    For every arm a that could be chosen at every one of the n_total decisions, correct
    propensities give E[sum_w_a] = n_total with variance sum_i (1/p_ia - 1). That variance
    is estimated from the chosen decisions, sum (w^2 - w) = sum_w2_a - sum_w_a, scaled by
    n_total / sum_w_a (its expectation under correct logging) so that, as in Pearson's
    test, the null value sets the variance. ``per_arm`` is sum_w_a / n_total (1.0
    expected) and ``per_arm_z`` the standardised deviation z_a. The z_a are correlated
    (each decision picks one arm, so the covariance between arms is -n_total), and
    sum z_a^2 is a weighted sum of chi-squares with the eigenvalues of their correlation
    matrix; it is matched to c * chi2(df) by its first two moments (Satterthwaite 1946):
    c = sum lambda^2 / K, df = K^2 / sum lambda^2, and ``statistic`` is sum z_a^2 / c.
    With fixed propensities for two arms, or equal ones for any number, this is exactly
    Pearson's sample-ratio chi-square on K - 1 degrees of freedom. Arms that some
    decisions could not choose (propensity 0) must be left out, with n_total restricted
    to the decisions where every remaining arm was possible.
    """
    _check_n_total(n_total)
    _check_ipw_stats(stats)
    if len(stats) < 2:
        return BalanceCheck(None, None, None, False, error="NOT_ENOUGH_ARMS")
    if n_total < 1:
        return BalanceCheck(None, None, None, False, error="NO_DATA")

    per_arm = {s.arm: s.sum_w / n_total for s in stats}
    if any(s.sum_w <= 0.0 for s in stats):
        return BalanceCheck(None, None, None, False, per_arm=per_arm, error="ARM_NEVER_CHOSEN")
    variances = [(s.sum_w2 - s.sum_w) * n_total / s.sum_w for s in stats]
    if not all(v > 0.0 for v in variances):
        return BalanceCheck(None, None, None, False, per_arm=per_arm, error="ZERO_VARIANCE")

    zs = [(s.sum_w - n_total) / math.sqrt(v) for s, v in zip(stats, variances)]
    k = len(stats)
    sum_lambda_sq = float(k)  # trace(R^2) = sum of squared correlations, diagonal first
    for i in range(k):
        for j in range(k):
            if i != j:
                r = max(-1.0, -n_total / math.sqrt(variances[i] * variances[j]))
                sum_lambda_sq += r * r
    scale = sum_lambda_sq / k
    df = k * k / sum_lambda_sq
    statistic = sum(z * z for z in zs) / scale
    p_value = float(sps.chi2.sf(statistic, df))
    return BalanceCheck(
        statistic=statistic,
        df=df,
        p_value=p_value,
        warning=p_value < BALANCE_WARNING_P,
        per_arm=per_arm,
        per_arm_z={s.arm: z for s, z in zip(stats, zs)},
    )


# --- validation ---------------------------------------------------------------------


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def _check_n_total(n_total: int) -> None:
    if isinstance(n_total, bool) or not isinstance(n_total, int) or n_total < 0:
        raise ValueError(f"n_total must be an integer >= 0, got {n_total!r}")


def _check_ipw_stats(stats: Sequence[IpwArmStats]) -> None:
    seen: set[str] = set()
    for s in stats:
        if s.arm in seen:
            raise ValueError(f"arms must be unique, got {s.arm!r} twice")
        seen.add(s.arm)
        for name in ("sum_w", "sum_wr", "sum_w2", "sum_w2r", "sum_w2r2"):
            value = getattr(s, name)
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value} for arm {s.arm!r}")
        for name in ("sum_w", "sum_w2", "sum_w2r2"):
            if getattr(s, name) < 0.0:
                raise ValueError(f"{name} must be >= 0, got {getattr(s, name)} for arm {s.arm!r}")
        # Propensities are at most 1, so every weight is >= 1 and w^2 >= w.
        if s.sum_w2 < s.sum_w * (1.0 - 1e-9):
            raise ValueError(
                f"sum_w2 must be >= sum_w (weights 1/propensity are >= 1), got {s.sum_w2} < {s.sum_w} for arm {s.arm!r}"
            )
