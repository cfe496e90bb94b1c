"""Provenance (migration 0009): who wrote a memory, with which client, from which task; and list_memories."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from mindscape.app.tools import memory as memory_tools
from mindscape.database.targets import Targets
from mindscape.tenancy.caller import Caller
from tests.support.memory import sql
from tests.support.principals import client_as
from tests.support.results import data, error_text
from tests.support.tenants import ClientFactory

pytestmark = [pytest.mark.anyio, pytest.mark.office("ada", prefix="prov")]

A, B = "aaaaaaaaaaaa", "bbbbbbbbbbbb"


async def test_provenance_is_recorded_not_taken_from_arguments(
    office: Caller, client_for: ClientFactory, targets: Targets
) -> None:
    spoof = {"principal": "key:ffffffffffff", "client": "evil", "written_by": "admin", "source": "operator"}
    async with client_as(client_for, office, A) as a:
        stored = data(await a.call_tool("remember", {"content": "Deploys need two reviews", "metadata": spoof}))
        unknown_arg = error_text(
            await a.call_tool("remember", {"content": "x", "written_by": "admin", "client_name": "evil"})
        )
        found = data(await a.call_tool("recall", {"query": "deploys reviews"}))["memories"]
    [memory] = found
    assert memory["id"] == stored["id"]
    assert memory["written_by"] == f"key:{A}"
    assert memory["metadata"] == spoof  # data, not provenance
    assert memory["source"] == "tool"
    assert memory["client_name"] == "mcp"  # what the SDK's client sends in its initialize
    assert memory["client_version"]
    assert "written_by" in unknown_arg
    # The audit trail names the principal and carries the client and source.
    events = await sql(
        targets,
        office,
        "SELECT principal, tool, outcome, detail FROM mindscape.audit_events WHERE $1 = ANY(target_ids)",
        stored["id"],
    )
    assert [(e["principal"], e["tool"], e["outcome"]) for e in events] == [(f"key:{A}", "remember", "created")]
    detail = events[0]["detail"]
    detail: dict[str, Any] = json.loads(detail) if isinstance(detail, str) else detail
    assert detail["client"] == "mcp"
    assert detail["written_via"] == "tool"
    assert detail["visibility"] == "tenant"


async def test_the_runtime_role_cannot_rewrite_provenance(
    office: Caller, client_for: ClientFactory, targets: Targets
) -> None:
    async with client_as(client_for, office, A) as a:
        stored = data(await a.call_tool("remember", {"content": "Provenance is fixed"}))
    for statement in (
        "UPDATE mindscape.memories SET written_by = 'someone' WHERE id = $1",
        "UPDATE mindscape.memories SET client_name = 'someone' WHERE id = $1",
        "UPDATE mindscape.memories SET content = 'changed' WHERE id = $1",
    ):
        with pytest.raises(Exception, match="permission denied"):
            await sql(targets, office, statement, uuid.UUID(stored["id"]))
    with pytest.raises(Exception, match="row-level security"):
        await sql(
            targets,
            office,
            "INSERT INTO mindscape.memories (tenant_id, content, content_sha256, written_by)"
            " VALUES ($1, 'x', sha256('x'::bytea), 'someone else')",
            office.tenant_id,
        )


async def test_filters_by_writer_and_task(office: Caller, client_for: ClientFactory) -> None:
    async with client_as(client_for, office, A) as a, client_as(client_for, office, B) as b:
        task = data(await a.call_tool("create_task", {"title": "Plan the offsite"}))["id"]
        from_task = data(await a.call_tool("remember", {"content": "Offsite venue: the lake house", "task": task}))
        by_a = data(await a.call_tool("remember", {"content": "Offsite budget is modest"}))
        by_b = data(await b.call_tool("remember", {"content": "Offsite date is in May"}))
        no_task = error_text(await a.call_tool("remember", {"content": "x", "task": str(uuid.uuid4())}))

        async def listed(**args: Any) -> set[str]:
            return {m["id"] for m in data(await a.call_tool("list_memories", args))["memories"]}

        async def recalled(**args: Any) -> set[str]:
            found = data(await a.call_tool("recall", {"query": "offsite", "mode": "keyword", **args}))
            return {m["id"] for m in found["memories"]}

        lists = (await listed(written_by=f"key:{A}"), await listed(written_by=f"key:{B}"), await listed(task=task))
        recalls = (await recalled(written_by=f"key:{B}"), await recalled(task=task))
    assert lists == ({from_task["id"], by_a["id"]}, {by_b["id"]}, {from_task["id"]})
    assert recalls == ({by_b["id"]}, {from_task["id"]})
    assert "no task with id" in no_task


async def test_list_memories_pages_and_counts(
    office: Caller, client_for: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with client_for(office.tenant_slug) as client:
        ids = [data(await client.call_tool("remember", {"content": f"Note number {i}"}))["id"] for i in range(5)]
        first = data(await client.call_tool("list_memories", {"limit": 2}))
        second = data(await client.call_tool("list_memories", {"limit": 2, "cursor": first["next_cursor"]}))
        third = data(await client.call_tool("list_memories", {"limit": 2, "cursor": second["next_cursor"]}))
        other = error_text(
            await client.call_tool("list_memories", {"limit": 2, "kinds": ["fact"], "cursor": first["next_cursor"]})
        )
        monkeypatch.setattr(memory_tools, "MAX_COUNT", 3)
        capped = data(await client.call_tool("list_memories", {"limit": 1}))
    pages = [[m["id"] for m in page["memories"]] for page in (first, second, third)]
    assert pages == [ids[4:2:-1], ids[2:0:-1], ids[0:1]]
    assert (first["total"], first["total_exact"], third["next_cursor"]) == (5, True, None)
    assert "other filters" in other
    assert (capped["total"], capped["total_exact"]) == (3, False)
