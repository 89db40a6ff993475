"""API keys: `nb_<prefix>_<secret>`, stored as a SHA-256 hash, compared in constant time.

The prefix is a public lookup id; the secret has 256 bits of entropy, so a fast
hash is enough (no password stretching needed) and nothing stored reveals it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from flask import current_app, g, request
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from service.clock import utcnow
from service.http.errors import ApiError
from service.store.models import ApiKey

_MAX_KEY_ID = 2**31 - 1  # api_keys.id is a 32-bit integer column

# The OpenAPI security requirement of every route that takes a key (the blueprints declare it).
BEARER = [{"bearer": []}]

Scope = Literal["channel", "analyst", "admin", "metrics"]
# `metrics` reads /metrics and nothing else, so a monitoring system never holds a key that can erase.
SCOPES: tuple[Scope, ...] = ("channel", "analyst", "admin", "metrics")


@dataclass(frozen=True, slots=True)
class Caller:
    key_id: int
    name: str
    scope: str


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(session: Session, name: str, scope: str) -> tuple[ApiKey, str]:
    """Create a key; the full secret is returned once and never stored. Names are unique, so a name
    always means one key (`keys revoke NAME` never hits two)."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    name = name.strip()
    if not name:
        raise ValueError("a key needs a name")
    if session.scalar(select(ApiKey.id).where(ApiKey.name == name).limit(1)) is not None:
        raise ApiError(409, f"a key named {name!r} already exists; choose another name", code="duplicate_key")
    prefix = secrets.token_hex(6)
    token = f"nb_{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey(name=name, scope=scope, prefix=prefix, secret_hash=hash_secret(token), created_at=utcnow())
    session.add(key)
    session.flush()
    return key, token


def revoke_key(session: Session, ident: str) -> ApiKey:
    """Revoke the one active key with this id, prefix or name; 404 when none, 409 when several match
    (keys made before names were unique may share one: revoke those by id)."""
    clause = ApiKey.prefix == ident
    if ident.isdigit() and int(ident) <= _MAX_KEY_ID:  # a prefix of twelve hex digits may be all digits too
        clause = clause | (ApiKey.id == int(ident))
    clause = clause | (ApiKey.name == ident)
    matches = list(session.scalars(select(ApiKey).where(clause, ApiKey.revoked_at.is_(None)).order_by(ApiKey.id)))
    if not matches:
        raise ApiError(404, f"no active key matches {ident!r}")
    if len(matches) > 1:
        ids = ", ".join(str(k.id) for k in matches)
        raise ApiError(409, f"{len(matches)} active keys match {ident!r} (ids {ids}); revoke one by its id",
                       code="ambiguous_key")
    key = matches[0]
    session.execute(update(ApiKey).where(ApiKey.id == key.id).values(revoked_at=utcnow()))
    if session.get_bind().dialect.name == "postgresql":
        # Delivered at commit to every worker's key cache (service/http/keycache.py).
        session.execute(text("SELECT pg_notify('nextbest_keys', 'revoked')"))
    return key


def authenticate(open_session: Callable[[], Session], token: str, cache: Any = None) -> Caller | None:
    """The caller for a presented token, or None: a hit in the worker's key cache, which every
    revocation empties at once (service/http/keycache.py), or one indexed lookup through `open_session`."""
    cached = cache.get(token) if cache is not None else None
    if cached is not None:
        return cached
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != "nb" or not parts[1] or len(parts[1]) > 32:
        return None
    row = open_session().execute(
        select(ApiKey.id, ApiKey.name, ApiKey.scope, ApiKey.secret_hash, ApiKey.revoked_at).where(
            ApiKey.prefix == parts[1]
        )
    ).first()
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.secret_hash, hash_secret(token)):
        return None
    caller = Caller(key_id=row.id, name=row.name, scope=row.scope)
    if cache is not None:
        cache.put(token, caller)
    return caller


def allows(caller_scope: str, required: str) -> bool:
    """Admin may do everything; otherwise the scope must match (analyst may also act as channel on reads)."""
    return caller_scope == "admin" or caller_scope == required or (
        required == "channel_or_analyst" and caller_scope in ("channel", "analyst")
    )


def check_request(open_session: Callable[[], Session], required: str) -> Caller:
    """Authenticate the current request and enforce `required`; raise 401/403 in the one error shape."""
    caller = caller_for(request.headers.get("Authorization", ""), open_session,
                        current_app.extensions.get("nextbest.keycache"), required)
    g.caller = caller
    return caller


def caller_for(header: str, open_session: Callable[[], Session], cache: Any, required: str) -> Caller:
    """The caller an Authorization header names, allowed `required`; raises 401/403 otherwise."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "missing bearer key: send 'Authorization: Bearer <key>'", headers={"WWW-Authenticate": "Bearer"})
    caller = authenticate(open_session, token.strip(), cache)
    if caller is None:
        raise ApiError(401, "invalid or revoked key", headers={"WWW-Authenticate": "Bearer"})
    if not allows(caller.scope, required):
        raise ApiError(403, f"this endpoint needs scope {required!r}; the key has {caller.scope!r}")
    return caller


def current_caller() -> Caller:
    return g.caller
