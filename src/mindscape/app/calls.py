"""Run a tool, resource or prompt call inside its tenant transaction, with agent-facing errors.

The caller sees a specific message for anything anticipated; for anything else a generic one,
while the details go to the log (stderr), never to the client. Each MCP primitive reports
errors its own way: tools as `isError` results, resources and prompts as JSON-RPC errors.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Literal

import asyncpg
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.shared.exceptions import MCPError
from mcp.types import INTERNAL_ERROR, INVALID_PARAMS

from mindscape.app.identity import current_caller
from mindscape.app.state import AppState
from mindscape.errors import MindscapeError, NotFound
from mindscape.tenancy.caller import Caller
from mindscape.tenancy.transaction import TenantTx, tenant_transaction

log = logging.getLogger(__name__)

Kind = Literal["tool", "resource", "prompt"]
TIMEOUT = "the database took longer than the statement timeout; narrow the request and retry"
INTERNAL = "internal error; it was logged for the operator. Retry later, or report it if it persists"


def agent_error(kind: Kind, message: str, *, not_found: bool = False, internal: bool = False) -> Exception:
    """The exception that carries `message` to the client for this kind of call."""
    if kind == "tool":
        return ToolError(message)
    if kind == "resource":
        return ResourceNotFoundError(message) if not_found else ResourceError(message)
    return MCPError(INTERNAL_ERROR if internal else INVALID_PARAMS, message)


@asynccontextmanager
async def tenant_call(
    ctx: Context[AppState], *, read_only: bool, kind: Kind = "tool", caller: Caller | None = None
) -> AsyncGenerator[TenantTx]:
    """A transaction as `caller` (default: the request's caller, see identity.current_caller)."""
    state = ctx.request_context.lifespan_context
    try:
        async with tenant_transaction(
            state.pool,
            caller or current_caller(ctx),
            read_only=read_only,
            statement_timeout_ms=state.settings.statement_timeout_ms,
            background=state.background,
        ) as tx:
            state.calls.observe(tx.tenant_id, tx.settings)  # keeps the call quota current at no cost
            yield tx
    except MindscapeError as exc:
        raise agent_error(kind, str(exc), not_found=isinstance(exc, NotFound)) from exc
    except asyncpg.QueryCanceledError as exc:
        raise agent_error(kind, TIMEOUT) from exc
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        log.exception("database failure during a %s call", kind)
        raise agent_error(kind, INTERNAL, internal=True) from exc
