"""HTTP on a hot standby: API keys verify without writing, and reads survive the primary going down.

Real `mindscape serve --transport http` processes against the streaming standby of
tests/support/replication.py (made with pg_basebackup from the embedded binaries).
"""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest
from mcp import Client

from mindscape.app.calls import REPLICA_NOTE
from mindscape.tenancy.caller import Caller
from tests.support.http import mcp_client, new_key
from tests.support.replication import Replicated
from tests.support.results import data
from tests.support.serving import server_process
from tests.support.tenants import PERSONAS_A, make_tenant

pytestmark = pytest.mark.anyio


@pytest.fixture
async def tenant(replication: Replicated) -> Caller:
    return await make_tenant(replication.primary, PERSONAS_A, "standby")


async def test_a_server_on_the_standby_alone_answers_read_tools_with_api_keys(
    replication: Replicated, tenant: Caller, tmp_path: Path
) -> None:
    key = await new_key(replication.primary, tenant.tenant_slug, "write")
    await replication.catch_up()
    log = tmp_path / "server.log"
    standby_only = {"MINDSCAPE_DATABASE_URL": replication.standby_runtime}
    with server_process(replication.primary, log, "--transport", "http", "--stateless", env=standby_only) as (_, url):
        assert httpx2.get(f"{url}/readyz").status_code == 200
        async with mcp_client(url, key, "auto") as client:
            assert not await replica_noted(client)  # no read_database_url: nothing lags, no agent pays for the words
            assert data(await client.call_tool("get_persona", {"slug": "ada"}))["name"] == "Ada Analyst"
            assert data(await client.call_tool("list_personas", {}))["personas"]
            assert (await client.call_tool("remember", {"content": "a standby stores nothing"})).is_error
    assert "database_url is a hot standby" in log.read_text()


async def test_read_tools_keep_answering_while_the_primary_is_down(
    replication: Replicated, tenant: Caller, tmp_path: Path
) -> None:
    key = await new_key(replication.primary, tenant.tenant_slug, "write")
    await replication.catch_up()
    with_replica = {"MINDSCAPE_READ_DATABASE_URL": replication.standby_runtime}
    log = tmp_path / "server.log"
    with server_process(replication.primary, log, "--transport", "http", "--stateless", env=with_replica) as (_, url):
        async with mcp_client(url, key, "auto") as client:
            # Reads may lag writes here: the tools where an agent reads what it just wrote say so.
            assert await replica_noted(client) == ["list_tasks", "recall"]
            assert data(await client.call_tool("get_persona", {"slug": "ada"}))["name"] == "Ada Analyst"
        replication.stop_primary()
        try:
            ready = httpx2.get(f"{url}/readyz")
            assert ready.status_code == 200
            assert ready.text.startswith("ready, degraded: primary: database unreachable")
            async with mcp_client(url, key, "auto") as client:  # the key is checked on the standby
                assert data(await client.call_tool("get_persona", {"slug": "cora"}))["name"] == "Cora Coach"
        finally:
            replication.start_primary()
    assert "checking API key" in log.read_text()


async def replica_noted(client: Client) -> list[str]:
    """The tools whose descriptions carry the read-after-write note of read_database_url."""
    return sorted(t.name for t in (await client.list_tools()).tools if REPLICA_NOTE in (t.description or ""))
