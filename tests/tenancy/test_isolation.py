"""The isolation checklist (docs/isolation.md), item by item.

Everything runs as the runtime role `mindscape_app`, like the server. Queries here omit
`WHERE tenant_id = ...` on purpose: row-level security alone must keep tenants apart.
Item 16 (parent references) is tested in test_memory_isolation.py and test_work_isolation.py,
item 20 in test_memory_isolation.py; item 22 arrives with PgBouncer support.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager, nullcontext

import anyio
import anyio.lowlevel
import asyncpg
import pytest

from mindscape.database.pool import Connection, Pool, connect, create_pool
from mindscape.errors import InvalidArgument
from mindscape.tenancy.caller import Caller
from mindscape.tenancy.transaction import SET_CONTEXT, TenantTx, tenant_transaction
from tests.support.results import text_of
from tests.support.tenants import PERSONAS_A, PERSONAS_B, ClientFactory, TenantFactory, World, persona

pytestmark = pytest.mark.anyio

TENANT_TABLES = """
SELECT c.oid, c.relname, c.relrowsecurity, c.relforcerowsecurity,
       (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) AS policies
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'mindscape' AND c.relkind IN ('r', 'p')
"""
TENANT_ID_TABLES = """
SELECT c.oid, c.relname FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'
WHERE n.nspname = 'mindscape' AND c.relkind IN ('r', 'p')
"""


@asynccontextmanager
async def as_tenant(pool: Pool, caller: Caller, *, read_only: bool = False) -> AsyncGenerator[TenantTx]:
    async with tenant_transaction(pool, caller, read_only=read_only, statement_timeout_ms=5000) as tx:
        yield tx


async def persona_id(pool: Pool, caller: Caller, slug: str) -> uuid.UUID:
    async with as_tenant(pool, caller, read_only=True) as tx:
        found: uuid.UUID | None = await tx.conn.fetchval("SELECT id FROM mindscape.personas WHERE slug = $1", slug)
    assert found is not None
    return found


async def visible_tenants(conn: Connection) -> set[uuid.UUID]:
    return {r["tenant_id"] for r in await conn.fetch("SELECT tenant_id FROM mindscape.personas")}


# 1
async def test_runtime_role_is_unprivileged_and_owns_nothing(world: World) -> None:
    conn = await connect(world.targets.runtime, pooled=world.targets.pooled)
    try:
        role = await conn.fetchrow(
            "SELECT current_user AS name, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
        )
        assert role is not None
        assert role["name"] == "mindscape_app"
        assert not role["rolsuper"]
        assert not role["rolbypassrls"]
        owned = await conn.fetchval(
            "SELECT count(*) FROM pg_class WHERE relowner IN "
            "(SELECT oid FROM pg_roles WHERE rolname IN ('mindscape_app', 'mindscape_tenant'))"
        )
        assert owned == 0
        tenant_role = await conn.fetchrow(
            "SELECT rolsuper, rolbypassrls, rolcanlogin FROM pg_roles WHERE rolname = $1", "mindscape_tenant"
        )
        assert tenant_role is not None
        assert not tenant_role["rolsuper"]
        assert not tenant_role["rolbypassrls"]
        assert not tenant_role["rolcanlogin"]
    finally:
        await conn.close()


# 2
async def test_every_table_has_forced_rls_and_a_policy(world: World) -> None:
    conn = await connect(world.targets.runtime, pooled=world.targets.pooled)
    try:
        tables = await conn.fetch(TENANT_TABLES)
    finally:
        await conn.close()
    assert {t["relname"] for t in tables} >= {"tenants", "personas"}
    for table in tables:
        assert table["relrowsecurity"], table["relname"]
        assert table["relforcerowsecurity"], table["relname"]
        assert table["policies"] >= 1, table["relname"]


# 3
async def test_no_definer_views_or_functions(world: World) -> None:
    conn = await connect(world.targets.runtime, pooled=world.targets.pooled)
    try:
        views = await conn.fetch(
            "SELECT c.relname, c.reloptions FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'mindscape' AND c.relkind IN ('v', 'm')"
        )
        definers = await conn.fetch(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE p.prosecdef AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND has_function_privilege('mindscape_tenant', p.oid, 'EXECUTE')"
        )
    finally:
        await conn.close()
    for view in views:
        assert "security_invoker=true" in (view["reloptions"] or []), view["relname"]
    assert [d["proname"] for d in definers] == []


# 4
async def test_reads_return_only_own_rows(world: World, pool: Pool) -> None:
    for caller, seeded in ((world.a, PERSONAS_A), (world.b, PERSONAS_B)):
        async with as_tenant(pool, caller, read_only=True) as tx:
            rows = await tx.conn.fetch("SELECT tenant_id, slug FROM mindscape.personas")
            tenants_seen = await tx.conn.fetch("SELECT id FROM mindscape.tenants")
        assert len(rows) == len(seeded)
        assert {r["tenant_id"] for r in rows} == {caller.tenant_id}
        assert {r["slug"] for r in rows} == {p.slug for p in seeded}
        assert [t["id"] for t in tenants_seen] == [caller.tenant_id]


# 4, 5 through the tools, both protocol eras
@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_tools_see_only_own_personas(world: World, client_for: ClientFactory, mode: str) -> None:
    async with client_for(world.a.tenant_slug, mode=mode) as client:
        listed = await client.call_tool("list_personas", {"limit": 100})
        foreign = await client.call_tool("get_persona", {"slug": "zed"})
        missing = await client.call_tool("get_persona", {"slug": "no-such-one"})
        own_ada = await client.call_tool("get_persona", {"slug": "ada"})
    assert listed.structured_content is not None
    assert {p["slug"] for p in listed.structured_content["personas"]} == {p.slug for p in PERSONAS_A}
    assert foreign.is_error
    assert missing.is_error
    assert text_of(foreign).replace("zed", "X") == text_of(missing).replace("no-such-one", "X")
    assert own_ada.structured_content is not None
    assert own_ada.structured_content["name"] == "Ada Analyst"


# 5
async def test_foreign_id_looks_like_a_missing_id(world: World, pool: Pool) -> None:
    b_zed = await persona_id(pool, world.b, "zed")
    async with as_tenant(pool, world.a, read_only=True) as tx:
        foreign = await tx.conn.fetchrow("SELECT * FROM mindscape.personas WHERE id = $1", b_zed)
        missing = await tx.conn.fetchrow("SELECT * FROM mindscape.personas WHERE id = $1", uuid.uuid4())
    assert foreign is None
    assert missing is None


# 6
async def test_foreign_update_and_delete_change_nothing(world: World, pool: Pool) -> None:
    b_zed = await persona_id(pool, world.b, "zed")
    async with as_tenant(pool, world.a) as tx:
        status = await tx.conn.execute("UPDATE mindscape.personas SET name = 'hacked' WHERE id = $1", b_zed)
    assert status == "UPDATE 0"
    with pytest.raises(asyncpg.InsufficientPrivilegeError):  # no DELETE privilege at all
        async with as_tenant(pool, world.a) as tx:
            await tx.conn.execute("DELETE FROM mindscape.personas WHERE id = $1", b_zed)
    async with as_tenant(pool, world.b, read_only=True) as tx:
        assert await tx.conn.fetchval("SELECT name FROM mindscape.personas WHERE id = $1", b_zed) == "Zed"


# 7
async def test_writing_into_another_tenant_is_refused(world: World, pool: Pool) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with as_tenant(pool, world.a) as tx:
            await tx.conn.execute(
                "INSERT INTO mindscape.personas (tenant_id, slug, name) VALUES ($1, 'planted', 'Planted')",
                world.b.tenant_id,
            )
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with as_tenant(pool, world.a) as tx:
            await tx.conn.execute(
                "UPDATE mindscape.personas SET tenant_id = $1 WHERE slug = 'basil'", world.b.tenant_id
            )
    async with as_tenant(pool, world.b, read_only=True) as tx:
        assert await tx.conn.fetchval("SELECT count(*) FROM mindscape.personas") == len(PERSONAS_B)


async def _assert_no_access(conn: Connection, tenant_id: uuid.UUID) -> None:
    assert await conn.fetchval("SELECT count(*) FROM mindscape.personas") == 0
    assert await conn.fetchval("SELECT count(*) FROM mindscape.tenants") == 0
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO mindscape.personas (tenant_id, slug, name) VALUES ($1, 'sneaky', 'Sneaky')", tenant_id
            )


# 8
async def test_no_tenant_context_reads_nothing_and_writes_nothing(world: World) -> None:
    conn = await connect(world.targets.runtime, pooled=world.targets.pooled)
    try:
        # The login role itself has no privilege on tenant data.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT * FROM mindscape.personas")
        async with conn.transaction():
            await conn.execute("SET LOCAL ROLE mindscape_tenant")
            # NULL on a fresh backend; '' on one where an earlier transaction had set it locally
            # (a reused server connection behind PgBouncer): both mean no tenant.
            assert await conn.fetchval("SELECT current_setting('app.tenant_id', true)") in (None, "")
            assert await conn.fetchval("SELECT mindscape.app_tenant_id()") is None
            await _assert_no_access(conn, world.a.tenant_id)
    finally:
        await conn.close()


# 9
async def test_empty_context_left_by_an_earlier_transaction(world: World) -> None:
    conn = await connect(world.targets.runtime, pooled=world.targets.pooled)
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(world.a.tenant_id))
        async with conn.transaction():
            await conn.execute("SET LOCAL ROLE mindscape_tenant")
            assert await conn.fetchval("SELECT current_setting('app.tenant_id', true)") == ""
            await _assert_no_access(conn, world.a.tenant_id)
    finally:
        await conn.close()


# 10
async def test_malformed_tenant_identifier_never_reaches_sql(world: World) -> None:
    pool = await create_pool(world.targets.runtime, min_size=0, max_size=1, pooled=world.targets.pooled)
    await pool.close()  # any use of this pool would fail with InterfaceError
    for bad in ("'; DROP TABLE mindscape.personas; --", str(world.a.tenant_id), None):
        caller = Caller(tenant_id=bad, tenant_slug="x", principal="test")  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument):
            async with as_tenant(pool, caller):
                pass


async def _session_state(conn: Connection) -> tuple[str, str | None, str | None]:
    row = await conn.fetchrow(
        "SELECT current_user, current_setting('app.tenant_id', true) AS t, current_setting('app.principal', true) AS p"
    )
    assert row is not None
    return row["current_user"], row["t"] or None, row["p"] or None


# 11
async def test_context_is_gone_after_commit_rollback_error_and_cancel(world: World) -> None:
    pool = await create_pool(world.targets.runtime, min_size=1, max_size=1, pooled=world.targets.pooled)
    try:
        async with as_tenant(pool, world.a) as tx:  # commit
            assert (await _session_state(tx.conn))[0] == "mindscape_tenant"
        async with pool.acquire() as conn:
            assert await _session_state(conn) == ("mindscape_app", None, None)

        with pytest.raises(RuntimeError):  # rollback on an exception in Python
            async with as_tenant(pool, world.a):
                raise RuntimeError("boom")
        async with pool.acquire() as conn:
            assert await _session_state(conn) == ("mindscape_app", None, None)

        with pytest.raises(asyncpg.DivisionByZeroError):  # error inside SQL
            async with as_tenant(pool, world.a) as tx:
                await tx.conn.fetchval("SELECT 1 / 0")
        async with pool.acquire() as conn:
            assert await _session_state(conn) == ("mindscape_app", None, None)

        with anyio.move_on_after(0.3) as scope:  # cancellation mid-query
            async with as_tenant(pool, world.a) as tx:
                await tx.conn.execute("SELECT pg_sleep(5)")
        assert scope.cancelled_caught
        async with pool.acquire() as conn:
            assert await _session_state(conn) == ("mindscape_app", None, None)
            assert await visible_tenants_as_tenant_role(conn) == set()
    finally:
        await pool.close()


async def visible_tenants_as_tenant_role(conn: Connection) -> set[uuid.UUID]:
    async with conn.transaction():
        await conn.execute("SET LOCAL ROLE mindscape_tenant")
        return await visible_tenants(conn)


# 12
async def test_one_connection_a_then_b_then_nobody(world: World) -> None:
    pool = await create_pool(world.targets.runtime, min_size=1, max_size=1, pooled=world.targets.pooled)
    try:
        async with as_tenant(pool, world.a, read_only=True) as tx:
            assert await visible_tenants(tx.conn) == {world.a.tenant_id}
        async with as_tenant(pool, world.b, read_only=True) as tx:
            assert await visible_tenants(tx.conn) == {world.b.tenant_id}
        async with pool.acquire() as conn:
            assert await visible_tenants_as_tenant_role(conn) == set()
    finally:
        await pool.close()


# 13
@pytest.mark.not_pooled(
    "the reset on release reaches whichever server connection is free, and the session-level SET ROLE "
    "this test makes would stay on a shared one; test_pooled_server_connections.py covers what holds there"
)
async def test_release_restores_the_login_role(world: World) -> None:
    pool = await create_pool(world.targets.runtime, min_size=1, max_size=1, pooled=world.targets.pooled)
    try:
        async with pool.acquire() as conn:
            await conn.execute("SET ROLE mindscape_tenant")  # session level, outside any helper
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT current_user = session_user") is True
        async with as_tenant(pool, world.a) as tx:
            await tx.conn.execute("SET ROLE mindscape_tenant")  # session level: survives the commit
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT current_user = session_user") is True
    finally:
        await pool.close()


# 13, for the ends that send no separate reset (database.pool.end): a read ended after the reply
# (the server's way), one ended on an exception, and a write's COMMIT, each after session-level
# changes made inside the transaction.
@pytest.mark.not_pooled("as test 13: a session-level SET ROLE through the pooler would stay on a shared connection")
@pytest.mark.parametrize("ending", ["read, after the reply", "exception", "commit"])
async def test_ends_without_a_reset_round_trip_leave_no_session_state(world: World, ending: str) -> None:
    pool = await create_pool(world.targets.runtime, min_size=1, max_size=1, pooled=world.targets.pooled)
    leaks = (
        "SET ROLE mindscape_tenant",  # session level, not LOCAL
        "SELECT set_config('app.tenant_id', 'leaked', false)",
        "SET statement_timeout = 1",
    )
    try:
        async with anyio.create_task_group() as background:
            with pytest.raises(RuntimeError) if ending == "exception" else nullcontext():
                async with tenant_transaction(
                    pool,
                    world.a,
                    read_only=ending != "commit",
                    statement_timeout_ms=5000,
                    background=background if ending == "read, after the reply" else None,
                ) as tx:
                    for statement in leaks:
                        await tx.conn.execute(statement)
                    if ending == "exception":
                        raise RuntimeError("boom")
        async with pool.acquire() as conn:
            assert await _session_state(conn) == ("mindscape_app", None, None)
            assert await conn.fetchval("SELECT current_setting('statement_timeout')") != "1ms"
        async with pool.acquire() as conn:  # the end's mark must not outlive what ran after it
            await conn.execute("SET ROLE mindscape_tenant")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT current_user = session_user") is True
    finally:
        await pool.close()


# 14
async def test_thousands_of_interleaved_calls_never_cross(world: World) -> None:
    pool = await create_pool(world.targets.runtime, min_size=2, max_size=2, pooled=world.targets.pooled)
    crossed: list[str] = []
    calls = 2000

    async def call(caller: Caller) -> None:
        async with as_tenant(pool, caller, read_only=True) as tx:
            seen = await visible_tenants(tx.conn)
            await anyio.lowlevel.checkpoint()  # let other calls interleave inside the transaction
            seen |= {r["tenant_id"] for r in await tx.conn.fetch("SELECT tenant_id FROM mindscape.personas LIMIT 1")}
        if seen != {caller.tenant_id}:
            crossed.append(f"{caller.tenant_slug} saw {seen}")

    try:
        rng = random.Random(14)
        async with anyio.create_task_group() as tg:
            for _ in range(calls):
                tg.start_soon(call, rng.choice((world.a, world.b)))
    finally:
        await pool.close()
    assert crossed == []


# 15
@pytest.mark.not_pooled("named prepared statements do not follow a client across transactions (the cache is off)")
async def test_prepared_statement_reused_across_tenants(world: World) -> None:
    # asyncpg refuses a prepared statement after a pool release, so this drives the helper's
    # own context statement on one plain connection and reuses one server-side statement.
    conn = await connect(world.targets.runtime, pooled=world.targets.pooled)
    query = "SELECT tenant_id, slug FROM mindscape.personas ORDER BY slug"
    seen: list[set[uuid.UUID]] = []
    try:
        statement = await conn.prepare(query)
        for caller in (world.a, world.b):
            async with conn.transaction(readonly=True):
                await conn.fetchrow(SET_CONTEXT, str(caller.tenant_id), "test", "5000", "", "", "", "", "", "")
                seen.append({r["tenant_id"] for r in await statement.fetch()})
                assert {r["tenant_id"] for r in await conn.fetch(query)} == seen[-1]  # asyncpg's cached copy
    finally:
        await conn.close()
    assert seen == [{world.a.tenant_id}, {world.b.tenant_id}]


# 17
async def test_slug_taken_in_another_tenant_is_free_here(
    world: World, pool: Pool, tenant_factory: TenantFactory
) -> None:
    fresh = await tenant_factory([], "c")
    async with as_tenant(pool, fresh) as tx:
        from mindscape.queries import personas

        outcome = await personas.upsert(tx.conn, tenant_id=fresh.tenant_id, persona=persona("zed", "Zed of C"))
    assert outcome == "created"
    assert await persona_id(pool, fresh, "zed") != await persona_id(pool, world.b, "zed")


# 18
async def test_errors_never_carry_foreign_values(world: World, client_for: ClientFactory) -> None:
    async with client_for(world.a.tenant_slug) as client:
        results = [
            await client.call_tool("get_persona", {"slug": "zed"}),
            await client.call_tool("list_personas", {"query": "Only B has Zed", "limit": 5}),
            await client.call_tool("list_personas", {"tags": ["b-only"]}),
        ]
        async with client_for(world.b.tenant_slug) as b_client:
            b_page = await b_client.call_tool("list_personas", {"limit": 1})
        assert b_page.structured_content is not None
        b_cursor = b_page.structured_content["next_cursor"]
        results.append(await client.call_tool("list_personas", {"limit": 1, "cursor": b_cursor}))
    dumped = " ".join(r.model_dump_json() for r in results)
    for secret in ("Only B has Zed", "Ada of B", world.b.tenant_slug, str(world.b.tenant_id)):
        assert secret not in dumped
    assert results[0].is_error
    assert results[1].structured_content == {"personas": [], "next_cursor": None}
    assert results[2].structured_content == {"personas": [], "next_cursor": None}
    assert results[3].is_error  # B's cursor is refused for A


# 19
async def test_no_tool_takes_sql_or_a_tenant(world: World, client_for: ClientFactory) -> None:
    async with client_for(world.a.tenant_slug) as client:
        tools = (await client.list_tools()).tools
        injected = await client.call_tool(
            "list_personas", {"query": "'; DROP TABLE mindscape.personas; --", "limit": 5}
        )
        still_there = await client.call_tool("get_persona", {"slug": "ada"})
    for tool in tools:
        names = set(tool.input_schema.get("properties", {}))
        assert not names & {"sql", "statement", "tenant", "tenant_id", "tenant_slug"}, tool.name
    assert not injected.is_error
    assert not still_there.is_error


# 21
async def test_every_key_of_a_tenant_table_leads_with_tenant_id(world: World) -> None:
    conn = await connect(world.targets.runtime, pooled=world.targets.pooled)
    try:
        tables = await conn.fetch(TENANT_ID_TABLES)
        assert {t["relname"] for t in tables} >= {"personas"}
        for table in tables:
            keys = await conn.fetch(
                "SELECT conname, contype::text AS contype,"
                " (SELECT attname FROM pg_attribute WHERE attrelid = $1 AND attnum = conkey[1]) AS first"
                " FROM pg_constraint WHERE conrelid = $1 AND contype IN ('p', 'u', 'f')",
                table["oid"],
            )
            assert any(k["contype"] == "p" for k in keys), table["relname"]
            for key in keys:
                assert key["first"] == "tenant_id", (table["relname"], key["conname"])
            unique_indexes = await conn.fetch(
                "SELECT indexrelid::regclass::text AS name, "
                "(SELECT attname FROM pg_attribute WHERE attrelid = $1 AND attnum = indkey[0]) AS first "
                "FROM pg_index WHERE indrelid = $1 AND indisunique",
                table["oid"],
            )
            for index in unique_indexes:
                assert index["first"] == "tenant_id", (table["relname"], index["name"])
    finally:
        await conn.close()


async def test_disabled_tenant_is_refused_on_its_next_call(
    world: World, client_for: ClientFactory, tenant_factory: TenantFactory
) -> None:
    from mindscape.ops import tenants as tenant_ops

    caller = await tenant_factory([persona("solo", "Solo")], "d")
    async with client_for(caller.tenant_slug) as client:
        assert not (await client.call_tool("get_persona", {"slug": "solo"})).is_error
        await tenant_ops.set_tenant_status(world.targets, slug=caller.tenant_slug, status="disabled")
        refused = await client.call_tool("get_persona", {"slug": "solo"})
    assert refused.is_error
    assert "disabled" in text_of(refused)
    assert "Solo" not in text_of(refused)
