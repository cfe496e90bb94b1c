"""Concurrent calls per tenant: how many tool calls, resource reads and prompt gets run at once.

One counter per tenant, in this process. A call takes a slot before it does any work and gives it
back when its work ends; past the tenant's `max_concurrent_calls` it is refused at once (no queue:
docs/decisions.md, "Concurrent calls are refused, not queued"). With the default of half the pool,
one tenant can never hold every database connection, however many requests it sends.

Over HTTP the slot is taken by the middleware, before the MCP handler, so that a refusal can be a
429; the call then adopts that slot and keeps it until its work is done, even when the client has
gone away meanwhile. A slot nobody adopted (the request failed before reaching a call) is given back
by the middleware. Taking and giving back are plain synchronous code: no two requests can both see
the last free slot.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from dataclasses import dataclass, field
from uuid import UUID

from mindscape.errors import QuotaExceeded

log = logging.getLogger(__name__)
LIMIT = "max_concurrent_calls"
RETRY_AFTER_S = 1


@dataclass
class Slot:
    """One running call of a tenant; `release` is idempotent."""

    tenant_id: UUID
    _owner: ConcurrentCalls = field(repr=False)
    adopted: bool = False
    released: bool = False

    def adopt(self) -> bool:
        """Take over a slot the middleware reserved; False if it was already given back."""
        if self.released or self.adopted:
            return False
        self.adopted = True
        return True

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._owner.give_back(self.tenant_id)


class ConcurrentCalls:
    def __init__(self) -> None:
        self._running: dict[UUID, int] = {}

    def running(self, tenant_id: UUID) -> int:
        return self._running.get(tenant_id, 0)

    def try_take(self, tenant_id: UUID, limit: int) -> Slot | None:
        """A slot for one more call of the tenant, or None at its limit (0: unlimited)."""
        running = self._running.get(tenant_id, 0)
        if limit and running >= limit:
            return None
        self._running[tenant_id] = running + 1
        return Slot(tenant_id, self)

    def take(self, tenant_id: UUID, tenant_slug: str, limit: int) -> Slot:
        """A slot, or QuotaExceeded naming the limit."""
        slot = self.try_take(tenant_id, limit)
        if slot is None:
            raise over_limit(tenant_slug, limit)
        return slot

    def give_back(self, tenant_id: UUID) -> None:
        left = self._running.get(tenant_id, 0) - 1
        if left > 0:
            self._running[tenant_id] = left
        else:
            self._running.pop(tenant_id, None)  # idle tenants hold no state
            if left < 0:
                log.error("a call slot of tenant %s was given back twice", tenant_id)


# The slots the HTTP middleware took for the request being handled. The SDK hands each call the
# contextvars of the request that carried it (also across its session's task), so the call finds them.
reserved_slots: ContextVar[list[Slot] | None] = ContextVar("mindscape_reserved_call_slots", default=None)


def adopt_reserved(tenant_id: UUID) -> Slot | None:
    """A slot taken for this request and not adopted yet, now owned by the caller; None if there is none."""
    for slot in reserved_slots.get() or ():
        if slot.tenant_id == tenant_id and slot.adopt():
            return slot
    return None


def over_limit(tenant_slug: str, limit: int) -> QuotaExceeded:
    return QuotaExceeded(
        f"tenant {tenant_slug} already has {limit} calls running, its limit {LIMIT}={limit}; "
        f"wait for one to finish and retry in {RETRY_AFTER_S} s, send calls one after another "
        "(an operator can raise the limit with `mindscape tenant quota`)",
        limit=LIMIT,
        value=limit,
        retry_after=RETRY_AFTER_S,
    )
