"""The audit trail: one event per data-changing call, in its transaction, never altered afterwards."""

from __future__ import annotations

import getpass
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import asyncpg
import pytest
import typer
from typer.testing import CliRunner

from mindscape.cli.audit import audit_app
from mindscape.config.settings import Settings
from mindscape.database.pool import Pool, connect
from mindscape.database.targets import Targets
from mindscape.ops import personas as persona_ops
from mindscape.queries import audit
from mindscape.tenancy.caller import Caller
from mindscape.tenancy.transaction import tenant_transaction
from tests.support.results import data
from tests.support.tenants import ClientFactory, TenantFactory, persona

pytestmark = [pytest.mark.anyio, pytest.mark.office("ada", "basil", prefix="audit")]
USER = getpass.getuser()


async def events(pool: Pool, caller: Caller) -> list[asyncpg.Record]:
    async with tenant_transaction(pool, caller, read_only=True, statement_timeout_ms=5000) as tx:
        return await tx.conn.fetch("SELECT * FROM mindscape.audit_events ORDER BY created_at, id")


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_every_write_records_one_event_and_reads_record_none(
    office: Caller, client_for: ClientFactory, pool: Pool, mode: str
) -> None:
    async with client_for(office.tenant_slug, mode=mode) as client:

        async def call(tool: str, **args: Any) -> dict[str, Any]:
            return data(await client.call_tool(tool, args))

        cid = (await call("create_campaign", name="Launch", personas=["ada"]))["id"]
        await call("update_campaign", id=cid, expected_version=1, status="active")
        tid = (await call("create_task", title="Write copy", campaign=cid, idempotency_key="copy"))["id"]
        await call("create_task", title="Write copy", campaign=cid, idempotency_key="copy")
        await call("claim_next_task", lease_seconds=120)
        await call("update_task", id=tid, expected_version=2, status="done", result={"words": 300})
        mid = (await call("remember", content="Launch copy approved", persona="ada"))["id"]
        await call("remember", content="Launch copy approved", persona="ada")
        await call("forget", id=mid)
        # Reads, an empty claim and refused calls change nothing, so they leave no event.
        await call("get_campaign", id=cid)
        await call("list_campaigns")
        await call("get_task", id=tid)
        await call("list_tasks", campaign=cid)
        await call("recall", query="launch")
        await call("get_persona", slug="ada")
        assert (await call("claim_next_task"))["task"] is None
        assert (await client.call_tool("forget", {"id": mid})).is_error
        assert (await client.call_tool("update_task", {"id": tid, "expected_version": 1, "title": "x"})).is_error
        assert (await client.call_tool("update_task", {"id": tid, "expected_version": 3, "status": "pending"})).is_error
    rows = await events(pool, office)
    assert [(r["tool"], r["outcome"], r["target_ids"]) for r in rows] == [
        ("persona_import", "imported", ["ada", "basil"]),
        ("create_campaign", "created", [cid]),
        ("update_campaign", "updated", [cid]),
        ("create_task", "created", [tid]),
        ("create_task", "duplicate", [tid]),
        ("claim_next_task", "claimed", [tid]),
        ("update_task", "updated", [tid]),
        ("remember", "created", [mid]),
        ("remember", "duplicate", [mid]),
        ("forget", "deleted", [mid]),
    ]
    assert rows[0]["principal"] == f"cli:{USER}"
    assert {r["principal"] for r in rows[1:]} == {f"stdio:{USER}"}
    assert {r["tenant_id"] for r in rows} == {office.tenant_id}
    details = {r["tool"]: r["detail"] for r in rows}
    assert details["update_campaign"] == {"fields": ["status"], "from": "draft", "to": "active", "version": 2}
    assert details["claim_next_task"] == {"attempts": 1, "reclaimed": False, "lease_seconds": 120}
    assert details["update_task"] == {"fields": ["status", "result"], "from": "in_progress", "to": "done", "version": 3}
    times = [r["created_at"] for r in rows]
    assert times == sorted(times)


async def test_persona_import_records_one_event_with_counts(targets: Targets, office: Caller, pool: Pool) -> None:
    again = [persona("ada", "Ada renamed"), persona("basil", "Basil"), persona("cora", "Cora")]
    await persona_ops.import_personas(Settings(database_url=None), targets, tenant_slug=office.tenant_slug, items=again)
    rows = [r for r in await events(pool, office) if r["tool"] == "persona_import"]
    assert [(r["outcome"], r["target_ids"], r["detail"]) for r in rows] == [
        ("imported", ["ada", "basil"], {"created": 2, "updated": 0, "unchanged": 0}),
        ("imported", ["ada", "cora"], {"created": 1, "updated": 1, "unchanged": 1}),
    ]


async def test_a_refused_write_records_nothing(office: Caller, client_for: ClientFactory, pool: Pool) -> None:
    """The event is written in the call's transaction, so a call that fails leaves neither."""
    async with client_for(office.tenant_slug) as client:
        failed = await client.call_tool("create_task", {"title": "t", "persona": "nobody"})
    assert failed.is_error
    assert [r["tool"] for r in await events(pool, office)] == ["persona_import"]


async def test_runtime_role_cannot_update_delete_or_truncate_events(office: Caller, pool: Pool) -> None:
    before = await events(pool, office)
    for statement in (
        "UPDATE mindscape.audit_events SET outcome = 'forged'",
        "DELETE FROM mindscape.audit_events",
        "TRUNCATE mindscape.audit_events",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            async with tenant_transaction(pool, office, read_only=False, statement_timeout_ms=5000) as tx:
                await tx.conn.execute(statement)
    assert await events(pool, office) == before


async def test_the_trigger_refuses_changes_even_with_privileges(targets: Targets, office: Caller, pool: Pool) -> None:
    """Defence in depth: were UPDATE/DELETE/TRUNCATE ever granted, or for the owner, the trigger still refuses."""
    before = await events(pool, office)
    conn = await connect(targets.owner)  # a superuser: bypasses privileges and row-level security
    outer = conn.transaction()
    await outer.start()
    try:
        for statement in (
            "UPDATE mindscape.audit_events SET outcome = 'forged'",
            "DELETE FROM mindscape.audit_events",
            "TRUNCATE mindscape.audit_events",
        ):
            operation = statement.split()[0]
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match=f"append-only: {operation} is not allowed"):
                async with conn.transaction():
                    await conn.execute(statement)
        # The tenant role, with every privilege granted (rolled back below): TRUNCATE ignores row-level
        # security, so only the trigger stands in its way.
        await conn.execute("GRANT UPDATE, DELETE, TRUNCATE ON mindscape.audit_events TO mindscape_tenant")
        await conn.execute("SET LOCAL ROLE mindscape_tenant")
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(office.tenant_id))
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only: TRUNCATE is not allowed"):
            async with conn.transaction():
                await conn.execute("TRUNCATE mindscape.audit_events")
        # UPDATE and DELETE match no row: no policy lets the tenant role change an event.
        assert await conn.execute("UPDATE mindscape.audit_events SET outcome = 'forged'") == "UPDATE 0"
        assert await conn.execute("DELETE FROM mindscape.audit_events") == "DELETE 0"
    finally:
        await outer.rollback()
        await conn.close()
    assert await events(pool, office) == before


async def test_an_event_cannot_name_another_principal(office: Caller, pool: Pool) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with tenant_transaction(pool, office, read_only=False, statement_timeout_ms=5000) as tx:
            await tx.conn.execute(
                "INSERT INTO mindscape.audit_events (tenant_id, principal, tool, outcome)"
                " VALUES ($1, 'someone-else', 'forge', 'created')",
                office.tenant_id,
            )
    async with tenant_transaction(pool, office, read_only=False, statement_timeout_ms=5000) as tx:
        await audit.record(tx.conn, tenant_id=tx.tenant_id, tool="probe", target_ids=[], outcome="created")
    assert (await events(pool, office))[-1]["principal"] == office.principal


async def test_tail_returns_the_newest_events_oldest_first(office: Caller, pool: Pool) -> None:
    async with tenant_transaction(pool, office, read_only=False, statement_timeout_ms=5000) as tx:
        for i in range(5):
            await audit.record(
                tx.conn, tenant_id=tx.tenant_id, tool="probe", target_ids=[f"t{i}"], outcome="created", detail={"i": i}
            )
    async with tenant_transaction(pool, office, read_only=True, statement_timeout_ms=5000) as tx:
        newest = await audit.tail(tx.conn, tenant_id=tx.tenant_id, since=None, limit=3)
        everything = await audit.tail(tx.conn, tenant_id=tx.tenant_id, since=None, limit=100)
        since = await audit.tail(tx.conn, tenant_id=tx.tenant_id, since=everything[3].created_at, limit=100)
        future = await audit.tail(
            tx.conn, tenant_id=tx.tenant_id, since=datetime.now(UTC) + timedelta(days=1), limit=100
        )
    assert [e.detail for e in newest] == [{"i": 2}, {"i": 3}, {"i": 4}]
    assert [e.tool for e in everything] == ["persona_import"] + ["probe"] * 5
    assert [e.target_ids for e in since] == [["t2"], ["t3"], ["t4"]]
    assert future == []


def audit_cli(targets: Targets, *args: str) -> Any:
    # cli.py mounts audit_app as `mindscape audit`; a bare group does the same here.
    app = typer.Typer()
    app.add_typer(audit_app, name="audit")
    env = {"MINDSCAPE_DATABASE_URL": targets.runtime, "MINDSCAPE_OWNER_DATABASE_URL": targets.owner}
    return CliRunner().invoke(app, ["audit", *args], env={**env, "COLUMNS": "250"})


def test_cli_audit_tail(targets: Targets, client_for: ClientFactory, tenant_factory: TenantFactory) -> None:
    office = anyio.run(tenant_factory, [persona("ada", "Ada")], "tail")
    other = anyio.run(tenant_factory, [persona("zed", "Zed")], "tail")

    async def work() -> str:
        async with client_for(office.tenant_slug) as client:
            made = await client.call_tool("create_task", {"title": "audited"})
        return data(made)["id"]

    task_id = anyio.run(work)
    shown = audit_cli(targets, "tail", "--tenant", office.tenant_slug)
    last = audit_cli(targets, "tail", "--tenant", office.tenant_slug, "--limit", "1")
    later = audit_cli(targets, "tail", "--tenant", office.tenant_slug, "--since", "2999-01-01")
    theirs = audit_cli(targets, "tail", "--tenant", other.tenant_slug)
    assert shown.exit_code == 0, shown.output
    lines = [line for line in shown.stdout.splitlines() if "persona_import" in line or "create_task" in line]
    assert len(lines) == 2
    assert "persona_import" in lines[0]
    assert f"cli:{USER}" in lines[0]
    assert all(word in lines[1] for word in ("create_task", "created", task_id, f"stdio:{USER}"))
    assert last.exit_code == 0
    assert "create_task" in last.stdout
    assert "persona_import" not in last.stdout
    assert later.exit_code == 0
    assert "no audit events" in later.stdout
    assert task_id not in theirs.stdout
    assert "zed" in theirs.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--since", "last tuesday"], 2, "not an ISO 8601 time"),
        (["--limit", "0"], 2, "--limit"),
    ],
)
def test_cli_audit_tail_refuses_bad_options(targets: Targets, args: list[str], code: int, message: str) -> None:
    result = audit_cli(targets, "tail", "--tenant", "whoever", *args)
    assert result.exit_code == code
    assert message in result.stderr


def test_cli_audit_tail_unknown_tenant_is_one_line(targets: Targets) -> None:
    slug = f"nobody-{uuid.uuid4().hex[:8]}"
    result = audit_cli(targets, "tail", "--tenant", slug)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert f"tenant {slug!r} does not exist" in lines[0]
