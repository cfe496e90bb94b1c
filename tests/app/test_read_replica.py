"""read_database_url: read-only calls on a streaming hot standby, writes and the call counter on the primary.

The standby is made with pg_basebackup from the embedded binaries (tests/support/replication.py).
Replay on the standby is paused to tell the two apart: a write the primary committed is then
invisible to reads that the standby answers.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from mcp import Client

from mindscape.app.server import build_server
from mindscape.app.state import READ_APPLICATION_NAME, open_state
from mindscape.config.settings import Settings
from mindscape.database.pool import owner_connection
from mindscape.tenancy.caller import Caller
from tests.support.replication import Replicated
from tests.support.results import data, error_text
from tests.support.tenants import PERSONAS_A, make_tenant, set_quota

pytestmark = pytest.mark.anyio


@pytest.fixture
async def tenant(replication: Replicated) -> Caller:
    made = await make_tenant(replication.primary, PERSONAS_A, "replica")
    await replication.catch_up()
    return made


@asynccontextmanager
async def client(database_url: str, tenant: Caller, **settings: Any) -> AsyncGenerator[Client]:
    configured = Settings.model_validate({"database_url": database_url, "tenant": tenant.tenant_slug, **settings})
    server = build_server(lambda: open_state(configured, database_url), replica_reads="read_database_url" in settings)
    async with Client(server, raise_exceptions=False) as connected:  # pyright: ignore[reportArgumentType]
        yield connected


async def recalled(client: Client, words: str) -> list[str]:
    found = data(await client.call_tool("recall", {"query": words, "mode": "keyword"}))
    return [m["content"] for m in found["memories"]]


async def test_reads_come_from_the_standby_and_writes_go_to_the_primary(
    replication: Replicated, tenant: Caller
) -> None:
    async with client(replication.primary.runtime, tenant, read_database_url=replication.standby_runtime) as session:
        tools = {t.name: t.description or "" for t in (await session.list_tools()).tools}
        assert "Read from a replica" in tools["recall"]
        assert "Read from a replica" in tools["list_tasks"]
        assert "Read from a replica" not in tools["remember"]
        await replication.pause_replay()
        try:
            stored = data(await session.call_tool("remember", {"content": "zebra crossing on the primary"}))
            async with owner_connection(replication.primary.owner) as conn:
                on_primary = await conn.fetchval("SELECT content FROM mindscape.memories WHERE id = $1", stored["id"])
            assert on_primary == "zebra crossing on the primary"
            # The standby has not replayed it yet, and the read was answered there.
            assert await recalled(session, "zebra crossing") == []
            assert data(await session.call_tool("get_persona", {"slug": "ada"}))["name"] == "Ada Analyst"
            async with owner_connection(replication.standby_owner) as conn:
                readers = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND usename = 'mindscape_app'",
                    READ_APPLICATION_NAME,
                )
                assert await conn.fetchval("SELECT pg_is_in_recovery()")
            assert readers >= 1
        finally:
            await replication.resume_replay()
        await replication.catch_up()
        assert await recalled(session, "zebra crossing") == ["zebra crossing on the primary"]


async def test_the_call_counter_is_kept_on_the_primary_while_reads_use_the_standby(
    replication: Replicated, tenant: Caller
) -> None:
    await set_quota(replication.primary, tenant.tenant_slug, calls_per_minute=3)
    await replication.catch_up()
    async with client(replication.primary.runtime, tenant, read_database_url=replication.standby_runtime) as session:
        for _ in range(3):
            assert data(await session.call_tool("get_persona", {"slug": "ada"}))["name"] == "Ada Analyst"
        refused = await session.call_tool("get_persona", {"slug": "ada"})
        assert "calls_per_minute=3" in error_text(refused)
    async with owner_connection(replication.primary.owner) as conn:
        counted = await conn.fetchval(
            "SELECT count(*) FROM mindscape.call_rates WHERE tenant_id = $1", tenant.tenant_id
        )
    assert counted == 1


async def test_a_server_on_the_standby_alone_answers_reads(
    replication: Replicated, tenant: Caller, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        async with client(replication.standby_runtime, tenant) as session:
            assert data(await session.call_tool("get_persona", {"slug": "ada"}))["name"] == "Ada Analyst"
            assert data(await session.call_tool("list_tasks", {}))["tasks"] == []
            assert (await session.call_tool("remember", {"content": "cannot be stored here"})).is_error
    assert "database_url is a hot standby" in caplog.text
    assert "counting calls in this process" in caplog.text  # the counter cannot be written there


async def test_reads_go_on_while_the_primary_is_down_and_fall_back_to_it_when_the_standby_is(
    replication: Replicated, tenant: Caller
) -> None:
    async with client(replication.primary.runtime, tenant, read_database_url=replication.standby_runtime) as session:
        replication.stop_primary()
        try:
            assert data(await session.call_tool("get_persona", {"slug": "basil"}))["name"] == "Basil Support"
            assert (await session.call_tool("remember", {"content": "no primary to take this"})).is_error
        finally:
            replication.start_primary()
        replication.stop_standby()
        try:
            stored = data(await session.call_tool("remember", {"content": "quokka after the restart"}))
            assert stored["duplicate"] is False
            assert await recalled(session, "quokka") == ["quokka after the restart"]  # read on the primary
        finally:
            replication.start_standby()
