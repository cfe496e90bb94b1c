"""Run a tool or resource call inside its tenant transaction and turn failures into agent errors.

The agent sees a specific message for anything anticipated; for anything else it sees a
generic one while the details go to the log (stderr), never to the client.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

import asyncpg
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError

from mindscape.errors import MindscapeError, NotFound
from mindscape.server.state import AppState
from mindscape.server.tenant_context import TenantTx, tenant_transaction

log = logging.getLogger(__name__)

TIMEOUT = "the database took longer than the statement timeout; narrow the request and retry"
INTERNAL = "internal error; it was logged for the operator. Retry later, or report it if it persists"


def state_of(ctx: Context[AppState]) -> AppState:
    return ctx.request_context.lifespan_context


@asynccontextmanager
async def tenant_call(
    ctx: Context[AppState], *, read_only: bool, for_resource: bool = False
) -> AsyncGenerator[TenantTx]:
    state = state_of(ctx)
    try:
        async with tenant_transaction(
            state.pool, state.caller, read_only=read_only, statement_timeout_ms=state.settings.statement_timeout_ms
        ) as tx:
            yield tx
    except NotFound as exc:
        raise (ResourceNotFoundError if for_resource else ToolError)(str(exc)) from exc
    except MindscapeError as exc:
        raise (ResourceError if for_resource else ToolError)(str(exc)) from exc
    except asyncpg.QueryCanceledError as exc:
        raise (ResourceError if for_resource else ToolError)(TIMEOUT) from exc
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        log.exception("database failure during a call")
        raise (ResourceError if for_resource else ToolError)(INTERNAL) from exc
