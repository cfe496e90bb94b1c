"""The call wrapper: run a tool, resource or prompt call inside its caller's tenant transaction.

Errors are not mapped here: they propagate to MindscapeServer, which turns them into MCP errors
in one place (app.errors).

A read-only call runs on the replica when `read_database_url` is set (AppState.pool_for): it may
not see a write committed a moment ago on the primary (docs/scaling.md: Reads from a standby).
When the replica cannot be reached, the call runs on the primary instead. Work that reads in
order to write (`primary=True`) always runs on the primary.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from contextvars import ContextVar
from typing import TypeVar

import asyncpg
from mcp.server.mcpserver import Context

from mindscape.app.identity import current_caller
from mindscape.app.state import REPLICA_RETRY_S, AppState
from mindscape.database.pool import Pool
from mindscape.errors import DatabaseUnreachable
from mindscape.quotas.db_time import current_run
from mindscape.tenancy import one_statement
from mindscape.tenancy.caller import Caller
from mindscape.tenancy.one_statement import OneWrite, Settings, TenantRead
from mindscape.tenancy.transaction import TenantTx, tenant_transaction

# The tool being called, set by MindscapeServer.call_tool: the audit trail's `tool` (migration 0006).
CURRENT_CALL: ContextVar[str] = ContextVar("mindscape_call", default="")
log = logging.getLogger(__name__)
T = TypeVar("T")
# Appended to the descriptions of the reads an agent makes right after its own writes (recall,
# list_tasks), only when a replica serves reads: every agent pays for these words every turn.
REPLICA_NOTE = "Read from a replica: a write of the last second or so may not show yet."
# The replica is not there (down, restarting, its connection lost): a read can run on the primary.
# A connection that cannot be opened at all reaches us as DatabaseUnreachable (database.pool.acquire);
# a busy replica (ServerBusy) is not unreachable and does not send its reads to the primary.
REPLICA_UNREACHABLE = (
    DatabaseUnreachable,
    OSError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
)


@asynccontextmanager
async def tenant_call(
    ctx: Context[AppState], *, read_only: bool, caller: Caller | None = None, primary: bool = False
) -> AsyncGenerator[TenantTx]:
    """A transaction as `caller` (default: the request's caller, see identity.current_caller).

    `read_only` without `primary`: on the replica, if there is one.
    """
    state = ctx.request_context.lifespan_context

    def open_on(pool: Pool, who: Caller) -> AbstractAsyncContextManager[TenantTx]:
        return tenant_transaction(
            pool,
            who,
            read_only=read_only,
            statement_timeout_ms=state.settings.statement_timeout_ms,
            background=state.background,
            call=CURRENT_CALL.get(),
            acquire_timeout_s=state.settings.pool_acquire_timeout_s,
        )

    async with _charged(ctx, open_on, read_only=read_only, caller=caller, primary=primary) as tx:
        state.calls.observe(tx.tenant_id, tx.settings)  # keeps the call quota current at no cost
        yield tx


@asynccontextmanager
async def tenant_read(
    ctx: Context[AppState], *, caller: Caller | None = None, settings: Settings | None = None
) -> AsyncGenerator[TenantRead]:
    """A read that is one query, as `caller`: one round trip where the pool allows it
    (tenancy.one_statement), on the replica if there is one; `settings` are in effect for it."""
    state = ctx.request_context.lifespan_context

    def open_on(pool: Pool, who: Caller) -> AbstractAsyncContextManager[TenantRead]:
        return one_statement.tenant_read(
            pool,
            who,
            statement_timeout_ms=state.settings.statement_timeout_ms,
            background=state.background,
            call=CURRENT_CALL.get(),
            acquire_timeout_s=state.settings.pool_acquire_timeout_s,
            settings=settings,
        )

    async with _charged(ctx, open_on, read_only=True, caller=caller, primary=False) as tx:
        yield tx


@asynccontextmanager
async def tenant_write(ctx: Context[AppState]) -> AsyncGenerator[OneWrite]:
    """A write that is one script, as the request's caller, on the primary: one round trip where
    the pool allows it (tenancy.one_statement); else its `run` answers None and the caller writes
    in a transaction (tenant_call)."""
    state = ctx.request_context.lifespan_context

    def open_on(pool: Pool, who: Caller) -> AbstractAsyncContextManager[OneWrite]:
        return one_statement.tenant_write(
            pool,
            who,
            statement_timeout_ms=state.settings.statement_timeout_ms,
            call=CURRENT_CALL.get(),
            acquire_timeout_s=state.settings.pool_acquire_timeout_s,
        )

    async with _charged(ctx, open_on, read_only=False, caller=None, primary=True) as writer:
        yield writer


@asynccontextmanager
async def _charged(
    ctx: Context[AppState],
    open_on: Callable[[Pool, Caller], AbstractAsyncContextManager[T]],
    *,
    read_only: bool,
    caller: Caller | None,
    primary: bool,
) -> AsyncGenerator[T]:
    """`open_on` the pool the call belongs on (the primary when the replica is unreachable), its
    wall time charged to the tenant's database-time budget."""
    state = ctx.request_context.lifespan_context
    who = caller or current_caller(ctx)
    pool = state.pool_for(read_only=read_only and not primary)
    async with AsyncExitStack() as stack:
        try:
            tx = await stack.enter_async_context(open_on(pool, who))
        except REPLICA_UNREACHABLE as exc:
            if pool is state.pool or state.replica is None:
                raise
            state.replica.failed()
            log.warning(
                "read replica unreachable (%s); reading from the primary for %g s", type(exc).__name__, REPLICA_RETRY_S
            )
            tx = await stack.enter_async_context(open_on(state.pool, who))
        began = time.monotonic()
        try:
            yield tx
        finally:
            # The transaction's wall time, from its context statement to the end of the call's block,
            # is what the call cost the database: charged to the tenant's budget (quotas.db_time).
            run = current_run.get()
            if run is not None and run.tenant_id == who.tenant_id:
                per_second = state.calls.known_limits(who.tenant_id).db_ms_per_second.value
                state.db_time.charge(run, (time.monotonic() - began) * 1000, per_second)
