"""Dashboard sign-in with an API key, a signed session cookie, and CSRF tokens.

The cookie never carries the key: Flask's session cookie is signed, not encrypted, so it holds
the key's id and a fingerprint of its stored hash. Every page view looks the key up again, so
a revoked key (or one whose hash changed) ends the session at once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import abort, request, session
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.http.auth import authenticate
from service.store.models import ApiKey

DASHBOARD_SCOPES = ("analyst", "admin")
SESSION_MAX_AGE_SECONDS = 12 * 3600
CSRF_FIELD = "csrf_token"


@dataclass(frozen=True, slots=True)
class Analyst:
    """Who is signed in: the key's name is the actor in the audit log."""

    key_id: int
    name: str
    scope: str


class SignInRefused(Exception):
    """The key cannot open the dashboard; the message says why, in words for the person at the form."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.message = message
        self.status = status


def _fingerprint(secret_hash: str) -> str:
    return hashlib.sha256(f"nextbest-dashboard:{secret_hash}".encode()).hexdigest()[:32]


def sign_in(db: Session, token: str) -> Analyst:
    """Check a presented key and start a fresh session for it; raise SignInRefused otherwise."""
    caller = authenticate(lambda: db, token.strip()) if token.strip() else None
    if caller is None:
        raise SignInRefused("That key is not valid or has been revoked.", 401)
    if caller.scope not in DASHBOARD_SCOPES:
        raise SignInRefused(
            f"A {caller.scope} key cannot sign in to the dashboard; use an analyst or admin key.", 403
        )
    secret_hash = db.scalar(select(ApiKey.secret_hash).where(ApiKey.id == caller.key_id))
    session.clear()  # nothing from before sign-in survives it, including the old CSRF token
    session["key_id"] = caller.key_id
    session["key_check"] = _fingerprint(secret_hash or "")
    session["signed_in_at"] = int(time.time())
    new_csrf_token()
    return Analyst(caller.key_id, caller.name, caller.scope)


def sign_out() -> None:
    session.clear()


def current_analyst(db: Session) -> Analyst | None:
    """The signed-in analyst, checked against the database now; None when signed out, expired or revoked."""
    key_id = session.get("key_id")
    if not isinstance(key_id, int):
        return None
    signed_in_at = session.get("signed_in_at")
    if not isinstance(signed_in_at, int) or time.time() - signed_in_at > SESSION_MAX_AGE_SECONDS:
        return None
    row = db.execute(
        select(ApiKey.name, ApiKey.scope, ApiKey.secret_hash, ApiKey.revoked_at).where(ApiKey.id == key_id)
    ).first()
    if row is None or row.revoked_at is not None or row.scope not in DASHBOARD_SCOPES:
        return None
    if not hmac.compare_digest(str(session.get("key_check", "")), _fingerprint(row.secret_hash)):
        return None
    return Analyst(key_id, row.name, row.scope)


def had_session() -> bool:
    return "key_id" in session


def new_csrf_token() -> str:
    token = secrets.token_urlsafe(32)
    session["csrf"] = token
    return token


def csrf_token() -> str:
    """This session's CSRF token, made on first use (the login form needs one before sign-in)."""
    token = session.get("csrf")
    return token if isinstance(token, str) and token else new_csrf_token()


def check_csrf() -> None:
    """Refuse a POST whose form token is missing or not this session's (400)."""
    expected = session.get("csrf")
    sent = request.form.get(CSRF_FIELD, "")
    if not isinstance(expected, str) or not expected or not hmac.compare_digest(expected, sent):
        abort(400, description="The form was stale or did not come from this dashboard (CSRF token missing or "
                               "wrong). Reload the page and try again.")


def safe_next(target: str | None, default: str) -> str:
    """Only redirect after sign-in to a dashboard path on this site (no open redirect)."""
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/dashboard/") or "\\" in target:
        return default
    return target
