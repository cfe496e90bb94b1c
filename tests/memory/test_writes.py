"""remember runs as one statement where it can (memory/writes.py store_at_once) and as a
transaction otherwise (store): both store, deduplicate, refuse and record alike."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest

from mindscape.database.pool import connect, create_pool
from mindscape.database.targets import Targets
from mindscape.tenancy.caller import Caller
from tests.support.external import inspect_url
from tests.support.memory import client_with, private_memory, remember
from tests.support.results import error_text
from tests.support.tenant_snapshot import snapshot
from tests.support.tenants import PERSONAS_A, TenantFactory, set_quota

pytestmark = pytest.mark.anyio

# A direct pool writes in one statement; one configured as behind a transaction-mode pooler
# (here over the same direct connection) writes in a transaction.
PATHS: dict[str, dict[str, Any]] = {"statement": {}, "transaction": {"database_pooler": "transaction"}}
STORED = """
SELECT m.content, p.slug AS persona, m.kind, m.metadata, m.importance, m.visibility, m.written_by,
       m.client_name, m.source, m.expires_at IS NOT NULL AS expires, m.valid_to, m.version,
       (SELECT count(*) FROM mindscape.memory_embeddings e
        WHERE e.tenant_id = m.tenant_id AND e.memory_id = m.id
          AND e.visibility = m.visibility AND e.written_by = m.written_by) AS embeddings,
       (SELECT array_agg(a.tool || ':' || a.outcome || ':' || a.principal ORDER BY a.seq) FROM mindscape.audit_events a
        WHERE a.tenant_id = m.tenant_id AND m.id::text = ANY (a.target_ids)) AS audit
FROM mindscape.memories m LEFT JOIN mindscape.personas p ON p.tenant_id = m.tenant_id AND p.id = m.persona_id
WHERE m.tenant_id = $1 ORDER BY m.content, p.slug NULLS FIRST
"""
CASES: list[dict[str, Any]] = [
    {"content": "the printer on floor 2 jams"},
    {"content": "my own note", "visibility": "private", "kind": "fact", "importance": 0.5},
    {"content": "the lift is out", "expires_in_days": 3, "metadata": {"context": "facilities", "floor": 2}},
    {"content": "the printer on floor 2 jams", "persona": "ada"},  # the same content, another persona's
    {"content": "Ada's own private note", "persona": "ada", "visibility": "private"},
]


async def stored(targets: Targets, tenant: Caller) -> list[dict[str, Any]]:
    conn = await connect(inspect_url(targets))
    try:
        return [dict(r) for r in await conn.fetch(STORED, tenant.tenant_id)]
    finally:
        await conn.close()


async def test_both_paths_store_deduplicate_and_record_alike(
    targets: Targets, tenant_factory: TenantFactory, in_transaction: list[str]
) -> None:
    tenants = {path: await tenant_factory(PERSONAS_A, "wp") for path in PATHS}
    for path, settings in PATHS.items():
        async with client_with(targets, tenants[path].tenant_slug, **settings) as client:
            for case in CASES:
                first = await remember(client, **case)
                again = await remember(client, **case)
                assert first["embedding"] == again["embedding"] == "ready"
                assert (first["duplicate"], again["duplicate"]) == (False, True)
                assert again["id"] == first["id"]
        if path == "statement" and not targets.pooled:
            assert in_transaction == []
    assert len(in_transaction) == (2 if targets.pooled else 1) * 2 * len(CASES)
    one, other = [await stored(targets, tenants[path]) for path in PATHS]
    assert len(one) == len(CASES)
    assert all(row["embeddings"] == 1 for row in one)
    assert one == other


async def test_what_one_path_stored_is_a_duplicate_on_the_other(
    targets: Targets, tenant_factory: TenantFactory
) -> None:
    tenant = await tenant_factory([], "wx")
    ids: dict[str, str] = {}
    for path, settings in PATHS.items():
        async with client_with(targets, tenant.tenant_slug, **settings) as client:
            stored_here = await remember(client, f"first stored by the {path} path")
            ids[path] = stored_here["id"]
            for earlier, memory_id in ids.items():
                repeated = await remember(client, f"first stored by the {earlier} path")
                assert (repeated["id"], repeated["duplicate"]) == (memory_id, True)
    assert len(await stored(targets, tenant)) == 2


async def test_over_the_limit_both_paths_refuse_alike_and_write_nothing(
    targets: Targets, tenant_factory: TenantFactory, in_transaction: list[str]
) -> None:
    tenant = await tenant_factory([], "wl")
    await set_quota(targets, tenant.tenant_slug, max_memories=2)
    refusals: list[str] = []
    for path, settings in PATHS.items():
        async with client_with(targets, tenant.tenant_slug, **settings) as client:
            if path == "statement":
                await remember(client, "one")
                await remember(client, "two")
            before = await snapshot(targets, tenant.tenant_id)
            refusals.append(error_text(await client.call_tool("remember", {"content": f"three, by {path}"})))
            assert await snapshot(targets, tenant.tenant_id) == before
            assert (await remember(client, "two"))["duplicate"]  # a duplicate adds nothing: still accepted
    if not targets.pooled:
        assert in_transaction == ["three, by transaction", "two"]
    assert refusals[0] == refusals[1]
    assert refusals[0].startswith(f"tenant {tenant.tenant_slug} holds 2 memories, limit 2;")


async def test_other_agents_private_memories_count_on_both_paths(
    targets: Targets, tenant_factory: TenantFactory, in_transaction: list[str]
) -> None:
    """The quota is the tenant's: a memory only another agent can see fills the last place."""
    tenant = await tenant_factory([], "wv")
    await set_quota(targets, tenant.tenant_slug, max_memories=1)
    other = dataclasses.replace(tenant, principal="another-agent")
    pool = await create_pool(targets.runtime, min_size=1, max_size=1, pooled=targets.pooled)
    try:
        await private_memory(pool, other, "only another agent sees this")
    finally:
        await pool.close()
    refusals: list[str] = []
    for settings in PATHS.values():
        async with client_with(targets, tenant.tenant_slug, **settings) as client:
            refusals.append(error_text(await client.call_tool("remember", {"content": "mine"})))
    assert refusals[0] == refusals[1]
    assert refusals[0].startswith(f"tenant {tenant.tenant_slug} holds 1 memories, limit 1;")
    assert len(in_transaction) == (2 if targets.pooled else 1)


async def test_a_limit_lowered_since_the_server_saw_it_is_obeyed_at_once(
    targets: Targets, tenant_factory: TenantFactory, in_transaction: list[str]
) -> None:
    """The one statement runs only on the settings the server last saw; lowered by an operator
    since, the write is a transaction that reads the new limit."""
    tenant = await tenant_factory([], "wc")
    async with client_with(targets, tenant.tenant_slug) as client:
        await remember(client, "one")
        await set_quota(targets, tenant.tenant_slug, max_memories=1)
        refused = error_text(await client.call_tool("remember", {"content": "two"}))
    assert refused.startswith(f"tenant {tenant.tenant_slug} holds 1 memories, limit 1;")
    assert [row["content"] for row in await stored(targets, tenant)] == ["one"]
    if not targets.pooled:
        assert in_transaction == ["two"]  # "one" in one statement; "two" found the settings changed


async def test_an_unknown_persona_is_not_found_on_both_paths(
    targets: Targets, tenant_factory: TenantFactory, in_transaction: list[str]
) -> None:
    tenant = await tenant_factory(PERSONAS_A, "wn")
    messages: list[str] = []
    for settings in PATHS.values():
        async with client_with(targets, tenant.tenant_slug, **settings) as client:
            call = {"content": "about nobody", "persona": "nobody"}
            messages.append(error_text(await client.call_tool("remember", call)))
    assert (
        messages[0]
        == messages[1]
        == "no persona with slug 'nobody' in this workspace; call list_personas to see the slugs"
    )
    assert await stored(targets, tenant) == []
    assert len(in_transaction) == (2 if targets.pooled else 1)


async def test_an_unknown_task_is_not_found_on_both_paths(
    targets: Targets, tenant_factory: TenantFactory, in_transaction: list[str]
) -> None:
    tenant = await tenant_factory([], "wt")
    task = str(uuid.uuid4())
    messages: list[str] = []
    for settings in PATHS.values():
        async with client_with(targets, tenant.tenant_slug, **settings) as client:
            messages.append(error_text(await client.call_tool("remember", {"content": "about a task", "task": task})))
    assert messages[0] == messages[1] == f"no task with id {task} in this workspace; list_tasks shows the ids"
    assert len(in_transaction) == (2 if targets.pooled else 1)
    assert await stored(targets, tenant) == []


VERSIONS = """
SELECT m.content, p.slug AS persona, m.kind, m.visibility, m.valid_to IS NULL AS current, m.version,
       (SELECT n.content FROM mindscape.memories n WHERE n.tenant_id = m.tenant_id AND n.id = m.superseded_by) AS by,
       (SELECT count(*) FROM mindscape.memory_embeddings e WHERE e.tenant_id = m.tenant_id AND e.memory_id = m.id
          AND e.visibility = m.visibility) AS embeddings,
       (SELECT array_agg(a.tool || ':' || a.outcome ORDER BY a.seq) FROM mindscape.audit_events a
        WHERE a.tenant_id = m.tenant_id AND m.id::text = ANY (a.target_ids)) AS audit
FROM mindscape.memories m LEFT JOIN mindscape.personas p ON p.tenant_id = m.tenant_id AND p.id = m.persona_id
WHERE m.tenant_id = $1 ORDER BY m.content
"""


async def test_both_paths_write_new_versions_and_refuse_bad_ones_alike(
    targets: Targets, tenant_factory: TenantFactory, in_transaction: list[str]
) -> None:
    tenants = {path: await tenant_factory(PERSONAS_A, "wsv") for path in PATHS}
    refusals: dict[str, list[str]] = {}
    for path, settings in PATHS.items():
        async with client_with(targets, tenants[path].tenant_slug, **settings) as client:
            old = await remember(client, "the release is on Monday", persona="ada", kind="fact", visibility="private")
            # The new version keeps the old one's persona, kind and visibility.
            new = await remember(client, "the release is on Tuesday", supersedes=old["id"])
            assert new["duplicate"] is False
            later = await remember(client, "the release is on Friday", supersedes=new["id"], kind="event")
            missing, stale, same = (
                {"content": "x", "supersedes": "00000000-0000-4000-8000-00000000000a"},
                {"content": "the release is on Sunday", "supersedes": old["id"]},
                {"content": "the release is on Friday", "supersedes": later["id"]},
            )
            refusals[path] = [
                error_text(await client.call_tool("remember", call))
                .replace(later["id"], "<current>")
                .replace(old["id"], "<old>")
                for call in (missing, stale, same)
            ]
        if path == "statement" and not targets.pooled:
            # The versions in one statement each; each refusal left to the transaction, which says why.
            assert in_transaction == ["x", "the release is on Sunday", "the release is on Friday"]
            in_transaction.clear()
    assert refusals["statement"] == refusals["transaction"]
    assert "the current version is <current>" in refusals["statement"][1]
    assert "already says exactly this" in refusals["statement"][2]
    conn = await connect(inspect_url(targets))
    try:
        one, other = [[dict(r) for r in await conn.fetch(VERSIONS, tenants[p].tenant_id)] for p in PATHS]
    finally:
        await conn.close()
    assert one == other
    assert [(r["content"], r["persona"], r["kind"], r["visibility"], r["current"], r["by"]) for r in one] == [
        ("the release is on Friday", "ada", "event", "private", True, None),
        ("the release is on Monday", "ada", "fact", "private", False, "the release is on Tuesday"),
        ("the release is on Tuesday", "ada", "fact", "private", False, "the release is on Friday"),
    ]
    assert all(r["embeddings"] == 1 for r in one)
