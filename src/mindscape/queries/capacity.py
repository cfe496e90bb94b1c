"""How many connections the database server accepts, to check a multi-process deployment against."""

from __future__ import annotations

from mindscape.database.pool import Connection

# Connections an ordinary role may open: superusers keep the reserved ones for themselves.
USABLE_CONNECTIONS = (
    "SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int"
)


async def usable_connections(conn: Connection) -> int:
    return await conn.fetchval(USABLE_CONNECTIONS)
