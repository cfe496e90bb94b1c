"""The call wrapper: run a tool, resource or prompt call inside its caller's tenant transaction.

Errors are not mapped here: they propagate to MindscapeServer, which turns them into MCP errors
in one place (app.errors).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from contextvars import ContextVar

from mcp.server.mcpserver import Context

from mindscape.app.identity import current_caller
from mindscape.app.state import AppState
from mindscape.tenancy.caller import Caller
from mindscape.tenancy.transaction import TenantTx, tenant_transaction

# The tool being called, set by MindscapeServer.call_tool: the audit trail's `tool` (migration 0006).
CURRENT_CALL: ContextVar[str] = ContextVar("mindscape_call", default="")


@asynccontextmanager
async def tenant_call(
    ctx: Context[AppState], *, read_only: bool, caller: Caller | None = None
) -> AsyncGenerator[TenantTx]:
    """A transaction as `caller` (default: the request's caller, see identity.current_caller)."""
    state = ctx.request_context.lifespan_context
    async with tenant_transaction(
        state.pool,
        caller or current_caller(ctx),
        read_only=read_only,
        statement_timeout_ms=state.settings.statement_timeout_ms,
        background=state.background,
        call=CURRENT_CALL.get(),
        acquire_timeout_s=state.settings.pool_acquire_timeout_s,
    ) as tx:
        state.calls.observe(tx.tenant_id, tx.settings)  # keeps the call quota current at no cost
        yield tx
