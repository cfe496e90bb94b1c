"""SQL behind the shared calls-per-minute counter (migration 0008): one statement, no transaction of its own.

It runs on the runtime connection outside any tenant transaction (as the credential checks do),
in its own implicit transaction: nothing is left on the session, so it works through PgBouncer
in transaction mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from mindscape.database.pool import Connection

TAKE = "SELECT granted, wait_s FROM mindscape.take_calls($1, $2, $3)"


@dataclass(frozen=True)
class Taken:
    granted: int  # calls this process may make now (0: none)
    wait_s: float  # with none granted: the seconds until one will be


async def take(conn: Connection, *, tenant_id: UUID, per_minute: int, wanted: int) -> Taken:
    """Take up to `wanted` of the tenant's calls from its shared budget of `per_minute` a minute."""
    row = await conn.fetchrow(TAKE, tenant_id, per_minute, wanted)
    assert row is not None  # the function always returns one row
    return Taken(granted=row["granted"], wait_s=max(0.0, row["wait_s"]))
