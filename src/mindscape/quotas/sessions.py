"""Open sessions per tenant: MCP sessions (Streamable HTTP) and SSE streams held in this process.

A session is admitted under its tenant's `max_sessions` and forgotten when it ends; the transport
(transports.http.sessions) calls `open` and `close` where the SDK creates and discards a
session, so every way a session ends frees its slot. Both are synchronous: no two requests can
take the last slot.
"""

from __future__ import annotations

from collections.abc import Hashable
from uuid import UUID

from mindscape.errors import QuotaExceeded

LIMIT = "max_sessions"
# Slots free up only when the tenant's own sessions end (DELETE, idle expiry, a closed stream).
RETRY_AFTER_S = 60


class OpenSessions:
    def __init__(self) -> None:
        self._by_tenant: dict[UUID, set[Hashable]] = {}
        self._tenant_of: dict[Hashable, UUID] = {}

    def count(self, tenant_id: UUID) -> int:
        return len(self._by_tenant.get(tenant_id, ()))

    def open(self, tenant_id: UUID, session: Hashable, limit: int) -> bool:
        """Admit `session` for the tenant; False (nothing recorded) at its limit (0: unlimited)."""
        if limit and self.count(tenant_id) >= limit:
            return False
        self._by_tenant.setdefault(tenant_id, set()).add(session)
        self._tenant_of[session] = tenant_id
        return True

    def close(self, session: Hashable) -> None:
        """Forget a session; closing one that is unknown or already closed does nothing."""
        tenant_id = self._tenant_of.pop(session, None)
        if tenant_id is None:
            return
        held = self._by_tenant.get(tenant_id)
        if held is not None:
            held.discard(session)
            if not held:
                del self._by_tenant[tenant_id]

    def __len__(self) -> int:
        return len(self._tenant_of)


def over_limit(tenant_slug: str, limit: int) -> QuotaExceeded:
    return QuotaExceeded(
        f"tenant {tenant_slug} already has {limit} open sessions, its limit {LIMIT}={limit}; "
        "reuse an open session (send its Mcp-Session-Id) or close unused ones (HTTP DELETE on the endpoint "
        "with their Mcp-Session-Id), or ask an operator to raise the limit (`mindscape tenant quota`)",
        limit=LIMIT,
        value=limit,
        retry_after=RETRY_AFTER_S,
    )
