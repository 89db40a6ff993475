"""Check a decision's context against the features an experiment declares.

Every number in a context, except the value of a categorical feature, must be finite and at most
MAX_CONTEXT_MAGNITUDE in absolute value. Numbers are learned from: a linear policy adds the outer
product of each feature vector to its state, so 1.7e308 (finite) would turn the state into
infinities that no refit could store or recover from. 1e12 squared is 1e24, and a million such
decisions sum to 1e30, far inside a float. Imported history follows the same rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .numbers import finite_float
from .spec import FeatureSpec

MAX_CONTEXT_MAGNITUDE = 1e12


@dataclass(frozen=True, slots=True)
class ContextProblem:
    field: str
    message: str


class ContextError(ValueError):
    """A context that does not fit the declared features; names every offending feature."""

    def __init__(self, problems: Sequence[ContextProblem]):
        self.problems = list(problems)
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in self.problems))


def check_context(features: Sequence[FeatureSpec], context: Mapping[str, Any] | None,
                  *, profile_merged: bool = False) -> list[ContextProblem]:
    """Problems with `context` (empty when it fits); extra keys are allowed and kept.

    Profile-sourced features are checked only once the caller has merged the profile's values in."""
    context = context or {}
    problems = []
    for feature in features:
        if feature.source != "context" and not profile_merged:
            continue
        value = context.get(feature.name)
        where = f"context.{feature.name}"
        if value is None:
            if feature.required:
                source = "" if feature.source == "context" else " (in the request or the subject's profile)"
                problems.append(ContextProblem(where, f"required {feature.type} feature is missing{source}"))
            continue
        if feature.type == "numeric":
            if finite_float(value) is None:
                problems.append(ContextProblem(where, f"expected a finite number, got {type(value).__name__}"))
            elif abs(float(value)) > MAX_CONTEXT_MAGNITUDE:
                problems.append(_too_large(where, value))
        elif not isinstance(value, (str, int)) or isinstance(value, bool):
            problems.append(ContextProblem(where, f"expected a category (string or integer), got {type(value).__name__}"))
        elif isinstance(value, str) and len(value) > 200:
            problems.append(ContextProblem(where, "category longer than 200 characters"))
    categorical = {f.name for f in features if f.type == "categorical"}
    declared = {f.name for f in features}
    problems.extend(number_problems(context, skip=categorical | declared))
    return problems


def number_problems(context: Mapping[str, Any] | None, *, skip: set[str] | frozenset[str] = frozenset()
                    ) -> list[ContextProblem]:
    """Top-level numbers of the context (bar `skip`) that are not finite or exceed MAX_CONTEXT_MAGNITUDE."""
    problems = []
    for name, value in (context or {}).items():
        if name in skip or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if finite_float(value) is None:
            problems.append(ContextProblem(f"context.{name}", "expected a finite number"))
        elif abs(float(value)) > MAX_CONTEXT_MAGNITUDE:
            problems.append(_too_large(f"context.{name}", value))
    return problems


def _too_large(where: str, value: Any) -> ContextProblem:
    return ContextProblem(where, f"numbers in a context must be within +-{MAX_CONTEXT_MAGNITUDE:g}, got {value:g}")


def validated_context(features: Sequence[FeatureSpec], context: Mapping[str, Any] | None,
                      *, profile_merged: bool = False) -> dict[str, Any]:
    """The context as a plain dict, or ContextError naming the features that do not fit."""
    problems = check_context(features, context, profile_merged=profile_merged)
    if problems:
        raise ContextError(problems)
    return dict(context or {})


def covariate_value(context: Mapping[str, Any] | None, name: str | None) -> float | None:
    """The CUPED covariate from the context, when the experiment names one and it is a finite number."""
    if not name or not context:
        return None
    return finite_float(context.get(name))
