"""Serialise decisions per (subject, channel), across workers and hosts, for rules that read history.

A frequency cap or cooldown is a read of the subject's history followed by a write of the new
decision; without a lock, eight simultaneous requests all read "no decision yet" and all write.
So a decision judged by such a rule runs in a transaction that first takes:

- on PostgreSQL, transaction-scoped advisory locks (released by COMMIT or ROLLBACK, also when
  the connection dies): one per (subject, channel), plus one per subject when a policy caps
  across channels, always in ascending key order so two batches locking many pairs cannot
  deadlock. Every holder first takes one shared "contact" lock; a batch with more than
  FINE_LOCK_LIMIT keys takes that lock exclusively instead of its many fine keys, so the lock
  table (64 locks per connection by default) is never exhausted;
- on SQLite, the database's single write lock, taken by the transaction's first statement
  (SQLite serialises writers; readers are not blocked).

Reads of the history happen after the locks are held, and the decision is written before
the transaction commits, so the next holder sees it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.orm import Session

FINE_LOCK_LIMIT = 512
# The shared "contact" lock every holder takes first (an arbitrary constant in the advisory key space).
CONTACT_LOCK = 0x6E62_636F_6E74_6163  # "nbcontac"


def lock_key(*parts: str | None) -> int:
    """A signed 64-bit advisory lock key for (subject, channel) or (subject,), stable across processes."""
    digest = hashlib.blake2b("\x1f".join("" if p is None else p for p in parts).encode(), digest_size=8,
                             person=b"nb-contact").digest()
    return int.from_bytes(digest, "big", signed=True)


def keys_for(pairs: Iterable[tuple[str, str | None]], per_subject: bool) -> list[int]:
    """The sorted lock keys for these (subject, channel) pairs, plus one per subject when asked."""
    keys = set()
    for subject, channel in pairs:
        keys.add(lock_key("pair", subject, channel))
        if per_subject:
            keys.add(lock_key("subject", subject))
    return sorted(keys)


def serialise(session: Session, keys: list[int]) -> None:
    """Take the locks for `keys` in the session's transaction (held until it ends)."""
    from service.store.pseudonyms import app_secret

    app_secret()  # created, if it must be, before the locks: on SQLite its write would wait on ours
    dialect = session.get_bind().dialect.name
    if dialect != "postgresql":
        # SQLite: a write statement takes the database's write lock now, before any history is read.
        session.execute(text("DELETE FROM do_not_contact WHERE 1 = 0"))
        return
    if len(keys) > FINE_LOCK_LIMIT:
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CONTACT_LOCK})
        return
    # One round trip, in array order (a function scan of unnest reads it in order): the shared
    # contact lock first, then the fine keys ascending, so locks are always taken in one global order.
    session.execute(text("SELECT count(CASE WHEN n = 1 THEN pg_advisory_xact_lock_shared(k) "
                         "ELSE pg_advisory_xact_lock(k) END) "
                         "FROM unnest(CAST(:keys AS bigint[])) WITH ORDINALITY AS t(k, n)"),
                    {"keys": [CONTACT_LOCK, *sorted(keys)]})
