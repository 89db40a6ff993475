"""Contact policy rules: each rule alone, window edges, combined policies, time zones, precedence."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import experiments.contact as contact_module
from experiments.contact import (
    ContactHistory,
    ContactVerdict,
    check_contact,
    longest_cap_window,
    parse_timezone,
)
from experiments.spec import ContactPolicy, FrequencyCap, QuietHours

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)  # 13:00 in Berlin, 07:00 in New York
ARMS = ("a", "b", "c")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def cap(count: int, per_seconds: int) -> ContactPolicy:
    return ContactPolicy(max_per_subject=FrequencyCap(count=count, per_seconds=per_seconds))


def cooldown(seconds: int) -> ContactPolicy:
    return ContactPolicy(cooldown_after_conversion_seconds=seconds)


def quiet(start: str, end: str) -> ContactPolicy:
    return ContactPolicy(quiet_hours=QuietHours(start=start, end=end))


def check(
    policies: Sequence[ContactPolicy | None],
    history: ContactHistory = ContactHistory(),
    now: datetime = NOW,
    channel: str | None = "email",
    arms: Sequence[str] = ARMS,
) -> ContactVerdict:
    return check_contact(policies, channel, history, now, arms)


def assert_allowed(verdict: ContactVerdict) -> None:
    assert (verdict.allowed, verdict.reason, verdict.retry_after) == (True, None, None), verdict.message


# --- no rules ---------------------------------------------------------------


def test_no_policies_allow_contact() -> None:
    verdict = check([], ContactHistory(recent_decisions=[NOW - timedelta(seconds=1)] * 50))
    assert_allowed(verdict)
    assert verdict.excluded_arms == frozenset()
    assert verdict.message == "contact allowed"


def test_missing_policies_are_ignored() -> None:
    assert_allowed(check([None, None]))


# --- unsubscribed -----------------------------------------------------------


def test_unsubscribed_channel_is_refused_for_good_even_without_policies() -> None:
    verdict = check([], ContactHistory(unsubscribed_channels=frozenset({"email"})))
    assert (verdict.allowed, verdict.reason, verdict.retry_after) == (False, "unsubscribed", None)
    assert "'email'" in verdict.message


def test_unsubscribe_applies_only_to_its_channel() -> None:
    history = ContactHistory(unsubscribed_channels=frozenset({"sms"}))
    assert_allowed(check([], history, channel="email"))
    assert check([], history, channel="sms").reason == "unsubscribed"
    assert_allowed(check([], history, channel=None))


# --- cooldown after conversion ----------------------------------------------


def test_cooldown_refuses_until_conversion_plus_cooldown() -> None:
    history = ContactHistory(last_conversion_at=NOW - timedelta(hours=1))
    verdict = check([cooldown(86400)], history)
    assert (verdict.allowed, verdict.reason) == (False, "cooldown_after_conversion")
    assert verdict.retry_after == utc(2026, 1, 16, 11, 0)
    assert "86400 s" in verdict.message and "2026-01-15T11:00:00Z" in verdict.message


def test_cooldown_ends_exactly_at_its_end() -> None:
    history = ContactHistory(last_conversion_at=NOW - timedelta(seconds=86400))
    assert_allowed(check([cooldown(86400)], history))
    history = ContactHistory(last_conversion_at=NOW - timedelta(seconds=86399))
    verdict = check([cooldown(86400)], history)
    assert verdict.reason == "cooldown_after_conversion"
    assert verdict.retry_after == NOW + timedelta(seconds=1)


def test_cooldown_needs_a_conversion_and_a_positive_length() -> None:
    assert_allowed(check([cooldown(86400)], ContactHistory()))
    assert_allowed(check([cooldown(0)], ContactHistory(last_conversion_at=NOW)))


def test_cooldown_retry_after_is_utc_whatever_the_input_offset() -> None:
    converted = datetime(2026, 1, 15, 12, 30, tzinfo=BERLIN)  # 11:30 UTC
    verdict = check([cooldown(3600)], ContactHistory(last_conversion_at=converted))
    assert verdict.retry_after == utc(2026, 1, 15, 12, 30)
    assert verdict.retry_after is not None and verdict.retry_after.utcoffset() == timedelta(0)


# --- frequency caps ---------------------------------------------------------


def test_cap_refuses_until_the_oldest_counted_decision_leaves_the_window() -> None:
    history = ContactHistory(recent_decisions=[NOW - timedelta(minutes=10), NOW - timedelta(minutes=40)])
    verdict = check([cap(2, 3600)], history)
    assert (verdict.allowed, verdict.reason) == (False, "frequency_cap")
    assert verdict.retry_after == NOW + timedelta(minutes=20)
    assert "2 per 3600 s" in verdict.message and "2 decisions" in verdict.message


def test_cap_allows_below_the_count() -> None:
    history = ContactHistory(recent_decisions=[NOW - timedelta(minutes=10)])
    assert_allowed(check([cap(2, 3600)], history))


def test_decision_exactly_at_the_window_edge_is_not_counted() -> None:
    edge = NOW - timedelta(seconds=3600)
    history = ContactHistory(recent_decisions=[NOW - timedelta(minutes=1), edge])
    assert_allowed(check([cap(2, 3600)], history))


def test_decision_just_inside_the_window_edge_is_counted() -> None:
    inside = NOW - timedelta(seconds=3599)
    history = ContactHistory(recent_decisions=[NOW - timedelta(minutes=1), inside])
    verdict = check([cap(2, 3600)], history)
    assert verdict.reason == "frequency_cap"
    assert verdict.retry_after == NOW + timedelta(seconds=1)


def test_request_at_retry_after_is_allowed() -> None:
    history = ContactHistory(recent_decisions=[NOW - timedelta(minutes=10), NOW - timedelta(minutes=40)])
    verdict = check([cap(2, 3600)], history)
    assert verdict.retry_after is not None
    assert_allowed(check([cap(2, 3600)], history, now=verdict.retry_after))
    assert not check([cap(2, 3600)], history, now=verdict.retry_after - timedelta(microseconds=1)).allowed


def test_over_the_cap_waits_until_enough_decisions_leave() -> None:
    # 4 decisions counted against a cap of 2: the 3 oldest must leave, so the third oldest decides.
    minutes = [5, 15, 25, 35]
    history = ContactHistory(recent_decisions=[NOW - timedelta(minutes=m) for m in minutes])
    verdict = check([cap(2, 3600)], history)
    assert verdict.retry_after == NOW - timedelta(minutes=15) + timedelta(hours=1)


def test_cap_ignores_order_and_decisions_outside_the_window() -> None:
    decisions = [NOW - timedelta(hours=5), NOW - timedelta(minutes=40), NOW - timedelta(minutes=10)]
    verdict = check([cap(2, 3600)], ContactHistory(recent_decisions=decisions))
    assert verdict.retry_after == NOW + timedelta(minutes=20)


# --- combining policies: the strictest wins ---------------------------------


def test_every_cap_is_evaluated_and_a_longer_window_can_bind() -> None:
    hourly, daily = cap(3, 3600), cap(5, 86400)
    # One decision in the last hour, five in the last day: the hourly cap is fine, the daily one is not.
    hours = [0.5, 3, 6, 9, 12]
    history = ContactHistory(recent_decisions=[NOW - timedelta(hours=h) for h in hours])
    verdict = check([hourly, daily], history)
    assert verdict.reason == "frequency_cap"
    assert verdict.retry_after == NOW - timedelta(hours=12) + timedelta(days=1)
    assert "5 per 86400 s" in verdict.message
    assert_allowed(check([hourly], history))


def test_when_several_caps_refuse_the_latest_release_counts() -> None:
    hours = [0.1, 0.2, 0.3, 20]
    history = ContactHistory(recent_decisions=[NOW - timedelta(hours=h) for h in hours])
    # Hourly cap frees at 12:54, daily cap (4 per day) frees only when the 20 h old decision leaves.
    verdict = check([cap(3, 3600), cap(4, 86400)], history)
    assert verdict.retry_after == NOW + timedelta(hours=4)
    verdict = check([cap(3, 3600)], history)
    assert verdict.retry_after == NOW + timedelta(minutes=42)


def test_longest_cooldown_applies() -> None:
    history = ContactHistory(last_conversion_at=NOW - timedelta(hours=2))
    assert_allowed(check([cooldown(3600)], history))
    verdict = check([cooldown(3600), None, cooldown(86400)], history)
    assert verdict.reason == "cooldown_after_conversion"
    assert verdict.retry_after == NOW + timedelta(hours=22)


def test_quiet_hours_of_every_policy_apply() -> None:
    policies = [quiet("22:00", "06:00"), quiet("12:00", "13:00")]
    verdict = check(policies, now=utc(2026, 1, 15, 12, 30))
    assert verdict.reason == "quiet_hours"
    assert verdict.retry_after == utc(2026, 1, 15, 13, 0)
    verdict = check(policies, now=utc(2026, 1, 15, 23, 0))
    assert verdict.retry_after == utc(2026, 1, 16, 6, 0)


def test_converted_arms_are_excluded_if_any_policy_asks() -> None:
    history = ContactHistory(converted_arms=frozenset({"a"}))
    verdict = check([ContactPolicy(), ContactPolicy(exclude_converted_arms=True)], history)
    assert verdict.allowed and verdict.excluded_arms == frozenset({"a"})


def test_longest_cap_window() -> None:
    assert longest_cap_window([]) is None
    assert longest_cap_window([None, ContactPolicy(), cooldown(999999)]) is None
    assert longest_cap_window([cap(3, 3600), None, cap(10, 7 * 86400), cap(1, 60)]) == 7 * 86400


# --- quiet hours ------------------------------------------------------------


def test_quiet_hours_without_a_time_zone_are_read_in_utc() -> None:
    verdict = check([quiet("12:00", "14:00")], now=utc(2026, 1, 15, 13, 0))
    assert (verdict.allowed, verdict.reason) == (False, "quiet_hours")
    assert verdict.retry_after == utc(2026, 1, 15, 14, 0)
    assert "UTC" in verdict.message


@pytest.mark.parametrize(
    ("now", "quiet_now"),
    [
        (utc(2026, 1, 15, 11, 59, 59), False),
        (utc(2026, 1, 15, 12, 0), True),  # start is inclusive
        (utc(2026, 1, 15, 13, 59, 59), True),
        (utc(2026, 1, 15, 14, 0), False),  # end is exclusive
    ],
)
def test_quiet_hours_edges(now: datetime, quiet_now: bool) -> None:
    verdict = check([quiet("12:00", "14:00")], now=now)
    assert verdict.allowed is not quiet_now


@pytest.mark.parametrize(
    ("now", "retry_after"),
    [
        (utc(2026, 1, 15, 20, 0), utc(2026, 1, 16, 7, 0)),  # 21:00 local, the start
        (utc(2026, 1, 15, 21, 30), utc(2026, 1, 16, 7, 0)),  # 22:30 local, before midnight
        (utc(2026, 1, 15, 23, 30), utc(2026, 1, 16, 7, 0)),  # 00:30 local, after midnight
        (utc(2026, 1, 16, 6, 59), utc(2026, 1, 16, 7, 0)),  # 07:59 local
        (utc(2026, 1, 16, 7, 0), None),  # 08:00 local, the end
        (utc(2026, 1, 15, 19, 59), None),  # 20:59 local
        (utc(2026, 1, 15, 12, 0), None),  # 13:00 local
    ],
)
def test_quiet_hours_wrapping_midnight_in_local_time(now: datetime, retry_after: datetime | None) -> None:
    verdict = check([quiet("21:00", "08:00")], ContactHistory(timezone="Europe/Berlin"), now=now)
    assert verdict.retry_after == retry_after
    assert verdict.allowed is (retry_after is None)
    if retry_after is not None:
        assert verdict.reason == "quiet_hours"
        assert "Europe/Berlin" in verdict.message and "21:00-08:00" in verdict.message


def test_quiet_hours_follow_the_subject_time_zone() -> None:
    # 12:00 UTC is 13:00 in Berlin (not quiet) but 07:00 in New York (quiet until 08:00 EST = 13:00 UTC).
    policies = [quiet("21:00", "08:00")]
    assert_allowed(check(policies, ContactHistory(timezone="Europe/Berlin")))
    verdict = check(policies, ContactHistory(timezone="America/New_York"))
    assert verdict.retry_after == utc(2026, 1, 15, 13, 0)


@pytest.mark.parametrize(
    ("zone", "now", "retry_after", "local_offset_hours"),
    [
        # Berlin springs forward on 2026-03-29 at 01:00 UTC (02:00 CET -> 03:00 CEST).
        (BERLIN, utc(2026, 3, 28, 22, 0), utc(2026, 3, 29, 6, 0), 2),  # from 23:00 CET
        (BERLIN, utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 6, 0), 2),  # from 01:30 CET
        (BERLIN, utc(2026, 3, 29, 1, 30), utc(2026, 3, 29, 6, 0), 2),  # from 03:30 CEST
        # Berlin falls back on 2026-10-25 at 01:00 UTC (03:00 CEST -> 02:00 CET).
        (BERLIN, utc(2026, 10, 24, 20, 0), utc(2026, 10, 25, 7, 0), 1),  # from 22:00 CEST
        # New York falls back on 2026-11-01 at 06:00 UTC (02:00 EDT -> 01:00 EST).
        (NEW_YORK, utc(2026, 11, 1, 2, 0), utc(2026, 11, 1, 13, 0), -5),  # from 22:00 EDT
        (NEW_YORK, utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 13, 0), -5),  # from 01:30 EDT
        (NEW_YORK, utc(2026, 11, 1, 6, 30), utc(2026, 11, 1, 13, 0), -5),  # from 01:30 EST
        # New York springs forward on 2026-03-08 at 07:00 UTC (02:00 EST -> 03:00 EDT).
        (NEW_YORK, utc(2026, 3, 8, 3, 0), utc(2026, 3, 8, 12, 0), -4),  # from 22:00 EST
    ],
)
def test_quiet_hours_end_at_local_end_time_across_daylight_saving_changes(
    zone: ZoneInfo, now: datetime, retry_after: datetime, local_offset_hours: int
) -> None:
    verdict = check([quiet("21:00", "08:00")], ContactHistory(timezone=zone.key), now=now)
    assert verdict.reason == "quiet_hours"
    assert verdict.retry_after == retry_after
    local = retry_after.astimezone(zone)
    assert (local.hour, local.minute) == (8, 0)
    assert local.utcoffset() == timedelta(hours=local_offset_hours)
    assert_allowed(check([quiet("21:00", "08:00")], ContactHistory(timezone=zone.key), now=retry_after))


def test_quiet_hours_ending_at_a_skipped_wall_time_end_at_the_jump() -> None:
    # 02:30 does not exist in Berlin on 2026-03-29; clocks pass it at 01:00 UTC (03:00 CEST).
    policies, history = [quiet("22:00", "02:30")], ContactHistory(timezone="Europe/Berlin")
    verdict = check(policies, history, now=utc(2026, 3, 28, 23, 30))
    assert verdict.retry_after == utc(2026, 3, 29, 1, 0)
    assert not check(policies, history, now=utc(2026, 3, 29, 0, 59)).allowed  # 01:59 CET
    assert_allowed(check(policies, history, now=utc(2026, 3, 29, 1, 0)))  # 03:00 CEST


def test_quiet_hours_ending_at_a_repeated_wall_time_end_at_its_first_occurrence() -> None:
    # 01:30 occurs twice in New York on 2026-11-01: 05:30 UTC (EDT) and 06:30 UTC (EST).
    policies, history = [quiet("22:00", "01:30")], ContactHistory(timezone="America/New_York")
    verdict = check(policies, history, now=utc(2026, 11, 1, 4, 0))
    assert verdict.retry_after == utc(2026, 11, 1, 5, 30)
    assert_allowed(check(policies, history, now=utc(2026, 11, 1, 6, 10)))  # 01:10 EST, the repeated hour


def test_window_with_equal_start_and_end_is_empty() -> None:
    assert_allowed(check([quiet("08:00", "08:00")], now=utc(2026, 1, 15, 8, 0)))


def test_quiet_hours_covering_the_whole_day_leave_no_retry_time() -> None:
    verdict = check([quiet("20:00", "08:00"), quiet("07:00", "21:00")], now=NOW)
    assert (verdict.allowed, verdict.reason, verdict.retry_after) == (False, "quiet_hours", None)
    assert "whole day" in verdict.message


# --- time zone names ----------------------------------------------------------


def test_parse_timezone_accepts_iana_names() -> None:
    assert parse_timezone("America/New_York") == NEW_YORK
    assert parse_timezone("UTC").key == "UTC"


@pytest.mark.parametrize("name", ["Mars/Olympus_Mons", "", "  ", "Europe", "../../etc/passwd", "/etc/localtime"])
def test_parse_timezone_rejects_unknown_names(name: str) -> None:
    with pytest.raises(ValueError, match="timezone must be an IANA name") as excinfo:
        parse_timezone(name)
    assert repr(name) in str(excinfo.value)


def test_unknown_time_zone_in_history_is_bad_input() -> None:
    with pytest.raises(ValueError, match="'Mars/Olympus_Mons'"):
        check([quiet("21:00", "08:00")], ContactHistory(timezone="Mars/Olympus_Mons"))


# --- converted arms -----------------------------------------------------------


def test_converted_arms_are_excluded_when_the_policy_asks() -> None:
    history = ContactHistory(converted_arms=frozenset({"a", "z"}))  # "z" is not offered here
    verdict = check([ContactPolicy(exclude_converted_arms=True)], history)
    assert (verdict.allowed, verdict.reason, verdict.retry_after) == (True, None, None)
    assert verdict.excluded_arms == frozenset({"a"})
    assert "1 of 3 arms" in verdict.message


def test_converted_arms_stay_offered_without_the_rule() -> None:
    verdict = check([ContactPolicy()], ContactHistory(converted_arms=frozenset(ARMS)))
    assert_allowed(verdict)
    assert verdict.excluded_arms == frozenset()


def test_all_arms_converted_is_refused_for_good() -> None:
    history = ContactHistory(converted_arms=frozenset(ARMS))
    verdict = check([ContactPolicy(exclude_converted_arms=True)], history)
    assert (verdict.allowed, verdict.reason, verdict.retry_after) == (False, "all_arms_converted", None)
    assert verdict.excluded_arms == frozenset(ARMS)
    assert "all 3 arms" in verdict.message


# --- precedence -----------------------------------------------------------------

EVERYTHING = [
    ContactPolicy(
        max_per_subject=FrequencyCap(count=1, per_seconds=3600),
        cooldown_after_conversion_seconds=7200,
        quiet_hours=QuietHours(start="12:00", end="15:00"),
        exclude_converted_arms=True,
    )
]
FULL_HISTORY = ContactHistory(
    recent_decisions=[NOW - timedelta(minutes=30)],
    last_conversion_at=NOW - timedelta(hours=1),
    unsubscribed_channels=frozenset({"email"}),
    converted_arms=frozenset(ARMS),
)


AFTER_QUIET = utc(2026, 1, 15, 16, 0)


@pytest.mark.parametrize(
    ("changes", "now", "reason"),
    [
        ({}, NOW, "unsubscribed"),
        ({"unsubscribed_channels": frozenset()}, NOW, "cooldown_after_conversion"),
        ({"unsubscribed_channels": frozenset(), "last_conversion_at": None}, NOW, "frequency_cap"),
        (
            {"unsubscribed_channels": frozenset(), "last_conversion_at": None, "recent_decisions": ()},
            NOW,
            "quiet_hours",
        ),
        (
            {"unsubscribed_channels": frozenset(), "last_conversion_at": None, "recent_decisions": ()},
            AFTER_QUIET,
            "all_arms_converted",
        ),
        (
            {
                "unsubscribed_channels": frozenset(),
                "last_conversion_at": None,
                "recent_decisions": (),
                "converted_arms": frozenset(),
            },
            AFTER_QUIET,
            None,
        ),
    ],
)
def test_precedence_when_several_rules_apply(changes: dict[str, object], now: datetime, reason: str | None) -> None:
    verdict = check(EVERYTHING, replace(FULL_HISTORY, **changes), now=now)
    assert verdict.reason == reason
    assert verdict.allowed is (reason is None)
    # Every arm is converted on until the last step, so no retry can succeed.
    assert verdict.retry_after is None


def test_retry_after_waits_for_quiet_hours_after_a_cooldown() -> None:
    # Cooldown ends at 13:00, inside quiet hours 12:00-15:00: the request can succeed at 15:00.
    history = replace(FULL_HISTORY, unsubscribed_channels=frozenset(), converted_arms=frozenset())
    verdict = check(EVERYTHING, history)
    assert (verdict.reason, verdict.retry_after) == ("cooldown_after_conversion", utc(2026, 1, 15, 15, 0))
    assert "until 2026-01-15T13:00:00Z" in verdict.message


def test_retry_after_waits_for_quiet_hours_after_a_cap() -> None:
    history = ContactHistory(recent_decisions=[NOW - timedelta(minutes=30)])
    verdict = check(EVERYTHING, history)
    assert (verdict.reason, verdict.retry_after) == ("frequency_cap", utc(2026, 1, 15, 15, 0))


def test_retry_after_waits_for_the_cap_after_a_cooldown() -> None:
    history = ContactHistory(
        last_conversion_at=NOW - timedelta(hours=1), recent_decisions=[NOW - timedelta(minutes=10)]
    )
    verdict = check([cooldown(7200), cap(1, 7200)], history)
    assert (verdict.reason, verdict.retry_after) == ("cooldown_after_conversion", utc(2026, 1, 15, 13, 50))


def test_cooldown_ending_in_local_quiet_hours_waits_for_the_local_morning() -> None:
    history = ContactHistory(last_conversion_at=utc(2026, 1, 15, 10, 0), timezone="Europe/Berlin")
    verdict = check([cooldown(12 * 3600), quiet("21:00", "08:00")], history)
    # The cooldown ends at 22:00 UTC, 23:00 in Berlin: quiet until 08:00 CET.
    assert (verdict.reason, verdict.retry_after) == ("cooldown_after_conversion", utc(2026, 1, 16, 7, 0))


def test_temporary_refusal_has_no_retry_when_every_arm_is_converted() -> None:
    history = ContactHistory(recent_decisions=[NOW - timedelta(minutes=30)], converted_arms=frozenset(ARMS))
    verdict = check([cap(1, 3600), ContactPolicy(exclude_converted_arms=True)], history)
    assert (verdict.reason, verdict.retry_after) == ("frequency_cap", None)
    assert "all arms converted" in verdict.message


# --- bad input --------------------------------------------------------------------


def test_naive_now_is_rejected() -> None:
    with pytest.raises(ValueError, match="now must be a timezone-aware datetime"):
        check([], now=datetime(2026, 1, 15, 12, 0))


def test_naive_history_times_are_rejected() -> None:
    with pytest.raises(ValueError, match="recent_decisions must be a timezone-aware datetime"):
        ContactHistory(recent_decisions=[datetime(2026, 1, 15, 12, 0)])
    with pytest.raises(ValueError, match="last_conversion_at must be a timezone-aware datetime"):
        ContactHistory(last_conversion_at=datetime(2026, 1, 15, 12, 0))


def test_a_string_is_not_a_set_of_channels() -> None:
    with pytest.raises(ValueError, match="unsubscribed_channels must be a set of strings, got the string 'email'"):
        ContactHistory(unsubscribed_channels="email")  # type: ignore[arg-type]


def test_no_arms_is_rejected() -> None:
    with pytest.raises(ValueError, match="arms must name at least one arm"):
        check([], arms=[])


def test_history_is_an_immutable_value() -> None:
    history = ContactHistory(recent_decisions=[NOW], unsubscribed_channels={"sms"})  # type: ignore[arg-type]
    assert history.recent_decisions == (NOW,)
    assert history.unsubscribed_channels == frozenset({"sms"})
    with pytest.raises(AttributeError):
        history.timezone = "UTC"  # type: ignore[misc]


def test_the_rules_stay_in_the_pure_core() -> None:
    tree = ast.parse(Path(contact_module.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {name.split(".")[0] for name in imported} & {"flask", "sqlalchemy", "service"}
