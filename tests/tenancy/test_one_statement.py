"""A read that is one query, in one statement (tenancy.one_statement): the same guarantees as a
tenant transaction, and nothing left on the session afterwards."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from typing import Any

import anyio
import asyncpg
import pytest

from mindscape.database.pool import Pool, counted, create_pool
from mindscape.database.scripts import Script
from mindscape.errors import TenantUnavailable
from mindscape.ops import tenants as tenant_ops
from mindscape.queries import personas
from mindscape.tenancy.caller import Caller
from mindscape.tenancy.one_statement import OneQuery, tenant_read, tenant_write
from mindscape.tenancy.transaction import context_values
from tests.support.tenants import TenantFactory, World, persona, set_quota

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.not_pooled("a one-statement read needs a direct connection; through a pooler reads are transactions"),
]

TIMEOUT_MS = 5000
SESSION = """
SELECT current_user AS role, current_setting('app.tenant_id', true) AS tenant,
       current_setting('transaction_read_only') AS read_only, current_setting('statement_timeout') AS timeout
"""


@pytest.fixture
async def pool(world: World) -> AsyncGenerator[Pool]:
    """One connection, so each read reuses the session the one before it left."""
    made = await create_pool(
        world.targets.runtime, min_size=1, max_size=1, pooled=False, statement_timeout_ms=TIMEOUT_MS
    )
    try:
        yield made
    finally:
        await made.close()


async def trips_of(pool: Pool) -> int:
    async with pool.acquire() as conn:
        return counted(conn).trips


async def assert_one_statement(pool: Pool, caller: Caller) -> None:
    """A warm get_persona on `pool` still takes its one round trip (its function made first)."""
    async with tenant_read(pool, caller, statement_timeout_ms=TIMEOUT_MS) as tx:
        await personas.get(tx.conn, tenant_id=tx.tenant_id, slug="ada")
    before = await trips_of(pool)
    async with tenant_read(pool, caller, statement_timeout_ms=TIMEOUT_MS) as tx:
        found = await personas.get(tx.conn, tenant_id=tx.tenant_id, slug="ada")
    assert found is not None
    assert await trips_of(pool) == before + 1


async def test_a_read_is_one_round_trip_and_sees_only_its_tenant(pool: Pool, world: World) -> None:
    async with tenant_read(pool, world.a, statement_timeout_ms=TIMEOUT_MS) as tx:
        first = await personas.get(tx.conn, tenant_id=tx.tenant_id, slug="ada")
    before = await trips_of(pool)
    async with tenant_read(pool, world.a, statement_timeout_ms=TIMEOUT_MS) as tx:
        again = await personas.get(tx.conn, tenant_id=tx.tenant_id, slug="ada")
    assert await trips_of(pool) == before + 1  # the statement; its release sent no reset
    assert first is not None
    assert again is not None
    assert first.name == again.name == "Ada Analyst"
    # Row-level security decides, not the query's own WHERE: B's rows with A's tenant id are none.
    async with tenant_read(pool, world.b, statement_timeout_ms=TIMEOUT_MS) as tx:
        rows = await tx.conn.fetch("SELECT slug, tenant_id FROM mindscape.personas ORDER BY slug")
    assert {r["tenant_id"] for r in rows} == {world.b.tenant_id}
    assert "zed" in {r["slug"] for r in rows}


async def test_the_session_is_left_as_it_was(pool: Pool, world: World) -> None:
    async with pool.acquire() as conn:
        outside = dict((await conn.fetchrow(SESSION)) or {})
    async with tenant_read(pool, world.a, statement_timeout_ms=TIMEOUT_MS) as tx:
        inside = dict((await tx.conn.fetchrow(SESSION)) or {})
    async with pool.acquire() as conn:
        after = dict((await conn.fetchrow(SESSION)) or {})
    assert inside == {"role": "mindscape_tenant", "tenant": str(world.a.tenant_id), "read_only": "on", "timeout": "5s"}
    # The tenant setting, once set in a session, reads as empty rather than unset: as after a transaction.
    assert {**after, "tenant": None} == {**outside, "tenant": None}
    assert after["role"] == "mindscape_app"
    assert not after["tenant"]
    assert after["read_only"] == "off"


async def test_the_query_cannot_write(pool: Pool, world: World) -> None:
    with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
        async with tenant_read(pool, world.a, statement_timeout_ms=TIMEOUT_MS) as tx:
            await tx.conn.fetch("UPDATE mindscape.personas SET name = 'x' RETURNING slug")


async def test_the_session_timeout_governs_the_statement(world: World) -> None:
    short = await create_pool(world.targets.runtime, min_size=1, max_size=1, pooled=False, statement_timeout_ms=200)
    try:
        began = time.monotonic()
        with pytest.raises(asyncpg.QueryCanceledError):
            async with tenant_read(short, world.a, statement_timeout_ms=200) as tx:
                await tx.conn.fetch("SELECT slug FROM mindscape.personas, pg_sleep(3)")
        assert time.monotonic() - began < 2.5
    finally:
        await short.close()


async def test_a_pool_without_that_session_timeout_reads_in_a_transaction(world: World) -> None:
    other = await create_pool(world.targets.runtime, min_size=1, max_size=1, pooled=False)
    inside, before, after = None, 0, 0
    try:
        for _ in range(2):  # the second with its statements prepared
            before = await trips_of(other)
            async with tenant_read(other, world.a, statement_timeout_ms=TIMEOUT_MS) as tx:
                inside = await tx.conn.fetchrow(SESSION)
            after = await trips_of(other)
    finally:
        await other.close()
    assert inside is not None
    assert inside["timeout"] == "5s"  # set by the transaction's context
    assert after - before == 4  # BEGIN, the context, the query, ROLLBACK


async def test_a_disabled_tenant_is_refused_and_the_connection_kept(
    pool: Pool, world: World, tenant_factory: TenantFactory
) -> None:
    caller = await tenant_factory([persona("solo", "Solo")], "os")
    async with tenant_read(pool, caller, statement_timeout_ms=TIMEOUT_MS) as tx:
        assert await personas.get(tx.conn, tenant_id=tx.tenant_id, slug="solo") is not None
    async with pool.acquire() as conn:
        pid = conn.get_server_pid()
    await tenant_ops.set_tenant_status(world.targets, slug=caller.tenant_slug, status="disabled")
    with pytest.raises(TenantUnavailable, match="disabled"):
        async with tenant_read(pool, caller, statement_timeout_ms=TIMEOUT_MS) as tx:
            await personas.get(tx.conn, tenant_id=tx.tenant_id, slug="solo")
    async with pool.acquire() as conn:
        assert conn.get_server_pid() == pid


async def test_a_second_query_is_refused(pool: Pool, world: World) -> None:
    async with tenant_read(pool, world.a, statement_timeout_ms=TIMEOUT_MS) as tx:
        await tx.conn.fetch("SELECT 1")
        with pytest.raises(RuntimeError, match="one query"):
            await tx.conn.fetch("SELECT 2")


async def test_a_read_cancelled_mid_statement_discards_its_connection(pool: Pool, world: World) -> None:
    async with pool.acquire() as conn:
        pid = conn.get_server_pid()
    with anyio.move_on_after(0.3):
        async with tenant_read(pool, world.a, statement_timeout_ms=TIMEOUT_MS) as tx:
            await tx.conn.fetch("SELECT slug FROM mindscape.personas, pg_sleep(3)")
    async with pool.acquire() as conn:
        assert conn.get_server_pid() != pid
        assert await conn.fetchval("SELECT current_user") == "mindscape_app"


async def test_a_connection_that_cannot_create_functions_reads_in_a_transaction(pool: Pool, world: World) -> None:
    """As on a hot standby, where nothing can be created."""
    caller: Caller = world.a
    async with pool.acquire() as conn:
        await conn.execute("SET default_transaction_read_only = on")  # undone by the pool's reset
        reader = OneQuery(conn, caller, context_values(caller, TIMEOUT_MS, "", ""))
        found = await personas.get(reader, tenant_id=caller.tenant_id, slug="ada")
        assert counted(conn).no_functions
        assert await conn.fetchval("SELECT current_user") == "mindscape_app"
    assert found is not None
    assert found.name == "Ada Analyst"


async def test_a_session_that_lost_its_functions_makes_them_again(pool: Pool, world: World) -> None:
    async with tenant_read(pool, world.a, statement_timeout_ms=TIMEOUT_MS) as tx:
        assert await personas.get(tx.conn, tenant_id=tx.tenant_id, slug="ada") is not None
    async with pool.acquire() as conn:
        await conn.execute("DISCARD TEMP")
    async with tenant_read(pool, world.a, statement_timeout_ms=TIMEOUT_MS) as tx:
        found = await personas.get(tx.conn, tenant_id=tx.tenant_id, slug="ada")
    assert found is not None
    assert found.name == "Ada Analyst"


async def test_a_query_whose_function_cannot_be_made_leaves_the_others_one_statement(pool: Pool, world: World) -> None:
    """Only a connection that can create no function at all (read-only, no TEMP privilege) is
    switched to transactions: one query's failed CREATE (here a trailing semicolon, invalid in
    plpgsql; in practice also a timeout, a deadlock, out of memory) says nothing about the others."""
    async with tenant_read(pool, world.a, statement_timeout_ms=TIMEOUT_MS) as tx:
        rows = await tx.conn.fetch("SELECT slug FROM mindscape.personas ORDER BY slug;")
    assert "ada" in {r["slug"] for r in rows}
    await assert_one_statement(pool, world.a)


async def test_an_undefined_function_raised_by_the_query_itself_is_its_error(pool: Pool, world: World) -> None:
    """42883 from the query's own execution is not the lost temporary function: the agent's error
    is the query's, and the session's functions are still used afterwards."""
    async with tenant_read(pool, world.a, statement_timeout_ms=TIMEOUT_MS) as tx:
        await personas.get(tx.conn, tenant_id=tx.tenant_id, slug="ada")
    with pytest.raises(asyncpg.UndefinedFunctionError):
        async with tenant_read(pool, world.a, statement_timeout_ms=TIMEOUT_MS) as tx:
            await tx.conn.fetch(
                "SELECT slug FROM mindscape.personas WHERE $1::text::regprocedure IS NOT NULL", "nope(int)"
            )
    await assert_one_statement(pool, world.a)


async def test_a_query_whose_result_types_changed_is_compiled_again(pool: Pool, world: World) -> None:
    """A migration while serving changes a column's type: the read works, as a transaction's does,
    instead of failing with "structure of query does not match function result type"."""
    query = "SELECT x FROM mindscape.one_statement_probe"
    owner = await asyncpg.connect(world.targets.owner)
    try:
        for type_ in ("int", "bigint"):
            await owner.execute("DROP VIEW IF EXISTS mindscape.one_statement_probe")
            await owner.execute(f"CREATE VIEW mindscape.one_statement_probe AS SELECT 1::{type_} AS x")
            await owner.execute("GRANT SELECT ON mindscape.one_statement_probe TO mindscape_tenant, mindscape_app")
            async with tenant_read(pool, world.a, statement_timeout_ms=TIMEOUT_MS) as tx:
                rows = await tx.conn.fetch(query)
            assert [r["x"] for r in rows] == [1]
    finally:
        await owner.execute("DROP VIEW IF EXISTS mindscape.one_statement_probe")
        await owner.close()


PLANNER = (
    "SELECT current_setting('plan_cache_mode') AS plan, current_setting('max_parallel_workers_per_gather') AS workers"
)
CUSTOM = {"plan_cache_mode": "force_custom_plan", "max_parallel_workers_per_gather": "0"}


async def test_a_reads_settings_govern_its_query_and_are_gone_after_it(pool: Pool, world: World) -> None:
    for _ in range(2):  # made, then reused
        async with tenant_read(pool, world.a, statement_timeout_ms=TIMEOUT_MS, settings=CUSTOM) as tx:
            inside = await tx.conn.fetchrow(PLANNER)
        assert dict(inside or {}) == {"plan": "force_custom_plan", "workers": "0"}
    async with pool.acquire() as conn:
        after = await conn.fetchrow(PLANNER)
    assert dict(after or {}) == {"plan": "auto", "workers": "2"}
    # The same query without settings is another function: it runs with the session's.
    async with tenant_read(pool, world.a, statement_timeout_ms=TIMEOUT_MS) as tx:
        plain = await tx.conn.fetchrow(PLANNER)
    assert dict(plain or {}) == {"plan": "auto", "workers": "2"}


async def test_a_reads_settings_govern_its_query_in_a_transaction_too(pool: Pool, world: World) -> None:
    # A session timeout other than the call's: the read is a transaction (as through a pooler).
    async with tenant_read(pool, world.a, statement_timeout_ms=TIMEOUT_MS + 1, settings=CUSTOM) as tx:
        inside = await tx.conn.fetchrow(PLANNER)
    assert dict(inside or {}) == {"plan": "force_custom_plan", "workers": "0"}
    # A connection that cannot create functions reads in a transaction of its own.
    async with pool.acquire() as conn:
        await conn.execute("SET default_transaction_read_only = on")  # undone by the pool's reset
        counted(conn).no_functions = True
        reader = OneQuery(conn, world.a, context_values(world.a, TIMEOUT_MS, "", ""), CUSTOM)
        fallback = await reader.fetchrow(PLANNER)
        counted(conn).no_functions = False
    assert dict(fallback or {}) == {"plan": "force_custom_plan", "workers": "0"}
    async with pool.acquire() as conn:
        after = await conn.fetchrow(PLANNER)
    assert dict(after or {}) == {"plan": "auto", "workers": "2"}


# --- writes: a script in one statement -------------------------------------------------------

RENAME = Script(
    parameters="text, boolean",
    returns="slug text, role text, tenant text, read_only text",
    body="""
  UPDATE mindscape.personas SET name = $1 WHERE slug = 'ada';
  IF $2 THEN
    RAISE EXCEPTION 'the second statement fails' USING ERRCODE = '22012';
  END IF;
  RETURN QUERY SELECT p.slug, current_user::text, current_setting('app.tenant_id', true),
                      current_setting('transaction_read_only')
               FROM mindscape.personas p WHERE p.slug = 'ada';
""",
)


async def rename(
    pool: Pool, caller: Caller, name: str, *, fail: bool = False, seen: dict[str, Any] | None = None
) -> list[asyncpg.Record] | None:
    async with tenant_write(pool, caller, statement_timeout_ms=TIMEOUT_MS) as writer:
        return await writer.run(RENAME, name, fail, seen={} if seen is None else seen)


async def name_of(pool: Pool, caller: Caller) -> str | None:
    async with tenant_read(pool, caller, statement_timeout_ms=TIMEOUT_MS) as tx:
        found = await personas.get(tx.conn, tenant_id=tx.tenant_id, slug="ada")
    return found.name if found is not None else None


async def test_a_write_is_one_round_trip_commits_and_changes_only_its_tenant(
    pool: Pool, world: World, tenant_factory: TenantFactory
) -> None:
    caller = await tenant_factory([persona("ada", "Ada")], "ow")
    assert await rename(pool, caller, "Ada One") is not None  # the function made first
    before = await trips_of(pool)
    rows = await rename(pool, caller, "Ada Two")
    assert await trips_of(pool) == before + 1  # the statement; its release sent no reset
    assert rows is not None
    assert [dict(r) for r in rows] == [
        {"slug": "ada", "role": "mindscape_tenant", "tenant": str(caller.tenant_id), "read_only": "off"}
    ]
    assert await name_of(pool, caller) == "Ada Two"  # committed, seen by the next statement
    assert await name_of(pool, world.b) == "Ada of B"  # another tenant's persona of the same slug is untouched
    async with pool.acquire() as conn:
        after = await conn.fetchrow(SESSION)
    assert after is not None
    assert after["role"] == "mindscape_app"
    assert not after["tenant"]


async def test_a_write_that_fails_in_its_second_statement_writes_nothing(
    pool: Pool, tenant_factory: TenantFactory
) -> None:
    caller = await tenant_factory([persona("ada", "Ada")], "ow")
    with pytest.raises(asyncpg.DivisionByZeroError):
        await rename(pool, caller, "Half Written", fail=True)
    assert await name_of(pool, caller) == "Ada"


async def test_a_write_whose_tenant_settings_changed_writes_nothing(
    pool: Pool, world: World, tenant_factory: TenantFactory
) -> None:
    """The caller decided from settings it saw; changed since, nothing is written and it is told to
    write in a transaction (None)."""
    caller = await tenant_factory([persona("ada", "Ada")], "ow")
    assert await rename(pool, caller, "Ada Seen", seen={}) is not None
    await set_quota(world.targets, caller.tenant_slug, max_memories=5)
    assert await rename(pool, caller, "Ada Unseen", seen={}) is None
    assert await name_of(pool, caller) == "Ada Seen"
    assert await rename(pool, caller, "Ada Current", seen={"max_memories": 5}) is not None
    assert await name_of(pool, caller) == "Ada Current"


async def test_a_write_of_a_disabled_tenant_is_refused(pool: Pool, world: World, tenant_factory: TenantFactory) -> None:
    caller = await tenant_factory([persona("ada", "Ada")], "ow")
    await tenant_ops.set_tenant_status(world.targets, slug=caller.tenant_slug, status="disabled")
    with pytest.raises(TenantUnavailable, match="disabled"):
        await rename(pool, caller, "Ada Disabled")


async def test_a_pool_without_that_session_timeout_is_told_to_write_in_a_transaction(
    pool: Pool, world: World, tenant_factory: TenantFactory
) -> None:
    caller = await tenant_factory([persona("ada", "Ada")], "ow")
    other = await create_pool(world.targets.runtime, min_size=1, max_size=1, pooled=False)
    try:
        await trips_of(other)  # the new connection's first release resets it
        idle = -(await trips_of(other)) + await trips_of(other)  # what looking costs
        before = await trips_of(other)
        assert await rename(other, caller, "Ada Elsewhere") is None
        assert await trips_of(other) - before == idle  # the write sent nothing
    finally:
        await other.close()
    assert await name_of(pool, caller) == "Ada"


async def test_a_write_on_a_session_that_lost_its_functions_makes_them_again(
    pool: Pool, tenant_factory: TenantFactory
) -> None:
    caller = await tenant_factory([persona("ada", "Ada")], "ow")
    assert await rename(pool, caller, "Ada Before") is not None
    async with pool.acquire() as conn:
        await conn.execute("DISCARD TEMP")
    assert await rename(pool, caller, "Ada After") is not None
    assert await name_of(pool, caller) == "Ada After"


async def test_a_write_cancelled_mid_statement_discards_its_connection_and_runs_to_its_end(
    pool: Pool, tenant_factory: TenantFactory
) -> None:
    caller = await tenant_factory([persona("ada", "Ada")], "ow")
    slow = Script(
        parameters="text",
        returns="slug text",
        body="""
  UPDATE mindscape.personas SET name = $1 WHERE slug = 'ada';
  PERFORM pg_sleep(3);
  RETURN QUERY SELECT p.slug FROM mindscape.personas p WHERE p.slug = 'ada';
""",
    )
    async with pool.acquire() as conn:
        pid = conn.get_server_pid()
    with anyio.move_on_after(0.5):
        async with tenant_write(pool, caller, statement_timeout_ms=TIMEOUT_MS) as writer:
            await writer.run(slow, "Ada Cut Off", seen={})
    async with pool.acquire() as conn:
        assert conn.get_server_pid() != pid
        assert await conn.fetchval("SELECT current_user") == "mindscape_app"
    # The server is not told: the statement runs to its end and commits, as a COMMIT sent just
    # before a cancellation would (docs/decisions.md). Never half of it: it is one transaction.
    for _ in range(100):
        if await name_of(pool, caller) != "Ada":
            break
        await anyio.sleep(0.1)
    assert await name_of(pool, caller) == "Ada Cut Off"
