"""The shared queue under concurrency: claims, versioned updates, idempotent creates, leases.

Pools have two connections, as in the issue. Where an interleaving matters, the test does not
hope for it: it holds the first transaction open until PostgreSQL shows the second one waiting
for its lock (pg_stat_activity), then lets the first commit.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.types import CallToolResult

from mindscape.app.server import build_server
from mindscape.app.state import open_state
from mindscape.database.pool import Pool, connect
from mindscape.database.targets import Targets
from mindscape.errors import InvalidArgument
from mindscape.queries import tasks
from mindscape.queries.tasks import NewTask, TaskChanges
from mindscape.tenancy.caller import Caller
from mindscape.tenancy.transaction import tenant_transaction
from tests.support.results import text_of
from tests.support.tenants import settings_for

pytestmark = [pytest.mark.anyio, pytest.mark.office("ada", prefix="busy")]


@asynccontextmanager
async def two_connection_client(targets: Targets, tenant: str) -> AsyncGenerator[Client]:
    # Two connections, and no max_concurrent_calls refusal (by default 1 here): these tests race the
    # database, not the admission check.
    settings = settings_for(targets, tenant, pool_min_size=1, pool_max_size=2, quota_max_concurrent_calls=0)
    async with Client(build_server(lambda: open_state(settings, targets.runtime))) as client:
        yield client


async def gather(calls: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    results: list[Any] = [None] * len(calls)

    async def run(i: int) -> None:
        results[i] = await calls[i]()

    async with anyio.create_task_group() as tg:
        for i in range(len(calls)):
            tg.start_soon(run, i)
    return results


async def seed_tasks(pool: Pool, caller: Caller, count: int) -> list[uuid.UUID]:
    async with tenant_transaction(pool, caller, read_only=False, statement_timeout_ms=10_000) as tx:
        made = [await tasks.create(tx.conn, tenant_id=tx.tenant_id, new=NewTask(f"job {i}")) for i in range(count)]
    return [task.id for task, _ in made]


async def task_rows(pool: Pool, caller: Caller) -> list[Any]:
    async with tenant_transaction(pool, caller, read_only=True, statement_timeout_ms=5000) as tx:
        return await tx.conn.fetch("SELECT id, status, claimed_by, attempts, version, result FROM mindscape.tasks")


async def wait_until_blocked(targets: Targets, statement: str) -> None:
    """Until some backend running `statement` waits for a lock (bounded polling, no timing assertion)."""
    owner = await connect(targets.owner)
    try:
        for _ in range(1000):
            waiting = await owner.fetchval(
                # pg_stat_activity keeps the first track_activity_query_size bytes of the query only.
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query <> ''"
                " AND left($1, length(query)) = query",
                statement,
            )
            if waiting:
                return
            await anyio.sleep(0.01)
    finally:
        await owner.close()
    raise AssertionError("the second transaction never waited for the first one's lock")


async def test_fifty_claimers_each_get_a_different_task(targets: Targets, office: Caller, pool: Pool) -> None:
    task_ids = await seed_tasks(pool, office, 50)
    workers = [
        Caller(tenant_id=office.tenant_id, tenant_slug=office.tenant_slug, principal=f"worker-{i}") for i in range(50)
    ]

    def claimer(worker: Caller) -> Callable[[], Awaitable[uuid.UUID | None]]:
        async def claim() -> uuid.UUID | None:
            async with tenant_transaction(pool, worker, read_only=False, statement_timeout_ms=10_000) as tx:
                got = await tasks.claim(
                    tx.conn, tenant_id=tx.tenant_id, campaign_id=None, persona=None, lease_seconds=300
                )
            return got.task.id if got else None

        return claim

    claimed = await gather([claimer(w) for w in workers])
    rows = {r["id"]: r for r in await task_rows(pool, office)}
    assert None not in claimed
    assert sorted(claimed) == sorted(task_ids)  # distinct, and every task handed out
    for worker, task_id in zip(workers, claimed, strict=True):
        assert task_id is not None
        row = rows[task_id]
        assert (row["status"], row["claimed_by"], row["attempts"], row["version"]) == (
            "in_progress",
            worker.principal,
            1,
            2,
        )


async def test_a_claimer_skips_a_task_locked_by_an_open_claim(office: Caller, pool: Pool) -> None:
    """SKIP LOCKED: the second claim takes the next task at once instead of queueing behind the first."""
    await seed_tasks(pool, office, 2)
    first_claimed, second_done = anyio.Event(), anyio.Event()
    got: dict[str, uuid.UUID] = {}

    async def claim(name: str) -> None:
        # A claim queued behind the open one would deadlock this test; the timeout turns that into a failure.
        async with tenant_transaction(pool, office, read_only=False, statement_timeout_ms=10_000) as tx:
            claimed = await tasks.claim(
                tx.conn, tenant_id=tx.tenant_id, campaign_id=None, persona=None, lease_seconds=300
            )
            assert claimed is not None
            got[name] = claimed.task.id
            if name == "first":
                first_claimed.set()
                await second_done.wait()  # still uncommitted while the second claims

    async def second() -> None:
        await first_claimed.wait()
        await claim("second")
        second_done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(claim, "first")
        tg.start_soon(second)
    assert got["first"] != got["second"]


async def test_fifty_concurrent_claims_through_the_tool(targets: Targets, office: Caller, pool: Pool) -> None:
    task_ids = await seed_tasks(pool, office, 50)
    async with two_connection_client(targets, office.tenant_slug) as client:
        results: list[CallToolResult] = await gather(
            [lambda: client.call_tool("claim_next_task", {}) for _ in range(51)]
        )
    claims = [r.structured_content["task"] for r in results if r.structured_content]
    assert not any(r.is_error for r in results), [text_of(r) for r in results if r.is_error]
    handed = [c["id"] for c in claims if c is not None]
    assert sorted(handed) == sorted(str(t) for t in task_ids)
    assert sum(c is None for c in claims) == 1  # the 51st found nothing
    assert all(r["attempts"] == 1 for r in await task_rows(pool, office))


async def test_concurrent_updates_with_one_version_exactly_one_wins(
    targets: Targets, office: Caller, pool: Pool
) -> None:
    [task_id] = await seed_tasks(pool, office, 1)
    async with two_connection_client(targets, office.tenant_slug) as client:

        def writer(i: int) -> Callable[[], Awaitable[CallToolResult]]:
            args = {"id": str(task_id), "expected_version": 1, "result": {"writer": i}}
            return lambda: client.call_tool("update_task", args)

        results: list[CallToolResult] = await gather([writer(i) for i in range(10)])
    winners = [r for r in results if not r.is_error]
    assert len(winners) == 1
    assert winners[0].structured_content is not None
    for loser in (r for r in results if r.is_error):
        assert "is at version 2 (status pending), not 1" in text_of(loser)
    [row] = await task_rows(pool, office)
    assert row["version"] == 2
    assert row["result"] == winners[0].structured_content["result"]


async def test_an_update_that_waited_for_a_commit_is_refused_by_its_where(
    targets: Targets, office: Caller, pool: Pool
) -> None:
    """Both transactions read version 1 and pass the Python checks; the UPDATE's WHERE decides."""
    [task_id] = await seed_tasks(pool, office, 1)
    first_updated, release = anyio.Event(), anyio.Event()
    refused: list[str] = []

    async def first() -> None:
        async with tenant_transaction(pool, office, read_only=False, statement_timeout_ms=10_000) as tx:
            await tasks.update(
                tx.conn,
                tenant_id=tx.tenant_id,
                task_id=task_id,
                expected_version=1,
                changes=TaskChanges(status="in_progress"),
            )
            first_updated.set()
            await release.wait()

    async def second() -> None:
        await first_updated.wait()
        with pytest.raises(InvalidArgument) as caught:
            async with tenant_transaction(pool, office, read_only=False, statement_timeout_ms=10_000) as tx:
                await tasks.update(
                    tx.conn,
                    tenant_id=tx.tenant_id,
                    task_id=task_id,
                    expected_version=1,
                    changes=TaskChanges(status="cancelled"),
                )
        refused.append(str(caught.value))

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        tg.start_soon(second)
        await wait_until_blocked(targets, tasks.UPDATE)
        release.set()
    assert len(refused) == 1
    assert "is at version 2 (status in_progress), not 1" in refused[0]
    [row] = await task_rows(pool, office)
    assert (row["status"], row["version"]) == ("in_progress", 2)


async def test_idempotent_create_under_concurrent_retries_makes_one_task(
    targets: Targets, office: Caller, pool: Pool
) -> None:
    args = {"title": "Charge the card", "idempotency_key": "charge-42"}
    async with two_connection_client(targets, office.tenant_slug) as client:
        results: list[CallToolResult] = await gather([lambda: client.call_tool("create_task", args) for _ in range(20)])
    created = [r.structured_content for r in results if r.structured_content]
    assert len(created) == 20, [text_of(r) for r in results if r.is_error]
    assert len({c["id"] for c in created}) == 1
    assert sum(not c["duplicate"] for c in created) == 1
    assert len(await task_rows(pool, office)) == 1


async def test_a_retry_racing_the_first_insert_gets_the_original(targets: Targets, office: Caller, pool: Pool) -> None:
    """The retry's INSERT waits on the unique key until the first commits, then returns that task."""
    inserted, release = anyio.Event(), anyio.Event()
    outcomes: dict[str, tuple[uuid.UUID, bool]] = {}

    async def create(name: str, wait_for: anyio.Event | None) -> None:
        if wait_for is not None:
            await wait_for.wait()
        async with tenant_transaction(pool, office, read_only=False, statement_timeout_ms=10_000) as tx:
            task, duplicate = await tasks.create(
                tx.conn, tenant_id=tx.tenant_id, new=NewTask(f"{name} attempt", idempotency_key="once")
            )
            outcomes[name] = (task.id, duplicate)
            if name == "first":
                inserted.set()
                await release.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(create, "first", None)
        tg.start_soon(create, "retry", inserted)
        await wait_until_blocked(targets, tasks.INSERT)
        release.set()
    assert outcomes["first"][1] is False
    assert outcomes["retry"] == (outcomes["first"][0], True)
    assert len(await task_rows(pool, office)) == 1


async def test_an_expired_lease_makes_the_task_claimable_again(targets: Targets, office: Caller, pool: Pool) -> None:
    async with two_connection_client(targets, office.tenant_slug) as client:
        made = await client.call_tool("create_task", {"title": "Long job"})
        assert made.structured_content is not None
        first = (await client.call_tool("claim_next_task", {"lease_seconds": 60})).structured_content
        while_leased = (await client.call_tool("claim_next_task", {})).structured_content
        async with tenant_transaction(pool, office, read_only=False, statement_timeout_ms=5000) as tx:
            await tx.conn.execute(
                "UPDATE mindscape.tasks SET lease_expires_at = now() - interval '1 second' WHERE id = $1",
                uuid.UUID(made.structured_content["id"]),
            )
        second = (await client.call_tool("claim_next_task", {})).structured_content
        late = await client.call_tool(
            "update_task", {"id": made.structured_content["id"], "expected_version": 2, "status": "done"}
        )
    assert first is not None
    assert while_leased is not None
    assert second is not None
    assert (first["task"]["attempts"], first["task"]["version"]) == (1, 2)
    assert while_leased["task"] is None
    assert second["task"]["id"] == made.structured_content["id"]
    assert (second["task"]["attempts"], second["task"]["version"]) == (2, 3)
    assert second["task"]["lease_expires_at"] > first["task"]["lease_expires_at"]
    # The first holder's late report is refused: the task changed hands.
    assert late.is_error
    assert "is at version 3 (status in_progress), not 2" in text_of(late)
    async with tenant_transaction(pool, office, read_only=True, statement_timeout_ms=5000) as tx:
        details = await tx.conn.fetch(
            "SELECT detail FROM mindscape.audit_events WHERE tool = 'claim_next_task' ORDER BY created_at"
        )
    assert [(d["detail"]["attempts"], d["detail"]["reclaimed"]) for d in details] == [(1, False), (2, True)]
