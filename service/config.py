"""Configuration from environment variables: DATABASE_URL and NEXTBEST_*."""

from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Mapping
from typing import Any

DEFAULTS: dict[str, Any] = {
    # Embedded default, so a fresh machine needs nothing installed.
    "DATABASE_URL": f"sqlite:///{Path.cwd() / 'nextbest.sqlite3'}",
    "NEXTBEST_MAX_BODY_BYTES": 64 * 1024 * 1024,  # batches and imports
    "NEXTBEST_MAX_JSON_BYTES": 1024 * 1024,  # every other JSON body: specs, profiles, actions, power
    "NEXTBEST_MAX_DECISION_BYTES": 64 * 1024,  # one POST /v1/assign
    "NEXTBEST_MAX_BATCH_SUBJECTS": 200_000,
    "NEXTBEST_MAX_EVENTS_PER_BATCH": 10_000,
    "NEXTBEST_MAX_IMPORT_ROWS": 2_000_000,
    "NEXTBEST_POLICY_REFRESH_SECONDS": 5.0,
    "NEXTBEST_JOBS": "off",  # "on": run refit and promotion jobs inside the service
    "NEXTBEST_JOB_INTERVAL_SECONDS": 60.0,
    # Refits train decisions matured this long ago; ingestion commits within half of it (service/jobs/learning.py).
    "NEXTBEST_REWARD_GRACE_SECONDS": 300.0,
    "NEXTBEST_DB_POOL_SIZE": 5,
    "NEXTBEST_DB_STATEMENT_TIMEOUT_MS": 30_000,
    "NEXTBEST_SECRET_KEY": None,  # signs dashboard sessions; random per process when unset
    "NEXTBEST_LOG_LEVEL": "INFO",
    "NEXTBEST_ACCESS_LOG": "on",  # one JSON line per request (never the key itself)
    "NEXTBEST_KEY_CACHE": "off",  # "on": cache keys per worker, emptied at once by revocation (PostgreSQL)
    "NEXTBEST_DIRECT_ASSIGN": "on",  # "off": every single decision goes through Flask's request handling
    "NEXTBEST_RATE_LIMIT_PER_SECOND": 2000.0,  # per key and worker; 0 turns it off
    "NEXTBEST_SECURE_COOKIES": "auto",  # "auto": Secure when the request came over TLS; "on": always
    "NEXTBEST_CONTACT_POLICY": "",  # global default contact policy, JSON in the experiment spec's shape
    "NEXTBEST_CHANNELS": "email,sms,push",  # channels next best action considers when a request names none
    "NEXTBEST_CONTACT_COSTS": "",  # next best action: cost of one contact per channel, JSON {"sms": 0.05}
    "NEXTBEST_NBA_EXPLORATION": 0.1,  # next best action: share of choices spread over every worthwhile offer
    "NEXTBEST_DEFAULT_TIMEZONE": "UTC",  # quiet hours when neither the request nor the profile names a zone
    "NEXTBEST_PSEUDONYM_SECRET": "",  # HMAC key of erased subjects' pseudonyms; generated in the database if unset
    "NEXTBEST_IDEMPOTENCY_RETENTION_SECONDS": 86400.0,  # how long a stored answer replays an Idempotency-Key
    "NEXTBEST_LOG_RETENTION_DAYS": "",  # PostgreSQL: drop decision/event log partitions older; empty keeps all
}

_NUMERIC = {k for k, v in DEFAULTS.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def load(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults, then the environment, then explicit overrides (tests)."""
    config = dict(DEFAULTS)
    for key in DEFAULTS:
        if key in os.environ:
            raw = os.environ[key]
            config[key] = type(DEFAULTS[key])(raw) if key in _NUMERIC else raw
    config.update(overrides or {})
    config["DATABASE_URL"] = normalise_database_url(str(config["DATABASE_URL"]))
    return config


def reward_grace_seconds(config: Mapping[str, Any] | None = None) -> float:
    """How far behind `now` refits train (and how long ingestion may hold a stamp: half of it)."""
    value = (config or {}).get("NEXTBEST_REWARD_GRACE_SECONDS")
    if value is None:
        value = os.environ.get("NEXTBEST_REWARD_GRACE_SECONDS", DEFAULTS["NEXTBEST_REWARD_GRACE_SECONDS"])
    return float(value)


def switched_on(config: Mapping[str, Any], key: str) -> bool:
    """An on/off setting: "on", "1", "true" or "yes" (any case) turn it on; unset means its default."""
    return str(config.get(key, DEFAULTS[key])).lower() in ("on", "1", "true", "yes")


def normalise_database_url(url: str) -> str:
    """Use the psycopg 3 driver for plain postgresql:// URLs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url
