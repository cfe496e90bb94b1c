"""SQL behind the max_memories quota (run inside a tenant transaction)."""

from __future__ import annotations

from uuid import UUID

from mindscape.database.pool import Connection

# Two-key advisory lock: this class id keeps Mindscape's locks apart from anyone else's in the database.
LOCK_CLASS = 0x6D73  # "ms"
# Held until the transaction ends: concurrent writers of one tenant check and insert one at a time.
LOCK_MEMORY_WRITES = "SELECT pg_advisory_xact_lock($1::int, hashtext($2::text))"

# The quota is the tenant's, not the caller's: every memory counts, private and persona ones of
# other agents too (migration 0009 hides those from the caller). Only a number leaves these
# statements, and the setting is switched back before any other query runs: the count's own
# statement restores it once its rows are counted (its FROM is read before its select list).
SEE_ALL = """
WITH before AS MATERIALIZED (SELECT current_setting('app.all_memories', true) AS value)
SELECT coalesce(b.value, '') AS before, set_config('app.all_memories', 'on', true) FROM before b
"""
COUNTED_THEN_RESTORED = "SELECT c.n, set_config('app.all_memories', ${restore}, true) FROM ({count}) c"

# Every row, expired or not, stopping past $2: an index-only scan costing at most the limit. A tenant
# under the limit by this count is under it; only one over it is counted again, exactly.
UP_TO = "SELECT count(*) AS n FROM (SELECT FROM mindscape.memories WHERE tenant_id = $1 LIMIT $2) m"
# Expired memories are never returned and never purged, so they do not count against the limit.
# This one reads the heap (expires_at), so it runs only when the cheap count above is over the limit.
LIVE = (
    "SELECT count(*) AS n FROM mindscape.memories WHERE tenant_id = $1 AND (expires_at IS NULL OR expires_at > now())"
)
COUNT_MEMORIES_UP_TO = COUNTED_THEN_RESTORED.format(restore=3, count=UP_TO)
COUNT_LIVE_MEMORIES = COUNTED_THEN_RESTORED.format(restore=2, count=LIVE)


async def lock_memory_writes(conn: Connection, *, tenant_id: UUID) -> None:
    await conn.execute(LOCK_MEMORY_WRITES, LOCK_CLASS, str(tenant_id))


async def _count_all(conn: Connection, statement: str, *args: object) -> int:
    """`statement` (one count, named n) over every memory of the tenant, in two round trips."""
    before: str = await conn.fetchval(SEE_ALL)
    # No finally: if the count fails, the transaction is aborted and the setting ends with it.
    counted: int = await conn.fetchval(statement, *args, before)
    return counted


async def count_memories_up_to(conn: Connection, *, tenant_id: UUID, at_most: int) -> int:
    return await _count_all(conn, COUNT_MEMORIES_UP_TO, tenant_id, at_most)


async def count_live_memories(conn: Connection, *, tenant_id: UUID) -> int:
    return await _count_all(conn, COUNT_LIVE_MEMORIES, tenant_id)
