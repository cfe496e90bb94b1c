"""The audit trail: the database records one event per changed row, at commit, in each tenant's hash chain.

The events come from triggers (migration 0006), never from the tools: these tests check that
every audited call leaves exactly the expected events, and that `mindscape audit tail` and
`mindscape audit verify` read them back.
"""

from __future__ import annotations

import getpass
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest
import typer
from typer.testing import CliRunner

from mindscape.cli.audit import audit_app
from mindscape.config.settings import Settings
from mindscape.database.pool import Pool, create_pool
from mindscape.database.targets import Targets
from mindscape.ops import personas as persona_ops
from mindscape.ops.audit import verify_chain
from mindscape.queries import audit
from mindscape.tenancy.caller import Caller
from mindscape.tenancy.transaction import tenant_transaction
from tests.support.cli import mindscape, write_jsonl
from tests.support.results import data
from tests.support.tenants import ClientFactory, TenantFactory, persona, set_quota

pytestmark = [pytest.mark.anyio, pytest.mark.office("ada", "basil", prefix="audit")]
USER = getpass.getuser()


async def events(pool: Pool, caller: Caller) -> list[asyncpg.Record]:
    async with tenant_transaction(pool, caller, read_only=True, statement_timeout_ms=5000) as tx:
        return await tx.conn.fetch("SELECT * FROM mindscape.audit_events ORDER BY seq")


async def persona_ids(pool: Pool, caller: Caller) -> dict[str, str]:
    async with tenant_transaction(pool, caller, read_only=True, statement_timeout_ms=5000) as tx:
        return {r["slug"]: str(r["id"]) for r in await tx.conn.fetch("SELECT slug, id FROM mindscape.personas")}


def summary(rows: list[asyncpg.Record]) -> list[tuple[str, str, list[str]]]:
    return [(r["tool"], r["outcome"], r["target_ids"]) for r in rows]


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_every_write_records_its_events_and_reads_record_none(
    office: Caller, client_for: ClientFactory, pool: Pool, mode: str
) -> None:
    async with client_for(office.tenant_slug, mode=mode) as client:

        async def call(tool: str, **args: Any) -> dict[str, Any]:
            return data(await client.call_tool(tool, args))

        cid = (await call("create_campaign", name="Launch", personas=["ada"]))["id"]
        await call("update_campaign", id=cid, expected_version=1, status="active")
        tid = (await call("create_task", title="Write copy", campaign=cid, idempotency_key="copy"))["id"]
        assert (await call("create_task", title="Write copy", campaign=cid, idempotency_key="copy"))["duplicate"]
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
    ids = await persona_ids(pool, office)
    assert summary(rows) == [
        ("persona_import", "created", [ids["ada"]]),
        ("persona_import", "created", [ids["basil"]]),
        ("create_campaign", "created", [cid]),
        ("create_campaign", "assigned", [cid, ids["ada"]]),
        ("update_campaign", "updated", [cid]),
        ("create_task", "created", [tid]),
        # The idempotent retry changed nothing, so it left no event (docs/decisions.md).
        ("claim_next_task", "claimed", [tid]),
        ("update_task", "updated", [tid]),
        ("remember", "created", [mid]),
        ("remember", "duplicate", [mid]),
        ("forget", "deleted", [mid]),
    ]
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    assert {r["principal"] for r in rows[:2]} == {f"cli:{USER}"}
    assert {r["principal"] for r in rows[2:]} == {f"stdio:{USER}"}
    assert {r["tenant_id"] for r in rows} == {office.tenant_id}
    details = [r["detail"] for r in rows]
    assert details[0] == {"slug": "ada", "version": 1}
    assert details[2:4] == [{}, {}]
    assert details[4] == {"fields": ["status"], "from": "draft", "to": "active", "version": 2}
    assert details[6] == {"attempts": 1, "reclaimed": False, "lease_seconds": 120}
    assert details[7] == {"fields": ["status", "result"], "from": "in_progress", "to": "done", "version": 3}
    # remember's event carries the memory's provenance (migration 0009): the client the session named.
    session = {"client": "mcp", "client_version": details[8].get("client_version")}
    assert details[8] == {"kind": "note", "visibility": "tenant", "written_via": "tool", **session}
    assert details[8]["client_version"]
    assert details[9:] == [{"fields": [], "version": 1}, {}]
    times = [r["created_at"] for r in rows]
    assert times == sorted(times)


async def test_campaign_personas_record_only_the_assignments_that_change(
    office: Caller, client_for: ClientFactory, pool: Pool
) -> None:
    async with client_for(office.tenant_slug) as client:
        cid = data(await client.call_tool("create_campaign", {"name": "C", "personas": ["ada", "basil"]}))["id"]
        before = len(await events(pool, office))
        changed = await client.call_tool("update_campaign", {"id": cid, "expected_version": 1, "personas": ["basil"]})
        same = await client.call_tool("update_campaign", {"id": cid, "expected_version": 2, "personas": ["basil"]})
    assert not changed.is_error
    assert not same.is_error
    ids = await persona_ids(pool, office)
    rows = (await events(pool, office))[before:]
    assert summary(rows) == [
        ("update_campaign", "updated", [cid]),
        ("update_campaign", "unassigned", [cid, ids["ada"]]),
        ("update_campaign", "updated", [cid]),
    ]
    assert rows[0]["detail"] == {"fields": [], "from": "draft", "to": "draft", "version": 2}


async def test_persona_import_records_each_change_with_its_source(targets: Targets, office: Caller, pool: Pool) -> None:
    again = [persona("ada", "Ada renamed"), persona("basil", "Basil"), persona("cora", "Cora")]
    await persona_ops.import_personas(
        Settings(database_url=None), targets, tenant_slug=office.tenant_slug, items=again, source="team.yaml"
    )
    ids = await persona_ids(pool, office)
    rows = (await events(pool, office))[2:]  # after the two the office was seeded with
    assert [(r["tool"], r["outcome"], r["target_ids"], r["detail"]) for r in rows] == [
        (
            "persona_import",
            "updated",
            [ids["ada"]],
            {"slug": "ada", "version": 2, "fields": ["name"], "source": "team.yaml"},
        ),
        ("persona_import", "created", [ids["cora"]], {"slug": "cora", "version": 1, "source": "team.yaml"}),
    ]  # basil was unchanged: no event


def test_memory_import_records_each_memory_with_its_file(targets: Targets, office: Caller, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "notes.jsonl", [{"content": "first note"}, {"content": "second note"}])
    result = mindscape(
        targets, "memory", "import", source, "--tenant", office.tenant_slug, MINDSCAPE_EMBEDDING_PROVIDER="hashing"
    )
    assert result.exit_code == 0, result.output
    rows = anyio.run(_events_of, targets, office)
    imported = [r for r in rows if r["tool"] == "memory_import"]
    assert [(r["outcome"], r["detail"]) for r in imported] == [
        ("created", {"kind": "note", "source": str(source), "visibility": "tenant", "written_via": "import"}),
        ("created", {"kind": "note", "source": str(source), "visibility": "tenant", "written_via": "import"}),
    ]
    assert {r["principal"] for r in imported} == {f"cli:{USER}"}


async def _events_of(targets: Targets, caller: Caller) -> list[asyncpg.Record]:
    pool = await create_pool(targets.runtime, min_size=1, max_size=1, pooled=targets.pooled)
    try:
        return await events(pool, caller)
    finally:
        await pool.close()


async def test_a_refused_write_records_nothing(office: Caller, client_for: ClientFactory, pool: Pool) -> None:
    """The events are written at commit, so a call that fails leaves none (after its insert: test_quotas.py)."""
    async with client_for(office.tenant_slug) as client:
        failed = await client.call_tool("create_task", {"title": "t", "persona": "nobody"})
    assert failed.is_error
    assert [r["tool"] for r in await events(pool, office)] == ["persona_import", "persona_import"]


async def test_concurrent_writers_of_one_tenant_keep_one_chain(
    targets: Targets, office: Caller, client_for: ClientFactory, pool: Pool
) -> None:
    await set_quota(targets, office.tenant_slug, max_concurrent_calls=0)  # all 20 at once, not refused
    async with client_for(office.tenant_slug) as client:
        results: list[Any] = []

        async def create(i: int) -> None:
            results.append(await client.call_tool("create_task", {"title": f"parallel {i}"}))

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(create, i)
    assert not any(r.is_error for r in results)
    rows = await events(pool, office)
    assert [r["seq"] for r in rows] == list(range(1, 23))
    assert len({r["target_ids"][0] for r in rows if r["tool"] == "create_task"}) == 20
    report = await verify_chain(Settings(database_url=None), targets, tenant_slug=office.tenant_slug)
    assert report.broken is None
    assert report.events == 22


async def test_tail_returns_the_newest_events_oldest_first(office: Caller, pool: Pool) -> None:
    async with tenant_transaction(pool, office, read_only=False, statement_timeout_ms=5000) as tx:
        for i in range(5):
            await tx.conn.execute(
                "INSERT INTO mindscape.tasks (tenant_id, title) VALUES ($1, $2)", office.tenant_id, f"t{i}"
            )
    async with tenant_transaction(pool, office, read_only=True, statement_timeout_ms=5000) as tx:
        newest = await audit.tail(tx.conn, tenant_id=tx.tenant_id, since=None, limit=3)
        everything = await audit.tail(tx.conn, tenant_id=tx.tenant_id, since=None, limit=100)
        since = await audit.tail(tx.conn, tenant_id=tx.tenant_id, since=everything[3].created_at, limit=100)
        future = await audit.tail(
            tx.conn, tenant_id=tx.tenant_id, since=datetime.now(UTC) + timedelta(days=1), limit=100
        )
    assert [e.seq for e in newest] == [5, 6, 7]
    assert [e.tool for e in everything] == ["persona_import"] * 2 + ["sql"] * 5  # no call name: plain SQL
    assert [e.seq for e in since] == [4, 5, 6, 7]
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
    assert all(word in lines[0] for word in ("persona_import", "created", f"cli:{USER}", '"slug": "ada"'))
    assert all(word in lines[1] for word in ("create_task", "created", task_id, f"stdio:{USER}"))
    assert lines[1].split()[1] == "2"  # seq
    assert last.exit_code == 0
    assert "create_task" in last.stdout
    assert "persona_import" not in last.stdout
    assert later.exit_code == 0
    assert "no audit events" in later.stdout
    assert task_id not in theirs.stdout
    assert '"slug": "zed"' in theirs.stdout


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


@pytest.mark.parametrize("command", ["tail", "verify"])
def test_cli_audit_unknown_tenant_is_one_line(targets: Targets, command: str) -> None:
    slug = f"nobody-{uuid.uuid4().hex[:8]}"
    result = audit_cli(targets, command, "--tenant", slug)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert f"tenant {slug!r} does not exist" in lines[0]
