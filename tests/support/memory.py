"""Memory tool helpers shared by the memory tests: calls, a client with settings, SQL as a tenant, backfill
waits, and the `in_transaction` fixture (which remember calls took the transaction path)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.types import CallToolResult

from mindscape.app.server import build_server
from mindscape.app.state import open_state
from mindscape.database.pool import Pool, create_pool
from mindscape.database.targets import Targets
from mindscape.embeddings.registry import Embedders
from mindscape.memory import writes
from mindscape.models.memory import Remembered
from mindscape.queries import memories
from mindscape.tenancy.caller import Caller
from mindscape.tenancy.transaction import TenantTx, tenant_transaction
from tests.support.results import data
from tests.support.tenants import settings_for


def contents(result: CallToolResult) -> list[str]:
    return [m["content"] for m in data(result)["memories"]]


async def remember(client: Client, content: str, **args: Any) -> dict[str, Any]:
    return data(await client.call_tool("remember", {"content": content, **args}))


@asynccontextmanager
async def client_with(targets: Targets, tenant: str, **settings: Any) -> AsyncGenerator[Client]:
    configured = settings_for(targets, tenant, **settings)
    async with Client(build_server(lambda: open_state(configured, targets.runtime))) as client:
        yield client


@pytest.fixture
def in_transaction(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The contents `remember` stored through the transaction path (store), to tell the paths apart."""
    seen: list[str] = []
    real = writes.store

    async def store(tx: TenantTx, embedders: Embedders, prepared: writes.Prepared, **args: Any) -> Remembered:
        seen.append(prepared.content)
        return await real(tx, embedders, prepared, **args)

    monkeypatch.setattr(writes, "store", store)
    return seen


async def sql(targets: Targets, caller: Caller, statement: str, *args: Any) -> Any:
    """Run one statement inside the caller's tenant transaction (as the runtime role)."""
    pool = await create_pool(targets.runtime, min_size=1, max_size=1, pooled=targets.pooled)
    try:
        async with tenant_transaction(pool, caller, read_only=False, statement_timeout_ms=5000) as tx:
            return await tx.conn.fetch(statement, *args)
    finally:
        await pool.close()


async def wait_until_embedded(targets: Targets, caller: Caller, key: str) -> None:
    """The backfill runs after the reply: poll (bounded) until nothing is pending."""
    for _ in range(200):
        if not (await sql(targets, caller, memories.COUNT_PENDING, caller.tenant_id, key))[0]["count"]:
            return
        await anyio.sleep(0.05)
    raise AssertionError(f"memories still pending for {key}")


async def private_memory(pool: Pool, writer: Caller, content: str) -> None:
    """A memory only `writer` (a principal of its tenant) can see, written as it."""
    async with tenant_transaction(pool, writer, read_only=False, statement_timeout_ms=5000) as tx:
        await memories.insert(
            tx.conn,
            tenant_id=tx.tenant_id,
            persona_id=None,
            kind="note",
            content=content,
            metadata={},
            importance=None,
            expires_at=None,
            visibility="private",
        )
