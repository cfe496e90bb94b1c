"""No tenant can crowd out another over HTTP: open sessions and concurrent calls per tenant, and
credential checks that never wait behind tool calls.

Real `mindscape serve` processes on loopback ports. Limits are set per tenant the way an operator
sets them, before the server first sees the tenant. Calls are held in flight by holding the tenant's
memory-write lock (tests.support.blocking), and every wait is for an event, never for a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult

from mindscape.app.errors import UNAVAILABLE
from mindscape.config.settings import Settings
from mindscape.database.targets import Targets
from mindscape.ops import tenants as tenant_ops
from mindscape.tenancy.caller import Caller
from tests.support.blocking import memory_writes_held, polled
from tests.support.http import INITIALIZE, MCP_HEADERS, mcp_client, new_key
from tests.support.results import data, text_of
from tests.support.serving import running_server
from tests.support.tenants import PERSONAS_A, PERSONAS_B, make_tenant

pytestmark = pytest.mark.anyio
SESSION = "mcp-session-id"
LONG_STATEMENTS = {"MINDSCAPE_STATEMENT_TIMEOUT_MS": "600000"}  # calls wait on the held lock, not on a timer


def call(tool: str, arguments: dict[str, Any], request_id: int = 7) -> dict[str, Any]:
    params = {"name": tool, "arguments": arguments}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


def headers(key: str, session: str | None = None) -> dict[str, str]:
    sent = {**MCP_HEADERS, "Authorization": f"Bearer {key}"}
    return {**sent, "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"} if session else sent


async def tenant_with_key(
    targets: Targets, prefix: str, personas: Any = PERSONAS_A, **limits: int
) -> tuple[Caller, str]:
    tenant = await make_tenant(targets, personas, prefix)
    if limits:
        await tenant_ops.tenant_quota(Settings(), targets, slug=tenant.tenant_slug, changes=limits, reset=False)
    return tenant, await new_key(targets, tenant.tenant_slug, "write")


def assert_refused(response: httpx2.Response, limit: str, value: int, request_id: Any, retry_after: int) -> str:
    """The 429 a limit answers with; returns its message."""
    assert response.status_code == 429, response.text
    assert response.headers["retry-after"] == str(retry_after)
    body = response.json()
    assert body["id"] == request_id
    assert body["error"]["code"] == -32000
    assert body["error"]["data"] == {"limit": limit, "value": value, "retry_after": retry_after}
    assert f"its limit {limit}={value}" in body["error"]["message"]
    return body["error"]["message"]


def open_session(url: str, key: str) -> httpx2.Response:
    return httpx2.post(f"{url}/mcp", json=INITIALIZE, headers=headers(key))


@pytest.fixture(scope="module")
def http_url(targets: Targets, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("limits-http") / "server.log"
    with running_server(targets, "http", log, LONG_STATEMENTS) as url:
        yield url


# --- open sessions ----------------------------------------------------------------------------


async def test_a_tenant_at_its_session_limit_is_refused_while_another_opens_sessions(
    targets: Targets, http_url: str
) -> None:
    a, a_key = await tenant_with_key(targets, "sla", max_sessions=2)
    a_read = await new_key(targets, a.tenant_slug, "read")
    _, b_key = await tenant_with_key(targets, "slb", PERSONAS_B)
    opened = [open_session(http_url, a_key) for _ in range(2)]
    assert [r.status_code for r in opened] == [200, 200]
    first, second = (r.headers[SESSION] for r in opened)

    message = assert_refused(open_session(http_url, a_key), "max_sessions", 2, INITIALIZE["id"], 60)
    assert f"tenant {a.tenant_slug} already has 2 open sessions" in message
    assert "reuse an open session" in message
    assert "close unused ones" in message
    assert_refused(open_session(http_url, a_read), "max_sessions", 2, INITIALIZE["id"], 60)  # per tenant, not key
    # Another tenant opens sessions as usual, and the open ones keep working.
    assert all(open_session(http_url, b_key).status_code == 200 for _ in range(3))
    ping = {"jsonrpc": "2.0", "id": 3, "method": "ping"}
    assert httpx2.post(f"{http_url}/mcp", json=ping, headers=headers(a_key, second)).status_code == 200

    # Closing a session (DELETE) frees its slot at once.
    assert httpx2.delete(f"{http_url}/mcp", headers=headers(a_key, first)).status_code == 200
    assert httpx2.post(f"{http_url}/mcp", json=ping, headers=headers(a_key, first)).status_code == 404
    third = open_session(http_url, a_key)
    assert third.status_code == 200
    assert_refused(open_session(http_url, a_key), "max_sessions", 2, INITIALIZE["id"], 60)


async def test_openings_that_fail_leave_no_slot_behind(targets: Targets, http_url: str) -> None:
    _, key = await tenant_with_key(targets, "slf", max_sessions=1)
    # Without a session id, a request other than initialize opens nothing: the SDK admits a session
    # for it, refuses the request and discards the session again. Its slot must come back each time.
    not_initialize = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    for _ in range(3):
        failed = httpx2.post(f"{http_url}/mcp", json=not_initialize, headers=headers(key))
        assert failed.status_code in (400, 404, 406), failed.text
    assert open_session(http_url, key).status_code == 200
    assert_refused(open_session(http_url, key), "max_sessions", 1, INITIALIZE["id"], 60)


async def test_idle_sessions_expire_and_free_their_slot(targets: Targets, tmp_path: Any) -> None:
    env = {"MINDSCAPE_HTTP_SESSION_IDLE_TIMEOUT_S": "1"}
    with running_server(targets, "http", tmp_path / "server.log", env) as url:
        _, key = await tenant_with_key(targets, "sli", max_sessions=1)
        opened = open_session(url, key)
        assert opened.status_code == 200
        # No request touches the session, so it expires; until then new ones are refused (or, on a
        # slow machine, the first may already be gone). Either way a new session is admitted once it is.
        await polled(lambda: admitted(url, key))
        ping = {"jsonrpc": "2.0", "id": 3, "method": "ping"}
        assert httpx2.post(f"{url}/mcp", json=ping, headers=headers(key, opened.headers[SESSION])).status_code == 404


async def admitted(url: str, key: str) -> bool:
    async with httpx2.AsyncClient() as http:
        response = await http.post(f"{url}/mcp", json=INITIALIZE, headers=headers(key))
    assert response.status_code in (200, 429), response.text
    return response.status_code == 200


async def test_sse_streams_count_as_sessions_and_closing_one_frees_its_slot(targets: Targets, tmp_path: Any) -> None:
    with running_server(targets, "sse", tmp_path / "server.log") as url:
        a, a_key = await tenant_with_key(targets, "ssa", max_sessions=1)
        _, b_key = await tenant_with_key(targets, "ssb", PERSONAS_B)
        auth = {"Authorization": f"Bearer {a_key}"}
        async with Client(sse_client(f"{url}/sse", headers=auth), mode="legacy", cache=None) as client:  # pyright: ignore[reportArgumentType]
            assert data(await client.call_tool("get_persona", {"slug": "ada"}))["name"] == "Ada Analyst"
            refused = httpx2.get(f"{url}/sse", headers=auth)
            message = assert_refused(refused, "max_sessions", 1, None, 60)
            assert f"tenant {a.tenant_slug} already has 1 open sessions" in message
            b_auth = {"Authorization": f"Bearer {b_key}"}
            async with Client(sse_client(f"{url}/sse", headers=b_auth), mode="legacy", cache=None) as b:  # pyright: ignore[reportArgumentType]
                assert data(await b.call_tool("get_persona", {"slug": "zed"}))["name"] == "Zed"
        # The stream is closed by the client leaving; the server notices the disconnect and frees the slot.
        await polled(lambda: sse_admitted(url, auth))


async def sse_admitted(url: str, auth: dict[str, str]) -> bool:
    async with httpx2.AsyncClient() as http, http.stream("GET", f"{url}/sse", headers=auth) as stream:
        return stream.status_code == 200


# --- concurrent calls -------------------------------------------------------------------------


async def test_calls_past_the_tenants_concurrency_limit_get_429_while_other_tenants_are_served(
    targets: Targets, http_url: str
) -> None:
    a, a_key = await tenant_with_key(targets, "cca", max_concurrent_calls=1)
    _, b_key = await tenant_with_key(targets, "ccb", PERSONAS_B)
    results: list[CallToolResult] = []
    async with (
        memory_writes_held(targets, a.tenant_id) as held,
        mcp_client(http_url, a_key, "legacy") as a_client,
        mcp_client(http_url, b_key, "legacy") as b_client,
        anyio.create_task_group() as group,
    ):

        async def remember() -> None:
            results.append(await a_client.call_tool("remember", {"content": "held in flight"}))

        group.start_soon(remember)
        await polled(held.holds_calls)  # A's one call is running (waiting on the lock)
        refused = httpx2.post(f"{http_url}/mcp", json=call("get_persona", {"slug": "ada"}), headers=headers(a_key))
        message = assert_refused(refused, "max_concurrent_calls", 1, 7, 1)
        assert f"tenant {a.tenant_slug} already has 1 calls running" in message
        assert data(await b_client.call_tool("get_persona", {"slug": "zed"}))["name"] == "Zed"
        resource = {"jsonrpc": "2.0", "id": 8, "method": "resources/read", "params": {"uri": "persona://ada"}}
        refused = httpx2.post(f"{http_url}/mcp", json=resource, headers=headers(a_key))
        assert_refused(refused, "max_concurrent_calls", 1, 8, 1)
        await held.release()
    assert not results[0].is_error  # the held call finished once the lock was let go
    async with mcp_client(http_url, a_key, "legacy") as a_client:  # the slot came back with the answer
        assert data(await a_client.call_tool("get_persona", {"slug": "ada"}))["name"] == "Ada Analyst"


# --- credential checks never wait behind tool calls --------------------------------------------


async def test_keys_are_checked_while_tool_calls_hold_every_pool_connection(targets: Targets, tmp_path: Any) -> None:
    env = {**LONG_STATEMENTS, "MINDSCAPE_POOL_MAX_SIZE": "2", "MINDSCAPE_POOL_MIN_SIZE": "2"}
    with running_server(targets, "http", tmp_path / "server.log", env) as url:
        a, a_key = await tenant_with_key(targets, "cpa", max_concurrent_calls=2)
        _, b_key = await tenant_with_key(targets, "cpb", PERSONAS_B)
        results: list[CallToolResult] = []
        async with (
            memory_writes_held(targets, a.tenant_id) as held,
            mcp_client(url, a_key, "legacy") as a_client,
            anyio.create_task_group() as group,
        ):

            async def remember(n: int) -> None:
                results.append(await a_client.call_tool("remember", {"content": f"held {n}"}))

            for n in range(2):
                group.start_soon(remember, n)
            await polled(lambda: held.holds_calls(2))  # both tool-pool connections are held by A's calls
            # A bounded wait turns a hang (a key check queued behind the tool calls) into a failure.
            async with httpx2.AsyncClient(timeout=20.0) as http:
                refused = await http.post(
                    f"{url}/mcp", json=call("get_persona", {"slug": "ada"}), headers=headers(a_key)
                )
                assert_refused(refused, "max_concurrent_calls", 2, 7, 1)  # authenticated, then answered "busy"
                # Another tenant's key is checked (and its limits read) too: it opens a session and lists tools.
                opened = await http.post(f"{url}/mcp", json=INITIALIZE, headers=headers(b_key))
                assert opened.status_code == 200
                session = opened.headers[SESSION]
                listed = await http.post(
                    f"{url}/mcp",
                    json={"jsonrpc": "2.0", "id": 4, "method": "tools/list"},
                    headers=headers(b_key, session),
                )
                assert listed.status_code == 200
                assert "get_persona" in listed.text
                forged = await http.post(f"{url}/mcp", json=INITIALIZE, headers=headers(b_key[:-4] + "AAAA"))
                assert forged.status_code == 401
            await held.release()
        assert [r.is_error for r in results] == [False, False]


# --- the pool: one tenant's slow calls delay no other beyond pool_acquire_timeout_s -------------


async def test_a_tenant_holding_its_share_of_the_pool_delays_no_other_and_a_full_pool_answers_busy(
    targets: Targets, tmp_path: Any
) -> None:
    """pool_max_size 4: A's cap (half the pool) leaves B served at once; C, allowed the whole pool, fills
    it, and then B's calls wait only pool_acquire_timeout_s before a "busy, retry" answer instead of
    queueing behind C. Every wait is for an event: B's answers come while the others are still held."""
    env = {
        **LONG_STATEMENTS,
        "MINDSCAPE_POOL_MAX_SIZE": "4",
        "MINDSCAPE_POOL_MIN_SIZE": "4",
        "MINDSCAPE_POOL_ACQUIRE_TIMEOUT_S": "0.5",
    }
    with running_server(targets, "http", tmp_path / "server.log", env) as url:
        a, a_key = await tenant_with_key(targets, "psa")  # max_concurrent_calls: half the pool, 2
        # db_ms_per_second 0: C's four calls start at once while B is active, and a tenant whose cost
        # is not known yet runs one call at a time while it shares (quotas.db_time); here C must fill the pool.
        c, c_key = await tenant_with_key(targets, "psc", max_concurrent_calls=4, db_ms_per_second=0)
        _, b_key = await tenant_with_key(targets, "psb", PERSONAS_B)
        async with mcp_client(url, b_key, "legacy") as b_client:
            for tenant, key, count in ((a, a_key, 2), (c, c_key, 4)):
                results: list[CallToolResult] = []
                async with (
                    memory_writes_held(targets, tenant.tenant_id) as held,
                    mcp_client(url, key, "legacy") as client,
                    anyio.create_task_group() as group,
                ):
                    for n in range(count):
                        group.start_soon(remember_into, client, results, f"held {n}")
                    await polled(lambda held=held, count=count: held.holds_calls(count))
                    # A bound on a hang, not a timed assertion: without an acquire timeout B's call
                    # would wait for the held calls, which are released only after it is answered.
                    with anyio.fail_after(60):
                        recalled = await b_client.call_tool("recall", {"query": "zed", "mode": "keyword"})
                        read = b_client.read_resource("persona://zed")
                        if tenant is a:
                            assert not recalled.is_error, text_of(recalled)  # served at once
                            assert "Zed" in str((await read).contents[0])
                        else:
                            message = text_of(recalled)
                            assert recalled.is_error
                            assert message.startswith(
                                "temporarily unavailable: every database connection of this server stayed in use "
                                "for 0.5 s; nothing was changed. Retrying in 1 s is safe"
                            ), message
                            with pytest.raises(MCPError) as busy:
                                await read
                            assert busy.value.code == UNAVAILABLE
                            assert busy.value.data == {"temporary": True, "reason": "server_busy", "retry_after": 1}
                    assert await held.waiting() == count  # ... all while the held calls still wait
                    assert results == []
                    await held.release()
                assert [r.is_error for r in results] == [False] * count
            # The pool is free again: B is served.
            assert not (await b_client.call_tool("recall", {"query": "zed", "mode": "keyword"})).is_error


async def remember_into(client: Client, results: list[CallToolResult], content: str) -> None:
    results.append(await client.call_tool("remember", {"content": content}))
