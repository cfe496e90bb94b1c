"""The calls-per-minute gate for stdio and in-memory sessions, as an error result the agent can read.

Over HTTP the same quota is checked earlier, before the MCP handler (transports.http.middleware.quota), so
that the refusal can be an HTTP 429 with Retry-After; calls with a verified access token are
therefore not counted a second time here.
"""

from __future__ import annotations

from typing import Any

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.mcpserver import Context

from mindscape.app.state import AppState


async def check_call_quota(context: Context[AppState, Any] | None) -> None:
    """Raises QuotaExceeded (mapped by app.errors) when the stdio tenant is over its calls per minute."""
    if context is None or get_access_token() is not None:
        return
    state = context.request_context.lifespan_context
    if state.caller is None:
        return  # no configured tenant: the call fails later, with its own message
    await state.calls.check(state.caller.tenant_id, state.caller.tenant_slug)
