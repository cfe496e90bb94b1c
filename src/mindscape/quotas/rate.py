"""Calls per minute: an in-process token bucket per tenant (GCRA), O(1) and with no database write.

Each tenant may make `n` calls in a burst, and then one more every 60/n seconds. The bucket is
stored as one float per tenant: the "theoretical arrival time" of GCRA. The state lives in this
process only, so behind N processes a tenant gets up to N times its limit (docs/operations.md: Quotas).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from uuid import UUID

PERIOD_S = 60.0
PRUNE_AT = 10_000  # tenants tracked before idle ones (a full bucket) are dropped


class CallLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tat: dict[UUID, float] = {}

    def acquire(self, tenant_id: UUID, per_minute: int) -> float | None:
        """Take one call from the tenant's bucket: None if allowed, else the seconds until one is."""
        now = self._clock()
        interval = PERIOD_S / per_minute
        tat = max(self._tat.get(tenant_id, now), now)
        allowed_at = tat + interval - PERIOD_S
        if allowed_at > now:
            return allowed_at - now
        if len(self._tat) >= PRUNE_AT:
            self._tat = {t: v for t, v in self._tat.items() if v > now}  # a bucket already full holds no state
        self._tat[tenant_id] = tat + interval
        return None
