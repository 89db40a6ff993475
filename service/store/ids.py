"""Identifiers: time-ordered, so new rows land at the end of the primary-key index."""

from __future__ import annotations

import os
import time


def new_id() -> str:
    """32 hex characters: 12 of milliseconds since the epoch, 20 random."""
    return f"{int(time.time() * 1000):012x}{os.urandom(10).hex()}"


def new_ids(count: int) -> list[str]:
    stamp = f"{int(time.time() * 1000):012x}"
    blob = os.urandom(10 * count).hex()
    return [stamp + blob[i * 20:(i + 1) * 20] for i in range(count)]
