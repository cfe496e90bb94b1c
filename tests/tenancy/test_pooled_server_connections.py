"""Nothing a call does outlives its transaction on the server connection (isolation checklist 22).

Behind PgBouncer in transaction mode (`database_pooler = "transaction"`) the pool's reset on
release reaches whichever server connection is free, so the server must never leave session
state behind: the next transaction on that server connection may be another tenant's. Against
the embedded database the probes take the pool's own connections after their reset; `.ci/run`
runs it through PgBouncer too, where the probes land on the very server connections the calls
used.
"""

from __future__ import annotations

import contextlib
import random

import anyio
import anyio.lowlevel
import asyncpg
import pytest

from mindscape.database.pool import Connection, Pool, create_pool
from mindscape.tenancy.caller import Caller
from mindscape.tenancy.transaction import tenant_transaction
from tests.support.probes import Probe, probe
from tests.support.results import data
from tests.support.tenants import ClientFactory, World

pytestmark = pytest.mark.anyio

ROUNDS = 150


async def _transactions(pool: Pool, world: World, pids: set[int], rng: random.Random) -> None:
    """Tenant transactions that end every way one can: commit, rollback, SQL error, cancellation."""

    async def one(caller: Caller, ending: str) -> None:
        read_only = ending == "read"
        async with tenant_transaction(pool, caller, read_only=read_only, statement_timeout_ms=1234) as tx:
            pids.add(await tx.conn.fetchval("SELECT pg_backend_pid()"))
            if ending == "error":
                await tx.conn.fetchval("SELECT 1 / 0")
            elif ending == "rollback":
                raise LookupError("rolled back")
            elif ending == "cancel":
                await tx.conn.execute("SELECT pg_sleep(5)")

    for _ in range(ROUNDS):
        ending = rng.choice(("read", "write", "error", "rollback", "cancel"))
        with anyio.move_on_after(0.05 if ending == "cancel" else 10):
            with contextlib.suppress(LookupError, asyncpg.DivisionByZeroError):
                await one(rng.choice((world.a, world.b)), ending)


async def _tool_calls(client_for: ClientFactory, world: World) -> None:
    """The real server's calls, as a tenant makes them (its pool goes through the pooler too)."""
    async with client_for(world.a.tenant_slug) as client:
        for i in range(ROUNDS // 3):
            data(await client.call_tool("get_persona", {"slug": "ada"}))
            data(await client.call_tool("list_personas", {"query": "support", "limit": 5}))
            data(await client.call_tool("remember", {"content": f"probe round {i}: the pooler test"}))
            data(await client.call_tool("recall", {"query": "pooler test", "k": 3}))


# 22
async def test_no_call_leaves_session_state_on_a_server_connection(world: World, client_for: ClientFactory) -> None:
    pooled = world.targets.pooled
    pool = await create_pool(world.targets.runtime, min_size=2, max_size=2, pooled=pooled)
    # Directly, the probes take the very connections the transactions released to the pool;
    # through PgBouncer, a pool of their own lands on the same server connections.
    probes = await create_pool(world.targets.runtime, min_size=2, max_size=2, pooled=pooled) if pooled else pool
    used: set[int] = set()
    probed: set[int] = set()
    leftovers: list[str] = []
    count = 0
    done = anyio.Event()

    async def prober() -> None:
        nonlocal count
        while not done.is_set():
            async with probes.acquire() as conn:
                for found in (await probe(conn, pooled=pooled), await _in_transaction(conn, pooled)):
                    count += 1
                    probed.add(found.pid)
                    leftovers.extend(f"server connection {found.pid}: {left}" for left in found.leftovers)
            await anyio.lowlevel.checkpoint()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(prober)
            tg.start_soon(prober)
            async with anyio.create_task_group() as workers:
                workers.start_soon(_transactions, pool, world, used, random.Random(22))
                workers.start_soon(_tool_calls, client_for, world)
            done.set()
    finally:
        await pool.close()
        if probes is not pool:
            await probes.close()
    assert leftovers == []
    assert count >= 100
    assert probed & used, (probed, used)  # the probes ran where the tenant transactions had


async def _in_transaction(conn: Connection, pooled: bool) -> Probe:
    """The probe as the first statement of a transaction: what a tenant transaction starts from."""
    async with conn.transaction():
        return await probe(conn, pooled=pooled)
