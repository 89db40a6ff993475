"""Who may get an offer: a small rule language over the subject's profile and the request's context.

An experiment (an offer family) may carry `eligibility`, a list of conditions that
must all hold:

    [{"field": "profile.loyalty_tier", "in": ["gold", "silver"]},
     {"field": "context.days_since_purchase", "gte": 7},
     {"field": "profile.churn_risk", "lt": 0.5}]

A condition names one field under `profile.` or `context.` and exactly one operator:
`in`, `not_in` (a list of values), `eq`, `ne` (one value), `lt`, `lte`, `gt`, `gte`
(a finite number). Nothing is executed: conditions are data, checked once when the
spec is validated. A field the subject does not have fails every operator but `ne`
and `not_in` (an unknown tier is not "gold", but it is not known to be "silver"
either, so `in` fails), and the reason says it was missing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

OPERATORS = ("in", "not_in", "eq", "ne", "lt", "lte", "gt", "gte")
_ORDER = {"lt": lambda a, b: a < b, "lte": lambda a, b: a <= b, "gt": lambda a, b: a > b, "gte": lambda a, b: a >= b}
Scalar = str | int | float | bool


class Condition(BaseModel):
    """One eligibility condition: a field and exactly one operator with its operand."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    field: str = Field(pattern=r"^(profile|context)\.[A-Za-z_][A-Za-z0-9_.]{0,127}$",
                       description="profile.<name> or context.<name> (profile.attributes.<name> for free attributes)")
    in_: list[Scalar] | None = Field(default=None, alias="in", max_length=1000)
    not_in: list[Scalar] | None = Field(default=None, max_length=1000)
    eq: Scalar | None = None
    ne: Scalar | None = None
    lt: int | float | None = None
    lte: int | float | None = None
    gt: int | float | None = None
    gte: int | float | None = None

    @model_validator(mode="before")
    @classmethod
    def _exactly_one_operator(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            given = [op for op in OPERATORS
                     if data.get(op) is not None or (op == "in" and data.get("in_") is not None)]
            if len(given) != 1:
                raise ValueError(f"a condition needs exactly one operator of {', '.join(OPERATORS)}; got "
                                 f"{', '.join(given) or 'none'}")
            for op in ("lt", "lte", "gt", "gte"):
                value = data.get(op)
                if op in data and (isinstance(value, bool) or not isinstance(value, int | float)
                                   or not math.isfinite(value)):
                    raise ValueError(f"{op} needs a finite number, got {value!r}")
        return data

    @model_serializer
    def _compact(self) -> dict[str, Any]:
        """Stored and shown as written: the field and its one operator."""
        return self.as_json()

    @property
    def operator(self) -> str:
        for op in OPERATORS:
            if getattr(self, "in_" if op == "in" else op) is not None:
                return op
        raise AssertionError("validated conditions have one operator")

    @property
    def operand(self) -> Any:
        op = self.operator
        return self.in_ if op == "in" else getattr(self, op)

    def as_json(self) -> dict[str, Any]:
        return {"field": self.field, self.operator: self.operand}


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether every condition holds, and for each one that does not, why."""

    eligible: bool
    failed: tuple[dict[str, Any], ...] = ()


_MISSING = object()


def field_value(facts: Mapping[str, Any], field: str) -> Any:
    """The value of `profile.x.y` / `context.x` in nested facts, or a marker when it is absent."""
    current: Any = facts
    for part in field.split("."):
        if not isinstance(current, Mapping) or part not in current or current[part] is None:
            return _MISSING
        current = current[part]
    return current


def holds(condition: Condition, value: Any) -> bool:
    """Does one condition hold for this value (`_MISSING` when the subject has none)?"""
    op, operand = condition.operator, condition.operand
    if value is _MISSING:
        return op in ("ne", "not_in")
    if op == "in":
        return _member(value, operand)
    if op == "not_in":
        return not _member(value, operand)
    if op == "eq":
        return _same(value, operand)
    if op == "ne":
        return not _same(value, operand)
    number = _number(value)
    return number is not None and _ORDER[op](number, float(operand))


def check(conditions: Sequence[Condition], facts: Mapping[str, Any]) -> Verdict:
    """Check every condition against `{"profile": {...}, "context": {...}}`."""
    failed = []
    for condition in conditions:
        value = field_value(facts, condition.field)
        if not holds(condition, value):
            failed.append({**condition.as_json(), "actual": None if value is _MISSING else value,
                           "missing": value is _MISSING})
    return Verdict(eligible=not failed, failed=tuple(failed))


def describe(failure: Mapping[str, Any]) -> str:
    """One failed condition in words: "profile.loyalty_tier is 'bronze', not in ['gold', 'silver']"."""
    op = next(k for k in OPERATORS if k in failure)
    words = {"in": "not in", "not_in": "in", "eq": "not", "ne": "equal to", "lt": "not below", "lte": "above",
             "gt": "not above", "gte": "below"}[op]
    if failure.get("missing"):
        return f"{failure['field']} is not known (needs {op} {failure[op]!r})"
    return f"{failure['field']} is {failure['actual']!r}, {words} {failure[op]!r}"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    na, nb = _number(a), _number(b)
    if na is not None and nb is not None:
        return na == nb
    return str(a).casefold() == str(b).casefold() if isinstance(a, str) and isinstance(b, str) else a == b


def _member(value: Any, options: Sequence[Any]) -> bool:
    return any(_same(value, option) for option in options)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None
