"""What every tool call, resource read and prompt get passes before it runs: the tenant's limits.

- calls_per_minute, for stdio and in-memory sessions. Over HTTP the same quota is checked earlier,
  before the MCP handler (transports.http.middleware.quota), so that the refusal can be an HTTP 429
  with Retry-After; calls with a verified access token are therefore not counted a second time here.
- max_concurrent_calls, on every transport: the call holds one of its tenant's slots
  (quotas.concurrency) until its work is done. Over HTTP the middleware has usually taken the slot
  already (to answer 429); the call adopts it. Otherwise (stdio, legacy SSE, a request the
  middleware let through in a race) the call takes one here, and over the limit it is refused with
  the same message: an `isError` result for a tool, a JSON-RPC error for a resource or prompt.
- db_ms_per_second, on every transport: the call is one of its tenant's running calls in the
  database-time budget (quotas.db_time) until its work is done; its transactions are charged to it.
  Over HTTP the middleware checked the budget and reserved the run; otherwise it is checked here.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.mcpserver import Context

from mindscape.app.identity import caller_from_token
from mindscape.app.state import AppState
from mindscape.quotas import db_time
from mindscape.quotas.concurrency import adopt_reserved


@asynccontextmanager
async def admitted(context: Context[AppState, Any] | None, kind: str) -> AsyncGenerator[None]:
    """Raises QuotaExceeded (mapped by app.errors) when the tenant is over a limit; else holds a call slot.

    `kind` (quotas.db_time.call_kind) is what the call is, for its expected database time."""
    if context is None:
        yield
        return
    state = context.request_context.lifespan_context
    token = get_access_token()
    caller = caller_from_token(token) if token is not None else state.caller
    if caller is None:
        yield  # no configured tenant: the call fails later, with its own message
        return
    if token is None:
        await state.calls.check(caller.tenant_id, caller.tenant_slug)
    slot = adopt_reserved(caller.tenant_id)
    if slot is None:
        limit = (await state.calls.limits(caller.tenant_id)).max_concurrent_calls.value
        slot = state.running.take(caller.tenant_id, caller.tenant_slug, limit)
    try:
        run = db_time.adopt_reserved(caller.tenant_id, kind)
        if run is None:
            per_second = (await state.calls.limits(caller.tenant_id)).db_ms_per_second.value
            run = state.db_time.admit(caller.tenant_id, caller.tenant_slug, per_second, kind)
    except BaseException:
        slot.release()
        raise
    current = db_time.current_run.set(run)
    try:
        yield
    finally:
        db_time.current_run.reset(current)
        run.end()
        slot.release()
