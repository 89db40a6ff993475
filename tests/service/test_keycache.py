"""The per-worker key cache never keeps a key that was revoked while a request was looking it up."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

from service.http.auth import authenticate, hash_secret
from service.http.keycache import KeyCache

TOKEN = "nb_0123456789ab_secret"


def enabled_cache() -> KeyCache:
    cache = KeyCache()
    cache.enabled = True  # as the listener does once it LISTENs
    return cache


class LookupDuringRevocation:
    """A session whose key lookup reads the key as active while the revocation's notice empties the cache
    (from the listener's thread) before the request stores its answer."""

    def __init__(self, cache: KeyCache):
        self.cache = cache

    def execute(self, statement: Any) -> Any:
        row = SimpleNamespace(id=7, name="k", scope="analyst", secret_hash=hash_secret(TOKEN), revoked_at=None)
        notice = threading.Thread(target=self.cache.clear)
        notice.start()
        notice.join()
        return SimpleNamespace(first=lambda: row)


class Lookup(LookupDuringRevocation):
    def execute(self, statement: Any) -> Any:
        row = SimpleNamespace(id=7, name="k", scope="analyst", secret_hash=hash_secret(TOKEN), revoked_at=None)
        return SimpleNamespace(first=lambda: row)


def test_a_key_looked_up_is_cached() -> None:
    cache = enabled_cache()
    caller = authenticate(lambda: Lookup(cache), TOKEN, cache)
    assert caller is not None
    assert cache.get(TOKEN) == caller


def test_a_key_revoked_during_its_lookup_is_not_cached() -> None:
    cache = enabled_cache()
    # The request itself began before the revocation, so it is answered; the next one must look the key up.
    assert authenticate(lambda: LookupDuringRevocation(cache), TOKEN, cache) is not None
    assert cache.get(TOKEN) is None


def test_put_after_a_clear_since_the_miss_is_dropped() -> None:
    cache = enabled_cache()
    assert cache.get(TOKEN) is None
    cache.clear()
    cache.put(TOKEN, "caller")
    assert cache.get(TOKEN) is None
    cache.put(TOKEN, "caller")  # a lookup begun after the clear is cached
    assert cache.get(TOKEN) == "caller"


def test_put_without_a_lookup_in_this_thread_is_dropped() -> None:
    cache = enabled_cache()
    cache.get(TOKEN)
    other = threading.Thread(target=cache.put, args=(TOKEN, "caller"))
    other.start()
    other.join()
    assert cache.get(TOKEN) is None
