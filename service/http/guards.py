"""Request guards shared by the Flask app and the direct decision path: nesting depth, and
whether the database is migrated. Kept below both, so neither imports the other."""

from __future__ import annotations

from typing import Any

from flask import Flask

from experiments import validity

from service.store import db as db_module

MAX_JSON_DEPTH = 32


def may_be_deep(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """False when the JSON text alone shows the walk in `depth` would find nothing: fewer brackets
    than the depth limit. Most bodies are small and flat, and the walk was a tenth of a bandit
    decision's time."""
    return raw.count(b"{") + raw.count(b"[") >= limit


def may_be_deep_or_hold_nul(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """False when the JSON text shows that neither the depth walk nor the text check can refuse it
    (the direct decision path hands anything else to Flask)."""
    return may_be_deep(raw, limit) or validity.may_hold_bad_text(raw)


def depth(value: Any, limit: int) -> int:
    """Nesting depth (stops counting past `limit`)."""
    levels, level = 0, [value]
    while level:
        levels += 1
        if levels > limit:
            return levels
        nxt: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                nxt.extend(item.values())
            elif isinstance(item, list):
                nxt.extend(item)
        level = nxt
    return levels - 1


def is_migrated(app: Flask) -> bool:
    """True once the database has been seen at the head revision (then never asked again)."""
    if app.extensions.get("nextbest.migrated"):
        return True
    database = db_module.get_db(app)
    head = app.extensions.setdefault("nextbest.head", db_module.head_revision())
    try:
        ok = database.current_revision() == head
    except Exception:
        return True  # unreachable database: let the request fail with 503 on its own
    app.extensions["nextbest.migrated"] = ok
    return ok
