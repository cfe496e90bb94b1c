"""Isolation checklist items (docs/isolation.md) for campaigns, campaign personas, tasks and audit events.

As in test_isolation.py, everything runs as the runtime role and the SQL here leaves out
`WHERE tenant_id = ...` on purpose: row-level security alone must keep tenants apart.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import asyncpg
import pytest
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, TextContent

from mindscape.database.pool import Pool, connect, create_pool
from mindscape.database.targets import Targets
from mindscape.queries import campaigns, lookups, tasks
from mindscape.queries.campaigns import NewCampaign
from mindscape.queries.tasks import NewTask
from mindscape.tenancy.caller import Caller
from mindscape.tenancy.transaction import TenantTx, tenant_transaction
from tests.support.tenants import ClientFactory, TenantFactory, make_tenant, persona

pytestmark = pytest.mark.anyio
WORK_TABLES = ("campaigns", "campaign_personas", "tasks", "audit_events")


@dataclass(frozen=True)
class Seeded:
    caller: Caller
    campaign: uuid.UUID
    task: uuid.UUID
    subtask: uuid.UUID
    persona: uuid.UUID  # assigned to the campaign and the task


@dataclass(frozen=True)
class Pair:
    targets: Targets
    a: Seeded
    b: Seeded


@asynccontextmanager
async def as_tenant(pool: Pool, caller: Caller, *, read_only: bool = False) -> AsyncGenerator[TenantTx]:
    async with tenant_transaction(pool, caller, read_only=read_only, statement_timeout_ms=5000) as tx:
        yield tx


async def _seed(pool: Pool, caller: Caller, slug: str, secret: str) -> Seeded:
    async with as_tenant(pool, caller) as tx:
        campaign = await campaigns.create(
            tx.conn,
            tenant_id=tx.tenant_id,
            new=NewCampaign(secret, f"{secret} objective", "active", None, None, [slug], {"owner": secret}),
        )
        task, _ = await tasks.create(
            tx.conn,
            tenant_id=tx.tenant_id,
            new=NewTask(f"{secret} task", campaign_id=campaign.id, persona=slug, idempotency_key="shared-key"),
        )
        subtask, _ = await tasks.create(tx.conn, tenant_id=tx.tenant_id, new=NewTask("sub", parent_id=task.id))
        persona_id = (await lookups.persona_ids(tx.conn, tenant_id=tx.tenant_id, slugs=[slug]))[0]
    return Seeded(caller, campaign.id, task.id, subtask.id, persona_id)


@pytest.fixture(scope="module")
def pair(targets: Targets) -> Pair:
    async def seed() -> Pair:
        a = await make_tenant(targets, [persona("ada", "Ada")], "wa")
        b = await make_tenant(targets, [persona("ada", "Ada of B"), persona("zed", "Zed")], "wb")
        pool = await create_pool(targets.runtime, min_size=1, max_size=1, pooled=targets.pooled)
        try:
            return Pair(targets, await _seed(pool, a, "ada", "A-plan"), await _seed(pool, b, "zed", "B-secret-plan"))
        finally:
            await pool.close()

    return anyio.run(seed)


def text(result: CallToolResult) -> str:
    assert result.is_error, result.structured_content
    return " ".join(c.text for c in result.content if isinstance(c, TextContent))


async def counts(pool: Pool, caller: Caller) -> dict[str, tuple[int, set[uuid.UUID]]]:
    found: dict[str, tuple[int, set[uuid.UUID]]] = {}
    async with as_tenant(pool, caller, read_only=True) as tx:
        for table in WORK_TABLES:  # our own constants
            rows = await tx.conn.fetch(f"SELECT tenant_id FROM mindscape.{table}")
            found[table] = (len(rows), {r["tenant_id"] for r in rows})
    return found


# 4
async def test_reads_return_only_own_rows(pair: Pair, pool: Pool) -> None:
    # Events: each persona imported, then the campaign, its persona, the task and the subtask.
    for seeded, events in ((pair.a, 1 + 4), (pair.b, 2 + 4)):
        seen = await counts(pool, seeded.caller)
        tenant = {seeded.caller.tenant_id}
        assert seen["campaigns"] == (1, tenant)
        assert seen["campaign_personas"] == (1, tenant)
        assert seen["tasks"] == (2, tenant)
        assert seen["audit_events"] == (events, tenant)


# 4, 5, 18 through the tools, both protocol eras
@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_tools_see_only_own_work(pair: Pair, client_for: ClientFactory, mode: str) -> None:
    b, missing = pair.b, uuid.uuid4()
    async with client_for(pair.a.caller.tenant_slug, mode=mode) as client:
        listed_campaigns = await client.call_tool("list_campaigns", {"limit": 100})
        listed_tasks = await client.call_tool("list_tasks", {"limit": 100})
        pairs = [
            (
                await client.call_tool("get_campaign", {"id": str(b.campaign)}),
                await client.call_tool("get_campaign", {"id": str(missing)}),
            ),
            (
                await client.call_tool("get_task", {"id": str(b.task)}),
                await client.call_tool("get_task", {"id": str(missing)}),
            ),
            (
                await client.call_tool("update_task", {"id": str(b.task), "expected_version": 1, "title": "mine"}),
                await client.call_tool("update_task", {"id": str(missing), "expected_version": 1, "title": "mine"}),
            ),
            (
                await client.call_tool("update_campaign", {"id": str(b.campaign), "expected_version": 1, "name": "x"}),
                await client.call_tool("update_campaign", {"id": str(missing), "expected_version": 1, "name": "x"}),
            ),
        ]
        resources: list[str] = []
        for uri in (f"campaign://{b.campaign}", f"campaign://{missing}", f"task://{b.task}", f"task://{missing}"):
            with pytest.raises(MCPError) as caught:
                await client.read_resource(uri)
            resources.append(str(caught.value).replace(uri.split("://")[1], "X"))
    assert listed_campaigns.structured_content is not None
    assert [c["id"] for c in listed_campaigns.structured_content["campaigns"]] == [str(pair.a.campaign)]
    assert listed_tasks.structured_content is not None
    assert {t["id"] for t in listed_tasks.structured_content["tasks"]} == {str(pair.a.task), str(pair.a.subtask)}
    for foreign, nothing in pairs:
        assert text(foreign).replace(str(b.campaign), "X").replace(str(b.task), "X") == text(nothing).replace(
            str(missing), "X"
        )
    assert resources[0] == resources[1]
    assert resources[2] == resources[3]
    dumped = " ".join(r.model_dump_json() for p in pairs for r in p) + " ".join(resources)
    for secret in ("B-secret-plan", b.caller.tenant_slug, str(b.caller.tenant_id), "zed"):
        assert secret not in dumped


# 6
async def test_foreign_rows_cannot_be_changed(pair: Pair, pool: Pool) -> None:
    b = pair.b
    async with as_tenant(pool, pair.a.caller) as tx:
        changed = [
            await tx.conn.execute("UPDATE mindscape.campaigns SET name = 'hacked' WHERE id = $1", b.campaign),
            await tx.conn.execute("UPDATE mindscape.tasks SET status = 'cancelled' WHERE id = $1", b.task),
            await tx.conn.execute("DELETE FROM mindscape.campaign_personas WHERE campaign_id = $1", b.campaign),
        ]
    assert changed == ["UPDATE 0", "UPDATE 0", "DELETE 0"]
    for table in ("campaigns", "tasks", "audit_events"):  # never deleted, by anyone's agents
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with as_tenant(pool, pair.a.caller) as tx:
                await tx.conn.execute(f"DELETE FROM mindscape.{table}")
    async with as_tenant(pool, b.caller, read_only=True) as tx:
        assert await tx.conn.fetchval("SELECT name FROM mindscape.campaigns WHERE id = $1", b.campaign) == (
            "B-secret-plan"
        )
        assert await tx.conn.fetchval("SELECT status FROM mindscape.tasks WHERE id = $1", b.task) == "pending"
        assert await tx.conn.fetchval("SELECT count(*) FROM mindscape.campaign_personas") == 1


# 7
async def test_rows_cannot_be_written_into_another_tenant(pair: Pair, pool: Pool) -> None:
    a, b = pair.a, pair.b
    b_id = b.caller.tenant_id
    statements: list[tuple[str, tuple[Any, ...]]] = [
        ("INSERT INTO mindscape.campaigns (tenant_id, name) VALUES ($1, 'planted')", (b_id,)),
        ("INSERT INTO mindscape.tasks (tenant_id, title) VALUES ($1, 'planted')", (b_id,)),
        (
            "INSERT INTO mindscape.campaign_personas (tenant_id, campaign_id, persona_id) VALUES ($1, $2, $3)",
            (b_id, b.campaign, b.persona),
        ),
        ("UPDATE mindscape.campaigns SET tenant_id = $1 WHERE id = $2", (b_id, a.campaign)),
        ("UPDATE mindscape.tasks SET tenant_id = $1 WHERE id = $2", (b_id, a.subtask)),
    ]
    for statement, args in statements:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            async with as_tenant(pool, a.caller) as tx:
                await tx.conn.execute(statement, *args)
    # Audit events are written by the database alone: no tenant may insert one, for itself or B.
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for table audit_events"):
        async with as_tenant(pool, a.caller) as tx:
            await tx.conn.execute(
                "INSERT INTO mindscape.audit_events (tenant_id, seq, principal, tool, outcome, hash)"
                " VALUES ($1, 99, current_setting('app.principal'), 'planted', 'created', sha256(''))",
                b_id,
            )
    seen = await counts(pool, b.caller)
    assert {table: n for table, (n, _) in seen.items()} == {
        "campaigns": 1,
        "campaign_personas": 1,
        "tasks": 2,
        "audit_events": 6,
    }


# 8
async def test_no_tenant_context_reads_and_writes_nothing(pair: Pair) -> None:
    conn = await connect(pair.targets.runtime, pooled=pair.targets.pooled)
    try:
        for table in WORK_TABLES:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):  # the login role has no privileges
                await conn.fetch(f"SELECT * FROM mindscape.{table}")
        async with conn.transaction():
            await conn.execute("SET LOCAL ROLE mindscape_tenant")
            for table in WORK_TABLES:
                assert await conn.fetchval(f"SELECT count(*) FROM mindscape.{table}") == 0
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO mindscape.tasks (tenant_id, title) VALUES ($1, 'orphan')", pair.a.caller.tenant_id
                    )
    finally:
        await conn.close()


# 16 through the tools: another tenant's campaign, parent task or persona is "no such thing"
async def test_references_to_foreign_rows_fail_like_missing_ones(pair: Pair, client_for: ClientFactory) -> None:
    a, b, missing = pair.a, pair.b, str(uuid.uuid4())
    cases: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("create_task", {"title": "t", "campaign": str(b.campaign)}, {"title": "t", "campaign": missing}),
        ("create_task", {"title": "t", "parent": str(b.task)}, {"title": "t", "parent": missing}),
        ("create_task", {"title": "t", "persona": "zed"}, {"title": "t", "persona": "nope"}),
        ("create_campaign", {"name": "c", "personas": ["zed"]}, {"name": "c", "personas": ["nope"]}),
        (
            "update_campaign",
            {"id": str(a.campaign), "expected_version": 1, "personas": ["zed"]},
            {"id": str(a.campaign), "expected_version": 1, "personas": ["nope"]},
        ),
        (
            "update_task",
            {"id": str(a.task), "expected_version": 1, "persona": "zed"},
            {"id": str(a.task), "expected_version": 1, "persona": "nope"},
        ),
        ("claim_next_task", {"campaign": str(b.campaign)}, {"campaign": missing}),
        ("claim_next_task", {"persona": "zed"}, {"persona": "nope"}),
        ("list_tasks", {"campaign": str(b.campaign)}, {"campaign": missing}),
        ("list_tasks", {"persona": "zed"}, {"persona": "nope"}),
    ]
    async with client_for(a.caller.tenant_slug) as client:
        for tool, foreign, nothing in cases:
            got = text(await client.call_tool(tool, foreign))
            expected = text(await client.call_tool(tool, nothing))
            for value in (str(b.campaign), str(b.task), "'zed'"):
                got = got.replace(value, "X")
            assert got == expected.replace(missing, "X").replace("'nope'", "X"), tool


# 16 in SQL: the composite foreign keys refuse a foreign target exactly like a missing one
async def test_composite_keys_refuse_foreign_targets_like_missing_ones(pair: Pair, pool: Pool) -> None:
    a, b = pair.a, pair.b
    a_id = a.caller.tenant_id
    statements = [
        ("INSERT INTO mindscape.tasks (tenant_id, title, campaign_id) VALUES ($1, 'x', $2)", b.campaign),
        ("INSERT INTO mindscape.tasks (tenant_id, title, parent_id) VALUES ($1, 'x', $2)", b.task),
        ("INSERT INTO mindscape.tasks (tenant_id, title, persona_id) VALUES ($1, 'x', $2)", b.persona),
        ("UPDATE mindscape.tasks SET parent_id = $2 WHERE tenant_id = $1 AND parent_id IS NULL", b.task),
        (
            "INSERT INTO mindscape.campaign_personas (tenant_id, campaign_id, persona_id) VALUES ($1, $2, "
            f"'{a.persona}')",
            b.campaign,
        ),
        (
            "INSERT INTO mindscape.campaign_personas (tenant_id, campaign_id, persona_id) VALUES ($1, "
            f"'{a.campaign}', $2)",
            b.persona,
        ),
    ]
    for statement, foreign in statements:
        errors: list[str] = []
        for target in (foreign, uuid.uuid4()):
            with pytest.raises(asyncpg.ForeignKeyViolationError) as caught:
                async with as_tenant(pool, a.caller) as tx:
                    await tx.conn.execute(statement, a_id, target)
            errors.append(f"{caught.value} {caught.value.detail}".replace(str(target), "X"))
        assert errors[0] == errors[1], statement


# 17
async def test_idempotency_key_taken_in_another_tenant_is_free_here(
    pair: Pair, client_for: ClientFactory, tenant_factory: TenantFactory
) -> None:
    fresh = await tenant_factory([], "wc")
    async with client_for(fresh.tenant_slug) as client:
        result = await client.call_tool("create_task", {"title": "mine", "idempotency_key": "shared-key"})
    assert result.structured_content is not None
    assert result.structured_content["duplicate"] is False
    assert result.structured_content["id"] not in (str(pair.a.task), str(pair.b.task))
    assert result.structured_content["title"] == "mine"


async def test_claim_never_hands_out_another_tenants_task(
    pair: Pair, client_for: ClientFactory, tenant_factory: TenantFactory
) -> None:
    fresh = await tenant_factory([], "wd")
    async with client_for(fresh.tenant_slug) as client:
        claimed = await client.call_tool("claim_next_task", {})
        async with client_for(pair.b.caller.tenant_slug) as b_client:
            b_page = await b_client.call_tool("list_tasks", {"limit": 1})
        assert b_page.structured_content is not None
        replayed = await client.call_tool(
            "list_tasks", {"limit": 1, "cursor": b_page.structured_content["next_cursor"]}
        )
    assert claimed.structured_content is not None
    assert claimed.structured_content["task"] is None
    assert "cursor" in text(replayed)  # B's cursor is refused here


# 21, beyond "leads with tenant_id": every reference is the composite (tenant_id, id) pair
async def test_work_references_are_composite_tenant_keys(pair: Pair) -> None:
    conn = await connect(pair.targets.runtime, pooled=pair.targets.pooled)
    try:
        rows = await conn.fetch(
            "SELECT conrelid::regclass::text AS tbl, conname, pg_get_constraintdef(oid) AS def FROM pg_constraint "
            "WHERE contype IN ('f', 'u') AND conrelid = ANY(ARRAY['mindscape.tasks', 'mindscape.campaign_personas']"
            "::regclass[])"
        )
    finally:
        await conn.close()
    defs = {r["conname"]: r["def"] for r in rows}
    assert defs == {
        "tasks_tenant_fkey": "FOREIGN KEY (tenant_id) REFERENCES mindscape.tenants(id)",
        "tasks_campaign_fkey": "FOREIGN KEY (tenant_id, campaign_id) REFERENCES mindscape.campaigns(tenant_id, id)",
        "tasks_persona_fkey": "FOREIGN KEY (tenant_id, persona_id) REFERENCES mindscape.personas(tenant_id, id)",
        "tasks_parent_fkey": "FOREIGN KEY (tenant_id, parent_id) REFERENCES mindscape.tasks(tenant_id, id)",
        "tasks_idempotency_key": "UNIQUE (tenant_id, idempotency_key)",
        "campaign_personas_campaign_fkey": (
            "FOREIGN KEY (tenant_id, campaign_id) REFERENCES mindscape.campaigns(tenant_id, id)"
        ),
        "campaign_personas_persona_fkey": (
            "FOREIGN KEY (tenant_id, persona_id) REFERENCES mindscape.personas(tenant_id, id)"
        ),
    }
