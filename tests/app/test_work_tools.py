"""Campaign and task tools end to end through the in-memory MCP client: flows, queue order,
transitions, stale versions, paging, resources and bad input."""

from __future__ import annotations

import getpass
import json
import uuid
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, TextResourceContents

from mindscape.database.pool import create_pool
from mindscape.database.targets import Targets
from mindscape.tenancy.caller import Caller
from mindscape.tenancy.transaction import tenant_transaction
from tests.support.results import data, error_text
from tests.support.tenants import ClientFactory

# A fresh tenant per test (the office fixture): these tests write.
pytestmark = [pytest.mark.anyio, pytest.mark.office("ada", "basil", prefix="work")]
MODES = ["legacy", "auto"]
PRINCIPAL = f"stdio:{getpass.getuser()}"  # what the in-memory server runs as (server/state.py)
WORK_TOOLS = {
    "create_campaign",
    "get_campaign",
    "list_campaigns",
    "update_campaign",
    "create_task",
    "get_task",
    "list_tasks",
    "update_task",
    "claim_next_task",
}


async def call(client: Client, tool: str, **args: Any) -> dict[str, Any]:
    return data(await client.call_tool(tool, args))


async def sql(targets: Targets, caller: Caller, statement: str, *args: Any) -> list[Any]:
    """Run one statement inside the caller's tenant transaction (as the runtime role)."""
    pool = await create_pool(targets.runtime, min_size=1, max_size=1, pooled=targets.pooled)
    try:
        async with tenant_transaction(pool, caller, read_only=False, statement_timeout_ms=5000) as tx:
            return await tx.conn.fetch(statement, *args)
    finally:
        await pool.close()


async def work_rows(targets: Targets, caller: Caller) -> dict[str, int]:
    rows = await sql(
        targets,
        caller,
        "SELECT (SELECT count(*) FROM mindscape.campaigns) AS campaigns,"
        " (SELECT count(*) FROM mindscape.tasks) AS tasks,"
        " (SELECT count(*) FROM mindscape.campaign_personas) AS assigned,"
        " (SELECT count(*) FROM mindscape.audit_events WHERE tool <> 'persona_import') AS events",
    )
    return dict(rows[0])


@pytest.mark.parametrize("mode", MODES)
async def test_tool_list_has_schemas_limits_and_annotations(
    office: Caller, client_for: ClientFactory, mode: str
) -> None:
    async with client_for(office.tenant_slug, mode=mode) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) >= WORK_TOOLS
    for name in WORK_TOOLS:
        tool = tools[name]
        assert tool.annotations is not None, name
        assert tool.annotations.open_world_hint is False, name
        assert tool.annotations.read_only_hint is name.startswith(("get_", "list_")), name
        assert tool.output_schema is not None, name
        assert tool.description, name
        for arg, schema in tool.input_schema["properties"].items():
            # Every argument is bounded: a length, a range, an enum, a pattern or a property count.
            text = json.dumps(schema)
            bounded = ("max", "enum", "pattern", "const", "format")
            assert any(word in text for word in bounded), (name, arg, schema)
    assert tools["update_task"].annotations is not None
    assert tools["update_task"].annotations.destructive_hint is True
    claim = tools["claim_next_task"].input_schema["properties"]["lease_seconds"]
    assert (claim["minimum"], claim["maximum"], claim["default"]) == (10, 86_400, 300)
    priority = tools["create_task"].input_schema["properties"]["priority"]
    assert (priority["minimum"], priority["maximum"], priority["default"]) == (0, 4, 2)
    assert "expected_version" in tools["update_task"].input_schema["required"]
    assert "expected_version" in tools["update_campaign"].input_schema["required"]


@pytest.mark.parametrize("mode", MODES)
async def test_campaign_flow(office: Caller, client_for: ClientFactory, mode: str) -> None:
    async with client_for(office.tenant_slug, mode=mode) as client:
        created = await call(
            client,
            "create_campaign",
            name="Spring launch",
            objective="Ship the spring release",
            personas=["basil", "ada"],
            starts_at="2026-03-01T00:00:00Z",
            ends_at="2026-04-01T00:00:00+02:00",
            metadata={"budget": 1200, "channels": ["email"]},
        )
        cid = created["id"]
        await call(client, "create_task", title="Draft the email", campaign=cid)
        await call(client, "create_task", title="Book the venue", campaign=cid)
        activated = await call(client, "update_campaign", id=cid, expected_version=1, status="active")
        await call(client, "claim_next_task", campaign=cid)
        fetched = await call(client, "get_campaign", id=cid)
        listed = await call(client, "list_campaigns", status="active")
        drafts = await call(client, "list_campaigns", status="draft")
        resource = await client.read_resource(f"campaign://{cid}")
    assert created["status"] == "draft"
    assert created["version"] == 1
    assert created["personas"] == ["ada", "basil"]
    assert created["metadata"] == {"budget": 1200, "channels": ["email"]}
    assert created["ends_at"] == "2026-03-31T22:00:00Z"
    assert created["task_counts"] == dict.fromkeys(created["task_counts"], 0)
    assert (activated["status"], activated["version"]) == ("active", 2)
    assert fetched["task_counts"] == {
        "pending": 1,
        "in_progress": 1,
        "blocked": 0,
        "done": 0,
        "failed": 0,
        "cancelled": 0,
    }
    assert [c["id"] for c in listed["campaigns"]] == [cid]
    assert drafts["campaigns"] == []
    content = resource.contents[0]
    assert isinstance(content, TextResourceContents)
    assert json.loads(content.text)["name"] == "Spring launch"


@pytest.mark.parametrize("mode", MODES)
async def test_task_flow(office: Caller, client_for: ClientFactory, mode: str) -> None:
    async with client_for(office.tenant_slug, mode=mode) as client:
        created = await call(
            client,
            "create_task",
            title="Reconcile invoices",
            description="March only",
            persona="basil",
            priority=1,
            due_at="2026-03-31T17:00:00Z",
            input={"month": "2026-03"},
        )
        claim = await call(client, "claim_next_task")
        task = claim["task"]
        done = await call(
            client, "update_task", id=task["id"], expected_version=task["version"], status="done", result={"ok": 12}
        )
        fetched = await call(client, "get_task", id=created["id"])
        resource = await client.read_resource(f"task://{created['id']}")
    assert created["status"] == "pending"
    assert created["duplicate"] is False
    assert (created["version"], created["attempts"], created["persona"]) == (1, 0, "basil")
    assert task["id"] == created["id"]
    assert task["status"] == "in_progress"
    assert task["claimed_by"] == PRINCIPAL
    assert task["lease_expires_at"] is not None
    assert (task["attempts"], task["version"]) == (1, 2)
    assert (done["status"], done["version"], done["result"]) == ("done", 3, {"ok": 12})
    assert done["lease_expires_at"] is None
    assert fetched == done
    content = resource.contents[0]
    assert isinstance(content, TextResourceContents)
    assert json.loads(content.text)["result"] == {"ok": 12}


async def test_claim_hands_out_highest_priority_then_oldest(office: Caller, client_for: ClientFactory) -> None:
    async with client_for(office.tenant_slug) as client:
        low = await call(client, "create_task", title="low", priority=3)
        urgent_old = await call(client, "create_task", title="urgent old", priority=0)
        urgent_new = await call(client, "create_task", title="urgent new", priority=0)
        normal = await call(client, "create_task", title="normal", priority=1)
        claimed = [(await call(client, "claim_next_task"))["task"]["id"] for _ in range(4)]
        empty = await call(client, "claim_next_task")
    assert claimed == [urgent_old["id"], urgent_new["id"], normal["id"], low["id"]]
    assert empty["task"] is None
    assert "no task is claimable" in empty["note"]


async def test_claim_filters_and_campaign_status(office: Caller, client_for: ClientFactory) -> None:
    async with client_for(office.tenant_slug) as client:
        draft = (await call(client, "create_campaign", name="Draft"))["id"]
        live = (await call(client, "create_campaign", name="Live", status="active"))["id"]
        in_draft = await call(client, "create_task", title="in draft", campaign=draft, priority=0)
        for_ada = await call(client, "create_task", title="for ada", campaign=live, persona="ada", priority=2)
        for_basil = await call(client, "create_task", title="for basil", campaign=live, persona="basil", priority=3)
        loose = await call(client, "create_task", title="no campaign", priority=4)
        refused = error_text(await client.call_tool("claim_next_task", {"campaign": draft}))
        basil_first = await call(client, "claim_next_task", persona="basil")
        from_live = await call(client, "claim_next_task", campaign=live)
        next_any = await call(client, "claim_next_task")
        nothing = await call(client, "claim_next_task")
        await call(client, "update_campaign", id=draft, expected_version=1, status="active")
        now_live = await call(client, "claim_next_task")
    assert "is draft" in refused
    assert "status='active'" in refused
    assert basil_first["task"]["id"] == for_basil["id"]
    assert from_live["task"]["id"] == for_ada["id"]
    assert next_any["task"]["id"] == loose["id"]  # the draft campaign's task is held back
    assert nothing["task"] is None
    assert now_live["task"]["id"] == in_draft["id"]


async def test_task_transitions(office: Caller, client_for: ClientFactory, targets: Targets) -> None:
    async with client_for(office.tenant_slug) as client:
        task = await call(client, "create_task", title="t")
        tid = task["id"]
        skip = error_text(await client.call_tool("update_task", {"id": tid, "expected_version": 1, "status": "done"}))
        started = await call(client, "update_task", id=tid, expected_version=1, status="in_progress")
        blocked = await call(client, "update_task", id=tid, expected_version=2, status="blocked")
        resumed = await call(client, "update_task", id=tid, expected_version=3, status="in_progress")
        failed = await call(client, "update_task", id=tid, expected_version=4, status="failed", result={"why": "x"})
        final = error_text(
            await client.call_tool("update_task", {"id": tid, "expected_version": 5, "status": "pending"})
        )
        other = await call(client, "create_task", title="to cancel")
        cancelled = await call(client, "update_task", id=other["id"], expected_version=1, status="cancelled")
        after = await call(client, "get_task", id=tid)
    assert "cannot move task from pending to done" in skip
    assert "it can move to: in_progress, cancelled" in skip
    assert (started["status"], started["claimed_by"], started["attempts"]) == ("in_progress", PRINCIPAL, 1)
    assert started["lease_expires_at"] is not None
    assert (blocked["status"], blocked["lease_expires_at"]) == ("blocked", None)
    assert (resumed["status"], resumed["attempts"]) == ("in_progress", 1)  # resuming is not a new attempt
    assert resumed["lease_expires_at"] is not None
    assert (failed["status"], failed["result"]) == ("failed", {"why": "x"})
    assert "failed is final" in final
    assert cancelled["status"] == "cancelled"
    assert after == failed  # the refused transition changed nothing
    events = await sql(targets, office, "SELECT count(*) AS n FROM mindscape.audit_events WHERE tool = 'update_task'")
    assert events[0]["n"] == 5


async def test_campaign_transitions(office: Caller, client_for: ClientFactory) -> None:
    async with client_for(office.tenant_slug) as client:
        cid = (await call(client, "create_campaign", name="c"))["id"]

        async def move(version: int, status: str) -> CallToolResult:
            return await client.call_tool("update_campaign", {"id": cid, "expected_version": version, "status": status})

        early = error_text(await move(1, "completed"))
        steps = [data(await move(v, s)) for v, s in ((1, "active"), (2, "paused"), (3, "active"), (4, "completed"))]
        reopen = error_text(await move(5, "active"))
        archived = data(await move(5, "archived"))
        final = error_text(await move(6, "draft"))
        added = error_text(await client.call_tool("create_task", {"title": "late", "campaign": cid}))
    assert "cannot move campaign from draft to completed; from draft it can move to: active, archived" in early
    assert [s["status"] for s in steps] == ["active", "paused", "active", "completed"]
    assert "from completed it can move to: archived" in reopen
    assert archived["status"] == "archived"
    assert "archived is final" in final
    assert "is archived; tasks can be added only to draft, active or paused campaigns" in added


async def test_stale_version_is_a_conflict_that_names_the_current_one(
    office: Caller, client_for: ClientFactory, targets: Targets
) -> None:
    async with client_for(office.tenant_slug) as client:
        task = await call(client, "create_task", title="t")
        await call(client, "update_task", id=task["id"], expected_version=1, title="renamed")
        stale = error_text(
            await client.call_tool("update_task", {"id": task["id"], "expected_version": 1, "status": "cancelled"})
        )
        campaign = await call(client, "create_campaign", name="c")
        await call(client, "update_campaign", id=campaign["id"], expected_version=1, name="c2")
        stale_campaign = error_text(
            await client.call_tool("update_campaign", {"id": campaign["id"], "expected_version": 1, "name": "c3"})
        )
        after = await call(client, "get_task", id=task["id"])
        campaign_after = await call(client, "get_campaign", id=campaign["id"])
    assert "is at version 2 (status pending), not 1" in stale
    assert "expected_version=2" in stale
    facts = json.loads(stale[stale.index("{") :])
    assert facts == {"conflict": {"id": task["id"], "current_version": 2, "status": "pending"}}
    assert "is at version 2 (status draft)" in stale_campaign
    assert "get_campaign" in stale_campaign
    assert (after["status"], after["title"], after["version"]) == ("pending", "renamed", 2)
    assert (campaign_after["name"], campaign_after["version"]) == ("c2", 2)
    events = await sql(targets, office, "SELECT tool FROM mindscape.audit_events WHERE tool LIKE 'update_%'")
    assert sorted(r["tool"] for r in events) == ["update_campaign", "update_task"]  # the refused ones left none


async def test_updates_change_only_what_is_passed(office: Caller, client_for: ClientFactory) -> None:
    async with client_for(office.tenant_slug) as client:
        task = await call(client, "create_task", title="t", persona="ada", due_at="2026-05-01T00:00:00Z", priority=3)
        tid = task["id"]
        moved = await call(client, "update_task", id=tid, expected_version=1, priority=0, persona="basil")
        cleared = await call(client, "update_task", id=tid, expected_version=2, clear=["due_at", "persona"])
        started = await call(client, "update_task", id=tid, expected_version=3, status="in_progress", lease_seconds=60)
        renewed = await call(client, "update_task", id=tid, expected_version=4, lease_seconds=3600)
        not_running = error_text(
            await client.call_tool(
                "update_task", {"id": tid, "expected_version": 5, "status": "blocked", "lease_seconds": 60}
            )
        )
        both = error_text(
            await client.call_tool(
                "update_task", {"id": tid, "expected_version": 5, "persona": "ada", "clear": ["persona"]}
            )
        )
        campaign = await call(
            client,
            "create_campaign",
            name="c",
            personas=["ada"],
            starts_at="2026-01-01T00:00:00Z",
            ends_at="2026-02-01T00:00:00Z",
        )
        cid = campaign["id"]
        reassigned = await call(
            client, "update_campaign", id=cid, expected_version=1, personas=["basil"], metadata={"k": "v"}
        )
        open_ended = await call(client, "update_campaign", id=cid, expected_version=2, clear=["ends_at"])
        bad_period = error_text(
            await client.call_tool(
                "update_campaign", {"id": cid, "expected_version": 3, "ends_at": "2025-12-31T00:00:00Z"}
            )
        )
        nothing = error_text(await client.call_tool("update_campaign", {"id": cid, "expected_version": 3}))
    assert (moved["priority"], moved["persona"], moved["title"], moved["due_at"]) == (
        0,
        "basil",
        "t",
        "2026-05-01T00:00:00Z",
    )
    assert (cleared["due_at"], cleared["persona"], cleared["priority"]) == (None, None, 0)
    assert started["lease_expires_at"] < renewed["lease_expires_at"]
    assert renewed["attempts"] == 1
    assert "lease_seconds applies only to a task in progress" in not_running
    assert "pass a value or list it in `clear`, not both" in both
    assert (reassigned["personas"], reassigned["metadata"], reassigned["name"]) == (["basil"], {"k": "v"}, "c")
    assert reassigned["starts_at"] == "2026-01-01T00:00:00Z"
    assert open_ended["ends_at"] is None
    assert "must be later than starts_at" in bad_period
    assert "nothing to change" in nothing


async def test_updates_naming_an_unknown_persona_change_nothing(
    office: Caller, client_for: ClientFactory, targets: Targets
) -> None:
    async with client_for(office.tenant_slug) as client:
        task = data(await client.call_tool("create_task", {"title": "t", "persona": "ada"}))
        campaign = data(await client.call_tool("create_campaign", {"name": "c", "personas": ["ada"]}))
        before = await work_rows(targets, office)
        task_change = {"id": task["id"], "expected_version": 1, "persona": "nobody", "priority": 0}
        campaign_change = {"id": campaign["id"], "expected_version": 1, "personas": ["basil", "nobody"], "name": "d"}
        refusals = [
            error_text(await client.call_tool("update_task", task_change)),
            error_text(await client.call_tool("update_campaign", campaign_change)),
        ]
        task_after = data(await client.call_tool("get_task", {"id": task["id"]}))
        campaign_after = data(await client.call_tool("get_campaign", {"id": campaign["id"]}))
    assert all("no persona with slug 'nobody'" in text for text in refusals)
    assert (task_after["version"], task_after["persona"], task_after["priority"]) == (1, "ada", 2)
    assert (campaign_after["version"], campaign_after["personas"], campaign_after["name"]) == (1, ["ada"], "c")
    assert await work_rows(targets, office) == before  # no audit event either: both rolled back


async def test_subtasks_follow_their_parent(office: Caller, client_for: ClientFactory) -> None:
    async with client_for(office.tenant_slug) as client:
        cid = (await call(client, "create_campaign", name="c"))["id"]
        other = (await call(client, "create_campaign", name="other"))["id"]
        parent = await call(client, "create_task", title="parent", campaign=cid)
        child = await call(client, "create_task", title="child", parent=parent["id"])
        await call(client, "create_task", title="unrelated", campaign=cid)
        mismatch = error_text(
            await client.call_tool("create_task", {"title": "x", "parent": parent["id"], "campaign": other})
        )
        children = await call(client, "list_tasks", parent=parent["id"])
    assert child["parent_id"] == parent["id"]
    assert child["campaign_id"] == cid  # inherited
    assert "a subtask belongs to its parent's campaign" in mismatch
    assert [t["id"] for t in children["tasks"]] == [child["id"]]


async def test_idempotency_key_returns_the_original(
    office: Caller, client_for: ClientFactory, targets: Targets
) -> None:
    async with client_for(office.tenant_slug) as client:
        first = await call(client, "create_task", title="Send report", idempotency_key="report-2026-03")
        retry = await call(client, "create_task", title="Send report (retry)", idempotency_key="report-2026-03")
        other = await call(client, "create_task", title="Send report", idempotency_key="report-2026-04")
        unkeyed = [await call(client, "create_task", title="Send report") for _ in range(2)]
    assert first["duplicate"] is False
    assert retry == {**first, "duplicate": True}  # the original, unchanged
    assert len({first["id"], other["id"], unkeyed[0]["id"], unkeyed[1]["id"]}) == 4
    rows = await sql(targets, office, "SELECT count(*) AS n FROM mindscape.tasks")
    assert rows[0]["n"] == 4


async def test_list_tasks_filters_and_pages(office: Caller, client_for: ClientFactory) -> None:
    async with client_for(office.tenant_slug) as client:
        cid = (await call(client, "create_campaign", name="c", status="active"))["id"]
        made = [
            await call(
                client,
                "create_task",
                title=f"task {i:02d}",
                priority=i % 3,
                campaign=cid if i % 2 else None,
                persona="ada" if i % 5 == 0 else None,
                due_at=f"2026-01-{i + 1:02d}T00:00:00Z",
            )
            for i in range(25)
        ]
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            page = await call(client, "list_tasks", limit=10, **({"cursor": cursor} if cursor else {}))
            seen += [t["id"] for t in page["tasks"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        in_campaign = await call(client, "list_tasks", campaign=cid, limit=100)
        for_ada = await call(client, "list_tasks", persona="ada", limit=100)
        due_early = await call(client, "list_tasks", due_before="2026-01-04T00:00:00Z", limit=100)
        await call(client, "claim_next_task")
        running = await call(client, "list_tasks", status="in_progress")
        first = await call(client, "list_tasks", limit=5)
        crossed = error_text(
            await client.call_tool("list_tasks", {"limit": 5, "status": "pending", "cursor": first["next_cursor"]})
        )
    queue_order = [t["id"] for t in sorted(made, key=lambda t: (t["priority"], t["created_at"]))]
    assert pages == 3
    assert seen == queue_order
    assert {t["id"] for t in in_campaign["tasks"]} == {t["id"] for i, t in enumerate(made) if i % 2}
    assert {t["id"] for t in for_ada["tasks"]} == {t["id"] for i, t in enumerate(made) if i % 5 == 0}
    assert {t["title"] for t in due_early["tasks"]} == {"task 00", "task 01", "task 02"}
    assert [t["id"] for t in running["tasks"]] == [queue_order[0]]
    assert "cursor belongs to a call with other filters" in crossed


async def test_list_campaigns_pages_newest_first(office: Caller, client_for: ClientFactory) -> None:
    async with client_for(office.tenant_slug) as client:
        made = [(await call(client, "create_campaign", name=f"c{i}", objective="o" * 300))["id"] for i in range(5)]
        first = await call(client, "list_campaigns", limit=2)
        second = await call(client, "list_campaigns", limit=2, cursor=first["next_cursor"])
        third = await call(client, "list_campaigns", limit=2, cursor=second["next_cursor"])
    pages = [first, second, third]
    assert [c["id"] for p in pages for c in p["campaigns"]] == made[::-1]
    assert third["next_cursor"] is None
    assert len(first["campaigns"][0]["objective"]) == 200


async def test_resources_refuse_unknown_ids(office: Caller, client_for: ClientFactory) -> None:
    async with client_for(office.tenant_slug) as client:
        for uri in (f"campaign://{uuid.uuid4()}", "campaign://nope", f"task://{uuid.uuid4()}", "task://nope"):
            with pytest.raises(MCPError, match="in this workspace"):
                await client.read_resource(uri)


TOO_BIG = {"blob": "x" * 17_000}
RANDOM = str(uuid.uuid4())


@pytest.mark.parametrize(
    ("tool", "args", "expected"),
    [
        ("create_campaign", {"name": ""}, "name"),
        ("create_campaign", {"name": "   "}, "name"),
        ("create_campaign", {"name": "x" * 201}, "name"),
        ("create_campaign", {"name": "c", "status": "completed"}, "status"),
        ("create_campaign", {"name": "c", "starts_at": "tomorrow"}, "starts_at"),
        ("create_campaign", {"name": "c", "starts_at": "2026-01-01T00:00:00"}, "timezone"),
        (
            "create_campaign",
            {"name": "c", "starts_at": "2026-02-01T00:00:00Z", "ends_at": "2026-01-01T00:00:00Z"},
            "must be later than starts_at",
        ),
        (
            "create_campaign",
            {"name": "c", "starts_at": "2026-02-01T00:00:00Z", "ends_at": "2026-02-01T00:00:00Z"},
            "must be later than starts_at",
        ),
        ("create_campaign", {"name": "c", "metadata": TOO_BIG}, "over the 16384-byte limit"),
        ("create_campaign", {"name": "c", "metadata": ["not", "an", "object"]}, "metadata"),
        ("create_campaign", {"name": "c", "personas": ["nobody"]}, "no persona with slug 'nobody'"),
        ("create_campaign", {"name": "c", "personas": ["ada", "ada"]}, "more than once"),
        ("create_campaign", {"name": "c", "personas": ["Not A Slug"]}, "personas"),
        ("get_campaign", {"id": "not-a-uuid-but-long-enough-to-pass"}, "expected a campaign id such as"),
        ("get_campaign", {"id": RANDOM}, "no campaign with id"),
        ("list_campaigns", {"limit": 0}, "limit"),
        ("list_campaigns", {"status": "done"}, "status"),
        ("list_campaigns", {"cursor": "garbage"}, "cursor is not valid"),
        ("update_campaign", {"id": RANDOM, "expected_version": 1, "name": "n"}, "no campaign with id"),
        ("update_campaign", {"id": RANDOM, "expected_version": 0, "name": "n"}, "expected_version"),
        ("create_task", {"title": ""}, "title"),
        ("create_task", {"title": "t", "priority": 5}, "priority"),
        ("create_task", {"title": "t", "priority": -1}, "priority"),
        ("create_task", {"title": "t", "due_at": "2026-13-01T00:00:00Z"}, "due_at"),
        ("create_task", {"title": "t", "due_at": "2026-01-01"}, "due_at"),
        ("create_task", {"title": "t", "input": TOO_BIG}, "over the 16384-byte limit"),
        ("create_task", {"title": "t", "input": "text"}, "input"),
        ("create_task", {"title": "t", "campaign": RANDOM}, "no campaign with id"),
        ("create_task", {"title": "t", "campaign": "short"}, "campaign"),
        ("create_task", {"title": "t", "parent": RANDOM}, "no parent task with id"),
        ("create_task", {"title": "t", "persona": "nobody"}, "no persona with slug 'nobody'"),
        ("create_task", {"title": "t", "idempotency_key": "has space"}, "idempotency_key"),
        ("create_task", {"title": "t", "idempotency_key": "k" * 201}, "idempotency_key"),
        ("get_task", {"id": RANDOM}, "no task with id"),
        ("list_tasks", {"persona": "nobody"}, "no persona with slug 'nobody'"),
        ("list_tasks", {"campaign": RANDOM}, "no campaign with id"),
        ("list_tasks", {"due_before": "yesterday"}, "due_before"),
        ("list_tasks", {"status": "finished"}, "status"),
        ("update_task", {"id": RANDOM, "expected_version": 1, "status": "done"}, "no task with id"),
        ("update_task", {"id": RANDOM, "expected_version": 1, "result": TOO_BIG}, "over the 16384-byte limit"),
        ("update_task", {"id": RANDOM, "expected_version": 1}, "nothing to change"),
        ("update_task", {"id": RANDOM, "expected_version": 1, "clear": ["title"]}, "clear"),
        ("claim_next_task", {"lease_seconds": 5}, "lease_seconds"),
        ("claim_next_task", {"lease_seconds": 86_401}, "lease_seconds"),
        ("claim_next_task", {"campaign": RANDOM}, "no campaign with id"),
        ("claim_next_task", {"persona": "nobody"}, "no persona with slug 'nobody'"),
    ],
)
async def test_bad_input_is_refused_and_writes_nothing(
    office: Caller, client_for: ClientFactory, targets: Targets, tool: str, args: dict[str, Any], expected: str
) -> None:
    async with client_for(office.tenant_slug) as client:
        text = error_text(await client.call_tool(tool, args))
    assert expected in text
    assert "Traceback" not in text
    assert await work_rows(targets, office) == {"campaigns": 0, "tasks": 0, "assigned": 0, "events": 0}
