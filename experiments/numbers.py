"""Numbers from JSON and CSV: finite floats or nothing (huge integers overflow a float)."""

from __future__ import annotations

import math
from typing import Any


def finite_float(value: Any) -> float | None:
    """The value as a finite float; None for bools, non-numbers, NaN, infinities and integers beyond float range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None
