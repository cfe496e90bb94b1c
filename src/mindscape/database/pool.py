"""The asyncpg pool every runtime query goes through.

Each hook has one job: `init` registers codecs once per connection; `reset` puts a released
connection back to a pristine session, including the role (`RESET ALL` leaves the role alone).
A tenant transaction's end leaves the session as that reset would, in the same round trip
(`end`); the hook then sees nothing has run since and costs no round trip. Every request a pooled
connection sends is counted (database.trips).

Through a transaction-mode pooler (`pooled=True`, PgBouncer with `pool_mode = transaction`)
each transaction may run on another server connection, so two things change: asyncpg's
statement cache is off (a named prepared statement lives on one server connection; unnamed ones
are parsed again with every execution, in the same round trip), and nothing is reset on release
(the reset would reach whichever server connection is free, not the one the client used). Nothing
needs it: every call sets role, tenant, principal and timeout transaction-locally
(tenancy/transaction.py), and the server never sets session state.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from pgvector.asyncpg import register_vector

from mindscape.database.targets import redact
from mindscape.database.trips import CountingProtocol
from mindscape.errors import DatabaseUnreachable, ServerBusy, ShuttingDown, StartupError

log = logging.getLogger(__name__)

# Everything a database call may raise on its own: the server's errors, asyncpg's misuse and
# protocol errors (a lost connection shows as any of them, e.g. InternalClientError "cannot switch
# to state 12" in the first moments of an outage) and the socket's. Which of these are temporary
# is decided where they become answers (app.errors).
FAILURES: tuple[type[Exception], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,  # TimeoutError included
)

# The fix, in the same line as the failure: the URL may be the runtime or the owner one.
UNREACHABLE_FIX = (
    "start PostgreSQL there, or correct database_url / owner_database_url "
    "(MINDSCAPE_DATABASE_URL, MINDSCAPE_OWNER_DATABASE_URL)"
)

if TYPE_CHECKING:  # asyncpg's classes are generic only in its stubs
    Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]
    # Query functions accept a plain connection or one borrowed from the pool.
    PooledConnection: TypeAlias = PoolConnectionProxy[asyncpg.Record]
    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record] | PooledConnection
else:
    PooledConnection = PoolConnectionProxy
    Pool = asyncpg.Pool
    Connection = asyncpg.Connection


class Reader(Protocol):
    """What the query function of a read that is one query uses: a connection, or
    tenancy.one_statement's stand-in that runs its query with the context in one statement."""

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]: ...
    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None: ...


VECTOR_SCHEMA = (
    "SELECT n.nspname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.typname = 'vector'"
)


class _OneLine(logging.Filter):
    """asyncpg's pool logs a traceback each time it fails to reconnect its idle floor (every 1 s to
    60 s while the database is down): an expected state, not a defect. One line says as much."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()} ({type(exc).__name__}: {exc})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


logging.getLogger("asyncpg.pool").addFilter(_OneLine())


async def _init(conn: asyncpg.Connection[asyncpg.Record], *, session_timeout_ms: int | None = None) -> None:
    if isinstance(conn, _Counted):
        conn.session_timeout_ms = session_timeout_ms
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    schema: str | None = await conn.fetchval(VECTOR_SCHEMA)
    if schema is not None:  # without pgvector the startup check reports it in one line
        await register_vector(conn, schema=schema)


RESET_ROLE = "RESET ROLE;\n"


class _Counted(asyncpg.Connection):  # pyright: ignore[reportMissingTypeArgument]
    """A pool's connection: its requests counted, and whether it is still as its last `end` left it."""

    resets = True  # the pool's reset hook runs (not through a transaction-mode pooler)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._protocol = CountingProtocol(self._protocol)
        self.reset_at = -1  # the protocol's request count right after an `end` that reset the session
        # tenancy.one_statement's functions created in this session, and whether it cannot create them
        self.functions: set[str] = set()
        self.no_functions = False
        self.session_timeout_ms: int | None = None  # create_pool's statement_timeout_ms, if set

    @property
    def trips(self) -> int:
        """The requests this connection has sent (database.trips)."""
        protocol: Any = self._protocol
        return protocol.trips if isinstance(protocol, CountingProtocol) else 0

    def was_reset(self) -> bool:
        """Whether an `end` reset the session and nothing was sent since (asyncpg's own ROLLBACK
        on release, for a transaction left open, would count)."""
        protocol: Any = self._protocol
        return isinstance(protocol, CountingProtocol) and protocol.trips == self.reset_at

    def mark_reset(self) -> None:
        protocol: Any = self._protocol
        if isinstance(protocol, CountingProtocol):
            self.reset_at = protocol.trips


class _CountedThroughPooler(_Counted):
    resets = False


def counted(conn: PooledConnection) -> _Counted:
    """The pool's own connection behind a borrowed one (every pool here makes _Counted ones)."""
    raw: Any = conn
    inner: Any = getattr(raw, "_con", None)
    if not isinstance(inner, _Counted):
        raise TypeError("not a connection of database.pool.create_pool")
    return inner


async def _reset(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    if isinstance(conn, _Counted) and conn.was_reset():
        return  # the transaction's end did this, in its own round trip
    # asyncpg has already rolled back any open transaction; one round trip for the rest.
    await conn.execute(RESET_ROLE + conn.get_reset_query())


async def end(conn: Connection, statement: str) -> None:
    """End the transaction (`COMMIT` or `ROLLBACK`) and leave the session as the pool's reset
    would, in one round trip.

    ROLLBACK undoes every setting the transaction made, session-level ones (`SET ROLE`,
    `set_config(..., false)`) included, so it needs nothing more: the server does no reset work
    either. After COMMIT, the reset follows in the same simple query; it runs only if the COMMIT
    succeeded, and if it did not, the session is not marked and the pool's hook resets it on
    release. Through a transaction-mode pooler there is no reset to send (see the module's docstring).
    """
    raw: Any = conn
    if not getattr(raw, "resets", False):
        await conn.execute(statement)
        return
    if statement == "ROLLBACK":
        await conn.execute(statement)
    else:
        await conn.execute(f"{statement};\n{RESET_ROLE}{conn.get_reset_query()}")
    raw.mark_reset()


async def _no_reset(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    # asyncpg has already rolled back any open transaction, which is all a pooled client can end.
    del conn


def pooler_kwargs(pooled: bool) -> dict[str, Any]:
    """asyncpg options for a connection through a transaction-mode pooler (or none)."""
    return {"statement_cache_size": 0} if pooled else {}


async def connect(url: str, *, pooled: bool = False, **kwargs: Any) -> asyncpg.Connection[asyncpg.Record]:
    """A single connection, failing with a one-line message that hides the password."""
    try:
        return await asyncpg.connect(url, **pooler_kwargs(pooled), **kwargs)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StartupError(f"cannot connect to PostgreSQL at {redact(url)}: {exc}; {UNREACHABLE_FIX}") from exc


@asynccontextmanager
async def owner_connection(url: str, **kwargs: Any) -> AsyncGenerator[asyncpg.Connection[asyncpg.Record]]:
    """One connection for administration (the owner URL), closed on every exit path."""
    conn = await connect(url, **kwargs)
    try:
        yield conn
    finally:
        await conn.close()


async def create_pool(
    url: str,
    *,
    min_size: int,
    max_size: int,
    pooled: bool,
    application_name: str = "mindscape",
    statement_timeout_ms: int | None = None,
) -> Pool:
    """The runtime pool; `pooled`: `url` is a transaction-mode pooler (PgBouncer), not PostgreSQL
    (required, not defaulted: a pool that forgot it leaves named prepared statements on the
    pooler's shared server connections);
    `application_name`: how pg_stat_activity names these connections;
    `statement_timeout_ms`: the sessions' own statement timeout, which a one-statement read needs
    (tenancy.one_statement). Not through a pooler: it would reach any server connection."""
    server_settings = {"application_name": application_name}
    session_timeout = None if pooled else statement_timeout_ms
    if session_timeout is not None:
        server_settings["statement_timeout"] = str(session_timeout)
    try:
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            init=functools.partial(_init, session_timeout_ms=session_timeout),
            reset=_no_reset if pooled else _reset,
            connection_class=_CountedThroughPooler if pooled else _Counted,
            server_settings=server_settings,
            **pooler_kwargs(pooled),
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StartupError(f"cannot connect to PostgreSQL at {redact(url)}: {exc}; {UNREACHABLE_FIX}") from exc
    return pool


async def acquire(pool: Pool, *, wait_s: float | None) -> PooledConnection:
    """A connection from `pool`, waiting at most `wait_s` seconds (None: as long as it takes).

    Waiting longer is ServerBusy, a closed pool (the server is stopping) ShuttingDown and a socket
    error while connecting DatabaseUnreachable: all Unavailable (temporary), so the caller can say
    "retry" instead of queueing without bound or failing obscurely. (Connection refusals the server itself sends,
    e.g. 57P03 "starting up", stay asyncpg's errors: app.errors reads their SQLSTATE.)
    """
    if pool.is_closing():
        raise ShuttingDown()
    try:
        return await pool.acquire(timeout=wait_s)
    except TimeoutError:
        assert wait_s is not None
        raise ServerBusy(wait_s) from None
    except OSError as exc:  # while connecting: refused, or the socket file gone (the server is down)
        raise DatabaseUnreachable() from exc


@asynccontextmanager
async def pooled(pool: Pool, *, wait_s: float | None) -> AsyncGenerator[PooledConnection]:
    """`acquire`, released on the way out (and discarded if it failed): `async with pooled(...) as conn`."""
    conn = await acquire(pool, wait_s=wait_s)
    try:
        yield conn
    finally:
        await release(pool, conn)


def discard(conn: Connection) -> None:
    """Close a connection that can no longer be trusted (mid-transaction, mid-cancel), at once.

    When asyncpg notices a lost connection first, it has already returned it to the pool and
    detached the proxy, whose every method then raises InterfaceError: nothing is left to close.
    """
    with suppress(asyncpg.InterfaceError):
        conn.terminate()


async def release(pool: Pool, conn: PooledConnection) -> None:
    """Give `conn` back. When its reset fails (the connection died), asyncpg has already closed
    it and will open a new one: that is logged, not raised over the call's own outcome.

    No cancel scope is needed around it: asyncpg runs the release in a task of its own
    (asyncio.shield), started before its first wait, so a caller cancelled here still returns
    the connection, only without waiting for it. (Then the cancellation, not an error the call
    was raising, leaves the `finally` that released: the call was being cancelled, by its client
    or by shutdown, and no one receives its answer. A CommitUnknown is never replaced: its
    connection was discarded, and releasing a discarded connection does not wait.)"""
    try:
        await pool.release(conn)
    except FAILURES as exc:
        log.info("discarded a database connection that failed its reset: %s", type(exc).__name__)
