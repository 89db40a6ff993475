"""A decision's context against the declared features, and the CUPED covariate."""

from __future__ import annotations

import math
from typing import Any

import pytest

from experiments.context import ContextError, ContextProblem, check_context, covariate_value, validated_context
from experiments.spec import FeatureSpec

RECENCY = FeatureSpec(name="recency", type="numeric")
CHANNEL_PREF = FeatureSpec(name="channel_pref", type="categorical")
FEATURES = [RECENCY, CHANNEL_PREF]


def test_design_example_context_fits() -> None:
    context = {"recency": 3, "channel_pref": "web"}
    assert check_context(FEATURES, context) == []
    assert validated_context(FEATURES, context) == context


@pytest.mark.parametrize("context", [{"recency": 2.5, "channel_pref": 7}, {"recency": -1, "channel_pref": ""}])
def test_numbers_and_integer_categories_fit(context: dict[str, Any]) -> None:
    assert check_context(FEATURES, context) == []


@pytest.mark.parametrize("context", [{"channel_pref": "web"}, {"recency": None, "channel_pref": "web"}])
def test_missing_required_feature_is_named(context: dict[str, Any]) -> None:
    assert check_context(FEATURES, context) == [
        ContextProblem("context.recency", "required numeric feature is missing")]


@pytest.mark.parametrize("context", [None, {}])
def test_no_context_names_every_required_feature(context: dict[str, Any] | None) -> None:
    assert check_context(FEATURES, context) == [
        ContextProblem("context.recency", "required numeric feature is missing"),
        ContextProblem("context.channel_pref", "required categorical feature is missing"),
    ]


@pytest.mark.parametrize("value, type_name", [
    ("3", "str"), (True, "bool"), (False, "bool"), (float("nan"), "float"), (float("inf"), "float"),
    (float("-inf"), "float"), ([3], "list"), ({"days": 3}, "dict"),
])
def test_numeric_feature_needs_a_finite_number(value: Any, type_name: str) -> None:
    assert check_context(FEATURES, {"recency": value, "channel_pref": "web"}) == [
        ContextProblem("context.recency", f"expected a finite number, got {type_name}")]


@pytest.mark.parametrize("value, type_name", [(["web"], "list"), (1.5, "float"), (True, "bool"), ({"a": 1}, "dict")])
def test_categorical_feature_needs_a_string_or_integer(value: Any, type_name: str) -> None:
    assert check_context(FEATURES, {"recency": 3, "channel_pref": value}) == [
        ContextProblem("context.channel_pref", f"expected a category (string or integer), got {type_name}")]


def test_overlong_category_is_refused() -> None:
    assert check_context(FEATURES, {"recency": 3, "channel_pref": "w" * 200}) == []
    assert check_context(FEATURES, {"recency": 3, "channel_pref": "w" * 201}) == [
        ContextProblem("context.channel_pref", "category longer than 200 characters")]


def test_optional_feature_may_be_missing_but_not_wrong() -> None:
    features = [FeatureSpec(name="recency", type="numeric", required=False), CHANNEL_PREF]
    assert check_context(features, {"channel_pref": "web"}) == []
    assert check_context(features, {"channel_pref": "web", "recency": None}) == []
    assert check_context(features, {"channel_pref": "web", "recency": "soon"}) == [
        ContextProblem("context.recency", "expected a finite number, got str")]


def test_profile_features_are_not_required_in_the_context() -> None:
    features = [RECENCY, FeatureSpec(name="ltv", type="numeric", source="profile")]
    assert check_context(features, {"recency": 3}) == []
    # Not read from the context at all: a value there is not checked either.
    assert check_context(features, {"recency": 3, "ltv": "high"}) == []


def test_extra_keys_are_allowed_and_kept() -> None:
    context = {"recency": 3, "channel_pref": "web", "campaign": "spring", "nested": {"a": [1, 2]}}
    assert validated_context(FEATURES, context) == context


def test_validated_context_returns_a_plain_copy() -> None:
    context = {"recency": 3, "channel_pref": "web"}
    result = validated_context(FEATURES, context)
    assert type(result) is dict and result is not context
    assert validated_context([], None) == {}


def test_context_error_names_every_offending_feature() -> None:
    with pytest.raises(ContextError) as info:
        validated_context(FEATURES, {"recency": "3", "channel_pref": ["web"]})
    assert [p.field for p in info.value.problems] == ["context.recency", "context.channel_pref"]
    assert str(info.value) == ("context.recency: expected a finite number, got str; "
                               "context.channel_pref: expected a category (string or integer), got list")
    assert isinstance(info.value, ValueError)


def test_numeric_feature_too_large_for_a_float_is_a_problem_not_a_crash() -> None:
    assert check_context([RECENCY], {"recency": 10**400}) == [
        ContextProblem("context.recency", "expected a finite number, got int")]


# --- CUPED covariate ----------------------------------------------------------------

@pytest.mark.parametrize("context, name, expected", [
    ({"pre_spend": 12}, "pre_spend", 12.0),
    ({"pre_spend": 12.5}, "pre_spend", 12.5),
    ({"pre_spend": -3}, "pre_spend", -3.0),
    ({"pre_spend": 12}, None, None),
    ({"pre_spend": 12}, "", None),
    (None, "pre_spend", None),
    ({}, "pre_spend", None),
    ({"other": 1}, "pre_spend", None),
    ({"pre_spend": "12"}, "pre_spend", None),
    ({"pre_spend": True}, "pre_spend", None),
    ({"pre_spend": float("nan")}, "pre_spend", None),
    ({"pre_spend": float("inf")}, "pre_spend", None),
    ({"pre_spend": None}, "pre_spend", None),
])
def test_covariate_value(context: dict[str, Any] | None, name: str | None, expected: float | None) -> None:
    value = covariate_value(context, name)
    assert value == expected
    if expected is not None:
        assert type(value) is float and math.isfinite(value)


def test_covariate_too_large_for_a_float_is_none() -> None:
    assert covariate_value({"pre_spend": 10**400}, "pre_spend") is None
