"""Below the app: what SQL as the runtime role can and cannot do to the audit trail and the registry.

Everything runs as the login role mindscape_app, and as mindscape_tenant inside tenant
transactions, the way a compromised server process or an injected statement would run
(docs/isolation.md: SQL as the runtime role). Migration 0006 is what these tests check.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

import asyncpg
import pytest

from mindscape.database.pool import Pool, connect
from mindscape.database.targets import Targets
from mindscape.tenancy.caller import Caller
from mindscape.tenancy.transaction import TenantTx, tenant_transaction
from tests.support.tenants import TenantFactory, World, persona

pytestmark = pytest.mark.anyio

WRITES = {
    "audit_events": [
        "INSERT INTO mindscape.audit_events (tenant_id, seq, principal, tool, outcome, hash)"
        " VALUES ($1, 999, 'someone-else', 'forged', 'created', sha256(''))",
        "UPDATE mindscape.audit_events SET principal = 'someone-else' WHERE tenant_id = $1",
        "DELETE FROM mindscape.audit_events WHERE tenant_id = $1",
    ],
    "audit_heads": [
        "INSERT INTO mindscape.audit_heads (tenant_id) VALUES ($1)",
        "UPDATE mindscape.audit_heads SET seq = 0 WHERE tenant_id = $1",
        "DELETE FROM mindscape.audit_heads WHERE tenant_id = $1",
    ],
    "audit_pending": [
        "INSERT INTO mindscape.audit_pending (xid, principal, tool, changes)"
        " VALUES (pg_current_xact_id(), 'someone-else', 'forged',"
        " ARRAY[ROW($1, '{}', 'created', '{}')::mindscape.audit_change])",
        "DELETE FROM mindscape.audit_pending WHERE $1::uuid IS NOT NULL",
    ],
}
CASES = [(table, statement) for table, statements in WRITES.items() for statement in statements] + [
    (table, f"TRUNCATE mindscape.{table}") for table in WRITES
]


@asynccontextmanager
async def as_tenant(pool: Pool, caller: Caller, *, read_only: bool = False) -> AsyncGenerator[TenantTx]:
    async with tenant_transaction(pool, caller, read_only=read_only, statement_timeout_ms=5000) as tx:
        yield tx


async def audit_rows(pool: Pool, caller: Caller) -> list[asyncpg.Record]:
    async with as_tenant(pool, caller, read_only=True) as tx:
        return await tx.conn.fetch("SELECT * FROM mindscape.audit_events ORDER BY seq")


@pytest.mark.parametrize(("table", "statement"), CASES)
async def test_the_runtime_role_cannot_write_the_audit_tables(
    world: World, pool: Pool, table: str, statement: str
) -> None:
    args = () if statement.startswith("TRUNCATE") else (world.a.tenant_id,)
    before = await audit_rows(pool, world.a)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match=f"permission denied for table {table}"):
        async with as_tenant(pool, world.a) as tx:
            await tx.conn.execute(statement, *args)
    async with pool.acquire() as conn:  # the login role itself, outside any tenant context
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match=f"permission denied for table {table}"):
            await conn.execute(statement, *args)
    assert await audit_rows(pool, world.a) == before


async def test_a_tenant_reads_only_its_own_chain_head_and_nothing_pending(world: World, pool: Pool) -> None:
    async with as_tenant(pool, world.a, read_only=True) as tx:
        heads = await tx.conn.fetch("SELECT tenant_id, seq FROM mindscape.audit_heads")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for table audit_pending"):
            await tx.conn.fetch("SELECT count(*) FROM mindscape.audit_pending")
    assert [h["tenant_id"] for h in heads] == [world.a.tenant_id]
    assert heads[0]["seq"] >= 3  # at least its three imported personas


async def test_an_event_names_the_context_principal_and_the_changed_rows_tenant(
    pool: Pool, tenant_factory: TenantFactory
) -> None:
    """Whatever SQL runs in a tenant transaction, its changes are recorded, as that transaction's principal."""
    office = await tenant_factory([persona("ada", "Ada")], "forge")
    agent = Caller(tenant_id=office.tenant_id, tenant_slug=office.tenant_slug, principal="key:agent-a")
    async with as_tenant(pool, agent) as tx:
        task = await tx.conn.fetchval(
            "INSERT INTO mindscape.tasks (tenant_id, title, claimed_by) VALUES ($1, 'by hand', 'someone-else')"
            " RETURNING id",
            tx.tenant_id,
        )
        await tx.conn.execute("UPDATE mindscape.tasks SET priority = 0 WHERE id = $1", task)
    rows = (await audit_rows(pool, office))[1:]  # after the persona import
    assert [(r["principal"], r["tool"], r["outcome"], r["target_ids"]) for r in rows] == [
        ("key:agent-a", "sql", "created", [str(task)]),
        ("key:agent-a", "sql", "updated", [str(task)]),
    ]
    assert rows[1]["detail"]["fields"] == ["priority"]
    assert {r["tenant_id"] for r in rows} == {office.tenant_id}


async def test_trigger_functions_cannot_be_called_or_attached_elsewhere(
    targets: Targets, world: World, pool: Pool
) -> None:
    functions = [
        "mindscape.audit_tasks()",
        "mindscape.audit_memories()",
        "mindscape.audit_flush()",
        "mindscape.audit_stage(ARRAY[ROW($1, '{}', 'created', '{}')::mindscape.audit_change])",
    ]
    for function in functions:
        args = (world.a.tenant_id,) if "$1" in function else ()
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for function"):
            async with as_tenant(pool, world.a) as tx:
                await tx.conn.execute(f"SELECT {function}", *args)
    # A table of the caller's own, with the audit trigger attached, would let it stage any rows
    # for any tenant: attaching needs EXECUTE, which nobody but the owner has.
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("CREATE TEMPORARY TABLE tasks (tenant_id uuid, id uuid) ON COMMIT DROP")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match=r"permission denied for function \S*audit_tasks"):
            await conn.execute(
                "CREATE TRIGGER forge AFTER INSERT ON pg_temp.tasks REFERENCING NEW TABLE AS new_rows"
                " FOR EACH STATEMENT EXECUTE FUNCTION mindscape.audit_tasks()"
            )
    # Even with every privilege, a trigger function cannot be called directly.
    owner = await connect(targets.owner)
    try:
        with pytest.raises(asyncpg.FeatureNotSupportedError, match="can only be called as triggers"):
            await owner.execute("SELECT mindscape.audit_tasks()")
    finally:
        await owner.close()


async def test_security_definer_functions_are_only_the_runtime_lookups(world: World) -> None:
    conn = await connect(world.targets.runtime, pooled=world.targets.pooled)
    try:
        rows = await conn.fetch(
            "SELECT p.proname, p.proconfig,"
            " has_function_privilege('mindscape_app', p.oid, 'EXECUTE') AS app,"
            " has_function_privilege('mindscape_tenant', p.oid, 'EXECUTE') AS tenant"
            " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE p.prosecdef AND n.nspname = 'mindscape'"
        )
    finally:
        await conn.close()
    assert {r["proname"] for r in rows if r["app"]} == {
        "resolve_tenant",
        "tenant_settings",
        "api_key_lookup",
        "touch_api_key",
        "touch_api_keys",
        "take_calls",
    }
    assert [r["proname"] for r in rows if r["tenant"]] == []
    for r in rows:  # the trigger functions included
        assert r["proconfig"] == ["search_path=pg_catalog, pg_temp"], r["proname"]


async def test_the_runtime_role_cannot_list_tenants_or_read_anothers_settings(world: World, pool: Pool) -> None:
    async with pool.acquire() as conn:
        for statement in ("SELECT slug FROM mindscape.tenants", "SELECT tenant_id FROM mindscape.api_keys"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch(statement)
        # tenant_context() runs with its caller's rights: without the tenant role it reads nothing.
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for table tenants"):
            await conn.fetch("SELECT * FROM mindscape.tenant_context('')")
        # What resolving a caller needs: one tenant by its exact slug, id and status only.
        resolved = await conn.fetch("SELECT * FROM mindscape.resolve_tenant($1)", world.b.tenant_slug)
        assert [dict(r) for r in resolved] == [
            {"id": world.b.tenant_id, "slug": world.b.tenant_slug, "status": "active"}
        ]
        assert await conn.fetch("SELECT * FROM mindscape.resolve_tenant('%')") == []
        assert await conn.fetchval("SELECT mindscape.tenant_settings($1)", uuid.uuid4()) is None
    async with as_tenant(pool, world.a, read_only=True) as tx:
        rows = await tx.conn.fetch("SELECT id, settings FROM mindscape.tenants")
        assert await tx.conn.fetch("SELECT settings FROM mindscape.tenants WHERE id = $1", world.b.tenant_id) == []
    assert [r["id"] for r in rows] == [world.a.tenant_id]
    # Inside a tenant transaction the lookups are out of reach too.
    for statement, arg in (
        ("SELECT * FROM mindscape.resolve_tenant($1)", world.b.tenant_slug),
        ("SELECT mindscape.tenant_settings($1)", world.b.tenant_id),
        ("SELECT * FROM mindscape.api_key_lookup($1)", "000000000000"),
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for function"):
            async with as_tenant(pool, world.a, read_only=True) as tx:
                await tx.conn.fetch(statement, arg)
