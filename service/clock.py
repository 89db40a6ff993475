"""The one place the service reads the time, so tests and imports can set it."""

from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def parse_timestamp(value: str) -> datetime:
    """Parse ISO 8601 with an explicit offset (or Z); naive times are ambiguous and refused."""
    parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp needs a time zone offset, got {value!r}")
    return parsed.astimezone(timezone.utc)
