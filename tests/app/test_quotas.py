"""Per-tenant quotas through the MCP tools (in-memory sessions, like stdio), against the real database.

Each limit is set the way an operator sets it (tenant_ops.tenant_quota, behind `mindscape tenant
quota`) or as a configured default, and each refusal is checked for its message and for
having written nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult

from mindscape.app.server import build_server
from mindscape.app.state import open_state
from mindscape.database.pool import connect
from mindscape.database.targets import Targets
from mindscape.quotas.rate import CallLimiter
from mindscape.tenancy.caller import Caller
from tests.support.blocking import memory_writes_held, polled
from tests.support.results import data, error_text
from tests.support.tenants import TenantFactory, persona, set_quota, settings_for

pytestmark = pytest.mark.anyio


@pytest.fixture
async def tenant(tenant_factory: TenantFactory) -> Caller:
    return await tenant_factory([persona("basil", "Basil")], "quota")


@asynccontextmanager
async def session(targets: Targets, tenant: Caller, **settings: Any) -> AsyncGenerator[Client]:
    """An in-memory session for the tenant, as over stdio: its own process state, so a fresh call counter."""
    configured = settings_for(targets, tenant.tenant_slug, **settings)
    async with Client(build_server(lambda: open_state(configured, targets.runtime))) as client:
        yield client


async def owner_value(targets: Targets, statement: str, *args: Any) -> Any:
    """Outside row-level security (the owner is a superuser here): what is really stored."""
    conn = await connect(targets.owner)
    try:
        return await conn.fetchval(statement, *args)
    finally:
        await conn.close()


async def memory_count(targets: Targets, tenant: Caller) -> int:
    return await owner_value(targets, "SELECT count(*) FROM mindscape.memories WHERE tenant_id = $1", tenant.tenant_id)


async def audit_count(targets: Targets, tenant: Caller) -> int:
    statement = "SELECT count(*) FROM mindscape.audit_events WHERE tenant_id = $1 AND tool = 'remember'"
    return await owner_value(targets, statement, tenant.tenant_id)


# --- calls per minute -----------------------------------------------------------------------


def test_the_limiter_allows_a_burst_then_one_call_per_interval() -> None:
    now = [1000.0]
    limiter = CallLimiter(clock=lambda: now[0])
    tenant, other = uuid.uuid4(), uuid.uuid4()
    assert [limiter.acquire(tenant, 3) for _ in range(3)] == [None, None, None]
    assert limiter.acquire(tenant, 3) == pytest.approx(20.0)  # 60 s / 3 calls
    assert limiter.acquire(other, 3) is None  # buckets are per tenant
    now[0] += 19.0
    assert limiter.acquire(tenant, 3) == pytest.approx(1.0)
    now[0] += 1.0
    assert limiter.acquire(tenant, 3) is None
    assert limiter.acquire(tenant, 3) is not None


async def test_a_tenant_over_calls_per_minute_gets_an_error_naming_the_limit(targets: Targets, tenant: Caller) -> None:
    await set_quota(targets, tenant.tenant_slug, calls_per_minute=2)
    async with session(targets, tenant) as client:
        await client.list_tools()  # listing is not counted
        assert data(await client.call_tool("get_persona", {"slug": "basil"}))["name"] == "Basil"
        await client.read_resource("persona://basil")  # resource reads count
        message = error_text(await client.call_tool("get_persona", {"slug": "basil"}))
        assert f"tenant {tenant.tenant_slug} is over its limit calls_per_minute=2; retry in 30 s" in message
        with pytest.raises(MCPError, match="calls_per_minute=2"):
            await client.read_resource("persona://basil")
        with pytest.raises(MCPError, match="calls_per_minute=2"):
            await client.get_prompt("persona", {"slug": "basil"})


async def test_a_refused_call_writes_nothing(targets: Targets, tenant: Caller) -> None:
    await set_quota(targets, tenant.tenant_slug, calls_per_minute=1)
    async with session(targets, tenant) as client:
        data(await client.call_tool("remember", {"content": "the first note"}))
        refused = await client.call_tool("remember", {"content": "the second note"})
        assert "calls_per_minute=1" in error_text(refused)
    assert await memory_count(targets, tenant) == 1
    assert await audit_count(targets, tenant) == 1


async def test_the_default_applies_and_a_tenant_override_beats_it(targets: Targets, tenant: Caller) -> None:
    async with session(targets, tenant, quota_calls_per_minute=1) as client:
        data(await client.call_tool("get_persona", {"slug": "basil"}))
        assert "calls_per_minute=1" in error_text(await client.call_tool("get_persona", {"slug": "basil"}))
    await set_quota(targets, tenant.tenant_slug, calls_per_minute=0)  # unlimited for this tenant
    async with session(targets, tenant, quota_calls_per_minute=1) as client:
        for _ in range(5):
            data(await client.call_tool("get_persona", {"slug": "basil"}))


# --- concurrent calls -----------------------------------------------------------------------


async def test_a_call_past_max_concurrent_calls_gets_an_error_result_naming_the_limit(
    targets: Targets, tenant: Caller
) -> None:
    """Over stdio (an in-memory session here) a refused call is an isError result, never a hang."""
    await set_quota(targets, tenant.tenant_slug, max_concurrent_calls=1)
    results: list[CallToolResult] = []
    async with (
        memory_writes_held(targets, tenant.tenant_id) as held,
        session(targets, tenant, statement_timeout_ms=600_000) as client,  # it waits on the lock, not a timer
        anyio.create_task_group() as group,
    ):

        async def remember() -> None:
            results.append(await client.call_tool("remember", {"content": "held in flight"}))

        group.start_soon(remember)
        await polled(held.holds_calls)
        message = error_text(await client.call_tool("get_persona", {"slug": "basil"}))
        assert message.startswith(f"tenant {tenant.tenant_slug} already has 1 calls running, its limit ")
        assert "max_concurrent_calls=1" in message
        assert "mindscape tenant quota" in message
        with pytest.raises(MCPError, match="max_concurrent_calls=1"):
            await client.read_resource("persona://basil")
        with pytest.raises(MCPError, match="max_concurrent_calls=1"):
            await client.get_prompt("persona", {"slug": "basil"})
        await held.release()
    assert not results[0].is_error  # the held call finished once the lock was let go
    async with session(targets, tenant) as client:
        assert data(await client.call_tool("get_persona", {"slug": "basil"}))["name"] == "Basil"


async def test_the_default_concurrency_is_half_the_pool_and_an_override_beats_it(
    targets: Targets, tenant: Caller
) -> None:
    results: list[CallToolResult] = []
    async with (
        memory_writes_held(targets, tenant.tenant_id) as held,
        # pool_max_size 2: the default max_concurrent_calls is 1
        session(targets, tenant, pool_max_size=2, statement_timeout_ms=600_000) as client,
        anyio.create_task_group() as group,
    ):

        async def remember() -> None:
            results.append(await client.call_tool("remember", {"content": "held"}))

        group.start_soon(remember)
        await polled(held.holds_calls)
        assert "max_concurrent_calls=1" in error_text(await client.call_tool("get_persona", {"slug": "basil"}))
        await held.release()
    await set_quota(targets, tenant.tenant_slug, max_concurrent_calls=0)  # unlimited for this tenant
    async with (
        memory_writes_held(targets, tenant.tenant_id) as held,
        session(targets, tenant, pool_max_size=2, statement_timeout_ms=600_000) as client,
        anyio.create_task_group() as group,
    ):

        async def remember_again() -> None:
            results.append(await client.call_tool("remember", {"content": "held again"}))

        group.start_soon(remember_again)
        await polled(held.holds_calls)
        assert data(await client.call_tool("get_persona", {"slug": "basil"}))["name"] == "Basil"
        await held.release()
    assert [r.is_error for r in results] == [False, False]


# --- max memories ---------------------------------------------------------------------------


async def test_remember_past_max_memories_is_refused_and_writes_nothing(targets: Targets, tenant: Caller) -> None:
    await set_quota(targets, tenant.tenant_slug, max_memories=2)
    async with session(targets, tenant) as client:
        first = data(await client.call_tool("remember", {"content": "one"}))
        data(await client.call_tool("remember", {"content": "two"}))
        message = error_text(await client.call_tool("remember", {"content": "three"}))
        assert message.endswith(
            f"tenant {tenant.tenant_slug} holds 2 memories, limit 2; "
            "forget some or ask an operator to raise max_memories (`mindscape tenant quota`)"
        )
        again = data(await client.call_tool("remember", {"content": "one"}))  # a duplicate adds nothing
        assert again["duplicate"] is True
        assert again["id"] == first["id"]
        data(await client.call_tool("forget", {"id": first["id"]}))
        data(await client.call_tool("remember", {"content": "three"}))  # room again
    assert await memory_count(targets, tenant) == 2
    assert await owner_value(
        targets, "SELECT count(*) FROM mindscape.memories WHERE tenant_id = $1 AND content = 'three'", tenant.tenant_id
    )
    assert await audit_count(targets, tenant) == 4  # one, two, the duplicate, three: not the refusal


async def test_expired_memories_do_not_count_against_max_memories(targets: Targets, tenant: Caller) -> None:
    await set_quota(targets, tenant.tenant_slug, max_memories=2)
    async with session(targets, tenant) as client:
        data(await client.call_tool("remember", {"content": "soon gone"}))
        data(await client.call_tool("remember", {"content": "kept"}))
        await owner_value(
            targets,
            "UPDATE mindscape.memories SET expires_at = now() - interval '1 day' "
            "WHERE tenant_id = $1 AND content = 'soon gone'",
            tenant.tenant_id,
        )
        data(await client.call_tool("remember", {"content": "fits again"}))
        assert "holds 2 memories, limit 2" in error_text(await client.call_tool("remember", {"content": "no room"}))
    assert await memory_count(targets, tenant) == 3  # the expired row is still stored, just not counted


async def test_max_memories_holds_under_concurrent_remembers(targets: Targets, tenant: Caller) -> None:
    await set_quota(targets, tenant.tenant_slug, max_memories=5)
    outcomes: list[bool] = []
    # Every call runs at once: no max_concurrent_calls refusal gets in the way of the memory count.
    async with session(targets, tenant, pool_max_size=8, quota_max_concurrent_calls=0) as client:

        async def one(i: int) -> None:
            result = await client.call_tool("remember", {"content": f"concurrent note {i}"})
            outcomes.append(result.is_error)

        async with anyio.create_task_group() as group:
            for i in range(30):
                group.start_soon(one, i)
    assert outcomes.count(False) == 5
    assert await memory_count(targets, tenant) == 5


async def test_remembers_let_go_together_fill_the_last_place_once(
    targets: Targets, tenant: Caller, in_transaction: list[str]
) -> None:
    """Each remember takes the tenant's lock before it counts: three waiting on it, let go at once
    with one place left, store one memory between them (in one statement each, on a direct pool)."""
    await set_quota(targets, tenant.tenant_slug, max_memories=3)
    outcomes: list[bool] = []
    async with session(targets, tenant, pool_max_size=8, quota_max_concurrent_calls=0) as client:
        for i in range(2):
            data(await client.call_tool("remember", {"content": f"stored before {i}"}))
        async with memory_writes_held(targets, tenant.tenant_id) as held, anyio.create_task_group() as group:

            async def one(i: int) -> None:
                outcomes.append((await client.call_tool("remember", {"content": f"let go {i}"})).is_error)

            for i in range(3):
                group.start_soon(one, i)
            await polled(lambda: held.holds_calls(3))
            await held.release()
    assert sorted(outcomes) == [False, True, True]
    assert await memory_count(targets, tenant) == 3
    assert len(in_transaction) == (5 if targets.pooled else 0)


async def test_the_default_max_memories_applies_and_an_override_beats_it(targets: Targets, tenant: Caller) -> None:
    async with session(targets, tenant, quota_max_memories=1) as client:
        data(await client.call_tool("remember", {"content": "only one"}))
        assert "limit 1" in error_text(await client.call_tool("remember", {"content": "a second"}))
    await set_quota(targets, tenant.tenant_slug, max_memories=0)
    async with session(targets, tenant, quota_max_memories=1) as client:
        data(await client.call_tool("remember", {"content": "a second"}))
        data(await client.call_tool("remember", {"content": "a third"}))
    assert await memory_count(targets, tenant) == 3


# --- max content size -----------------------------------------------------------------------


async def test_a_tenant_max_content_bytes_overrides_the_default(targets: Targets, tenant: Caller) -> None:
    await set_quota(targets, tenant.tenant_slug, max_content_bytes=300)
    async with session(targets, tenant) as client:
        message = error_text(await client.call_tool("remember", {"content": "é" * 200}))
        assert message.endswith(
            "content is 400 bytes, over the 300-byte limit (the tenant's max_content_bytes); store a shorter text"
        )
        data(await client.call_tool("remember", {"content": "x" * 300}))
    await set_quota(targets, tenant.tenant_slug, max_content_bytes=32_768)  # above the 16 KiB default
    async with session(targets, tenant) as client:
        data(await client.call_tool("remember", {"content": "y" * 20_000}))
    assert await memory_count(targets, tenant) == 2


async def test_a_lowered_content_limit_is_enforced_by_a_running_server(targets: Targets, tenant: Caller) -> None:
    """The transaction reads the current limit, even where the process still knows an older one."""
    async with session(targets, tenant) as client:
        data(await client.call_tool("remember", {"content": "z" * 1000}))
        await set_quota(targets, tenant.tenant_slug, max_content_bytes=500)
        assert "500-byte limit" in error_text(await client.call_tool("remember", {"content": "w" * 1000}))
    assert await memory_count(targets, tenant) == 1
