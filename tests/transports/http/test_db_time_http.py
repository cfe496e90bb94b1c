"""The database-time budget over HTTP (quotas.db_time): a tenant over its share while another tenant
is active gets a 429 naming db_ms_per_second; the other tenant, and the tenant alone, are served.

A real `mindscape serve` with a burst of 1 s and a rate of 1 ms a second (so nothing drains during
the test). Tenant B's call is made expensive by holding its memory-write lock (tests.support.blocking)
for longer than the burst: the one wait for a time here, since what is measured is time.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx2
import pytest
from mcp.types import CallToolResult

from mindscape.database.targets import Targets
from tests.support.blocking import memory_writes_held, polled
from tests.support.http import MCP_HEADERS, mcp_client, new_key
from tests.support.results import data
from tests.support.serving import running_server
from tests.support.tenants import PERSONAS_A, PERSONAS_B, make_tenant

pytestmark = pytest.mark.anyio
BUDGET = {
    "MINDSCAPE_QUOTA_DB_MS_PER_SECOND": "1",
    "MINDSCAPE_QUOTA_DB_BURST_MS": "1000",
    "MINDSCAPE_STATEMENT_TIMEOUT_MS": "600000",  # the held call waits on the lock, not on a timer
}
HELD_S = 1.5  # longer than the burst


def post_get_persona(url: str, key: str, slug: str) -> httpx2.Response:
    request = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": "get_persona", "arguments": {"slug": slug}},
    }
    return httpx2.post(f"{url}/mcp", json=request, headers={**MCP_HEADERS, "Authorization": f"Bearer {key}"})


async def test_a_tenant_over_its_database_time_gets_429_while_another_is_active_and_the_other_is_served(
    targets: Targets, tmp_path: Path
) -> None:
    a = await make_tenant(targets, PERSONAS_A, "dta")
    b = await make_tenant(targets, PERSONAS_B, "dtb")
    a_key, b_key = await new_key(targets, a.tenant_slug, "write"), await new_key(targets, b.tenant_slug, "write")
    results: list[CallToolResult] = []
    with running_server(targets, "http", tmp_path / "server.log", BUDGET) as url:
        async with (
            memory_writes_held(targets, b.tenant_id) as held,
            mcp_client(url, a_key, "legacy") as a_client,
            mcp_client(url, b_key, "legacy") as b_client,
            anyio.create_task_group() as group,
        ):

            async def remember() -> None:
                results.append(await b_client.call_tool("remember", {"content": "an expensive call"}))

            group.start_soon(remember)
            await polled(held.holds_calls)
            await anyio.sleep(HELD_S)  # B's running call has now cost more than its burst
            # B alone on the server: it is over its share, but there is nobody to share with.
            assert data(await b_client.call_tool("get_persona", {"slug": "zed"}))["name"] == "Zed"
            assert data(await a_client.call_tool("get_persona", {"slug": "ada"}))["name"] == "Ada Analyst"
            refused = post_get_persona(url, b_key, "zed")
            assert refused.status_code == 429, refused.text
            body = refused.json()
            assert body["id"] == 7
            error = body["error"]
            retry_after = error["data"]["retry_after"]
            assert error["data"] == {"limit": "db_ms_per_second", "value": 1, "retry_after": retry_after}
            assert retry_after >= 1
            assert refused.headers["retry-after"] == str(retry_after)
            assert (
                f"tenant {b.tenant_slug} is over its share of database time, its limit db_ms_per_second=1"
                in error["message"]
            )
            assert f"retry in {retry_after} s" in error["message"]
            # The other tenant is served throughout, its calls never refused for B's spending.
            for _ in range(3):
                assert data(await a_client.call_tool("get_persona", {"slug": "ada"}))["name"] == "Ada Analyst"
            await held.release()
        assert not results[0].is_error  # admitted before B was over: it ran to the end
        assert post_get_persona(url, b_key, "zed").status_code == 429  # still over
        async with mcp_client(url, a_key, "legacy") as a_client:
            assert data(await a_client.call_tool("get_persona", {"slug": "ada"}))["name"] == "Ada Analyst"
