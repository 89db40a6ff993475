"""What every text, number and timestamp the service stores or computes with must be, whatever the
input format (JSON, CSV, NDJSON, a path or a query string).

Text must be storable Unicode: no NUL (no database text column holds one) and no unpaired
surrogate (JSON escapes such as "\\ud800" decode to one; it cannot be encoded as UTF-8, so neither
PostgreSQL nor a JSON answer can carry it). Numbers must be finite: a JSON number too large for a
float (1e400) is refused, as NaN and Infinity are. Timestamps lie between MIN_TIMESTAMP and
MAX_TIMESTAMP (UTC), so any time-zone offset, window or clock skew added to them stays inside the
calendar.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

MIN_TIMESTAMP = datetime(1900, 1, 1, tzinfo=timezone.utc)
MAX_TIMESTAMP = datetime(9999, 12, 1, tzinfo=timezone.utc)
# An integer with more digits than this cannot be a finite float (1.8e308 is the largest).
MAX_INTEGER_DIGITS = 308

_ESCAPES = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored as text, or None when it can."""
    if "\x00" in value:
        return "may not contain NUL (U+0000) characters"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "is not valid Unicode (it holds an unpaired surrogate)"
    return None


def first_bad_text(value: Any, path: str = "") -> tuple[str, str] | None:
    """(field path, problem) of the first text in a JSON value that cannot be stored; None when all can.

    Keys are checked as well as values; the path is dotted (`attributes.tier`, `arms.1.key`).
    """
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem:
                return where or "body", problem
        elif isinstance(item, Mapping):
            for key, inner in item.items():
                name = f"{where}.{key}" if where else str(key)
                if isinstance(key, str):
                    problem = text_problem(key)
                    if problem:
                        return (where or "body") + " (a key)", problem
                stack.append((name, inner))
        elif isinstance(item, (list, tuple)):
            stack.extend((f"{where}.{i}" if where else str(i), inner) for i, inner in enumerate(item))
    return None


def may_hold_bad_text(raw: bytes) -> bool:
    """False when JSON text cannot decode to a NUL or a surrogate: both need a \\u escape."""
    return _ESCAPES.search(raw) is not None


def json_float(text: str) -> float:
    """parse_float for json.loads: a finite float, or ValueError (1e400 would become infinity)."""
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"the number {text[:40]} is out of range (numbers must be finite)")
    return number


def json_int(text: str) -> int:
    """parse_int for json.loads: an integer a float can hold, or ValueError."""
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise ValueError(f"the number {text[:40]}... is out of range (more than {MAX_INTEGER_DIGITS} digits)")
    return int(text)


def check_timestamp(moment: datetime, name: str) -> datetime:
    """The moment in UTC when it lies in the supported range; ValueError naming the field otherwise."""
    try:
        utc = moment.astimezone(timezone.utc)
    except OverflowError:
        utc = None
    if utc is None or not MIN_TIMESTAMP <= utc <= MAX_TIMESTAMP:
        raise ValueError(f"{name} must lie between {MIN_TIMESTAMP.date()} and {MAX_TIMESTAMP.date()} (UTC), "
                         f"got {moment.isoformat()[:40]}")
    return utc
