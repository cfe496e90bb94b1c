"""Verified credentials kept in this process for a few seconds, so a request needs no database round trip.

Two kinds of entries, each bounded in age (`credential_cache_ttl_s`) and in number
(`credential_cache_size` of each kind, least recently used dropped first):
- an API key by its public prefix: the row api_key_lookup returned for it (the secret's SHA-256,
  never the secret). A presented key is served from here only when its secret hashes to that
  value (compared in constant time by the verifier) and the key has not expired by the time
  the database gave (`expires_in_s`, counted on this process's monotonic clock);
- a JWT's tenant by slug: its id and status (resolve_tenant).

Only accepted credentials are stored; a refusal (unknown, revoked, expired, disabled tenant) is
decided by the database every time.

Freshness: the listener (tenancy/credential_listener.py) evicts an entry when PostgreSQL says
its row changed (migration 0010's triggers), drops everything when its connection is lost and
again once it is back, and while it is not listening the cache serves nothing (`serving` is
False). An entry that a lookup fetched before an eviction is not stored after it: each store
names the `epoch` it read in, and every eviction or drop starts a new epoch.

Not thread-safe and needs no lock: everything runs on the server's one event loop.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar
from uuid import UUID

from mindscape.models.api_key import KeyRecord
from mindscape.models.tenant import TenantRef

CHANNEL = "mindscape_credentials"  # migration 0010's triggers notify here
KEY_PAYLOAD = "key:"  # + key_fingerprint
TENANT_PAYLOAD = "tenant:"  # + tenant_fingerprint


def key_fingerprint(key_hash: bytes) -> str:
    """How a notification names a key: the SHA-256 of its stored hash (no prefix, nothing usable)."""
    return hashlib.sha256(key_hash).hexdigest()


def tenant_fingerprint(tenant_id: UUID) -> str:
    """How a notification names a tenant: the SHA-256 of its id as text (any listener may read it)."""
    return hashlib.sha256(str(tenant_id).encode()).hexdigest()


T = TypeVar("T")


@dataclass(frozen=True)
class _Entry(Generic[T]):
    value: T
    tenant: str  # tenant_fingerprint
    key: str | None  # key_fingerprint; None for a tenant entry
    until: float  # self._clock() after which the entry is not served


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    drops: int = 0  # the whole cache dropped: connection lost, or listening again
    evictions: int = 0  # entries removed by a change notification


class CredentialCache:
    def __init__(self, *, ttl_s: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._keys: OrderedDict[str, _Entry[KeyRecord]] = OrderedDict()
        self._tenants: OrderedDict[str, _Entry[TenantRef]] = OrderedDict()
        self._serving = False  # only while the listener is listening
        self.epoch = 0
        self.stats = CacheStats()

    @property
    def serving(self) -> bool:
        return self._serving

    def __len__(self) -> int:
        return len(self._keys) + len(self._tenants)

    # --- the listener's side -------------------------------------------------------------------

    def start_serving(self) -> None:
        """The listener listens (again): what was cached before may have changed unheard, so drop it."""
        self.drop()
        self._serving = True

    def stop_serving(self) -> None:
        """The listener lost its connection: drop everything and serve nothing until it is back."""
        self._serving = False
        self.drop()

    def drop(self) -> None:
        self.epoch += 1
        self._keys.clear()
        self._tenants.clear()
        self.stats.drops += 1

    def notified(self, payload: str) -> None:
        """A change notification: evict what it names. Anything unrecognised drops the whole cache."""
        self.epoch += 1
        if payload.startswith(KEY_PAYLOAD):
            fingerprint = payload.removeprefix(KEY_PAYLOAD)
            self._evict(self._keys, lambda e: e.key == fingerprint)
        elif payload.startswith(TENANT_PAYLOAD):
            fingerprint = payload.removeprefix(TENANT_PAYLOAD)
            self._evict(self._keys, lambda e: e.tenant == fingerprint)
            self._evict(self._tenants, lambda e: e.tenant == fingerprint)
        else:
            self.drop()

    def _evict(self, entries: OrderedDict[str, _Entry[T]], named: Callable[[_Entry[T]], bool]) -> None:
        # A scan: notifications are rare (operator actions), entries at most credential_cache_size.
        for name in [n for n, e in entries.items() if named(e)]:
            del entries[name]
            self.stats.evictions += 1

    # --- the verifiers' side -------------------------------------------------------------------

    def key(self, prefix: str) -> KeyRecord | None:
        """The cached row of the key with this prefix, or None (look it up)."""
        return self._get(self._keys, prefix)

    def store_key(self, prefix: str, record: KeyRecord, *, epoch: int, expires_in_s: float | None) -> None:
        """Keep an accepted key, unless a change was heard since `epoch` (when its lookup began)."""
        lifetime = self._ttl_s if expires_in_s is None else min(self._ttl_s, expires_in_s)
        entry = _Entry(
            record, tenant_fingerprint(record.tenant_id), key_fingerprint(record.key_hash), self._clock() + lifetime
        )
        self._put(self._keys, prefix, entry, epoch)

    def tenant(self, slug: str) -> TenantRef | None:
        return self._get(self._tenants, slug)

    def store_tenant(self, ref: TenantRef, *, epoch: int) -> None:
        self._put(
            self._tenants, ref.slug, _Entry(ref, tenant_fingerprint(ref.id), None, self._clock() + self._ttl_s), epoch
        )

    def _get(self, entries: OrderedDict[str, _Entry[T]], name: str) -> T | None:
        entry = entries.get(name) if self._serving else None
        if entry is not None and self._clock() < entry.until:
            entries.move_to_end(name)
            self.stats.hits += 1
            return entry.value
        if entry is not None:
            del entries[name]
        self.stats.misses += 1
        return None

    def _put(self, entries: OrderedDict[str, _Entry[T]], name: str, entry: _Entry[T], epoch: int) -> None:
        if not self._serving or epoch != self.epoch or self._ttl_s <= 0 or entry.until <= self._clock():
            return
        entries[name] = entry
        entries.move_to_end(name)
        while len(entries) > self._max_entries:
            entries.popitem(last=False)  # the least recently used
