"""Outcome events: parse one raw event, and attribute it to the decision it belongs to.

Counting: a rate counts a decision once however many events of that type it had
(unique per decision: three opens are one opened decision); sums count every
event (two conversions of 10 and 20 are 30 revenue). Revenue is the sum of the
values of conversion events; values on other types are stored but not summed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .numbers import finite_float
from .validity import check_timestamp, text_problem

# Channel systems' clocks drift; an event stamped this much before its decision still belongs to it.
CLOCK_SKEW = timedelta(minutes=5)
MAX_ID_LENGTH = 200


@dataclass(frozen=True, slots=True)
class IncomingEvent:
    event_id: str
    type: str
    occurred_at: datetime
    assignment_id: str | None = None
    experiment: str | None = None
    subject_id: str | None = None
    value: float | None = None
    channel: str | None = None


@dataclass(frozen=True, slots=True)
class DecisionRef:
    assignment_id: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Attribution:
    assignment_id: str | None
    reason: str | None  # why it is unattributed, when it is


def _text(raw: Mapping[str, Any], name: str, limit: int = MAX_ID_LENGTH, required: bool = False) -> str | None:
    value = raw.get(name)
    if value is None:
        if required:
            raise ValueError(f"{name} is required")
        return None
    # The common case in one test; any failure falls through to the checks that name the rule.
    if isinstance(value, str) and 0 < len(value) <= limit and (value.isascii() and "\x00" not in value
                                                                 or text_problem(value) is None) \
            and not value.isspace():
        return value
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string")
    if len(value) > limit:
        raise ValueError(f"{name} is longer than {limit} characters")
    raise ValueError(f"{name} {text_problem(value)}")


def parse_timestamp(value: Any, name: str = "occurred_at") -> datetime:
    """ISO 8601 with an offset or Z; a time without a zone is ambiguous and refused."""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be an ISO 8601 string with a time zone")
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{name} is not ISO 8601: {value[:40]!r}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{name} needs a time zone offset (e.g. Z or +01:00)")
    return check_timestamp(parsed, name)


_FIELDS = frozenset({"event_id", "type", "assignment_id", "experiment", "subject_id", "value", "occurred_at",
                     "channel"})


def parse_event(raw: Any, timestamps: dict[str, datetime] | None = None) -> IncomingEvent:
    """One event from its JSON form; ValueError with the reason when it is not acceptable.

    `timestamps` remembers parsed occurred_at texts across the events of one batch, where
    many events usually share a timestamp: each distinct text is parsed once.
    """
    if raw.__class__ is not dict and not isinstance(raw, Mapping):
        raise ValueError("an event must be a JSON object")
    if not _FIELDS.issuperset(raw):
        unknown = sorted(set(raw) - _FIELDS)
        raise ValueError(f"unknown field {unknown[0]!r}")
    # Checked in this order, so the reason given is the first rule broken.
    event_id = _text(raw, "event_id", required=True)
    event_type = _text(raw, "type", limit=64, required=True)
    stamp = raw.get("occurred_at")
    occurred_at = timestamps.get(stamp) if timestamps is not None and isinstance(stamp, str) else None
    if occurred_at is None:
        occurred_at = parse_timestamp(stamp)
        if timestamps is not None:
            timestamps[stamp] = occurred_at
    assignment_id = _text(raw, "assignment_id", limit=32)  # ids are 32 characters
    experiment = _text(raw, "experiment", limit=64)
    subject_id = _text(raw, "subject_id")
    channel = _text(raw, "channel", limit=64)
    value = raw.get("value")
    if value is not None:
        value = finite_float(value)
        if value is None:
            raise ValueError("value must be a finite number")
    global_unsubscribe = event_type == "unsubscribe" and subject_id is not None and channel is not None
    if assignment_id is None and (experiment is None or subject_id is None) and not global_unsubscribe:
        raise ValueError("an event needs assignment_id, or experiment and subject_id "
                         "(an unsubscribe may instead name subject_id and channel)")
    assert event_id is not None and event_type is not None
    return IncomingEvent(event_id, event_type, occurred_at, assignment_id, experiment, subject_id, value, channel)


def window_reason(decided_at: datetime, occurred_at: datetime, window: timedelta) -> str | None:
    """Why an event at `occurred_at` falls outside the window of a decision made at `decided_at`; None inside it."""
    if occurred_at < decided_at - CLOCK_SKEW:
        return "before_decision"
    if occurred_at > decided_at + window:
        return "outside_attribution_window"
    return None


def attribute_to_decision(decision: DecisionRef | None, occurred_at: datetime, window: timedelta) -> Attribution:
    """An event that names its decision belongs to it only inside the attribution window."""
    if decision is None:
        return Attribution(None, "unknown_assignment")
    reason = window_reason(decision.created_at, occurred_at, window)
    return Attribution(None, reason) if reason else Attribution(decision.assignment_id, None)


def attribute_to_subject(decisions: Sequence[DecisionRef], occurred_at: datetime, window: timedelta) -> Attribution:
    """The subject's latest decision made before the event whose window still covers it."""
    if not decisions:
        return Attribution(None, "no_decision_for_subject")
    before = [d for d in decisions if d.created_at - CLOCK_SKEW <= occurred_at]
    if not before:
        return Attribution(None, "before_decision")
    latest = max(before, key=lambda d: (d.created_at, d.assignment_id))
    if occurred_at > latest.created_at + window:
        return Attribution(None, "outside_attribution_window")
    return Attribution(latest.assignment_id, None)
