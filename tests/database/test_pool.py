"""The runtime pool's two modes: PostgreSQL itself, or a transaction-mode pooler in front of it."""

from __future__ import annotations

import pytest

from mindscape.database.pool import create_pool
from mindscape.database.targets import Targets

pytestmark = pytest.mark.anyio

NAMED = "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE '__asyncpg_stmt_%'"


@pytest.mark.not_pooled("it counts the statements a pool leaves on its own server connection")
@pytest.mark.parametrize("pooled", [False, True], ids=["direct", "pooled"])
async def test_a_pooled_pool_leaves_no_named_statement_on_its_connection(targets: Targets, pooled: bool) -> None:
    """Through a pooler a named statement would stay on a server connection another client gets next."""
    pool = await create_pool(targets.runtime, min_size=1, max_size=1, pooled=pooled)
    try:
        async with pool.acquire() as conn:
            for _ in range(3):  # the cache would prepare each once, and keep it
                await conn.fetchval("SELECT count(*) FROM pg_class WHERE relname = $1", "tenants")
            named = await conn.fetchval(NAMED)
    finally:
        await pool.close()
    assert (named == 0) is pooled
