"""Sample ratio mismatch, checked against scipy.stats.chisquare."""

import pytest
from scipy import stats as sps

from reports.bandit import IpwArmStats, propensity_balance
from reports.intervals import NO_DATA
from reports.srm import srm_check, srm_from_balance


def test_equal_split_matches_scipy_and_does_not_warn():
    observed = {"control": 21306, "mens": 21307, "womens": 21387}  # Hillstrom: randomised in thirds
    result = srm_check(observed, {"control": 1, "mens": 1, "womens": 1})
    statistic, p = sps.chisquare(list(observed.values()))
    assert (result.statistic, result.p_value) == pytest.approx((statistic, p))
    assert result.method == "chi_square"
    assert not result.warning and result.message is None
    assert [a.expected for a in result.arms] == pytest.approx([64000 / 3] * 3)


def test_unequal_split_uses_the_configured_shares():
    observed = {"control": 1900, "treatment": 8100}
    result = srm_check(observed, {"control": 0.2, "treatment": 0.8})
    statistic, p = sps.chisquare([1900, 8100], [2000, 8000])
    assert (result.statistic, result.p_value) == pytest.approx((statistic, p))
    assert result.warning is False  # p = 0.013: chance, not a broken split


def test_mismatch_warns_with_a_message_naming_the_arms():
    result = srm_check({"control": 10_000, "treatment": 10_600}, {"control": 0.5, "treatment": 0.5})
    _, p = sps.chisquare([10_000, 10_600])
    assert result.p_value == pytest.approx(p) and p < 0.001
    assert result.warning
    assert "Sample ratio mismatch" in result.message
    assert "treatment 10,600 (expected 10,300)" in result.message


def test_decisions_for_an_arm_with_share_zero_is_a_mismatch():
    result = srm_check({"control": 500, "off": 3}, {"control": 1.0, "off": 0.0})
    assert result.warning and result.p_value == 0.0 and result.statistic is None


def test_no_decisions_is_a_result():
    result = srm_check({"a": 0, "b": 0}, {"a": 0.5, "b": 0.5})
    assert (result.p_value, result.warning, result.error) == (None, False, NO_DATA)
    single = srm_check({"a": 40}, {"a": 1.0})
    assert (single.p_value, single.warning, single.error) == (None, False, "NOT_ENOUGH_ARMS")


@pytest.mark.parametrize(
    ("observed", "shares", "match"),
    [
        ({"a": 1, "b": 2}, {"a": 0.5, "c": 0.5}, "differ"),
        ({"a": 1, "b": 2}, {"a": -0.5, "b": 0.5}, "'a'"),
        ({"a": 1, "b": 2}, {"a": 0.0, "b": 0.0}, "must not all be 0"),
    ],
)
def test_bad_input(observed, shares, match):
    with pytest.raises(ValueError, match=match):
        srm_check(observed, shares)


def _balance(counts: dict[str, int]):
    """IPW sums of a bandit that gave every arm propensity 1/2 (weights of 2)."""
    stats = [IpwArmStats(arm, 2.0 * n, 0.0, 4.0 * n, 0.0, 0.0) for arm, n in counts.items()]
    return propensity_balance(stats, sum(counts.values()))


def test_bandit_balance_becomes_the_report_srm():
    check = _balance({"a": 600, "b": 400})
    result = srm_from_balance(check, {"a": 600, "b": 400}, {"a": 0.5, "b": 0.5})
    assert result.method == "propensity_balance"
    assert (result.statistic, result.p_value) == (check.statistic, check.p_value)
    assert result.warning and "logged propensities" in result.message
    assert [a.expected for a in result.arms] == [500.0, 500.0]


def test_bandit_balance_near_the_null_agrees_with_pearson():
    check = _balance({"a": 520, "b": 480})
    result = srm_from_balance(check, {"a": 520, "b": 480}, {"a": 0.5, "b": 0.5})
    _, p = sps.chisquare([520, 480])  # fixed propensities: Pearson's chi-square of the counts
    assert result.p_value == pytest.approx(p, rel=0.01)
    assert not result.warning and result.message is None
