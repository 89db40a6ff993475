"""The request-body guard's shortcut: it may skip the nesting and NUL walk only when the walk would pass."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from service.http import errors
from service.http.guards import MAX_JSON_DEPTH as _MAX_JSON_DEPTH
from service.http.guards import depth as _depth
from service.http.guards import may_be_deep_or_hold_nul


def _random_value(rng: random.Random, depth: int) -> Any:
    roll = rng.random()
    if depth <= 0 or roll < 0.3:
        return rng.choice([1, 2.5, None, True, "text", "nul\x00inside", "back\\u0000slash", "{[", ""])
    if roll < 0.65:
        return {f"k{i}": _random_value(rng, depth - 1) for i in range(rng.randint(0, 3))}
    return [_random_value(rng, depth - 1) for _ in range(rng.randint(0, 3))]


def _walk_passes(value: Any) -> bool:
    try:
        return _depth(value, _MAX_JSON_DEPTH) <= _MAX_JSON_DEPTH
    except errors.ApiError:  # NUL text
        return False


@pytest.mark.parametrize("seed", range(5))
def test_skipping_the_walk_is_safe(seed: int) -> None:
    rng = random.Random(seed)
    skipped = 0
    for _ in range(400):
        value = _random_value(rng, rng.randint(1, 40))
        raw = json.dumps(value).encode()
        if not may_be_deep_or_hold_nul(raw):
            skipped += 1
            assert _walk_passes(value), raw[:200]
    assert skipped > 0


def test_typical_and_hostile_bodies() -> None:
    decision = {"experiment": "e", "subject_id": "c-1", "channel": "email", "context": {f"f{i}": i for i in range(10)}}
    assert not may_be_deep_or_hold_nul(json.dumps(decision).encode())
    assert may_be_deep_or_hold_nul(json.dumps({"subject_id": "c\x00"}).encode())
    nested: Any = 1
    for _ in range(_MAX_JSON_DEPTH):
        nested = [nested]
    assert may_be_deep_or_hold_nul(json.dumps({"context": nested}).encode())
