"""The one way tenant data is touched: a transaction bound to a caller's tenant (or its context
in one statement, tenancy/one_statement.py, for a read of one query or a write of one script).

Role, tenant, principal and statement timeout are set transaction-locally in one statement
with bound parameters, so they vanish at commit, rollback, error or cancellation, and
row-level security (not Python) decides which rows the queries see.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import anyio
import asyncpg
from anyio.abc import TaskGroup

from mindscape.database import trips
from mindscape.database.pool import FAILURES, Connection, Pool, PooledConnection, acquire, discard, end, release
from mindscape.errors import CommitUnknown, InvalidArgument, TenantUnavailable
from mindscape.tenancy.caller import Caller

# One statement sets the context and reads the tenant's status and settings: tenant_context's
# arguments, the set_config() calls, are evaluated before it runs, so it reads as mindscape_tenant,
# under the tenant's own-row policy (the runtime role cannot list tenants). The status check makes
# a tenant disabled mid-run stop being served on its next call. `app.call` names the call and
# `app.source` an operator command's input: the audit triggers record both (migration 0006).
# `app.persona` (the caller's bound persona) and `app.principal` decide which memories row-level
# security shows (migration 0009); `app.client_*` are the MCP client recorded on what it writes.
SET_CONTEXT = """
SELECT c.status, c.settings
FROM mindscape.tenant_context(
    set_config('role', 'mindscape_tenant', true),
    set_config('app.tenant_id', $1, true),
    set_config('app.principal', $2, true),
    set_config('statement_timeout', $3, true),
    set_config('app.call', $4, true),
    set_config('app.source', $5, true),
    set_config('app.persona', $6, true),
    set_config('app.client_name', $7, true),
    set_config('app.client_version', $8, true),
    set_config('app.all_memories', $9, true)
) c
"""


@dataclass(frozen=True)
class TenantTx:
    """An open tenant-scoped transaction: its connection, its tenant and that tenant's settings."""

    conn: Connection
    tenant_id: UUID
    settings: dict[str, Any]


@asynccontextmanager
async def tenant_transaction(
    pool: Pool,
    caller: Caller,
    *,
    read_only: bool,
    statement_timeout_ms: int,
    background: TaskGroup | None = None,
    call: str = "",
    source: str = "",
    acquire_timeout_s: float | None = None,
) -> AsyncGenerator[TenantTx]:
    """One transaction as `caller`'s tenant; commits on success, rolls back on any exception.

    `call` names what runs in it (a tool, or an operator command such as `persona_import`) and
    `source` where an operator command's input came from; the audit trail records both for every
    change the transaction makes.

    With `background`, a read-only transaction is ended and its connection released after the
    caller has its result: its outcome cannot change any more, and the caller's reply no longer
    waits for that round trip. The connection returns to the pool only once clean. Round trips:
    BEGIN, the context statement, the queries, and the end, which leaves the session as the
    pool's reset would (database.pool.end), so release sends nothing more.

    `acquire_timeout_s` bounds the wait for a pool connection (ServerBusy past it). A connection
    that fails is discarded, never reused, and never raises a second error over the first; a
    failure of COMMIT itself is CommitUnknown, because the change may have been saved.
    """
    if not isinstance(caller.tenant_id, UUID):  # pyright: ignore[reportUnnecessaryIsInstance]
        # A tenant identifier that is not a real UUID never reaches SQL.
        raise InvalidArgument("tenant identifier is not a UUID")
    conn = await acquire(pool, wait_s=acquire_timeout_s)
    async with transaction_on(
        pool,
        conn,
        caller,
        read_only=read_only,
        statement_timeout_ms=statement_timeout_ms,
        background=background,
        call=call,
        source=source,
    ) as tx:
        yield tx


@asynccontextmanager
async def transaction_on(
    pool: Pool,
    conn: PooledConnection,
    caller: Caller,
    *,
    read_only: bool,
    statement_timeout_ms: int,
    background: TaskGroup | None = None,
    call: str = "",
    source: str = "",
) -> AsyncGenerator[TenantTx]:
    """tenant_transaction on `conn`, just taken from `pool`, to which it returns at the end."""
    handed_off = False
    try:
        await conn.execute("BEGIN READ ONLY" if read_only else "BEGIN")
        try:
            settings = await set_context(conn, caller, context_values(caller, statement_timeout_ms, call, source))
            yield TenantTx(conn=conn, tenant_id=caller.tenant_id, settings=settings)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await _end(conn, "ROLLBACK")
            raise
        if read_only and background is not None:
            background.start_soon(_end_and_release, pool, conn, trips.hold())
            handed_off = True
        else:
            # Shielded: a cancelled commit would leave the outcome unknown to the caller.
            with anyio.CancelScope(shield=True):
                await _commit(conn)
    finally:
        if not handed_off:
            await release(pool, conn)  # shielded by asyncpg (database.pool.release)


def context_values(caller: Caller, statement_timeout_ms: int, call: str, source: str) -> list[str]:
    """SET_CONTEXT's arguments, in order."""
    return [
        str(caller.tenant_id),
        caller.principal,
        str(statement_timeout_ms),
        call,
        source,
        caller.persona or "",
        (caller.client_name or "")[:200],
        (caller.client_version or "")[:100],
        "on" if caller.sees_all else "",
    ]


async def set_context(conn: Connection, caller: Caller, values: list[str]) -> dict[str, Any]:
    """Run SET_CONTEXT in the open transaction; the tenant's settings, or TenantUnavailable."""
    context = await conn.fetchrow(SET_CONTEXT, *values)
    if context is None or context["status"] != "active":
        raise unavailable(caller)
    return context["settings"]


def unavailable(caller: Caller) -> TenantUnavailable:
    """The refusal for a tenant found disabled or gone when its call began."""
    return TenantUnavailable(f"tenant {caller.tenant_slug!r} is disabled or was removed; contact the operator")


async def _commit(conn: Connection) -> None:
    try:
        await end(conn, "COMMIT")  # with the session's reset: nothing after COMMIT can fail on its own
    except asyncpg.PostgresError as exc:
        if server_answered(exc):
            raise  # the server answered: the transaction was rolled back (e.g. a serialization failure)
        discard(conn)
        raise CommitUnknown() from exc
    except FAILURES as exc:
        discard(conn)  # the connection broke with COMMIT sent or about to be: nobody knows which
        raise CommitUnknown() from exc


def server_answered(exc: asyncpg.PostgresError) -> bool:
    """Whether the server answered COMMIT with an error (the outcome is known: not saved), rather
    than the connection ending under it (08: connection exceptions; 57P0x: the backend was shut down)."""
    state = exc.sqlstate or ""
    return not (state.startswith("08") or state.startswith("57P"))


async def _end(conn: Connection, statement: str) -> None:
    try:
        await end(conn, statement)
    except Exception:
        # A connection that cannot end its transaction (e.g. cancelled mid-query, or lost) is never reused.
        discard(conn)


async def _end_and_release(pool: Pool, conn: PooledConnection, tally: trips.Tally | None) -> None:
    # A background task: whatever happens here must not reach the server's task group.
    try:
        await _end(conn, "ROLLBACK")  # read-only: the same as COMMIT
    finally:
        try:
            await release(pool, conn)
        finally:
            if tally is not None:
                tally.release()  # the call's round trips are all counted now
