"""Deterministic bucketing: the documented formula, split proportions (scipy chi-square), independence
across salts, stability, promotion splits, holdout membership and the uniform arm."""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest
from scipy import stats

from experiments.bucketing import Splitter, in_holdout, uniform_arm, unit_position, winner_split

N = 100_000
SUBJECTS = [f"c-{i}" for i in range(N)]
SALT = "8f14e45fceea167a"
OTHER_SALT = "c9f0f895fb98ab91"
ALPHA = 0.001  # a correct implementation fails a check by chance once in a thousand seeds; the salts are fixed


def reference_position(salt: str, subject_id: str) -> float:
    """The formula of the bucketing docstring, written out independently."""
    digest = hashlib.sha256(f"{salt}:{subject_id}".encode()).hexdigest()
    return int(digest[:15], 16) / 16**15


def reference_arm(weights: dict[str, float], position: float) -> str:
    """The first arm, in order, whose cumulative normalised weight exceeds the position."""
    total = sum(weights.values())
    cumulative = 0.0
    for arm, weight in weights.items():
        cumulative += weight / total
        if cumulative > position:
            return arm
    return list(weights)[-1]


def counts(assigned: list[str], arms: list[str]) -> list[int]:
    tally = Counter(assigned)
    assert set(tally) <= set(arms), set(tally) - set(arms)
    return [tally[arm] for arm in arms]


# --- the formula ------------------------------------------------------------------

@pytest.mark.parametrize("salt, subject", [("s", "c-123"), (SALT, "42"), ("", ""), ("ä-salt", "subject:with:colons")])
def test_unit_position_follows_the_documented_formula(salt: str, subject: str) -> None:
    assert unit_position(salt, subject) == reference_position(salt, subject)


def test_unit_position_is_a_known_value() -> None:
    # sha256("s:c-123") begins 9cc12e645a42359 = 705960021810488153; / 16**15 = 0.6123227114678763.
    assert unit_position("s", "c-123") == 705960021810488153 / 16**15
    assert unit_position("s", "c-123") == pytest.approx(0.6123227114678763, rel=1e-15)
    assert Splitter({"control": 1, "mens": 1, "womens": 1}).assign("s", "c-123") == "mens"


def test_unit_positions_lie_in_the_unit_interval_and_differ_by_salt() -> None:
    positions = [unit_position(SALT, s) for s in SUBJECTS[:1000]]
    assert all(0 <= u < 1 for u in positions)
    assert len(set(positions)) == 1000
    assert positions != [unit_position(OTHER_SALT, s) for s in SUBJECTS[:1000]]


def test_splitter_follows_the_documented_rule() -> None:
    weights = {"control": 1.0, "mens": 2.0, "womens": 7.0}
    splitter = Splitter(weights)
    for subject in SUBJECTS[:10_000]:
        assert splitter.assign(SALT, subject) == reference_arm(weights, reference_position(SALT, subject))


@pytest.mark.parametrize("position, arm", [(0.0, "a"), (0.0999, "a"), (0.1, "b"), (0.29, "b"), (0.31, "c"),
                                           (0.999999, "c")])
def test_arm_boundaries_belong_to_the_next_arm(position: float, arm: str) -> None:
    assert Splitter({"a": 1, "b": 2, "c": 7}).arm_at(position) == arm


def test_splitter_normalises_shares_and_keeps_arm_order() -> None:
    splitter = Splitter({"womens": 7, "control": 1, "mens": 2})
    assert splitter.arms == ["womens", "control", "mens"]
    assert splitter.shares == pytest.approx({"womens": 0.7, "control": 0.1, "mens": 0.2})


def test_an_arm_of_weight_zero_is_never_chosen() -> None:
    assigned = Splitter({"a": 1, "off": 0, "b": 1}).assign_many(SALT, SUBJECTS[:20_000])
    assert counts(assigned, ["a", "off", "b"])[1] == 0
    assigned = Splitter({"a": 1, "off": 0}).assign_many(SALT, SUBJECTS[:20_000])
    assert set(assigned) == {"a"}


@pytest.mark.parametrize("weights, message", [
    ({}, "a split needs at least one arm"),
    ({"a": 0, "b": 0}, "weights must sum to a positive number, got 0.0"),
])
def test_splitter_refuses_an_empty_split(weights: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Splitter(weights)


# --- proportions and independence ---------------------------------------------------

@pytest.mark.parametrize("weights", [{"a": 1, "b": 1, "c": 1}, {"a": 1, "b": 2, "c": 7}])
def test_split_of_100k_subjects_matches_the_weights(weights: dict[str, float]) -> None:
    arms = list(weights)
    observed = counts(Splitter(weights).assign_many(SALT, SUBJECTS), arms)
    total = sum(weights.values())
    expected = [N * weights[arm] / total for arm in arms]
    assert sum(observed) == N
    _, p = stats.chisquare(observed, expected)
    assert p > ALPHA, (observed, expected, p)


def test_chi_square_check_would_catch_a_skewed_split() -> None:
    # The same check against the wrong weights must fail, or it proves nothing.
    observed = counts(Splitter({"a": 1, "b": 1, "c": 1}).assign_many(SALT, SUBJECTS), ["a", "b", "c"])
    _, p = stats.chisquare(observed, [N * 0.32, N * 0.34, N * 0.34])
    assert p < ALPHA


def test_two_experiments_with_different_salts_split_independently() -> None:
    splitter = Splitter({"a": 1, "b": 1, "c": 1})
    first = splitter.assign_many(SALT, SUBJECTS)
    second = splitter.assign_many(OTHER_SALT, SUBJECTS)
    index = {"a": 0, "b": 1, "c": 2}
    table = np.zeros((3, 3), dtype=int)
    for x, y in zip(first, second):
        table[index[x], index[y]] += 1
    assert table.min() > 10_000  # every cell about N/9
    _, p, dof, _ = stats.chi2_contingency(table)
    assert dof == 4
    assert p > ALPHA, table


def test_contingency_check_would_catch_a_shared_salt() -> None:
    # Control for the test above: two splits sharing a salt are fully dependent, and the test says so.
    first = Splitter({"a": 1, "b": 1, "c": 1}).assign_many(SALT, SUBJECTS[:3000])
    second = Splitter({"x": 1, "y": 2}).assign_many(SALT, SUBJECTS[:3000])
    table = np.zeros((3, 2), dtype=int)
    for a, b in zip(first, second):
        table["abc".index(a), "xy".index(b)] += 1
    _, p, _, _ = stats.chi2_contingency(table)
    assert p < ALPHA


def test_assignment_is_stable_across_splitter_instances_and_call_forms() -> None:
    weights = {"control": 1, "mens": 1, "womens": 1}
    batch = Splitter(weights).assign_many(SALT, SUBJECTS[:5000])
    single = [Splitter(dict(weights)).assign(SALT, s) for s in SUBJECTS[:5000]]
    assert batch == single
    assert Splitter(weights).assign(SALT, "c-123") == Splitter(weights).assign(SALT, "c-123")


def test_adding_a_subject_does_not_move_others() -> None:
    splitter = Splitter({"a": 1, "b": 1})
    before = splitter.assign_many(SALT, SUBJECTS[:1000])
    after = splitter.assign_many(SALT, ["new-subject", *SUBJECTS[:1000]])[1:]
    assert before == after


# --- promotion ------------------------------------------------------------------------

@pytest.mark.parametrize("winner, holdback, expected", [
    ("mens", 0.0, {"mens": 1.0}),
    ("mens", -0.1, {"mens": 1.0}),
    ("mens", 0.1, {"mens": 0.9, "control": 0.1}),
    ("mens", 0.5, {"mens": 0.5, "control": 0.5}),
    ("control", 0.1, {"control": 1.0}),
])
def test_winner_split(winner: str, holdback: float, expected: dict[str, float]) -> None:
    assert winner_split(winner, "control", holdback) == pytest.approx(expected)
    assert list(winner_split(winner, "control", holdback)) == list(expected)


def test_winner_split_with_holdback_drives_the_splitter() -> None:
    observed = counts(Splitter(winner_split("mens", "control", 0.1)).assign_many(SALT, SUBJECTS),
                      ["mens", "control"])
    _, p = stats.chisquare(observed, [0.9 * N, 0.1 * N])
    assert p > ALPHA, observed


# --- holdout ----------------------------------------------------------------------------

def test_holdout_share_matches_within_sampling_error() -> None:
    members = sum(in_holdout(SALT, s, 0.1) for s in SUBJECTS)
    assert stats.binomtest(members, N, 0.1).pvalue > ALPHA, members


def test_holdout_follows_its_own_salted_position() -> None:
    for subject in SUBJECTS[:2000]:
        assert in_holdout(SALT, subject, 0.2) is (reference_position(f"{SALT}:holdout", subject) < 0.2)


@pytest.mark.parametrize("share, expected", [(0.0, 0), (-0.5, 0), (1.0, 5000)])
def test_holdout_extremes(share: float, expected: int) -> None:
    assert sum(in_holdout(SALT, s, share) for s in SUBJECTS[:5000]) == expected


def test_holdout_is_sticky() -> None:
    assert [in_holdout(SALT, s, 0.3) for s in SUBJECTS[:2000]] == [in_holdout(SALT, s, 0.3) for s in SUBJECTS[:2000]]


def test_holdout_is_independent_of_the_arm_position() -> None:
    arms = Splitter({"a": 1, "b": 1, "c": 1}).assign_many(SALT, SUBJECTS)
    index = {"a": 0, "b": 1, "c": 2}
    table = np.zeros((2, 3), dtype=int)
    for subject, arm in zip(SUBJECTS, arms):
        table[int(in_holdout(SALT, subject, 0.2)), index[arm]] += 1
    _, p, _, _ = stats.chi2_contingency(table)
    assert p > ALPHA, table


# --- uniform arm ----------------------------------------------------------------------

def test_uniform_arm_is_uniform() -> None:
    arms = ["a", "b", "c", "d"]
    observed = counts([uniform_arm(SALT, s, arms) for s in SUBJECTS], arms)
    _, p = stats.chisquare(observed)
    assert p > ALPHA, observed


def test_uniform_arm_is_uniform_among_holdout_subjects() -> None:
    arms = ["a", "b", "c"]
    held = [s for s in SUBJECTS if in_holdout(SALT, s, 0.3)]
    assert len(held) > 25_000
    _, p = stats.chisquare(counts([uniform_arm(SALT, s, arms) for s in held], arms))
    assert p > ALPHA


def test_uniform_arm_follows_its_own_salted_position_and_nonce() -> None:
    arms = ["a", "b", "c"]
    for subject in SUBJECTS[:2000]:
        u = reference_position(f"{SALT}:uniform:n1", subject)
        assert uniform_arm(SALT, subject, arms, nonce="n1") == arms[int(u * 3)]
    redrawn = [uniform_arm(SALT, s, arms, nonce="n2") for s in SUBJECTS[:3000]]
    assert redrawn != [uniform_arm(SALT, s, arms, nonce="n1") for s in SUBJECTS[:3000]]


def test_uniform_arm_with_one_arm() -> None:
    assert {uniform_arm(SALT, s, ["only"]) for s in SUBJECTS[:100]} == {"only"}
