"""Faults injected for real into a PostgreSQL of this module's own, against in-memory MCP sessions.

pg_terminate_backend on the server's connections (between calls and under a call in flight), a fast
stop and start of the postmaster with calls running, and a kill -9: every answer is either a
result or one clean, temporary error (a tool's `isError` text, a resource's or prompt's JSON-RPC
error -32003), never the SDK's generic text or an internal error; a connection that failed is
discarded without a second error; and the server serves again by itself once PostgreSQL is back.
No mocks: the cluster is a real one, broken the way operators and crashes break it
(tests/support/postgres.py), never the session-wide one the other tests share.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult

from mindscape.app.errors import UNAVAILABLE
from mindscape.app.server import build_server
from mindscape.app.state import open_state
from mindscape.database.pool import connect
from mindscape.tenancy.caller import Caller
from tests.support.blocking import memory_writes_held, polled
from tests.support.postgres import Cluster, throwaway_cluster
from tests.support.results import data, error_text, text_of
from tests.support.tenants import PERSONAS_A, make_tenant, set_quota, settings_for

pytestmark = pytest.mark.anyio
TEMPORARY = "temporarily unavailable: "


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with throwaway_cluster(tmp_path_factory.mktemp("faults")) as found:
        yield found


@pytest.fixture(scope="module")
def tenant(cluster: Cluster) -> Caller:
    """The tenant whose calls go on through every fault: no calls-per-minute limit to run into."""

    async def seed() -> Caller:
        caller = await make_tenant(cluster.targets, PERSONAS_A, "flt")
        await set_quota(cluster.targets, caller.tenant_slug, calls_per_minute=0)
        return caller

    return anyio.run(seed)


@pytest.fixture(autouse=True)
def database_up(cluster: Cluster) -> Iterator[None]:
    """Each test starts with PostgreSQL running, whatever the previous one left."""
    if not cluster.running:
        cluster.start()
    yield
    if not cluster.running:
        cluster.start()


@asynccontextmanager
async def session(cluster: Cluster, tenant: Caller, **extra: Any) -> AsyncGenerator[Client]:
    """An in-memory session with its own pool; calls wait on held locks, not on a statement timer."""
    settings = settings_for(cluster.targets, tenant.tenant_slug, statement_timeout_ms=600_000, **extra)
    async with Client(build_server(lambda: open_state(settings, cluster.targets.runtime))) as client:
        yield client


def assert_clean(result: CallToolResult) -> bool:
    """A result, or the one temporary error; True for a result. Never generic text or an internal error."""
    if not result.is_error:
        return True
    text = text_of(result)
    assert text.startswith(TEMPORARY), text
    assert "Retry" in text
    return False


def assert_no_second_error(caplog: pytest.LogCaptureFixture) -> None:
    """No traceback was logged, and no connection failed twice (e.g. terminate() on a released one)."""
    for record in caplog.records:
        assert record.exc_info is None, record.getMessage()
        assert "released back to the pool" not in record.getMessage()
        assert record.levelno < logging.ERROR, record.getMessage()


async def stored(cluster: Cluster, tenant: Caller, content: str) -> int:
    conn = await connect(cluster.targets.owner)
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM mindscape.memories WHERE tenant_id = $1 AND content = $2", tenant.tenant_id, content
        )
    finally:
        await conn.close()


async def served(client: Client) -> bool:
    return assert_clean(await client.call_tool("get_persona", {"slug": "ada"}))


async def test_backends_terminated_between_calls_are_replaced(
    cluster: Cluster, tenant: Caller, caplog: pytest.LogCaptureFixture
) -> None:
    async with session(cluster, tenant) as client:
        assert data(await client.call_tool("get_persona", {"slug": "ada"}))["name"] == "Ada Analyst"
        assert await cluster.terminate_backends() >= 1
        for _ in range(3):
            assert_clean(await client.call_tool("list_personas", {}))
        await polled(lambda: served(client))
        assert data(await client.call_tool("list_personas", {}))["personas"]
    assert_no_second_error(caplog)


async def test_a_write_whose_backend_is_terminated_mid_call_is_a_clean_temporary_error(
    cluster: Cluster, tenant: Caller, caplog: pytest.LogCaptureFixture
) -> None:
    results: list[CallToolResult] = []
    call = {"content": "cut off mid-call"}
    # A pool configured as behind a pooler writes in transactions (a one-statement write is the next test).
    async with session(cluster, tenant, database_pooler="transaction") as client:
        async with memory_writes_held(cluster.targets, tenant.tenant_id) as held, anyio.create_task_group() as group:

            async def remember() -> None:
                results.append(await client.call_tool("remember", call))

            group.start_soon(remember)
            await polled(held.holds_calls)  # the call is in its transaction, waiting on the lock
            assert await cluster.terminate_backends() >= 1
        message = error_text(results[0])
        ended = "the database is restarting or ended this connection; nothing was changed."
        assert message.startswith(TEMPORARY + ended)
        assert "Retrying in 2 s is safe" in message
        assert await stored(cluster, tenant, "cut off mid-call") == 0
        # The session goes on: the next call gets a fresh connection and the retry is stored once.
        await polled(lambda: served(client))
        assert not data(await client.call_tool("remember", call))["duplicate"]
    assert await stored(cluster, tenant, "cut off mid-call") == 1
    assert_no_second_error(caplog)


async def test_a_one_statement_write_whose_backend_is_terminated_may_have_been_saved(
    cluster: Cluster, tenant: Caller, caplog: pytest.LogCaptureFixture
) -> None:
    """A write that commits as its statement ends cannot tell an end before the commit from one
    after it: the answer says it may have been saved, and the retry the message suggests is safe."""
    results: list[CallToolResult] = []
    async with session(cluster, tenant) as client:
        assert not (await client.call_tool("remember", {"content": "learns the tenant's settings"})).is_error
        async with memory_writes_held(cluster.targets, tenant.tenant_id) as held, anyio.create_task_group() as group:

            async def remember() -> None:
                results.append(await client.call_tool("remember", {"content": "cut off mid-statement"}))

            group.start_soon(remember)
            await polled(held.holds_calls)  # the call's one statement waits on the lock
            assert await cluster.terminate_backends() >= 1
        message = error_text(results[0])
        assert message.startswith(TEMPORARY + "the database is restarting or ended this connection while the change")
        assert "remembering the same content again returns the stored memory if it was saved" in message
        assert await stored(cluster, tenant, "cut off mid-statement") == 0  # it was waiting: not saved
        await polled(lambda: served(client))
        assert not data(await client.call_tool("remember", {"content": "cut off mid-statement"}))["duplicate"]
    assert await stored(cluster, tenant, "cut off mid-statement") == 1
    assert_no_second_error(caplog)


async def test_a_fast_stop_with_calls_running_then_an_outage_then_recovery(
    cluster: Cluster, tenant: Caller, caplog: pytest.LogCaptureFixture
) -> None:
    held_results: list[CallToolResult] = []
    async with session(cluster, tenant) as client:
        task = data(await client.call_tool("create_task", {"title": "before the stop", "idempotency_key": "f-1"}))
        async with memory_writes_held(cluster.targets, tenant.tenant_id) as held, anyio.create_task_group() as group:

            async def remember(n: int) -> None:
                held_results.append(await client.call_tool("remember", {"content": f"in flight {n}"}))

            for n in range(2):
                group.start_soon(remember, n)
            await polled(lambda: held.holds_calls(2))
            await anyio.to_thread.run_sync(cluster.stop)  # fast: rolls back and ends every session
        for result in held_results:
            assert error_text(result).startswith(TEMPORARY)

        # The outage: every kind of call answers with the one temporary error.
        write = await client.call_tool("create_task", {"title": "during the outage", "idempotency_key": "f-2"})
        message = error_text(write)
        unreachable = "the database cannot be reached (it may be restarting); nothing was changed"
        assert message.startswith(TEMPORARY + unreachable)
        assert "with the same idempotency_key a retry never creates a second task" in message
        assert error_text(await client.call_tool("list_tasks", {})).startswith(TEMPORARY)
        update = {"id": task["id"], "expected_version": task["version"], "status": "in_progress"}
        assert error_text(await client.call_tool("update_task", update)).startswith(TEMPORARY)
        for read in (client.read_resource(f"task://{task['id']}"), client.get_prompt("persona", {"slug": "ada"})):
            with pytest.raises(MCPError) as caught:
                await read
            assert caught.value.code == UNAVAILABLE
            assert caught.value.message.startswith(TEMPORARY)
            assert caught.value.data == {"temporary": True, "reason": "database_unavailable", "retry_after": 2}

        await anyio.to_thread.run_sync(cluster.start)
        await polled(lambda: served(client))  # by itself: no restart of the server, no new session
        retried = data(await client.call_tool("create_task", {"title": "during the outage", "idempotency_key": "f-2"}))
        assert not retried["duplicate"]  # the failed attempt left nothing behind
        assert data(await client.call_tool("update_task", update))["status"] == "in_progress"
    assert await stored(cluster, tenant, "in flight 0") == 0
    assert_no_second_error(caplog)


async def test_a_killed_postmaster_is_a_clean_error_and_recovery_follows_its_restart(
    cluster: Cluster, tenant: Caller, caplog: pytest.LogCaptureFixture
) -> None:
    answers: list[CallToolResult] = []
    async with session(cluster, tenant) as client, anyio.create_task_group() as group:
        stop = anyio.Event()

        async def keep_calling(n: int) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                arguments: dict[str, Any] = {"title": f"kill {n}-{i}", "idempotency_key": f"k-{n}-{i}"}
                answers.append(await client.call_tool("create_task", arguments))
                await anyio.lowlevel.checkpoint()

        for n in range(3):
            group.start_soon(keep_calling, n)
        await polled(lambda: enough(answers, 3))
        await anyio.to_thread.run_sync(cluster.kill)
        failed = len(answers)
        await polled(lambda: any_error(answers[failed:]))  # calls now fail, cleanly (checked below)
        await anyio.to_thread.run_sync(cluster.start)
        back = len(answers)
        await polled(lambda: any_success(answers[back:]))
        stop.set()
    for answer in answers:
        assert_clean(answer)
    assert_no_second_error(caplog)


async def enough(answers: list[CallToolResult], count: int) -> bool:
    return len(answers) >= count


async def any_error(answers: list[CallToolResult]) -> bool:
    return any(a.is_error for a in answers)


async def any_success(answers: list[CallToolResult]) -> bool:
    return any(not a.is_error for a in answers)


async def test_a_read_only_database_is_a_temporary_error_for_writes_while_reads_go_on(
    cluster: Cluster, tenant: Caller, caplog: pytest.LogCaptureFixture
) -> None:
    """As on a standby, or a primary demoted in a failover: writes get 25006, reads are served."""
    async with session(cluster, tenant) as client:
        await owner_sql(cluster, "ALTER ROLE mindscape_app SET default_transaction_read_only = on")
        try:
            await cluster.terminate_backends()  # new connections pick the setting up
            await polled(lambda: served(client))
            refused = error_text(await client.call_tool("create_task", {"title": "on a standby"}))
            assert refused.startswith(
                TEMPORARY + "the database is read-only right now (a standby, or a failover); nothing was changed"
            )
            assert data(await client.call_tool("list_tasks", {}))["tasks"] is not None
        finally:
            await owner_sql(cluster, "ALTER ROLE mindscape_app RESET default_transaction_read_only")
            await cluster.terminate_backends()
        await polled(lambda: served(client))
        assert data(await client.call_tool("create_task", {"title": "on the primary again"}))
    assert_no_second_error(caplog)


async def test_a_connection_lost_during_commit_says_the_write_may_be_saved_and_how_to_retry_it(
    cluster: Cluster, tenant: Caller, caplog: pytest.LogCaptureFixture
) -> None:
    """COMMIT waits for a synchronous standby that never comes; the backend is terminated in that wait.

    The transaction committed locally, so the answer may not say "nothing was changed": it says the
    write may have been saved and to retry with the same idempotency key, and that retry finds it.
    """
    results: list[CallToolResult] = []
    async with session(cluster, tenant) as client:
        await owner_sql(cluster, "ALTER SYSTEM SET synchronous_standby_names = 'never_connects'")
        await owner_sql(cluster, "SELECT pg_reload_conf()")
        try:
            async with anyio.create_task_group() as group:

                async def create() -> None:
                    arguments = {"title": "committed, unacknowledged", "idempotency_key": "sync-1"}
                    results.append(await client.call_tool("create_task", arguments))

                group.start_soon(create)
                await polled(lambda: commit_waiting(cluster))
                assert await cluster.terminate_backends() >= 1
        finally:
            await owner_sql(cluster, "ALTER SYSTEM RESET synchronous_standby_names")
            await owner_sql(cluster, "SELECT pg_reload_conf()")
        message = error_text(results[0])
        assert message.startswith(TEMPORARY), message
        assert "while the change was being committed, so it may or may not have been saved" in message
        assert "retry with the same idempotency_key: it returns the task if it was created (duplicate=true)" in message
        await polled(lambda: served(client))
        retried = data(await client.call_tool("create_task", {"title": "again", "idempotency_key": "sync-1"}))
        assert retried["duplicate"]  # it had been saved: the retry returns it instead of a second task
        assert retried["title"] == "committed, unacknowledged"
    assert_no_second_error(caplog)


async def owner_sql(cluster: Cluster, sql: str) -> None:
    conn = await connect(cluster.targets.owner)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def commit_waiting(cluster: Cluster) -> bool:
    conn = await connect(cluster.targets.owner)
    try:
        return (
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'mindscape' AND wait_event = 'SyncRep'"
            )
            > 0
        )
    finally:
        await conn.close()
