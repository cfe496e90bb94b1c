"""Calls per minute shared by every process and replica: one budget per tenant, in PostgreSQL.

The budget is the token bucket of quotas.rate (GCRA: a burst of `n` calls, then one every 60/n
seconds), kept in one row per tenant (mindscape.call_rates, migration 0008). A process does not
ask the database for every call: it takes a small **batch** of calls at once (an allowance),
spends it locally, and asks again when it is used up. The batch is at most one second's worth
of the tenant's limit and at most `quota_rate_batch` calls:

    batch = max(1, min(quota_rate_batch, calls_per_minute // 60))

**The bound.** The database never grants more than one process alone would allow. Calls
granted but not yet spent are the only error: a process holds at most one batch per tenant, so
over any period the tenant gets at most `processes x batch` calls more than its limit (and, when
its calls are spread unevenly, up to as many fewer). 60 calls a minute: batch 1, so two
replicas let at most 62 through in the first minute. 600 (the default): batch 10. Unspent calls
are dropped after a minute.

A refusal is remembered locally until the time the database named, so a tenant over its limit
costs no database round trip per refused call. If the counter cannot be reached (database down,
a hot standby that cannot be written, the pool busy past LOOKUP_TIMEOUT_S), calls are counted
in this process instead (quotas.rate, the per-process bound) for RETRY_DATABASE_S, then the
database is tried again: the quota never fails a call by itself.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

import anyio
import asyncpg

from mindscape.database.pool import Pool
from mindscape.queries import call_rates
from mindscape.quotas.rate import PERIOD_S, PRUNE_AT, CallLimiter

log = logging.getLogger(__name__)
LOOKUP_TIMEOUT_S = 2.0  # waiting for a connection and the answer, at most
RETRY_DATABASE_S = 10.0  # after a failure, count in process this long before asking the database again
ALLOWANCE_LIFETIME_S = PERIOD_S  # unspent calls older than this are dropped


def batch_size(per_minute: int, batch_max: int) -> int:
    """Calls one process takes at once: at most one second's worth of the limit and at most `batch_max`."""
    return max(1, min(batch_max, per_minute // 60))


@dataclass
class _Allowance:
    per_minute: int
    calls: int = 0  # granted by the database, not spent yet
    taken_at: float = 0.0
    refused_until: float = -math.inf


class SharedCallLimiter:
    def __init__(self, pool: Pool, *, batch_max: int, clock: Callable[[], float] = time.monotonic) -> None:
        """`pool`: a runtime pool on the primary (over HTTP, the credential pool)."""
        self._pool = pool
        self._batch_max = batch_max
        self._clock = clock
        self._allowances: dict[UUID, _Allowance] = {}
        self._locks: dict[UUID, anyio.Lock] = {}
        self.fallback = CallLimiter(clock)
        self._database_retry_at = -math.inf

    async def acquire(self, tenant_id: UUID, per_minute: int) -> float | None:
        """Take one call: None if allowed, else the seconds until one is."""
        if self._clock() < self._database_retry_at:
            return self.fallback.acquire(tenant_id, per_minute)
        decided, wait = self._local(tenant_id, per_minute)
        if decided:
            return wait
        lock = self._locks.get(tenant_id)
        if lock is None:
            lock = self._locks[tenant_id] = anyio.Lock()
        async with lock:  # one take per tenant at a time: concurrent calls share its batch
            decided, wait = self._local(tenant_id, per_minute)
            if decided:
                return wait
            return await self._take(tenant_id, per_minute)

    def _local(self, tenant_id: UUID, per_minute: int) -> tuple[bool, float | None]:
        """(True, None): one call spent from the allowance; (True, s): refused for s more seconds;
        (False, None): the database has to be asked."""
        allowance = self._allowances.get(tenant_id)
        if allowance is None or allowance.per_minute != per_minute:
            return False, None
        now = self._clock()
        if allowance.calls > 0 and now - allowance.taken_at < ALLOWANCE_LIFETIME_S:
            allowance.calls -= 1
            return True, None
        if allowance.refused_until > now:
            return True, allowance.refused_until - now
        return False, None

    async def _take(self, tenant_id: UUID, per_minute: int) -> float | None:
        wanted = batch_size(per_minute, self._batch_max)
        try:
            with anyio.fail_after(LOOKUP_TIMEOUT_S):
                async with self._pool.acquire() as conn:
                    taken = await call_rates.take(conn, tenant_id=tenant_id, per_minute=per_minute, wanted=wanted)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            log.warning(
                "the shared call counter is unavailable (%s); counting calls in this process for %g s",
                type(exc).__name__,
                RETRY_DATABASE_S,
            )
            self._database_retry_at = self._clock() + RETRY_DATABASE_S
            return self.fallback.acquire(tenant_id, per_minute)
        now = self._clock()
        self._prune(now)
        if taken.granted > 0:
            self._allowances[tenant_id] = _Allowance(per_minute, calls=taken.granted - 1, taken_at=now)
            return None
        self._allowances[tenant_id] = _Allowance(per_minute, refused_until=now + taken.wait_s)
        return taken.wait_s

    def _prune(self, now: float) -> None:
        """Forget tenants with nothing held, once many are tracked (a bounded memory for idle tenants)."""
        if len(self._allowances) < PRUNE_AT:
            return
        for tenant_id, allowance in list(self._allowances.items()):
            spent = allowance.calls == 0 or now - allowance.taken_at >= ALLOWANCE_LIFETIME_S
            if spent and allowance.refused_until <= now:
                del self._allowances[tenant_id]
        for tenant_id, lock in list(self._locks.items()):
            if tenant_id not in self._allowances and not lock.locked():
                del self._locks[tenant_id]
