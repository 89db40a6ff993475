"""Experiment lifecycle: the whole transition table against the documented diagram, and what may change when.

    draft --start--> running --pause--> paused --start--> running
    running|paused --conclude--> concluded
"""

from __future__ import annotations

import pytest

from experiments.lifecycle import (
    ANALYSIS_FIELDS,
    DESIGN_FIELDS,
    LABEL_FIELDS,
    STATUSES,
    TransitionError,
    allowed_actions,
    frozen_fields_in,
    mutable_fields,
    transition,
)
from experiments.spec import ExperimentSpec

ACTIONS = ("start", "pause", "conclude")

# The diagram, written out by hand: (state, action) -> next state, or None when refused.
DIAGRAM: dict[tuple[str, str], str | None] = {
    ("draft", "start"): "running",
    ("draft", "pause"): None,
    ("draft", "conclude"): None,
    ("running", "start"): None,
    ("running", "pause"): "paused",
    ("running", "conclude"): "concluded",
    ("paused", "start"): "running",
    ("paused", "pause"): None,
    ("paused", "conclude"): "concluded",
    ("concluded", "start"): None,
    ("concluded", "pause"): None,
    ("concluded", "conclude"): None,
}
ALLOWED = {"draft": "start", "running": "pause, conclude", "paused": "start, conclude", "concluded": "none"}


def test_states_are_the_documented_four() -> None:
    assert STATUSES == ("draft", "running", "paused", "concluded")


@pytest.mark.parametrize("status, action", list(DIAGRAM))
def test_transition_matches_the_diagram(status: str, action: str) -> None:
    expected = DIAGRAM[(status, action)]
    if expected is not None:
        assert transition(status, action) == expected
        return
    with pytest.raises(TransitionError) as info:
        transition(status, action)
    assert str(info.value) == (
        f"cannot {action} an experiment that is {status}; allowed from {status}: {ALLOWED[status]}")
    assert (info.value.status, info.value.action) == (status, action)


def test_transition_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="cannot start an experiment that is concluded"):
        transition("concluded", "start")


@pytest.mark.parametrize("status", STATUSES)
def test_allowed_actions_are_those_the_diagram_allows(status: str) -> None:
    expected = [action for action in ACTIONS if DIAGRAM[(status, action)] is not None]
    assert sorted(allowed_actions(status)) == sorted(expected)


@pytest.mark.parametrize("status, action", [("archived", "start"), ("draft", "resume"), ("running", "stop")])
def test_unknown_state_or_action_is_refused(status: str, action: str) -> None:
    with pytest.raises(TransitionError, match=f"cannot {action} an experiment that is {status}"):
        transition(status, action)


def test_concluded_is_terminal_and_names_no_allowed_action() -> None:
    assert allowed_actions("concluded") == []
    with pytest.raises(TransitionError, match="allowed from concluded: none$"):
        transition("concluded", "pause")


def test_a_full_life() -> None:
    status = "draft"
    for action in ("start", "pause", "start", "pause", "conclude"):
        status = transition(status, action)
    assert status == "concluded"


# --- what may change in each state ------------------------------------------------

def test_every_spec_field_but_the_key_is_in_exactly_one_group() -> None:
    groups = (LABEL_FIELDS, ANALYSIS_FIELDS, DESIGN_FIELDS)
    assert LABEL_FIELDS | ANALYSIS_FIELDS | DESIGN_FIELDS == set(ExperimentSpec.model_fields) - {"key"}
    assert sum(len(g) for g in groups) == len(set().union(*groups))


def test_the_key_never_changes() -> None:
    for status in STATUSES:
        assert "key" not in mutable_fields(status)


def test_everything_may_change_in_a_draft() -> None:
    assert mutable_fields("draft") == set(ExperimentSpec.model_fields) - {"key"}
    assert frozen_fields_in("draft", {"arms", "allocation", "reward", "name", "promotion"}) == []


@pytest.mark.parametrize("status", ["running", "paused", "concluded"])
@pytest.mark.parametrize("field", ["arms", "allocation", "reward", "attribution_window_seconds", "custom_events",
                                   "covariate"])
def test_design_is_frozen_once_the_experiment_has_run(status: str, field: str) -> None:
    assert field not in mutable_fields(status)
    assert frozen_fields_in(status, {field, "name"}) == [field]


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("field", ["name", "description"])
def test_labels_are_never_frozen(status: str, field: str) -> None:
    assert field in mutable_fields(status)
    assert frozen_fields_in(status, {field}) == []


@pytest.mark.parametrize("status", ["running", "paused"])
def test_analysis_settings_may_change_while_running_or_paused(status: str) -> None:
    assert mutable_fields(status) == {"name", "description", "promotion", "guardrails", "contact_policy", "metrics",
                                      "unsubscribe_value_share", "default_subject_value", "subject_value_field",
                                      "eligibility", "priority"}


def test_nothing_but_labels_after_conclusion() -> None:
    assert mutable_fields("concluded") == {"name", "description"}
    assert frozen_fields_in("concluded", {"name", "promotion", "guardrails", "arms"}) == [
        "arms", "guardrails", "promotion"]


def test_frozen_fields_are_sorted_and_include_unknown_names() -> None:
    assert frozen_fields_in("running", {"weights", "reward", "arms", "name"}) == ["arms", "reward", "weights"]
    assert frozen_fields_in("running", set()) == []
