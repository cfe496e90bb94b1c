"""Everything a tenant owns, read outside row-level security: to prove that nothing was written."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from mindscape.database.pool import connect
from mindscape.database.targets import Targets
from tests.support.external import inspect_url

# Every tenant-scoped table (api_keys is left out: using a key stamps its last_used_at).
TABLES = ("personas", "memories", "memory_embeddings", "campaigns", "campaign_personas", "tasks", "audit_events")


async def snapshot(targets: Targets, tenant_id: UUID) -> dict[str, tuple[int, str]]:
    """Per table: the row count and an md5 over the rows' full text."""
    conn = await connect(inspect_url(targets))
    try:
        return await snapshot_on(conn, tenant_id)
    finally:
        await conn.close()


async def snapshot_on(conn: asyncpg.Connection[Any], tenant_id: UUID) -> dict[str, tuple[int, str]]:
    """`snapshot` over an open owner connection (the fuzzer takes thousands)."""
    found: dict[str, tuple[int, str]] = {}
    for table in TABLES:
        # The table name is one of the constants above, never input.
        row = await conn.fetchrow(
            f"SELECT count(*) AS n, md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) AS digest "
            f"FROM mindscape.{table} t WHERE tenant_id = $1",
            tenant_id,
        )
        assert row is not None
        found[table] = (row["n"], row["digest"])
    return found
