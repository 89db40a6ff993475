"""A per-worker cache of authenticated keys that revocation empties at once, on every worker.

Only on PostgreSQL, and only where enabled (NEXTBEST_KEY_CACHE=on; the WSGI entry
point turns it on). Each worker keeps one connection that LISTENs on the
`nextbest_keys` channel; revoking a key NOTIFYs in the same transaction, and
every worker drops its cache when the notice arrives (milliseconds). While the
listening connection is down the cache is off and every request looks its key
up, so a missed notice can never keep a revoked key alive.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

log = logging.getLogger("nextbest.keys")
CHANNEL = "nextbest_keys"
MAX_ENTRIES = 10_000


class KeyCache:
    """Callers by token. `put` stores only what the same thread looked up after its last `get`
    missed, and only if nothing emptied the cache in between: a key revoked while a request was
    reading it (the notice cleared the cache before the request stored its answer) is never cached."""

    def __init__(self) -> None:
        self._entries: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._generation = 0  # how many times the cache was emptied
        self._seen = threading.local()  # per thread: the generation its last `get` saw
        self.enabled = False
        # The listening thread belongs to the process that started it; a forked copy of this
        # cache (gunicorn --preload) has no listener and must never serve from it.
        self.pid = os.getpid()

    def _usable(self) -> bool:
        return self.enabled and os.getpid() == self.pid

    def get(self, token: str) -> Any:
        if not self._usable():
            return None
        self._seen.generation = self._generation  # before the caller's lookup in the database starts
        return self._entries.get(token)

    def put(self, token: str, caller: Any) -> None:
        if not self._usable():
            return
        with self._lock:
            if getattr(self._seen, "generation", None) != self._generation:
                return  # emptied (a revocation) since this thread's lookup began: its answer may be stale
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[token] = caller

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()

    def disable(self) -> None:
        self.enabled = False
        self.clear()


class Listener(threading.Thread):
    """Holds the LISTEN connection; clears the cache on every notice and whenever it loses the connection."""

    def __init__(self, conninfo: str, cache: KeyCache):
        super().__init__(name="nextbest-key-listener", daemon=True)
        self.conninfo = conninfo
        self.cache = cache
        self.stopped = threading.Event()

    def run(self) -> None:
        import psycopg

        while not self.stopped.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.cache.clear()
                    self.cache.enabled = True
                    while not self.stopped.is_set():
                        for _ in conn.notifies(timeout=1.0):
                            self.cache.clear()
                        conn.execute("SELECT 1")  # notice a dead connection within a second
            except Exception as exc:  # any failure: stop caching until listening again
                self.cache.disable()
                log.warning("key cache off: %s", exc.__class__.__name__)
                self.stopped.wait(1.0)
        self.cache.disable()

    def stop(self) -> None:
        self.stopped.set()


def start(url: str, cache: KeyCache) -> Listener:
    from sqlalchemy import make_url

    parsed = make_url(url)
    conninfo = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    listener = Listener(conninfo, cache)
    listener.start()
    deadline = time.monotonic() + 2.0
    while not cache.enabled and time.monotonic() < deadline and listener.is_alive():
        time.sleep(0.01)
    return listener
