"""Contact policy: whether a subject may be given an offer now, and if not, why and until when.

The service looks up the subject's contact history once (an indexed read of recent
decisions on the channel, the latest conversion, unsubscribes and converted arms)
and asks `check_contact` for a verdict. Rules, in order of precedence:

1. unsubscribed from the channel    -> refused for good (no retry time)
2. no consent to the channel        -> refused for good (the profile says `false` for it)
3. cooldown after a conversion      -> refused until conversion + cooldown
4. frequency caps                   -> refused until enough counted decisions leave the window
   (per channel, then across all channels)
5. quiet hours in local time        -> refused until the window's local end time
6. every arm already converted on   -> refused for good; otherwise converted arms are excluded

Every verdict lists the rules it checked (`checks`), each with the value that
decided it, so an explanation can show them.

Several policies (a global default and the experiment's own) combine so that the
strictest wins: every frequency cap is evaluated, the longest cooldown applies,
every quiet-hours window applies, and converted arms are excluded if any policy
asks for it.

The verdict's `reason` is the highest-precedence rule refusing now; its
`retry_after` is the earliest instant at which *every* rule would allow the
request (assuming no new decisions or conversions meanwhile), so a channel that
reschedules to `retry_after` is not refused again by a lower-precedence rule. It
is None when a permanent rule (unsubscribe, all arms converted) also refuses.

Time zones: quiet hours are read in the subject's IANA time zone (the shell picks
the request's, else the profile's, else the operator's default); with no time zone
known they are read in UTC. A quiet window is one span of real time per
night, from the first moment the local clock reaches its start to the first
moment it reaches its end: a wall time skipped by a daylight-saving jump resolves
to the instant of the jump, and an end time that occurs twice (clocks going back)
ends the window at its first occurrence. A window whose start equals its end is
empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from experiments.spec import ContactPolicy, FrequencyCap, QuietHours

ContactReason = Literal[
    "unsubscribed", "no_consent", "cooldown_after_conversion", "frequency_cap", "frequency_cap_all_channels",
    "quiet_hours", "all_arms_converted", "duplicate_in_batch"
]

# Quiet windows repeat daily, so if no free instant exists within this horizon
# the windows of the combined policies cover the whole day and none ever will.
_QUIET_SEARCH_HORIZON = timedelta(days=3)


@dataclass(frozen=True, slots=True)
class ContactHistory:
    """What the service knows about one subject's past contacts, read in one lookup."""

    # This subject's decisions on this channel across all experiments, within the
    # longest cap window (aware datetimes). Order does not matter.
    recent_decisions: Sequence[datetime] = ()
    last_conversion_at: datetime | None = None
    unsubscribed_channels: frozenset[str] = frozenset()
    converted_arms: frozenset[str] = frozenset()  # arm keys of this experiment
    timezone: str | None = None  # IANA name from the profile or the request context
    # This subject's decisions on every channel, within the longest all-channel cap window.
    recent_all_channels: Sequence[datetime] = ()
    refused_channels: frozenset[str] = frozenset()  # channels the profile's consent says no to

    def __post_init__(self) -> None:
        for name in ("recent_decisions", "recent_all_channels"):
            decisions = tuple(getattr(self, name))
            for moment in decisions:
                _require_aware(name, moment)
            object.__setattr__(self, name, decisions)
        if self.last_conversion_at is not None:
            _require_aware("last_conversion_at", self.last_conversion_at)
        for name in ("unsubscribed_channels", "converted_arms", "refused_channels"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ValueError(f"{name} must be a set of strings, got the string {value!r}")
            object.__setattr__(self, name, frozenset(value))


@dataclass(frozen=True, slots=True)
class ContactVerdict:
    """The answer for one request: allowed or not, why, and when to try again."""

    allowed: bool
    reason: ContactReason | None
    retry_after: datetime | None  # UTC; None when allowed or when no retry can succeed
    excluded_arms: frozenset[str] = field(default_factory=frozenset)
    message: str = ""
    checks: tuple[RuleCheck, ...] = ()  # every rule checked, with the value that decided it


@dataclass(frozen=True, slots=True)
class RuleCheck:
    """One contact rule as checked for one request: its limit, the subject's value, and the outcome."""

    rule: str
    passed: bool
    value: str | int | None
    limit: str | None = None

    def as_json(self) -> dict[str, str | int | bool | None]:
        return {"rule": self.rule, "passed": self.passed, "value": self.value, "limit": self.limit}


@dataclass(frozen=True, slots=True)
class _Rules:
    caps: tuple[FrequencyCap, ...]
    all_channel_caps: tuple[FrequencyCap, ...]
    cooldown_seconds: int | None
    quiet_hours: tuple[tuple[time, time], ...]
    exclude_converted_arms: bool


@dataclass(frozen=True, slots=True)
class _CapBreach:
    cap: FrequencyCap
    counted: int
    free_at: datetime


def parse_timezone(name: str) -> ZoneInfo:
    """Resolve an IANA time zone name, so a bad profile value fails with a clear message."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"timezone must be an IANA name such as 'Europe/Berlin', got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"timezone must be an IANA name such as 'Europe/Berlin', got unknown {name!r}") from None


def longest_cap_window(policies: Sequence[ContactPolicy | None]) -> int | None:
    """Return the longest frequency-cap window in seconds (per channel or across channels), so the
    service knows how far back to read."""
    windows = [cap.per_seconds for p in policies if p is not None
               for cap in (p.max_per_subject, p.max_per_subject_all_channels) if cap is not None]
    return max(windows) if windows else None


def needs_history(policies: Sequence[ContactPolicy | None]) -> bool:
    """Whether a verdict depends on the subject's past decisions or conversions, so deciding must be
    serialised per subject and channel (a cap or cooldown read, then written, without a lock races)."""
    return any(p is not None and (p.max_per_subject or p.max_per_subject_all_channels
                                  or p.cooldown_after_conversion_seconds) for p in policies)


def counts_all_channels(policies: Sequence[ContactPolicy | None]) -> bool:
    """Whether some policy caps a subject across channels (then one subject's channels serialise too)."""
    return any(p is not None and p.max_per_subject_all_channels is not None for p in policies)


def check_contact(
    policies: Sequence[ContactPolicy | None],
    channel: str | None,
    history: ContactHistory,
    now: datetime,
    arms: Sequence[str],
) -> ContactVerdict:
    """Decide whether the subject may be contacted now, so suppressed requests get an explicit reason."""
    _require_aware("now", now)
    if not arms:
        raise ValueError("arms must name at least one arm to offer, got none")
    now = now.astimezone(UTC)
    zone: tzinfo = parse_timezone(history.timezone) if history.timezone is not None else UTC
    zone_name = history.timezone if history.timezone is not None else "UTC (no time zone known)"
    rules = _combine(policies)

    # Permanent rules: no waiting makes the request succeed.
    unsubscribed = channel is not None and channel in history.unsubscribed_channels
    refused = channel is not None and channel in history.refused_channels
    excluded = (
        frozenset(a for a in arms if a in history.converted_arms) if rules.exclude_converted_arms else frozenset()
    )
    all_converted = rules.exclude_converted_arms and excluded >= frozenset(arms)

    # Time-bound rules.
    cooldown_until = _cooldown_until(rules.cooldown_seconds, history.last_conversion_at, now)
    breaches = _cap_breaches(rules.caps, history.recent_decisions, now)
    wide_breaches = _cap_breaches(rules.all_channel_caps, history.recent_all_channels, now)
    quiet = _quiet_window_at(now, rules.quiet_hours, zone)
    checks = _checks(rules, channel, history, now, zone_name, unsubscribed=unsubscribed, refused=refused,
                     cooldown_until=cooldown_until, quiet=quiet is not None, excluded=excluded)

    permanent = unsubscribed or refused or all_converted
    if not permanent and (cooldown_until is not None or breaches or wide_breaches or quiet is not None):
        deadlines = [now] + ([cooldown_until] if cooldown_until else []) + [
            b.free_at for b in breaches + wide_breaches]
        retry_after = _earliest_outside_quiet(max(deadlines), rules.quiet_hours, zone)
    else:
        retry_after = None
    then = _retry_note(retry_after, zone, permanent=permanent)

    if unsubscribed:
        return ContactVerdict(
            False, "unsubscribed", None, frozenset(),
            f"subject unsubscribed from channel {channel!r}; no contact on it until they re-subscribe", checks,
        )
    if refused:
        return ContactVerdict(
            False, "no_consent", None, frozenset(),
            f"the subject's profile gives no consent to channel {channel!r}", checks,
        )
    if cooldown_until is not None and history.last_conversion_at is not None:
        return ContactVerdict(
            False, "cooldown_after_conversion", retry_after, frozenset(),
            f"cooldown after conversion: last conversion at {_iso(history.last_conversion_at)}, "
            f"cooldown {rules.cooldown_seconds} s lasts until {_iso(cooldown_until)}{then}", checks,
        )
    if breaches:
        binding = max(breaches, key=lambda b: b.free_at)
        return ContactVerdict(
            False, "frequency_cap", retry_after, frozenset(),
            f"frequency cap of {binding.cap.count} per {binding.cap.per_seconds} s reached: "
            f"{binding.counted} decisions since {_iso(now - timedelta(seconds=binding.cap.per_seconds))}, "
            f"a slot frees at {_iso(binding.free_at)}{then}", checks,
        )
    if wide_breaches:
        binding = max(wide_breaches, key=lambda b: b.free_at)
        return ContactVerdict(
            False, "frequency_cap_all_channels", retry_after, frozenset(),
            f"cap across all channels of {binding.cap.count} per {binding.cap.per_seconds} s reached: "
            f"{binding.counted} decisions on any channel since "
            f"{_iso(now - timedelta(seconds=binding.cap.per_seconds))}, a slot frees at "
            f"{_iso(binding.free_at)}{then}", checks,
        )
    if quiet is not None:
        (start, end), quiet_end = quiet
        local_now = now.astimezone(zone)
        return ContactVerdict(
            False, "quiet_hours", retry_after, frozenset(),
            f"quiet hours {_hhmm(start)}-{_hhmm(end)} in {zone_name}: local time is "
            f"{local_now.strftime('%Y-%m-%d %H:%M %z')}, quiet until {_local(quiet_end, zone)}{then}", checks,
        )
    if all_converted:
        return ContactVerdict(
            False, "all_arms_converted", None, excluded,
            f"subject already converted on all {len(frozenset(arms))} arms: {sorted(excluded)}", checks,
        )
    if excluded:
        message = (
            f"contact allowed; {len(excluded)} of {len(frozenset(arms))} arms excluded "
            f"as already converted on: {sorted(excluded)}"
        )
    else:
        message = "contact allowed"
    return ContactVerdict(True, None, None, excluded, message, checks)


def _checks(rules: _Rules, channel: str | None, history: ContactHistory, now: datetime, zone_name: str, *,
            unsubscribed: bool, refused: bool, cooldown_until: datetime | None, quiet: bool,
            excluded: frozenset[str]) -> tuple[RuleCheck, ...]:
    """Every rule the policies asked for, in precedence order, with the value that decided it."""
    checks = [RuleCheck("unsubscribed", not unsubscribed, "unsubscribed" if unsubscribed else "subscribed",
                        channel),
              RuleCheck("consent", not refused, "refused" if refused else "not refused", channel)]
    if rules.cooldown_seconds:
        last = history.last_conversion_at
        checks.append(RuleCheck("cooldown_after_conversion", cooldown_until is None,
                                _iso(last) if last else None, f"{rules.cooldown_seconds} s"))
    for cap in rules.caps:
        counted = sum(1 for t in history.recent_decisions if t > now - timedelta(seconds=cap.per_seconds))
        checks.append(RuleCheck("frequency_cap", counted < cap.count, counted,
                                f"{cap.count} per {cap.per_seconds} s on {channel}"))
    for cap in rules.all_channel_caps:
        counted = sum(1 for t in history.recent_all_channels if t > now - timedelta(seconds=cap.per_seconds))
        checks.append(RuleCheck("frequency_cap_all_channels", counted < cap.count, counted,
                                f"{cap.count} per {cap.per_seconds} s on all channels"))
    for start, end in rules.quiet_hours:
        local = now.astimezone(parse_timezone(history.timezone) if history.timezone else UTC)
        checks.append(RuleCheck("quiet_hours", not quiet, f"{local.strftime('%H:%M')} in {zone_name}",
                                f"{_hhmm(start)}-{_hhmm(end)}"))
    if rules.exclude_converted_arms:
        checks.append(RuleCheck("exclude_converted_arms", True, ", ".join(sorted(excluded)) or "none", None))
    return tuple(checks)


def _combine(policies: Sequence[ContactPolicy | None]) -> _Rules:
    caps: list[FrequencyCap] = []
    wide: list[FrequencyCap] = []
    cooldowns: list[int] = []
    quiet: list[tuple[time, time]] = []
    exclude = False
    for policy in policies:
        if policy is None:
            continue
        if policy.max_per_subject is not None:
            caps.append(policy.max_per_subject)
        if policy.max_per_subject_all_channels is not None:
            wide.append(policy.max_per_subject_all_channels)
        if policy.cooldown_after_conversion_seconds is not None:
            cooldowns.append(policy.cooldown_after_conversion_seconds)
        if policy.quiet_hours is not None:
            window = _parse_quiet_hours(policy.quiet_hours)
            if window[0] != window[1]:
                quiet.append(window)
        exclude = exclude or policy.exclude_converted_arms
    return _Rules(tuple(caps), tuple(wide), max(cooldowns) if cooldowns else None, tuple(quiet), exclude)


def _parse_quiet_hours(quiet: QuietHours) -> tuple[time, time]:
    return _parse_hhmm("quiet_hours.start", quiet.start), _parse_hhmm("quiet_hours.end", quiet.end)


def _parse_hhmm(name: str, value: str) -> time:
    try:
        hours, minutes = value.split(":")
        return time(int(hours), int(minutes))
    except ValueError:
        raise ValueError(f"{name} must be HH:MM (24h), got {value!r}") from None


def _cooldown_until(cooldown_seconds: int | None, last_conversion: datetime | None, now: datetime) -> datetime | None:
    """Return when the cooldown ends if it is still running at `now`."""
    if not cooldown_seconds or last_conversion is None:
        return None
    until = last_conversion.astimezone(UTC) + timedelta(seconds=cooldown_seconds)
    return until if now < until else None


def _cap_breaches(caps: Sequence[FrequencyCap], decisions: Sequence[datetime], now: datetime) -> list[_CapBreach]:
    """Evaluate every cap: a decision counts while t > now - per_seconds."""
    breaches = []
    for cap in caps:
        window = timedelta(seconds=cap.per_seconds)
        counted = sorted(t for t in decisions if t > now - window)
        if len(counted) >= cap.count:
            # Once the (len - count + 1) oldest counted decisions have left the
            # window, count - 1 remain and one more decision fits.
            leaving = counted[len(counted) - cap.count]
            breaches.append(_CapBreach(cap, len(counted), (leaving + window).astimezone(UTC)))
    return breaches


def _wall_instant(day: date, wall: time, zone: tzinfo) -> datetime:
    """Return the first UTC instant at which the local clock in `zone` reads at least `day wall`."""
    target = datetime.combine(day, wall)
    first = target.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == target:
        return first  # exists; for a repeated wall time fold=0 is its first occurrence
    # Skipped by a daylight-saving jump: the answer is the jump itself, between the
    # readings of the wall time with the offsets after and before the jump.
    second = target.replace(tzinfo=zone, fold=1).astimezone(UTC)
    low, high = min(first, second), max(first, second)
    lo_s, hi_s = 0, int((high - low).total_seconds())
    while lo_s < hi_s:
        mid = (lo_s + hi_s) // 2
        if (low + timedelta(seconds=mid)).astimezone(zone).replace(tzinfo=None) >= target:
            hi_s = mid
        else:
            lo_s = mid + 1
    return low + timedelta(seconds=lo_s)


def _quiet_window_at(
    moment: datetime, windows: Sequence[tuple[time, time]], zone: tzinfo
) -> tuple[tuple[time, time], datetime] | None:
    """Return the quiet window containing `moment` and the UTC instant it ends, if any."""
    local_day = moment.astimezone(zone).date()
    found: tuple[tuple[time, time], datetime] | None = None
    for start, end in windows:
        wraps = start > end
        for day in (local_day - timedelta(days=1), local_day):
            begins = _wall_instant(day, start, zone)
            ends = _wall_instant(day + timedelta(days=1) if wraps else day, end, zone)
            if begins <= moment < ends and (found is None or ends > found[1]):
                found = ((start, end), ends)
    return found


def _earliest_outside_quiet(moment: datetime, windows: Sequence[tuple[time, time]], zone: tzinfo) -> datetime | None:
    """Return the first instant from `moment` on that no quiet window covers, or None if they cover every day."""
    limit = moment + _QUIET_SEARCH_HORIZON
    while moment <= limit:
        quiet = _quiet_window_at(moment, windows, zone)
        if quiet is None:
            return moment
        moment = quiet[1]
    return None


def _retry_note(retry_after: datetime | None, zone: tzinfo, *, permanent: bool) -> str:
    if permanent:
        return "; no retry can succeed because a permanent rule also refuses (all arms converted on)"
    if retry_after is None:
        return "; the combined quiet hours cover the whole day, so no retry time exists"
    return f"; earliest allowed at {_iso(retry_after)} (local {_local(retry_after, zone)})"


def _require_aware(name: str, moment: datetime) -> None:
    if not isinstance(moment, datetime):
        raise ValueError(f"{name} must be a datetime, got {type(moment).__name__}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got naive {moment.isoformat()}")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _local(moment: datetime, zone: tzinfo) -> str:
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %z")


def _hhmm(value: time) -> str:
    return value.strftime("%H:%M")
