"""Sample ratio mismatch: did each arm get the share of decisions it was meant to get?"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from scipy import stats as sps

from reports.bandit import BALANCE_WARNING_P, BalanceCheck
from reports.intervals import NO_DATA

NOT_ENOUGH_ARMS = "NOT_ENOUGH_ARMS"  # fewer than two arms can receive traffic: nothing to compare

# A p-value this small is treated as a broken split, not bad luck; the same for fixed splits and bandits.
SRM_THRESHOLD = BALANCE_WARNING_P


@dataclass(frozen=True, slots=True)
class SrmArm:
    arm: str
    observed: int
    expected: float  # expected decisions at the configured share
    expected_share: float  # normalised so that the shares sum to 1


@dataclass(frozen=True, slots=True)
class SrmResult:
    """The one sample-ratio-mismatch verdict of a report."""

    method: str  # "chi_square" (fixed split) or "propensity_balance" (bandit)
    statistic: float | None
    p_value: float | None
    threshold: float
    warning: bool
    message: str | None  # what to tell the analyst when ``warning`` is set
    arms: list[SrmArm]
    error: str | None = None


def _expected(observed: Mapping[str, int], expected_shares: Mapping[str, float]) -> list[SrmArm]:
    if set(observed) != set(expected_shares):
        raise ValueError(f"arms of observed {sorted(observed)} and expected_shares {sorted(expected_shares)} differ")
    for arm, share in expected_shares.items():
        if not (share >= 0.0 and math.isfinite(share)):
            raise ValueError(f"expected share of arm {arm!r} must be a finite number >= 0, got {share}")
    total_share = sum(expected_shares.values())
    if total_share <= 0.0:
        raise ValueError(f"expected shares must not all be 0, got {dict(expected_shares)}")
    total = sum(observed.values())
    return [
        SrmArm(arm, observed[arm], total * expected_shares[arm] / total_share, expected_shares[arm] / total_share)
        for arm in observed
    ]


def _message(arms: list[SrmArm], p_value: float, threshold: float, against: str = "the configured split") -> str:
    counts = ", ".join(f"{a.arm} {a.observed:,} (expected {a.expected:,.0f})" for a in arms)
    return (
        f"Sample ratio mismatch: the arms' decision counts do not match {against} "
        f"(p = {p_value:.2g} < {threshold:g}): {counts}. Assignment or logging is likely broken "
        f"(e.g. lost exposures, bots, a redirect that drops one arm); do not trust the results "
        f"until the cause is found."
    )


def srm_check(
    observed: Mapping[str, int], expected_shares: Mapping[str, float], threshold: float = SRM_THRESHOLD
) -> SrmResult:
    """Test observed decisions per arm against the configured shares (scipy ``chisquare``).

    Shares are relative weights and need not sum to 1. An arm with share 0 that still got
    decisions is a mismatch outright.
    """
    arms = _expected(observed, expected_shares)
    total = sum(observed.values())
    if total == 0:
        return SrmResult("chi_square", None, None, threshold, False, None, arms, NO_DATA)
    if any(a.expected == 0.0 and a.observed > 0 for a in arms):
        return SrmResult("chi_square", None, 0.0, threshold, True, _message(arms, 0.0, threshold), arms)
    tested = [a for a in arms if a.expected > 0.0]
    if len(tested) < 2:
        return SrmResult("chi_square", None, None, threshold, False, None, arms, NOT_ENOUGH_ARMS)
    statistic, p_value = sps.chisquare([a.observed for a in tested], [a.expected for a in tested])
    warning = bool(p_value < threshold)
    message = _message(arms, float(p_value), threshold) if warning else None
    return SrmResult("chi_square", float(statistic), float(p_value), threshold, warning, message, arms)


def srm_from_balance(
    check: BalanceCheck, observed: Mapping[str, int], expected_shares: Mapping[str, float]
) -> SrmResult:
    """Wrap a bandit's propensity balance check (``reports.bandit.propensity_balance``) as the report's SRM."""
    arms = _expected(observed, expected_shares)
    message = None
    if check.warning:
        message = _message(arms, check.p_value or 0.0, SRM_THRESHOLD, "the logged propensities")
    return SrmResult(
        "propensity_balance", check.statistic, check.p_value, SRM_THRESHOLD, check.warning, message, arms, check.error
    )
