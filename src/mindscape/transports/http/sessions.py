"""Open sessions per tenant (`max_sessions`) for stateful Streamable HTTP, where the SDK keeps them.

The SDK's StreamableHTTPSessionManager creates every session in `_admit_session` (synchronously,
under its creation lock) and forgets every session in `_discard_session`, however it ends: a
client DELETE, the idle timeout (`http_session_idle_timeout_s`), a crash, an opening request that
failed or was cancelled, and shutdown. `limit_sessions` wraps exactly those two methods of the one
manager instance, so the per-tenant count (quotas.sessions.OpenSessions) is taken and given back at
the same points as the SDK's own table: a slot cannot outlive its session. Over the tenant's limit,
admission raises `SessionRefused` before any session or task exists; the tenant-limits middleware
answers it with a 429.

Both are private methods of the SDK (mcp 2.3); `limit_sessions` checks they are there and fails at
startup, not at the first request, if a future SDK renames them. Legacy SSE needs no hook: its
session is the `/sse` request itself, counted by the middleware (middleware.quota).
"""

from __future__ import annotations

import inspect
from typing import Any

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.middleware.bearer_auth import AuthorizationContext
from mcp.server.streamable_http import StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

from mindscape.app.identity import caller_from_token
from mindscape.errors import QuotaExceeded
from mindscape.quotas.call_rate import CallQuota
from mindscape.quotas.sessions import OpenSessions, over_limit


class SessionRefused(Exception):
    """A new session over its tenant's limit; carries the QuotaExceeded to answer with."""

    def __init__(self, quota: QuotaExceeded) -> None:
        super().__init__(str(quota))
        self.quota = quota


def limit_sessions(manager: StreamableHTTPSessionManager, sessions: OpenSessions, calls: CallQuota) -> None:
    """Count `manager`'s sessions per tenant in `sessions`, refusing new ones past `max_sessions`."""
    if not callable(getattr(manager, "_admit_session", None)) or not inspect.iscoroutinefunction(
        getattr(manager, "_discard_session", None)
    ):
        raise RuntimeError("this MCP SDK's session manager has no _admit_session/_discard_session to limit sessions")
    admit = manager._admit_session  # pyright: ignore[reportPrivateUsage]
    discard = manager._discard_session  # pyright: ignore[reportPrivateUsage]

    def admit_within_limit(requestor: AuthorizationContext | None) -> StreamableHTTPServerTransport | None:
        token = get_access_token()  # set by the SDK's auth context middleware for this request
        if token is None:
            return admit(requestor)  # unreachable behind the bearer check: /mcp needs a credential
        caller = caller_from_token(token)
        # The middleware has just awaited this tenant's limits for the same request: the cache is current.
        limit = calls.known_limits(caller.tenant_id).max_sessions.value
        if limit and sessions.count(caller.tenant_id) >= limit:
            raise SessionRefused(over_limit(caller.tenant_slug, limit))
        transport = admit(requestor)
        if transport is not None and transport.mcp_session_id is not None:
            sessions.open(caller.tenant_id, transport.mcp_session_id, 0)  # checked above, no await between
        return transport

    async def discard_and_free(session_id: str, transport: StreamableHTTPServerTransport) -> None:
        sessions.close(session_id)  # first: the slot is free from the moment the SDK forgets the session
        await discard(session_id, transport)

    instance: Any = manager
    instance._admit_session = admit_within_limit
    instance._discard_session = discard_and_free
