"""Numbers from JSON and CSV: a finite float, or None."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from experiments.numbers import finite_float


@pytest.mark.parametrize("value, expected", [
    (3, 3.0), (-2.5, -2.5), (0, 0.0), (1e308, 1e308), (2**53 + 1, float(2**53 + 1)),
])
def test_finite_numbers_become_floats(value: Any, expected: float) -> None:
    result = finite_float(value)
    assert result == expected and type(result) is float


@pytest.mark.parametrize("value", [
    True, False, None, "3", b"3", [3], {"v": 3}, Decimal("3"),
    float("nan"), float("inf"), float("-inf"), 10**400, -(10**400),
])
def test_everything_else_is_none(value: Any) -> None:
    assert finite_float(value) is None
