"""Calls per minute in PostgreSQL: one budget per tenant for every process, within processes x batch.

Each SharedCallLimiter stands for one server process; all share the session's database. The
database's clock refills a budget while a test runs, so every upper bound adds the refill over
the test's own duration as the database measured it (no timed assertion: only the count matters).
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import AsyncGenerator
from datetime import datetime

import asyncpg
import pytest

from mindscape.database.pool import Pool, create_pool, owner_connection
from mindscape.database.targets import Targets
from mindscape.quotas.rate import CallLimiter
from mindscape.quotas.shared_rate import SharedCallLimiter, batch_size
from mindscape.tenancy.caller import Caller
from mindscape.tenancy.transaction import tenant_transaction
from tests.support.tenants import TenantFactory

pytestmark = pytest.mark.anyio


@pytest.fixture
async def tenant(tenant_factory: TenantFactory) -> Caller:
    return await tenant_factory([], "rate")


@pytest.fixture
async def pools(targets: Targets) -> AsyncGenerator[list[Pool]]:
    """Two runtime pools: two server processes' credential pools."""
    made = [await create_pool(targets.runtime, min_size=1, max_size=2, pooled=targets.pooled) for _ in range(2)]
    yield made
    for pool in made:
        await pool.close()


async def db_now(targets: Targets) -> datetime:
    async with owner_connection(targets.owner) as conn:
        return await conn.fetchval("SELECT clock_timestamp()")


def refill(since: datetime, until: datetime, per_minute: int) -> int:
    """Calls the budget regains between two database times."""
    return math.ceil((until - since).total_seconds() * per_minute / 60)


def test_the_batch_is_at_most_a_second_of_the_limit_and_at_most_the_setting() -> None:
    assert batch_size(60, 10) == 1
    assert batch_size(119, 10) == 1
    assert batch_size(600, 10) == 10
    assert batch_size(6000, 10) == 10
    assert batch_size(6000, 25) == 25
    assert batch_size(2, 10) == 1


@pytest.mark.parametrize("per_minute", [60, 600])
async def test_two_processes_share_one_budget_within_processes_times_batch(
    targets: Targets, pools: list[Pool], tenant: Caller, per_minute: int
) -> None:
    limiters = [SharedCallLimiter(pool, batch_max=10) for pool in pools]
    batch = batch_size(per_minute, 10)
    start = await db_now(targets)
    allowed = 0
    for i in range(2 * per_minute + 40):  # alternating, as a load balancer spreads calls
        allowed += await limiters[i % 2].acquire(tenant.tenant_id, per_minute) is None
    gained = refill(start, await db_now(targets), per_minute)
    # Each process may still hold up to batch - 1 calls it took and has not spent.
    assert per_minute - 2 * (batch - 1) <= allowed <= per_minute + gained
    assert allowed <= per_minute + 2 * batch + gained  # the documented bound, a fortiori
    # What the per-process counter let through behind two processes: twice the limit.
    separate = [CallLimiter() for _ in range(2)]
    other = uuid.uuid4()
    assert sum(separate[i % 2].acquire(other, per_minute) is None for i in range(2 * per_minute + 40)) == 2 * per_minute


async def test_a_refusal_names_the_wait_and_is_answered_without_the_database(targets: Targets, tenant: Caller) -> None:
    pool = await create_pool(targets.runtime, min_size=1, max_size=1, pooled=targets.pooled)
    limiter = SharedCallLimiter(pool, batch_max=10)
    try:
        assert [await limiter.acquire(tenant.tenant_id, 2) for _ in range(2)] == [None, None]
        wait = await limiter.acquire(tenant.tenant_id, 2)
        assert wait is not None
        assert 0 < wait <= 30  # one call every 30 s
    finally:
        await pool.close()
    # The pool is gone: a refusal still comes from what this process remembers, not from counting anew.
    again = await limiter.acquire(tenant.tenant_id, 2)
    assert again is not None
    assert again <= wait


async def test_tenants_have_budgets_of_their_own(
    pools: list[Pool], tenant: Caller, tenant_factory: TenantFactory
) -> None:
    other = await tenant_factory([], "rate")
    limiter = SharedCallLimiter(pools[0], batch_max=10)
    assert [await limiter.acquire(tenant.tenant_id, 3) is None for _ in range(4)] == [True, True, True, False]
    assert await SharedCallLimiter(pools[1], batch_max=10).acquire(tenant.tenant_id, 3) is not None
    assert await limiter.acquire(other.tenant_id, 3) is None


async def test_without_the_database_calls_are_counted_in_process(
    targets: Targets, tenant: Caller, caplog: pytest.LogCaptureFixture
) -> None:
    pool = await create_pool(targets.runtime, min_size=1, max_size=1, pooled=targets.pooled)
    await pool.close()
    limiter = SharedCallLimiter(pool, batch_max=10)
    with caplog.at_level(logging.WARNING):
        results = [await limiter.acquire(tenant.tenant_id, 3) for _ in range(4)]
    assert results[:3] == [None, None, None]
    assert results[3] is not None  # still limited, by this process's own counter
    assert "the shared call counter is unavailable (InterfaceError)" in caplog.text


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE mindscape.call_rates SET tat = now()",
        "DELETE FROM mindscape.call_rates",
        "SELECT * FROM mindscape.call_rates",
        "INSERT INTO mindscape.call_rates (tenant_id, tat) SELECT id, now() FROM mindscape.resolve_tenant('x')",
    ],
    ids=["reset", "delete", "read", "insert"],
)
async def test_no_runtime_role_can_touch_the_counters_but_through_take_calls(
    pool: Pool, tenant: Caller, statement: str
) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement)
        taken = await conn.fetchrow("SELECT * FROM mindscape.take_calls($1, 60, 1)", tenant.tenant_id)
        assert taken is not None
        assert taken["granted"] == 1
    # Nor can a tenant transaction (the role tools run as), for its own tenant or another.
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with tenant_transaction(pool, tenant, read_only=False, statement_timeout_ms=5000) as tx:
            await tx.conn.execute(statement.replace("resolve_tenant('x')", "resolve_tenant('y')"))
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with tenant_transaction(pool, tenant, read_only=False, statement_timeout_ms=5000) as tx:
            await tx.conn.fetch("SELECT * FROM mindscape.take_calls($1, 1000000, 1000)", tenant.tenant_id)


async def test_take_calls_refuses_a_spent_budget_and_a_nonsense_limit(pool: Pool, tenant: Caller) -> None:
    async with pool.acquire() as conn:
        spent = await conn.fetchrow("SELECT * FROM mindscape.take_calls($1, 2, 2)", tenant.tenant_id)
        assert spent is not None
        assert spent["granted"] == 2
        refused = await conn.fetchrow("SELECT * FROM mindscape.take_calls($1, 2, 1)", tenant.tenant_id)
        assert refused is not None
        assert refused["granted"] == 0
        assert 0 < refused["wait_s"] <= 30
        with pytest.raises(asyncpg.InvalidParameterValueError):
            await conn.fetch("SELECT * FROM mindscape.take_calls($1, 0, 1)", tenant.tenant_id)
