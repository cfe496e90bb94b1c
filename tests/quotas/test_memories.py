"""The max_memories count (quotas/memories.py, queries/quotas.py): every memory of the tenant is
counted, other agents' private ones too, and the caller sees only its own again afterwards."""

from __future__ import annotations

import dataclasses

import pytest

from mindscape.database.pool import Pool
from mindscape.queries import quotas
from mindscape.tenancy.transaction import tenant_transaction
from tests.support.memory import private_memory
from tests.support.tenants import World

pytestmark = pytest.mark.anyio
VISIBLE = "SELECT count(*) FROM mindscape.memories"


async def test_the_count_sees_every_memory_and_then_only_the_callers_again(pool: Pool, world: World) -> None:
    writer = dataclasses.replace(world.a, principal="quota-writer")
    counter = dataclasses.replace(world.a, principal="quota-counter")
    await private_memory(pool, writer, "only the writer sees this")
    async with tenant_transaction(pool, counter, read_only=True, statement_timeout_ms=5000) as tx:
        seen = await tx.conn.fetchval(VISIBLE)
        counted = await quotas.count_memories_up_to(tx.conn, tenant_id=tx.tenant_id, at_most=100_000)
        live = await quotas.count_live_memories(tx.conn, tenant_id=tx.tenant_id)
        after = await tx.conn.fetchval(VISIBLE)
        setting = await tx.conn.fetchval("SELECT current_setting('app.all_memories', true)")
    assert counted == live == seen + 1  # the writer's private memory counts
    assert after == seen  # and is hidden from the counter again
    assert setting == ""
