"""Which key scope each endpoint needs; checked before the body is even validated."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

DECLARED: dict[str, str] = {}


def requires(blueprint: str, scope: str) -> Callable[[F], F]:
    """Record that `blueprint.<view name>` needs `scope` (admin may do everything)."""

    def mark(view: F) -> F:
        DECLARED[f"{blueprint}.{view.__name__}"] = scope
        return view

    return mark


M = TypeVar("M")


def optional_body(model: type[M]) -> M:
    """Validate an optional JSON body (absent or empty means all defaults)."""
    from flask import request

    data = request.get_json(silent=True) if request.content_length else None
    return model.model_validate(data or {})  # type: ignore[attr-defined]
