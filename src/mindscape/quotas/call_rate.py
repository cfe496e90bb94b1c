"""The calls-per-minute check every transport makes before running a tool, resource or prompt,
and the per-process cache of each tenant's limits that every admission check reads.

Calls are counted by `quota_backend`: "database" (the default) in one budget per tenant shared
by every process and replica (quotas.shared_rate, within processes x batch calls), "process"
in this process alone (quotas.rate: behind N processes a tenant gets up to N times its limit).

The tenant's limits are cached per process: every tenant transaction already reads the tenant's
settings (tenant_context's one context statement) and refreshes the cache for free; a tenant
not seen for CACHE_TTL_S is looked up once (a read, never a write) on its next call. Over HTTP
that lookup uses the credential pool (transports.http.auth), so it never waits behind tool calls.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any
from uuid import UUID

from mindscape.config.settings import Settings
from mindscape.database.pool import FAILURES, Pool
from mindscape.errors import QuotaExceeded
from mindscape.queries import tenants
from mindscape.quotas.limits import Limits, TenantQuotas, effective_own, tenant_quotas
from mindscape.quotas.rate import CallLimiter
from mindscape.quotas.shared_rate import SharedCallLimiter

log = logging.getLogger(__name__)
CACHE_TTL_S = 30.0
LOOKUP_TIMEOUT_S = 5.0  # waiting for a connection to read a tenant's limits, at most
LIMIT = "calls_per_minute"


class CallQuota:
    def __init__(self, settings: Settings, pool: Pool) -> None:
        """`pool`: where a tenant's limits are read when the cache has none, and where the shared
        counter lives (over HTTP, the credential pool; always on the primary)."""
        self._settings = settings
        self._default = settings.quota_calls_per_minute
        self._pool = pool
        self._known: dict[UUID, tuple[TenantQuotas, float]] = {}  # tenant -> (its overrides, when seen)
        # tenant -> (the overrides, the limits made from them): asked several times a call, made once
        self._effective: dict[UUID, tuple[TenantQuotas, Limits]] = {}
        self._seen: dict[UUID, dict[str, Any]] = {}  # tenant -> the settings `observe` last parsed
        self.limiter: CallLimiter | SharedCallLimiter = (
            SharedCallLimiter(pool, batch_max=settings.quota_rate_batch)
            if settings.quota_backend == "database"
            else CallLimiter()
        )

    def observe(self, tenant_id: UUID, tenant_settings: dict[str, Any]) -> None:
        """Remember the tenant's limits from settings a transaction has just read."""
        known = self._known.get(tenant_id)
        if known is not None and self._seen.get(tenant_id) == tenant_settings:
            own = known[0]  # unchanged: the same object, so the limits made from it are reused
        else:
            own = tenant_quotas(tenant_settings)
            self._seen[tenant_id] = tenant_settings
        self._known[tenant_id] = (own, time.monotonic())

    async def check(self, tenant_id: UUID, tenant_slug: str) -> None:
        """Count one call; raise QuotaExceeded (with the seconds to wait) when the tenant is over."""
        own = (await self.tenant(tenant_id)).calls_per_minute
        per_minute = self._default if own is None else own
        if per_minute == 0:
            return
        limiter = self.limiter
        wait = (
            await limiter.acquire(tenant_id, per_minute)
            if isinstance(limiter, SharedCallLimiter)
            else limiter.acquire(tenant_id, per_minute)
        )
        if wait is not None:
            retry_after = max(1, math.ceil(wait))
            raise QuotaExceeded(
                f"tenant {tenant_slug} is over its limit {LIMIT}={per_minute}; retry in {retry_after} s "
                "(an operator can raise it with `mindscape tenant quota`)",
                limit=LIMIT,
                value=per_minute,
                retry_after=retry_after,
            )

    async def limits(self, tenant_id: UUID) -> Limits:
        """Every limit in effect for the tenant: its own where set, else the configured default."""
        return self._limits_from(tenant_id, await self.tenant(tenant_id))

    def known_limits(self, tenant_id: UUID) -> Limits:
        """The same without waiting: the cached limits (even if stale), else the defaults.

        For synchronous admission checks that run right after `limits` was awaited for the same
        request, so the cache is current.
        """
        known = self._known.get(tenant_id)
        return (
            self._limits_from(tenant_id, known[0])
            if known is not None
            else effective_own(TenantQuotas(), self._settings)
        )

    def seen(self, tenant_id: UUID) -> tuple[dict[str, Any], Limits] | None:
        """The tenant's settings as last read (however long ago) and the limits made from them, for
        a write that checks in its own statement that they are still current (tenancy.one_statement)."""
        known = self._known.get(tenant_id)
        settings = self._seen.get(tenant_id)
        if known is None or settings is None:
            return None
        return settings, self._limits_from(tenant_id, known[0])

    def _limits_from(self, tenant_id: UUID, own: TenantQuotas) -> Limits:
        made = self._effective.get(tenant_id)
        if made is not None and made[0] is own:
            return made[1]
        limits = effective_own(own, self._settings)
        self._effective[tenant_id] = (own, limits)
        return limits

    async def tenant(self, tenant_id: UUID) -> TenantQuotas:
        """The tenant's own limits as last seen (at most CACHE_TTL_S old, else read again)."""
        known = self._known.get(tenant_id)
        if known is not None and time.monotonic() - known[1] < CACHE_TTL_S:
            return known[0]
        try:
            async with self._pool.acquire(timeout=LOOKUP_TIMEOUT_S) as conn:
                found = await tenants.get_settings(conn, tenant_id=tenant_id)
        except FAILURES:  # TimeoutError included
            # The call itself will report the database failure; the quota falls back, it never fails a call.
            log.warning("could not read the limits of tenant %s; using the last known ones", tenant_id)
            return known[0] if known is not None else TenantQuotas()
        self.observe(tenant_id, found or {})
        return self._known[tenant_id][0]
