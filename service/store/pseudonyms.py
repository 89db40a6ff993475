"""Keyed pseudonyms of subject ids: HMAC-SHA256 with a server secret.

Used where a subject must stay recognisable without its id being stored: the audit record
of an erasure, and the do-not-contact list an erased unsubscriber stays on. An unkeyed
hash of a guessable id (an e-mail address, a customer number) is reversed by hashing
guesses; a keyed one is not, without the key.

The key is NEXTBEST_PSEUDONYM_SECRET when set (keep it outside the database, and the same
on every worker: changing it forgets every do-not-contact entry). Otherwise one is
generated on first use and kept in the database's `server_secrets` table, which still
protects exports of the audit log, but not a copy of the whole database.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from typing import Any

from sqlalchemy import select

from service.store.bulk import bulk_write
from service.clock import utcnow
from service.store.models import ServerSecret

_NAME = "pseudonym"
_lock = threading.Lock()


def subject_hash(secret: bytes, subject_id: str) -> str:
    """The keyed pseudonym of a subject id (hex)."""
    return hmac.new(secret, f"subject:{subject_id}".encode(), hashlib.sha256).hexdigest()


def secret_for(database: Any, configured: str | None = None) -> bytes:
    """The pseudonym key of this database, read (or created) once per process."""
    cached = getattr(database, "_pseudonym_secret", None)
    if cached is not None:
        return cached
    with _lock:
        if configured:
            secret = configured.encode()
        else:
            with database.session() as session:
                bulk_write(session, ServerSecret, [{"name": _NAME, "secret": secrets.token_hex(32),
                                                    "created_at": utcnow()}],
                           conflict=["name"], on_conflict="nothing")
                session.commit()
                secret = session.scalar(select(ServerSecret.secret).where(ServerSecret.name == _NAME)).encode()
        database._pseudonym_secret = secret
    return secret


def app_secret() -> bytes:
    """The pseudonym key for the current app."""
    from flask import current_app

    from service.store.db import get_db

    return secret_for(get_db(), current_app.config.get("NEXTBEST_PSEUDONYM_SECRET"))
