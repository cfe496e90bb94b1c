"""The asyncpg pool every runtime query goes through.

Each hook has one job: `init` registers codecs once per connection; `reset` puts a released
connection back to a pristine session, including the role (`RESET ALL` leaves the role alone).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from pgvector.asyncpg import register_vector

from mindscape.database.targets import redact
from mindscape.errors import StartupError

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


VECTOR_SCHEMA = (
    "SELECT n.nspname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.typname = 'vector'"
)


async def _init(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    schema: str | None = await conn.fetchval(VECTOR_SCHEMA)
    if schema is not None:  # without pgvector the startup check reports it in one line
        await register_vector(conn, schema=schema)


async def _reset(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    # asyncpg has already rolled back any open transaction; one round trip for the rest.
    await conn.execute("RESET ROLE;\n" + conn.get_reset_query())


async def connect(url: str, **kwargs: Any) -> asyncpg.Connection[asyncpg.Record]:
    """A single connection, failing with a one-line message that hides the password."""
    try:
        return await asyncpg.connect(url, **kwargs)
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


async def create_pool(url: str, *, min_size: int, max_size: int, application_name: str = "mindscape") -> Pool:
    """`application_name`: how pg_stat_activity names these connections."""
    try:
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            init=_init,
            reset=_reset,
            server_settings={"application_name": application_name},
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StartupError(f"cannot connect to PostgreSQL at {redact(url)}: {exc}; {UNREACHABLE_FIX}") from exc
    return pool
