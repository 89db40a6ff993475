"""Check a decision's context against the features an experiment declares."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .numbers import finite_float
from .spec import FeatureSpec


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
        elif not isinstance(value, (str, int)) or isinstance(value, bool):
            problems.append(ContextProblem(where, f"expected a category (string or integer), got {type(value).__name__}"))
        elif isinstance(value, str) and len(value) > 200:
            problems.append(ContextProblem(where, "category longer than 200 characters"))
    return problems


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
