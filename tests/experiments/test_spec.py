"""The experiment spec: the DESIGN.md examples validate as written, and every rule refuses what it should,
naming the offending field."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
from pydantic import ValidationError

from experiments.spec import (
    BUILTIN_EVENTS,
    POLICY_PARAMS,
    BanditAllocation,
    ExperimentSpec,
    FixedAllocation,
    PolicySpec,
    is_slug,
)


from tests.examples import spring_email  # noqa: E402 - the DESIGN.md example, shared


THOMPSON = {"type": "bandit", "policy": {"name": "thompson_sampling"}, "holdout": 0.1}
LIN_UCB = {"type": "bandit", "policy": {"name": "lin_ucb", "alpha": 1.0},
           "features": [{"name": "recency", "type": "numeric"}, {"name": "channel_pref", "type": "categorical"}]}
PARAM_VALUES = {"alpha": 1.0, "epsilon": 0.1, "tau": 0.5, "l2_lambda": 1.0}


def bandit(policy: dict[str, Any], **extra: Any) -> dict[str, Any]:
    allocation: dict[str, Any] = {"type": "bandit", "policy": policy}
    if policy["name"].startswith("lin_"):
        allocation["features"] = [{"name": "recency", "type": "numeric"}]
    allocation.update(extra)
    return allocation


def errors(spec: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    """The (loc, msg) pairs of the validation errors; fails the test when the spec is accepted."""
    with pytest.raises(ValidationError) as info:
        ExperimentSpec.model_validate(spec)
    return [(tuple(e["loc"]), e["msg"]) for e in info.value.errors()]


def assert_refused(spec: dict[str, Any], loc: tuple[Any, ...], *fragments: str) -> None:
    """Exactly one error, at `loc`, whose message holds every fragment."""
    found = errors(spec)
    assert len(found) == 1, found
    (where, message), = found
    assert where == loc, found
    for fragment in fragments:
        assert fragment in message, found


# --- the DESIGN.md examples -----------------------------------------------------

def test_design_example_validates_as_written() -> None:
    spec = ExperimentSpec.model_validate(spring_email())
    assert isinstance(spec.allocation, FixedAllocation)
    assert spec.allocation.weights == {"control": 1.0, "mens": 1.0, "womens": 1.0}
    assert [arm.key for arm in spec.arms] == ["control", "mens", "womens"]
    assert spec.arms[1].payload == {"template": "mens-v1"}
    assert spec.control_arm == "control"
    assert spec.attribution_window_seconds == 1_209_600
    assert spec.guardrails[0].metric == "unsubscribe_rate"
    assert spec.guardrails[0].max_relative_increase == 0.10
    assert spec.guardrails[0].max_relative_decrease is None
    assert spec.promotion is not None
    assert (spec.promotion.metric, spec.promotion.confidence, spec.promotion.action) == (
        "conversion_rate", 0.95, "promote")
    assert spec.contact_policy is not None and spec.contact_policy.quiet_hours is not None
    assert (spec.contact_policy.quiet_hours.start, spec.contact_policy.quiet_hours.end) == ("21:00", "08:00")
    assert spec.contact_policy.max_per_subject is not None
    assert spec.contact_policy.max_per_subject.count == 3


def test_design_example_survives_a_json_round_trip() -> None:
    spec = ExperimentSpec.model_validate(spring_email())
    assert ExperimentSpec.model_validate(spec.model_dump(mode="json")) == spec


def test_design_thompson_sampling_with_holdout_validates() -> None:
    spec = ExperimentSpec.model_validate(spring_email(allocation=THOMPSON))
    assert isinstance(spec.allocation, BanditAllocation)
    assert spec.allocation.policy.name == "thompson_sampling"
    assert spec.allocation.holdout == 0.1
    assert spec.allocation.policy.contextual is False
    assert spec.allocation.policy.params() == {}
    assert spec.allocation.policy.exploration_floor == 0.05


def test_design_lin_ucb_with_two_features_validates() -> None:
    spec = ExperimentSpec.model_validate(spring_email(allocation=LIN_UCB))
    assert isinstance(spec.allocation, BanditAllocation)
    assert spec.allocation.policy.contextual is True
    assert spec.allocation.policy.params() == {"alpha": 1.0}
    assert [(f.name, f.type, f.required, f.source) for f in spec.allocation.features] == [
        ("recency", "numeric", True, "context"), ("channel_pref", "categorical", True, "context")]
    assert spec.allocation.holdout == 0.0


@pytest.mark.parametrize("reward, expected", [
    ({"event": "conversion", "value": "revenue"}, ("event", "conversion", "revenue")),
    ({"type": "ltv_adjusted"}, ("ltv_adjusted", "conversion", None)),
])
def test_design_reward_variants_validate(reward: dict[str, Any], expected: tuple[Any, ...]) -> None:
    spec = ExperimentSpec.model_validate(spring_email(reward=reward))
    assert (spec.reward.type, spec.reward.event, spec.reward.value) == expected


def test_minimal_spec_gets_documented_defaults() -> None:
    spec = ExperimentSpec.model_validate(
        {"key": "k", "name": "K", "arms": [{"key": "a", "is_control": True}, {"key": "b"}]})
    assert isinstance(spec.allocation, FixedAllocation) and spec.allocation.weights is None
    assert (spec.reward.type, spec.reward.event, spec.reward.value, spec.reward.default) == (
        "event", "conversion", None, 0.0)
    assert spec.attribution_window_seconds == 14 * 86400
    assert spec.guardrails == [] and spec.promotion is None and spec.contact_policy is None
    assert spec.fixed_weights() == {"a": 0.5, "b": 0.5}


def test_spec_is_immutable() -> None:
    spec = ExperimentSpec.model_validate(spring_email())
    with pytest.raises(ValidationError):
        spec.name = "renamed"  # type: ignore[misc]


# --- arms -------------------------------------------------------------------------

def test_fewer_than_two_arms_is_refused() -> None:
    assert_refused(spring_email(arms=[{"key": "control", "is_control": True}],
                                allocation={"type": "fixed"}),
                   ("arms",), "at least 2")


def test_duplicate_arm_keys_are_refused_naming_the_key() -> None:
    arms = [{"key": "control", "is_control": True}, {"key": "mens"}, {"key": "mens"}]
    assert_refused(spring_email(arms=arms, allocation={"type": "fixed"}), ("arms",),
                   "arm keys must be unique", "'mens' appears twice")


@pytest.mark.parametrize("controls, found", [((), 0), (("control", "mens"), 2)])
def test_exactly_one_control_arm(controls: tuple[str, ...], found: int) -> None:
    arms = [{"key": key, "is_control": key in controls} for key in ("control", "mens", "womens")]
    assert_refused(spring_email(arms=arms), ("arms",), "exactly one arm must have is_control", f"found {found}")


@pytest.mark.parametrize("key", ["Mens", "mens e-mail", "-mens", "", "a" * 65, "mëns"])
def test_non_slug_arm_key_is_refused_at_the_arm(key: str) -> None:
    arms = [{"key": "control", "is_control": True}, {"key": key}]
    assert_refused(spring_email(arms=arms, allocation={"type": "fixed"}), ("arms", 1, "key"), "pattern")


def test_non_slug_experiment_key_is_refused() -> None:
    assert_refused(spring_email(key="Spring Email"), ("key",), "pattern")


@pytest.mark.parametrize("value, expected", [
    ("spring-email", True), ("a", True), ("v1.2_b-c", True), ("0day", True), ("a" * 64, True),
    ("a" * 65, False), ("Spring", False), ("_x", False), (".x", False), ("a b", False), ("", False),
])
def test_is_slug(value: str, expected: bool) -> None:
    assert is_slug(value) is expected


# --- fixed weights ----------------------------------------------------------------

def test_weights_missing_an_arm_are_refused_naming_it() -> None:
    spec = spring_email(allocation={"type": "fixed", "weights": {"control": 1, "mens": 1}})
    assert_refused(spec, ("allocation",), "weights must name every arm", "missing ['womens']", "unknown []")


def test_weights_naming_an_unknown_arm_are_refused_naming_it() -> None:
    spec = spring_email(allocation={"type": "fixed", "weights": {"control": 1, "mens": 1, "womens": 1, "kids": 1}})
    assert_refused(spec, ("allocation",), "weights must name every arm", "missing []", "unknown ['kids']")


@pytest.mark.parametrize("weight, shown", [(0, "0"), (-1, "-1"), (float("nan"), "nan"), (float("inf"), "inf"),
                                           (1e308, "1e+308"), (1e6 + 1, "1000001.0")])
def test_non_positive_or_non_finite_weight_is_refused_naming_the_arm(weight: float, shown: str) -> None:
    spec = spring_email(allocation={"type": "fixed", "weights": {"control": 1, "mens": weight, "womens": 1}})
    assert_refused(spec, ("allocation", "fixed", "weights"),
                   f"weight of arm 'mens' must be a positive number, got {shown}")


def test_unknown_allocation_type_is_refused() -> None:
    found = errors(spring_email(allocation={"type": "random"}))
    assert [loc for loc, _ in found] == [("allocation",)]
    assert "'fixed', 'bandit'" in found[0][1]


# --- bandit policy ------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(POLICY_PARAMS))
def test_every_documented_policy_name_is_accepted(name: str) -> None:
    spec = ExperimentSpec.model_validate(spring_email(allocation=bandit({"name": name})))
    assert isinstance(spec.allocation, BanditAllocation)
    assert spec.allocation.policy.name == name
    assert spec.allocation.policy.contextual is name.startswith("lin_")


def test_documented_policy_names_are_exactly_the_registry() -> None:
    assert set(POLICY_PARAMS) == {"thompson_sampling", "ucb1", "epsilon_greedy", "softmax",
                                  "lin_ucb", "lin_ts", "lin_greedy"}


def test_unknown_policy_name_is_refused() -> None:
    assert_refused(spring_email(allocation=bandit({"name": "exp3"})),
                   ("allocation", "bandit", "policy", "name"), "thompson_sampling")


@pytest.mark.parametrize("name, param", [(n, p) for n in sorted(POLICY_PARAMS) for p in sorted(PARAM_VALUES)])
def test_policy_takes_exactly_its_own_parameters(name: str, param: str) -> None:
    spec = spring_email(allocation=bandit({"name": name, param: PARAM_VALUES[param]}))
    if param in POLICY_PARAMS[name]:
        parsed = ExperimentSpec.model_validate(spec)
        assert isinstance(parsed.allocation, BanditAllocation)
        assert parsed.allocation.policy.params() == {param: PARAM_VALUES[param]}
    else:
        assert_refused(spec, ("allocation", "bandit", "policy", param),
                       f"policy {name!r} takes no parameter {param!r}")


@pytest.mark.parametrize("policy, field", [
    ({"name": "epsilon_greedy", "epsilon": 1.5}, "epsilon"),
    ({"name": "epsilon_greedy", "epsilon": -0.1}, "epsilon"),
    ({"name": "softmax", "tau": 0}, "tau"),
    ({"name": "ucb1", "alpha": -1}, "alpha"),
    ({"name": "ucb1", "alpha": 101}, "alpha"),
    ({"name": "ucb1", "alpha": float("nan")}, "alpha"),
    ({"name": "lin_ucb", "l2_lambda": 0}, "l2_lambda"),
    ({"name": "thompson_sampling", "exploration_floor": 0.9}, "exploration_floor"),
    ({"name": "thompson_sampling", "exploration_floor": -0.01}, "exploration_floor"),
])
def test_out_of_range_policy_parameter_is_refused(policy: dict[str, Any], field: str) -> None:
    found = errors(spring_email(allocation=bandit(policy)))
    assert [loc for loc, _ in found] == [("allocation", "bandit", "policy", field)], found


@pytest.mark.parametrize("policy", [
    {"name": "epsilon_greedy", "epsilon": 0}, {"name": "epsilon_greedy", "epsilon": 1},
    {"name": "softmax", "tau": 100}, {"name": "ucb1", "alpha": 0},
    {"name": "thompson_sampling", "exploration_floor": 0.5}, {"name": "thompson_sampling", "exploration_floor": 0},
])
def test_policy_parameter_range_edges_are_accepted(policy: dict[str, Any]) -> None:
    ExperimentSpec.model_validate(spring_email(allocation=bandit(policy)))


@pytest.mark.parametrize("holdout, ok", [(0.6, False), (-0.1, False), (0.5, True), (0.0, True)])
def test_holdout_share_range(holdout: float, ok: bool) -> None:
    spec = spring_email(allocation={"type": "bandit", "policy": {"name": "thompson_sampling"}, "holdout": holdout})
    if ok:
        parsed = ExperimentSpec.model_validate(spec)
        assert isinstance(parsed.allocation, BanditAllocation) and parsed.allocation.holdout == holdout
    else:
        found = errors(spec)
        assert [loc for loc, _ in found] == [("allocation", "bandit", "holdout")], found


@pytest.mark.parametrize("name", ["lin_ucb", "lin_ts", "lin_greedy"])
def test_contextual_policy_with_an_empty_feature_list_is_refused(name: str) -> None:
    spec = spring_email(allocation={"type": "bandit", "policy": {"name": name}, "features": []})
    assert_refused(spec, ("allocation", "bandit", "features"), f"policy {name!r} is contextual",
                   "at least one feature")


@pytest.mark.parametrize("name", ["lin_ucb", "lin_ts", "lin_greedy"])
def test_contextual_policy_without_a_features_key_is_refused(name: str) -> None:
    spec = spring_email(allocation={"type": "bandit", "policy": {"name": name}})
    assert_refused(spec, ("allocation", "bandit", "features"), f"policy {name!r} is contextual",
                   "at least one feature")


def test_duplicate_feature_names_are_refused() -> None:
    allocation = copy.deepcopy(LIN_UCB)
    allocation["features"].append({"name": "recency", "type": "categorical"})
    assert_refused(spring_email(allocation=allocation), ("allocation", "bandit", "features"),
                   "feature names must be unique")


def test_features_on_a_non_contextual_policy_are_allowed() -> None:
    allocation = {**THOMPSON, "features": [{"name": "recency", "type": "numeric", "source": "profile"}]}
    spec = ExperimentSpec.model_validate(spring_email(allocation=allocation))
    assert isinstance(spec.allocation, BanditAllocation)
    assert spec.allocation.features[0].source == "profile"


@pytest.mark.parametrize("feature, field", [
    ({"name": "1recency", "type": "numeric"}, "name"),
    ({"name": "recency", "type": "text"}, "type"),
    ({"name": "recency", "type": "numeric", "source": "crm"}, "source"),
])
def test_bad_feature_is_refused_at_its_field(feature: dict[str, Any], field: str) -> None:
    allocation = {"type": "bandit", "policy": {"name": "lin_ts"}, "features": [feature]}
    found = errors(spring_email(allocation=allocation))
    assert [loc for loc, _ in found] == [("allocation", "bandit", "features", 0, field)], found


# --- reward and events ------------------------------------------------------------

def test_reward_event_must_be_built_in_or_declared() -> None:
    assert_refused(spring_email(reward={"event": "purchase"}), ("reward",),
                   "reward event 'purchase' is neither built in nor a custom event")


def test_declared_custom_event_may_be_the_reward() -> None:
    spec = ExperimentSpec.model_validate(spring_email(reward={"event": "purchase"}, custom_events=["purchase"]))
    assert spec.reward.event == "purchase"
    assert spec.event_types == ("open", "click", "conversion", "unsubscribe", "purchase")


def test_ltv_reward_does_not_need_a_known_event() -> None:
    spec = ExperimentSpec.model_validate(spring_email(reward={"type": "ltv_adjusted", "event": "purchase"}))
    assert spec.reward.type == "ltv_adjusted"


@pytest.mark.parametrize("event", BUILTIN_EVENTS)
def test_custom_event_may_not_shadow_a_built_in(event: str) -> None:
    assert_refused(spring_email(custom_events=["purchase", event]), ("custom_events",),
                   f"custom event {event!r} is a built-in event type")


def test_custom_events_must_be_unique() -> None:
    assert_refused(spring_email(custom_events=["purchase", "purchase"]), ("custom_events",),
                   "custom events must be unique")


def test_custom_event_must_be_a_slug() -> None:
    found = errors(spring_email(custom_events=["Add To Cart"]))
    assert [loc for loc, _ in found] == [("custom_events", 0)], found


def test_event_types_are_built_ins_then_custom_events_in_order() -> None:
    spec = ExperimentSpec.model_validate(spring_email(custom_events=["add_to_cart", "purchase"]))
    assert spec.event_types == ("open", "click", "conversion", "unsubscribe", "add_to_cart", "purchase")
    assert ExperimentSpec.model_validate(spring_email()).event_types == BUILTIN_EVENTS


# --- guardrails and promotion -------------------------------------------------------

def test_guardrail_without_a_bound_is_refused() -> None:
    assert_refused(spring_email(guardrails=[{"metric": "unsubscribe_rate"}]), ("guardrails", 0),
                   "max_relative_increase or max_relative_decrease")


def test_unknown_guardrail_metric_is_refused() -> None:
    spec = spring_email(guardrails=[{"metric": "unsubscribe_rate", "max_relative_increase": 0.1},
                                    {"metric": "bounce_rate", "max_relative_increase": 0.1}])
    found = errors(spec)
    assert [loc for loc, _ in found] == [("guardrails", 1, "metric")], found
    assert "unsubscribe_rate" in found[0][1]


def test_guardrail_with_a_decrease_bound_is_accepted() -> None:
    spec = ExperimentSpec.model_validate(
        spring_email(guardrails=[{"metric": "revenue_per_decision", "max_relative_decrease": 0.05}]))
    assert spec.guardrails[0].max_relative_decrease == 0.05


def test_negative_guardrail_bound_is_refused() -> None:
    found = errors(spring_email(guardrails=[{"metric": "open_rate", "max_relative_decrease": -0.1}]))
    assert [loc for loc, _ in found] == [("guardrails", 0, "max_relative_decrease")], found


@pytest.mark.parametrize("confidence, ok", [(1.0, False), (0.4, False), (0.5, False), (0.51, True), (0.999, True)])
def test_promotion_confidence_is_strictly_between_half_and_one(confidence: float, ok: bool) -> None:
    promotion = {"metric": "conversion_rate", "confidence": confidence}
    if ok:
        spec = ExperimentSpec.model_validate(spring_email(promotion=promotion))
        assert spec.promotion is not None and spec.promotion.confidence == confidence
    else:
        found = errors(spring_email(promotion=promotion))
        assert [loc for loc, _ in found] == [("promotion", "confidence")], found


@pytest.mark.parametrize("promotion, field", [
    ({"metric": "unsubscribe_rate"}, "metric"),
    ({"min_decisions_per_arm": 0}, "min_decisions_per_arm"),
    ({"action": "email"}, "action"),
    ({"holdback": 0.6}, "holdback"),
])
def test_bad_promotion_rule_is_refused_at_its_field(promotion: dict[str, Any], field: str) -> None:
    found = errors(spring_email(promotion=promotion))
    assert [loc for loc, _ in found] == [("promotion", field)], found


# --- contact policy ---------------------------------------------------------------

@pytest.mark.parametrize("field", ["start", "end"])
@pytest.mark.parametrize("value", ["25:00", "8:00", "24:00", "08:60", "0800", "08:00:00", " 08:00"])
def test_quiet_hours_must_be_hh_mm(field: str, value: str) -> None:
    quiet = {"start": "21:00", "end": "08:00", field: value}
    assert_refused(spring_email(contact_policy={"quiet_hours": quiet}), ("contact_policy", "quiet_hours", field),
                   f"expected HH:MM (24h), got {value!r}")


@pytest.mark.parametrize("value", ["00:00", "23:59", "08:05"])
def test_quiet_hours_edges_are_accepted(value: str) -> None:
    spec = ExperimentSpec.model_validate(spring_email(contact_policy={"quiet_hours": {"start": value, "end": value}}))
    assert spec.contact_policy is not None and spec.contact_policy.quiet_hours is not None
    assert spec.contact_policy.quiet_hours.start == value


@pytest.mark.parametrize("cap, field", [({"count": 0, "per_seconds": 60}, "count"),
                                        ({"count": 1, "per_seconds": 0}, "per_seconds")])
def test_frequency_cap_must_be_positive(cap: dict[str, int], field: str) -> None:
    found = errors(spring_email(contact_policy={"max_per_subject": cap}))
    assert [loc for loc, _ in found] == [("contact_policy", "max_per_subject", field)], found


# --- attribution window ---------------------------------------------------------------

@pytest.mark.parametrize("seconds, ok", [(59, False), (60, True), (366 * 86400, True), (366 * 86400 + 1, False)])
def test_attribution_window_range(seconds: int, ok: bool) -> None:
    if ok:
        assert ExperimentSpec.model_validate(
            spring_email(attribution_window_seconds=seconds)).attribution_window_seconds == seconds
    else:
        found = errors(spring_email(attribution_window_seconds=seconds))
        assert [loc for loc, _ in found] == [("attribution_window_seconds",)], found


# --- no unknown fields anywhere -------------------------------------------------------

def _with_extra(path: tuple[Any, ...], allocation: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = spring_email()
    if allocation is not None:
        spec["allocation"] = copy.deepcopy(allocation)
    target: Any = spec
    for step in path:
        target = target[step]
    target["colour"] = "blue"
    return spec


@pytest.mark.parametrize("path, allocation, loc", [
    ((), None, ("colour",)),
    (("arms", 1), None, ("arms", 1, "colour")),
    (("allocation",), None, ("allocation", "fixed", "colour")),
    (("allocation",), LIN_UCB, ("allocation", "bandit", "colour")),
    (("allocation", "policy"), LIN_UCB, ("allocation", "bandit", "policy", "colour")),
    (("allocation", "features", 1), LIN_UCB, ("allocation", "bandit", "features", 1, "colour")),
    (("reward",), None, ("reward", "colour")),
    (("guardrails", 0), None, ("guardrails", 0, "colour")),
    (("promotion",), None, ("promotion", "colour")),
    (("contact_policy",), None, ("contact_policy", "colour")),
    (("contact_policy", "max_per_subject"), None, ("contact_policy", "max_per_subject", "colour")),
    (("contact_policy", "quiet_hours"), None, ("contact_policy", "quiet_hours", "colour")),
])
def test_unknown_fields_are_refused_everywhere(path: tuple[Any, ...], allocation: dict[str, Any] | None,
                                               loc: tuple[Any, ...]) -> None:
    assert_refused(_with_extra(path, allocation), loc, "Extra inputs are not permitted")


# --- derived values ---------------------------------------------------------------------

def test_fixed_weights_are_normalised_in_arm_order() -> None:
    spec = ExperimentSpec.model_validate(
        spring_email(allocation={"type": "fixed", "weights": {"womens": 7, "control": 1, "mens": 2}}))
    weights = spec.fixed_weights()
    assert list(weights) == ["control", "mens", "womens"]
    assert weights == pytest.approx({"control": 0.1, "mens": 0.2, "womens": 0.7}, abs=1e-15)
    assert math.isclose(sum(weights.values()), 1.0)


def test_fixed_weights_skip_disabled_arms_and_renormalise() -> None:
    arms = [{"key": "control", "is_control": True}, {"key": "mens", "enabled": False}, {"key": "womens"}]
    spec = ExperimentSpec.model_validate(
        spring_email(arms=arms, allocation={"type": "fixed", "weights": {"control": 1, "mens": 5, "womens": 3}}))
    assert spec.fixed_weights() == {"control": 0.25, "womens": 0.75}


def test_fixed_weights_are_equal_when_unset() -> None:
    spec = ExperimentSpec.model_validate(spring_email(allocation={"type": "fixed"}))
    assert spec.fixed_weights() == pytest.approx({"control": 1 / 3, "mens": 1 / 3, "womens": 1 / 3}, abs=1e-15)


def test_fixed_weights_of_a_bandit_are_equal_over_enabled_arms() -> None:
    arms = [{"key": "control", "is_control": True}, {"key": "mens"}, {"key": "womens", "enabled": False}]
    spec = ExperimentSpec.model_validate(spring_email(arms=arms, allocation=THOMPSON))
    assert spec.fixed_weights() == {"control": 0.5, "mens": 0.5}


def test_control_arm_is_the_flagged_arm_wherever_it_is() -> None:
    arms = [{"key": "mens"}, {"key": "womens"}, {"key": "no-mail", "is_control": True}]
    spec = ExperimentSpec.model_validate(spring_email(arms=arms, allocation={"type": "fixed"}))
    assert spec.control_arm == "no-mail"


def test_policy_params_lists_only_the_parameters_set() -> None:
    assert PolicySpec(name="lin_greedy", epsilon=0.2).params() == {"epsilon": 0.2}
    assert PolicySpec(name="lin_ucb", alpha=0.5, l2_lambda=2.0).params() == {"alpha": 0.5, "l2_lambda": 2.0}
    assert PolicySpec(name="ucb1").params() == {}
