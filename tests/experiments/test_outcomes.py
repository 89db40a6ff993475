"""Outcome events: parsing the DESIGN.md shapes and every refusal, and attribution at the window edges."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from experiments.outcomes import (
    CLOCK_SKEW,
    Attribution,
    DecisionRef,
    IncomingEvent,
    attribute_to_decision,
    attribute_to_subject,
    parse_event,
    parse_timestamp,
)

DECIDED = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)
WINDOW = timedelta(days=14)
MICROSECOND = timedelta(microseconds=1)


def event(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"event_id": "e-1", "type": "conversion", "assignment_id": "a-1", "value": 29.90,
                           "occurred_at": "2026-11-24T10:00:00Z"}
    raw.update(changes)
    return {k: v for k, v in raw.items() if v is not None}


def refused(raw: Any) -> str:
    with pytest.raises(ValueError) as info:
        parse_event(raw)
    return str(info.value)


# --- parsing ----------------------------------------------------------------------

def test_design_assignment_event_parses() -> None:
    raw = {"event_id": "e-1", "type": "conversion", "assignment_id": "a-7f3c", "value": 29.90,
           "occurred_at": "2026-11-24T10:00:00Z"}
    assert parse_event(raw) == IncomingEvent(
        event_id="e-1", type="conversion", occurred_at=datetime(2026, 11, 24, 10, 0, tzinfo=UTC),
        assignment_id="a-7f3c", value=29.90)


def test_design_subject_event_parses_with_its_offset_converted_to_utc() -> None:
    raw = {"event_id": "e-2", "type": "open", "experiment": "spring-email", "subject_id": "c-123",
           "occurred_at": "2026-11-24T09:00:00+01:00"}
    parsed = parse_event(raw)
    assert parsed == IncomingEvent(event_id="e-2", type="open", occurred_at=datetime(2026, 11, 24, 8, 0, tzinfo=UTC),
                                   experiment="spring-email", subject_id="c-123")
    assert parsed.occurred_at.utcoffset() == timedelta(0)
    assert parsed.assignment_id is None and parsed.value is None


def test_integer_value_becomes_a_float_and_channel_is_kept() -> None:
    parsed = parse_event(event(value=30, channel="email"))
    assert parsed.value == 30.0 and type(parsed.value) is float
    assert parsed.channel == "email"


@pytest.mark.parametrize("raw, reason", [
    (event(event_id=None), "event_id is required"),
    (event(type=None), "type is required"),
    (event(event_id=""), "event_id must be a non-empty string"),
    (event(event_id="   "), "event_id must be a non-empty string"),
    (event(event_id=17), "event_id must be a non-empty string"),
    (event(event_id="e" * 201), "event_id is longer than 200 characters"),
    (event(type="t" * 65), "type is longer than 64 characters"),
    (event(occurred_at="2026-11-24T10:00:00"), "occurred_at needs a time zone offset (e.g. Z or +01:00)"),
    (event(occurred_at="yesterday"), "occurred_at is not ISO 8601: 'yesterday'"),
    (event(occurred_at="2026-13-01T00:00:00Z"), "occurred_at is not ISO 8601: '2026-13-01T00:00:00Z'"),
    (event(occurred_at=1764000000), "occurred_at must be an ISO 8601 string with a time zone"),
    (event(occurred_at=None), "occurred_at must be an ISO 8601 string with a time zone"),
    (event(value=float("nan")), "value must be a finite number"),
    (event(value=float("inf")), "value must be a finite number"),
    (event(value=True), "value must be a finite number"),
    (event(value="29.90"), "value must be a finite number"),
    (event(revenue=29.90), "unknown field 'revenue'"),
    (event(assignment_id=None), "an event needs assignment_id, or experiment and subject_id (an unsubscribe may instead name subject_id and channel)"),
    (event(assignment_id=None, experiment="spring-email"), "an event needs assignment_id, or experiment and subject_id (an unsubscribe may instead name subject_id and channel)"),
    (event(assignment_id=None, subject_id="c-123"), "an event needs assignment_id, or experiment and subject_id (an unsubscribe may instead name subject_id and channel)"),
    (["not", "an", "object"], "an event must be a JSON object"),
])
def test_bad_event_is_refused_with_its_reason(raw: Any, reason: str) -> None:
    assert refused(raw) == reason


def test_first_unknown_field_is_named_in_sorted_order() -> None:
    assert refused(event(zeta=1, alpha=2)) == "unknown field 'alpha'"


def test_value_too_large_for_a_float_is_refused() -> None:
    assert refused(event(value=10**400)) == "value must be a finite number"


@pytest.mark.parametrize("text, expected", [
    ("2026-11-24T10:00:00Z", datetime(2026, 11, 24, 10, 0, tzinfo=UTC)),
    ("2026-11-24T10:00:00z", datetime(2026, 11, 24, 10, 0, tzinfo=UTC)),
    ("2026-11-24T10:00:00.250+00:00", datetime(2026, 11, 24, 10, 0, 0, 250_000, tzinfo=UTC)),
    ("2026-11-24T01:00:00-05:00", datetime(2026, 11, 24, 6, 0, tzinfo=UTC)),
    ("2026-11-24 10:00:00+01:00", datetime(2026, 11, 24, 9, 0, tzinfo=UTC)),
    (" 2026-11-24T10:00:00Z ", datetime(2026, 11, 24, 10, 0, tzinfo=UTC)),
])
def test_parse_timestamp_converts_to_utc(text: str, expected: datetime) -> None:
    parsed = parse_timestamp(text)
    assert parsed == expected and parsed.tzinfo is UTC


def test_parse_timestamp_names_its_field() -> None:
    with pytest.raises(ValueError, match="^decided_at needs a time zone offset"):
        parse_timestamp("2026-11-24", "decided_at")


# --- attribution to a named decision -------------------------------------------------

DECISION = DecisionRef("a-1", DECIDED)


@pytest.mark.parametrize("occurred, expected", [
    (DECIDED, Attribution("a-1", None)),
    (DECIDED + WINDOW, Attribution("a-1", None)),
    (DECIDED + WINDOW + MICROSECOND, Attribution(None, "outside_attribution_window")),
    (DECIDED - CLOCK_SKEW, Attribution("a-1", None)),
    (DECIDED - CLOCK_SKEW - MICROSECOND, Attribution(None, "before_decision")),
    (DECIDED - timedelta(days=1), Attribution(None, "before_decision")),
])
def test_attribute_to_decision_edges(occurred: datetime, expected: Attribution) -> None:
    assert attribute_to_decision(DECISION, occurred, WINDOW) == expected


def test_clock_skew_is_five_minutes() -> None:
    assert CLOCK_SKEW == timedelta(minutes=5)


def test_unknown_decision_is_unattributed() -> None:
    assert attribute_to_decision(None, DECIDED, WINDOW) == Attribution(None, "unknown_assignment")


def test_attribution_compares_instants_not_wall_clocks() -> None:
    occurred = parse_timestamp("2026-12-08T10:30:00+01:00")  # exactly DECIDED + 14 days, in UTC
    assert attribute_to_decision(DECISION, occurred, WINDOW) == Attribution("a-1", None)
    later = parse_timestamp("2026-12-08T10:30:00.000001+01:00")
    assert attribute_to_decision(DECISION, later, WINDOW).reason == "outside_attribution_window"


# --- attribution by experiment + subject ----------------------------------------------

def test_no_decisions_for_the_subject() -> None:
    assert attribute_to_subject([], DECIDED, WINDOW) == Attribution(None, "no_decision_for_subject")


@pytest.mark.parametrize("occurred, expected", [
    (DECIDED + WINDOW, Attribution("a-1", None)),
    (DECIDED + WINDOW + MICROSECOND, Attribution(None, "outside_attribution_window")),
    (DECIDED - CLOCK_SKEW, Attribution("a-1", None)),
    (DECIDED - CLOCK_SKEW - MICROSECOND, Attribution(None, "before_decision")),
])
def test_attribute_to_subject_edges(occurred: datetime, expected: Attribution) -> None:
    assert attribute_to_subject([DECISION], occurred, WINDOW) == expected


def test_latest_decision_before_the_event_wins() -> None:
    decisions = [DecisionRef("a-1", DECIDED), DecisionRef("a-2", DECIDED + timedelta(days=1)),
                 DecisionRef("a-3", DECIDED + timedelta(days=2))]
    assert attribute_to_subject(decisions, DECIDED + timedelta(days=3), WINDOW) == Attribution("a-3", None)


def test_event_between_two_decisions_goes_to_the_earlier_one() -> None:
    decisions = [DecisionRef("a-1", DECIDED), DecisionRef("a-2", DECIDED + timedelta(days=2))]
    assert attribute_to_subject(decisions, DECIDED + timedelta(days=1), WINDOW) == Attribution("a-1", None)


def test_event_after_the_latest_window_is_not_given_to_an_older_decision() -> None:
    decisions = [DecisionRef("a-1", DECIDED), DecisionRef("a-2", DECIDED + timedelta(days=1))]
    occurred = DECIDED + timedelta(days=1) + WINDOW + MICROSECOND
    assert attribute_to_subject(decisions, occurred, WINDOW) == Attribution(None, "outside_attribution_window")


def test_event_before_every_decision() -> None:
    decisions = [DecisionRef("a-1", DECIDED), DecisionRef("a-2", DECIDED + timedelta(days=1))]
    assert attribute_to_subject(decisions, DECIDED - timedelta(hours=1), WINDOW) == Attribution(
        None, "before_decision")


def test_order_of_decisions_does_not_matter() -> None:
    decisions = [DecisionRef(f"a-{i}", DECIDED + timedelta(hours=5 * i)) for i in range(6)]
    rng = random.Random(20261124)
    probes = [DECIDED + timedelta(hours=h, minutes=m) for h in range(0, 40, 3) for m in (0, 17)]
    expected = [attribute_to_subject(decisions, t, WINDOW) for t in probes]
    assert expected[1] == Attribution("a-0", None) and expected[-1] == Attribution("a-5", None)
    for _ in range(20):
        shuffled = decisions[:]
        rng.shuffle(shuffled)
        assert [attribute_to_subject(shuffled, t, WINDOW) for t in probes] == expected


def test_order_of_event_arrival_does_not_matter() -> None:
    decisions = (DecisionRef("a-1", DECIDED), DecisionRef("a-2", DECIDED + timedelta(days=3)))
    events = [DECIDED + timedelta(days=d) for d in (5, 1, 20, 2)]
    answers = {t: attribute_to_subject(decisions, t, WINDOW) for t in events}
    assert [answers[t].assignment_id for t in events] == ["a-2", "a-1", None, "a-1"]
    for order in itertools.permutations(events):
        assert {t: attribute_to_subject(decisions, t, WINDOW) for t in order} == answers


def test_simultaneous_decisions_resolve_the_same_way_every_time() -> None:
    decisions = [DecisionRef("a-2", DECIDED), DecisionRef("a-1", DECIDED)]
    assert attribute_to_subject(decisions, DECIDED, WINDOW) == Attribution("a-2", None)
    assert attribute_to_subject(decisions[::-1], DECIDED, WINDOW) == Attribution("a-2", None)


# --- a batch's shared timestamp cache ---------------------------------------------

@pytest.mark.parametrize("raw", [
    event(),
    event(occurred_at="2026-11-24T11:00:00+01:00"),
    event(occurred_at="2026-11-24T10:00:00"),
    event(occurred_at="yesterday"),
    event(occurred_at=1732442400),
    event(type=" "),
    event(type="x" * 65),
    event(channel="e\x00mail"),
    event(subject_id=""),
    event(experiment=7),
    event(assignment_id="a" * 33),
])
def test_a_timestamp_cache_changes_no_answer(raw: dict[str, Any]) -> None:
    def answer(timestamps: dict[str, datetime] | None) -> Any:
        try:
            return parse_event(raw, timestamps)
        except ValueError as exc:
            return str(exc)

    cache: dict[str, datetime] = {}
    assert answer(None) == answer(cache) == answer(cache)  # the second use of the cache reads it
    assert all(isinstance(v, datetime) for v in cache.values())  # refused texts are never remembered


def test_events_sharing_a_timestamp_text_share_one_parse() -> None:
    cache: dict[str, datetime] = {}
    first, second = parse_event(event(event_id="e-1"), cache), parse_event(event(event_id="e-2"), cache)
    assert first.occurred_at is second.occurred_at and list(cache) == ["2026-11-24T10:00:00Z"]


def test_text_fields_name_the_rule_they_break() -> None:
    assert refused(event(type="   ")) == "type must be a non-empty string"
    assert refused(event(type=5)) == "type must be a non-empty string"
    assert refused(event(type="x" * 65)) == "type is longer than 64 characters"
    assert refused(event(type="cl\x00ick")) == "type may not contain NUL (U+0000) characters"
    assert refused(event(channel="")) == "channel must be a non-empty string"
    assert refused(event(subject_id="s\x00")) == "subject_id may not contain NUL (U+0000) characters"
    assert refused(event(assignment_id="a" * 33)) == "assignment_id is longer than 32 characters"
