"""Experiment lifecycle: which transitions exist and what may change in each state.

    draft --start--> running --pause--> paused --start--> running
    running|paused --conclude--> concluded

Arms, weights, allocation, reward and attribution window shape the data already
collected, so they are frozen once an experiment has run; labels and analysis
settings (promotion rule, guardrails, contact policy, metrics) are not.
"""

from __future__ import annotations

from typing import Literal

Status = Literal["draft", "running", "paused", "concluded"]
Action = Literal["start", "pause", "conclude"]

STATUSES: tuple[Status, ...] = ("draft", "running", "paused", "concluded")

_TRANSITIONS: dict[tuple[str, str], Status] = {
    ("draft", "start"): "running",
    ("paused", "start"): "running",
    ("running", "pause"): "paused",
    ("running", "conclude"): "concluded",
    ("paused", "conclude"): "concluded",
}

LABEL_FIELDS = frozenset({"name", "description"})
ANALYSIS_FIELDS = frozenset(
    {"promotion", "guardrails", "contact_policy", "metrics", "unsubscribe_value_share", "default_subject_value",
     "subject_value_field", "eligibility", "priority"}
)
DESIGN_FIELDS = frozenset(
    {"arms", "allocation", "reward", "attribution_window_seconds", "custom_events", "covariate"}
)

_MUTABLE: dict[str, frozenset[str]] = {
    "draft": LABEL_FIELDS | ANALYSIS_FIELDS | DESIGN_FIELDS,
    "running": LABEL_FIELDS | ANALYSIS_FIELDS,
    "paused": LABEL_FIELDS | ANALYSIS_FIELDS,
    "concluded": LABEL_FIELDS,
}


class TransitionError(ValueError):
    """A lifecycle action that the experiment's current state does not allow."""

    def __init__(self, status: str, action: str):
        allowed = allowed_actions(status)
        super().__init__(
            f"cannot {action} an experiment that is {status}; allowed from {status}: {', '.join(allowed) or 'none'}"
        )
        self.status = status
        self.action = action


def transition(status: str, action: str) -> Status:
    """Return the state after `action`, or raise TransitionError."""
    try:
        return _TRANSITIONS[(status, action)]
    except KeyError:
        raise TransitionError(status, action) from None


def allowed_actions(status: str) -> list[str]:
    return [action for (state, action) in _TRANSITIONS if state == status]


def mutable_fields(status: str) -> frozenset[str]:
    """Spec fields a PATCH may change while the experiment is in `status`."""
    return _MUTABLE[status]


def frozen_fields_in(status: str, changed: set[str]) -> list[str]:
    """The changed fields that may not change in `status`, sorted."""
    return sorted(changed - _MUTABLE[status])


def bandit_arm_change_problem(before: list[dict], after: list[dict]) -> str | None:
    """A running bandit may gain arms (they start cold) and enable/disable or re-label arms,
    but not lose, reorder or re-key arms or change its control: logged decisions name them.
    Returns what is wrong, or None when the change is allowed."""
    old_keys = [arm["key"] for arm in before]
    new_keys = [arm["key"] for arm in after]
    if new_keys[: len(old_keys)] != old_keys:
        return "a running bandit keeps its arms in order; new arms may only be appended"
    old_control = next(arm["key"] for arm in before if arm.get("is_control"))
    new_control = next((arm["key"] for arm in after if arm.get("is_control")), None)
    if new_control != old_control:
        return "the control arm cannot change once the experiment has run"
    return None
