"""Facts that change (migration 0009): supersede chains, as_of, concurrent supersedes, update_memory, forget."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import anyio
import pytest
from mcp.types import TextResourceContents

from mindscape.database.pool import Pool
from mindscape.database.targets import Targets
from mindscape.tenancy.caller import Caller
from mindscape.tenancy.transaction import tenant_transaction
from tests.support.memory import remember, sql
from tests.support.principals import client_as
from tests.support.results import data, error_text
from tests.support.tenants import ClientFactory, set_quota

pytestmark = [pytest.mark.anyio, pytest.mark.office("ada", prefix="ver")]


async def _recalled(client: Any, query: str, **args: Any) -> list[str]:
    return [m["id"] for m in data(await client.call_tool("recall", {"query": query, **args}))["memories"]]


async def _history(client: Any, memory_id: str) -> dict[str, Any]:
    read = await client.read_resource(f"memory://{memory_id}")
    content = read.contents[0]
    assert isinstance(content, TextResourceContents)
    return json.loads(content.text)


async def test_a_chain_of_versions(office: Caller, client_for: ClientFactory, targets: Targets) -> None:
    async with client_for(office.tenant_slug) as client:
        v1 = await remember(client, "The office wifi password is alpha", kind="fact", persona="ada")
        v2 = await remember(client, "The office wifi password is bravo", supersedes=v1["id"])
        v3 = await remember(client, "The office wifi password is charlie", supersedes=v2["id"])
        current = await _recalled(client, "office wifi password")
        history = await _recalled(client, "office wifi password", include_superseded=True)
        listed = data(await client.call_tool("list_memories", {}))
        listed_all = data(await client.call_tool("list_memories", {"include_superseded": True}))
        chain = await _history(client, v1["id"])
    assert current == [v3["id"]]
    assert set(history) == {v1["id"], v2["id"], v3["id"]}
    assert [m["id"] for m in listed["memories"]] == [v3["id"]]
    assert listed["total"] == 1
    assert listed_all["total"] == 3
    versions = chain["versions"]
    assert [v["id"] for v in versions] == [v1["id"], v2["id"], v3["id"]]
    # Each version keeps the persona and kind of the one it replaced, and hands over at one instant.
    assert {(v["persona"], v["kind"]) for v in versions} == {("ada", "fact")}
    assert versions[0]["superseded_by"] == v2["id"]
    assert versions[1]["superseded_by"] == v3["id"]
    assert versions[2]["superseded_by"] is None
    assert versions[2]["valid_to"] is None
    assert versions[0]["valid_to"] == versions[1]["valid_from"]
    assert versions[1]["valid_to"] == versions[2]["valid_from"]
    events = await sql(
        targets,
        office,
        "SELECT outcome, detail->>'superseded_by' AS successor FROM mindscape.audit_events"
        " WHERE $1 = ANY(target_ids) ORDER BY seq",
        v1["id"],
    )
    assert [(e["outcome"], e["successor"]) for e in events] == [("created", None), ("superseded", v2["id"])]


async def test_as_of_at_the_boundaries(office: Caller, client_for: ClientFactory) -> None:
    async with client_for(office.tenant_slug) as client:
        v1 = await remember(client, "The meeting room is Orion")
        v2 = await remember(client, "The meeting room is Lyra", supersedes=v1["id"])
        versions = (await _history(client, v2["id"]))["versions"]
        handover = datetime.fromisoformat(versions[1]["valid_from"])
        created = datetime.fromisoformat(versions[0]["valid_from"])
        tiny = timedelta(microseconds=1)

        async def at(when: datetime) -> list[str]:
            return await _recalled(client, "meeting room", as_of=when.isoformat())

        before_handover = await at(handover - tiny)
        at_handover = await at(handover)
        after = await at(handover + timedelta(days=1))
        before_anything = await at(created - tiny)
        naive = error_text(await client.call_tool("recall", {"query": "meeting room", "as_of": "2026-01-01T00:00:00"}))
    assert before_handover == [v1["id"]]  # valid_to is exclusive
    assert at_handover == [v2["id"]]  # valid_from is inclusive
    assert after == [v2["id"]]
    assert before_anything == []
    assert "as_of" in naive


async def test_concurrent_supersedes_one_wins(
    office: Caller, client_for: ClientFactory, pool: Pool, targets: Targets
) -> None:
    """Both supersedes (two sessions) wait on the old row; the first to take it wins, the other gets a
    conflict naming the winner."""
    # Without a memory limit no advisory lock serialises the two writers before they reach the row.
    await set_quota(targets, office.tenant_slug, max_memories=0)
    async with client_for(office.tenant_slug) as first, client_for(office.tenant_slug) as second:
        old = await remember(first, "The release is on Monday")
        results: dict[str, Any] = {}

        async def supersede(client: Any, day: str) -> None:
            results[day] = await client.call_tool(
                "remember", {"content": f"The release is on {day}", "supersedes": old["id"]}
            )

        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:  # noqa: SIM117 (the lock ends first)
                async with tenant_transaction(pool, office, read_only=False, statement_timeout_ms=5000) as tx:
                    await tx.conn.execute(
                        "SELECT 1 FROM mindscape.memories WHERE id = $1 FOR UPDATE", uuid.UUID(old["id"])
                    )
                    group.start_soon(supersede, first, "Tuesday")
                    group.start_soon(supersede, second, "Wednesday")
                    await _until_waiting(pool, 2)  # both have inserted their version and wait for the row
                # Committed: the lock is released while both calls still wait.
        won = [day for day, r in results.items() if not r.is_error]
        lost = [day for day, r in results.items() if r.is_error]
        chain = await _history(first, old["id"])
    assert len(won) == 1
    assert len(lost) == 1
    winner = results[won[0]].structured_content["id"]
    message = error_text(results[lost[0]])
    assert f"the current version is {winner}" in message
    assert [v["id"] for v in chain["versions"]] == [old["id"], winner]


async def _until_waiting(pool: Pool, sessions: int) -> None:
    async with pool.acquire() as conn:
        for _ in range(400):
            # The supersede statement in a transaction, or the one-statement remember's function
            # (queries/memories.py REMEMBER) that runs it.
            waiting = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND (query LIKE '%SET valid_to%' OR query LIKE '%pg_temp.mindscape_write_%')"
            )
            if waiting >= sessions:
                return
            await anyio.sleep(0.025)
    raise AssertionError(f"{sessions} supersedes never waited for the row lock together")


async def test_update_memory_with_expected_version(office: Caller, client_for: ClientFactory) -> None:
    async with client_for(office.tenant_slug) as client:
        stored = await remember(client, "Coffee machine is on floor 3", metadata={"topic": "office"})
        first = data(
            await client.call_tool(
                "update_memory", {"id": stored["id"], "expected_version": 1, "importance": 0.9, "kind": "fact"}
            )
        )
        stale = error_text(
            await client.call_tool("update_memory", {"id": stored["id"], "expected_version": 1, "importance": 0.1})
        )
        cleared = data(
            await client.call_tool(
                "update_memory",
                {"id": stored["id"], "expected_version": 2, "clear": ["importance"], "metadata": {"topic": "kitchen"}},
            )
        )
        content = error_text(
            await client.call_tool("update_memory", {"id": stored["id"], "expected_version": 3, "content": "x"})
        )
        context = error_text(
            await client.call_tool(
                "update_memory", {"id": stored["id"], "expected_version": 3, "metadata": {"context": "new"}}
            )
        )
        newer = await remember(client, "Coffee machine is on floor 4", supersedes=stored["id"])
        old_version = error_text(
            await client.call_tool("update_memory", {"id": stored["id"], "expected_version": 4, "importance": 0.2})
        )
    assert (first["version"], first["importance"], first["kind"]) == (2, pytest.approx(0.9), "fact")
    assert "version conflict" in stale
    assert "is at version 2, not 1" in stale
    assert (cleared["version"], cleared["importance"], cleared["metadata"]) == (3, None, {"topic": "kitchen"})
    assert "content" in content
    assert "supersedes" in context
    assert f"the current version is {newer['id']}" in old_version


async def test_only_the_writer_makes_a_memory_private(office: Caller, client_for: ClientFactory) -> None:
    async with (
        client_as(client_for, office, "aaaaaaaaaaaa") as a,
        client_as(client_for, office, "bbbbbbbbbbbb") as b,
    ):
        stored = data(await a.call_tool("remember", {"content": "Team lunch is Friday"}))
        refused = error_text(
            await b.call_tool("update_memory", {"id": stored["id"], "expected_version": 1, "visibility": "private"})
        )
        done = data(
            await a.call_tool("update_memory", {"id": stored["id"], "expected_version": 1, "visibility": "private"})
        )
        hidden = data(await b.call_tool("list_memories", {}))
    assert "only its writer (key:aaaaaaaaaaaa)" in refused
    assert done["visibility"] == "private"
    assert hidden["memories"] == []


async def test_forget_takes_the_whole_chain(office: Caller, client_for: ClientFactory, targets: Targets) -> None:
    async with (
        client_as(client_for, office, "aaaaaaaaaaaa") as a,
        client_as(client_for, office, "bbbbbbbbbbbb") as b,
    ):
        v1 = data(await a.call_tool("remember", {"content": "Budget is 10k", "visibility": "private"}))
        v2 = data(
            await a.call_tool("remember", {"content": "Budget is 12k", "supersedes": v1["id"], "visibility": "tenant"})
        )
        v3 = data(await b.call_tool("remember", {"content": "Budget is 15k", "supersedes": v2["id"]}))
        gone = data(await b.call_tool("forget", {"id": v2["id"]}))
        left = data(await a.call_tool("list_memories", {"include_superseded": True}))["memories"]
    # B saw two versions and deleted them; A's private first version stays, closed, pointing nowhere.
    assert gone["versions"] == 2
    assert [m["id"] for m in left] == [v1["id"]]
    assert left[0]["superseded_by"] is None
    assert left[0]["valid_to"] is not None
    rows = await sql(targets, office, "SELECT count(*) AS n FROM mindscape.memories WHERE id = $1", uuid.UUID(v3["id"]))
    assert rows[0]["n"] == 0
