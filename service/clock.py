"""The one place the service reads the time.

Everything time-dependent (decision times, receipt times, attribution windows,
contact rules, refits) asks `utcnow()`, so simulations and tests can move time
forward consistently with `advance()`.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

_offset = timedelta(0)


def utcnow() -> datetime:
    return datetime.now(timezone.utc) + _offset


def advance(seconds: float) -> None:
    """Move this process's clock forward (simulations and tests)."""
    global _offset
    _offset += timedelta(seconds=seconds)


def reset() -> None:
    global _offset
    _offset = timedelta(0)


def iso_utc(value: datetime | None) -> str | None:
    """The wire form of a timestamp: ISO 8601 in UTC with a Z, or None."""
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
