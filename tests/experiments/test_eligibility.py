"""The eligibility rule language: validation at the boundary, evaluation against profile and context."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from experiments.eligibility import Condition, check, describe

CONDITIONS = TypeAdapter(list[Condition])
FACTS = {"profile": {"loyalty_tier": "Gold", "churn_risk": 0.2, "attributes": {"segment": "b2c", "kids": 2}},
         "context": {"days_since_purchase": 9, "channel_pref": "sms"}}


def conditions(*raw: dict) -> list[Condition]:
    return CONDITIONS.validate_python(list(raw))


def test_the_design_example_holds_for_a_matching_subject() -> None:
    rules = conditions({"field": "profile.loyalty_tier", "in": ["gold", "silver"]},
                       {"field": "context.days_since_purchase", "gte": 7},
                       {"field": "profile.churn_risk", "lt": 0.5})
    assert check(rules, FACTS).eligible
    assert [c.as_json() for c in rules][0] == {"field": "profile.loyalty_tier", "in": ["gold", "silver"]}


@pytest.mark.parametrize(("rule", "eligible"), [
    ({"field": "profile.loyalty_tier", "eq": "gold"}, True),  # text compares without case
    ({"field": "profile.loyalty_tier", "ne": "gold"}, False),
    ({"field": "profile.loyalty_tier", "not_in": ["bronze"]}, True),
    ({"field": "profile.attributes.kids", "gt": 1}, True),
    ({"field": "profile.attributes.kids", "lte": 1}, False),
    ({"field": "profile.attributes.segment", "in": ["b2b"]}, False),
    ({"field": "context.channel_pref", "eq": "sms"}, True),
    ({"field": "context.days_since_purchase", "lt": 9}, False),
    ({"field": "context.days_since_purchase", "lte": 9}, True),
    ({"field": "profile.loyalty_tier", "gt": 1}, False),  # a text is never compared as a number
    ({"field": "profile.points", "gte": 0}, False),  # missing: fails
    ({"field": "profile.points", "ne": 5}, True),  # missing is not 5
    ({"field": "profile.points", "not_in": [5]}, True),
    ({"field": "profile.points", "in": [5]}, False),
])
def test_each_operator(rule: dict, eligible: bool) -> None:
    assert check(conditions(rule), FACTS).eligible is eligible


def test_failures_say_which_condition_and_why() -> None:
    verdict = check(conditions({"field": "profile.loyalty_tier", "in": ["silver"]},
                               {"field": "profile.points", "gte": 100}), FACTS)
    assert not verdict.eligible and len(verdict.failed) == 2
    assert describe(verdict.failed[0]) == "profile.loyalty_tier is 'Gold', not in ['silver']"
    assert describe(verdict.failed[1]) == "profile.points is not known (needs gte 100)"


@pytest.mark.parametrize("rule", [
    {"field": "profile.tier"},  # no operator
    {"field": "profile.tier", "eq": "a", "ne": "b"},  # two operators
    {"field": "tier", "eq": "a"},  # neither profile. nor context.
    {"field": "profile.__class__", "eq": "a"} | {"field": "profile.", "eq": "a"},
    {"field": "context.x", "gt": "7"},  # not a number
    {"field": "context.x", "gt": True},
    {"field": "context.x", "lt": float("inf")},
    {"field": "context.x", "in": "gold"},  # not a list
    {"field": "context.x", "matches": ".*"},  # unknown operator
])
def test_bad_conditions_are_refused(rule: dict) -> None:
    with pytest.raises(ValidationError):
        conditions(rule)
