"""Faults injected for real under a `mindscape serve --transport http` process, on a PostgreSQL of the
module's own: what HTTP clients are answered while the database is away, and that it recovers.

Every answer must be one of: a result; a tool's `isError` result saying it is temporary (HTTP 200);
or, where the request is refused before a call runs (the API-key check), HTTP 503 with Retry-After
and a JSON-RPC error -32003 whose data says when to retry. Never a bare 500, never the SDK's
generic "Error executing tool". A call still running when the shutdown timeout ends is answered
with a JSON-RPC error saying the server is shutting down.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from mindscape.app.errors import UNAVAILABLE
from mindscape.database.pool import connect
from tests.support.blocking import memory_writes_held, polled
from tests.support.http import INITIALIZE, MCP_HEADERS, jsonrpc_messages, new_key, tool_call
from tests.support.postgres import Cluster, throwaway_cluster
from tests.support.serving import server_process
from tests.support.tenants import PERSONAS_A, make_tenant, set_quota

pytestmark = pytest.mark.anyio
TEMPORARY = "temporarily unavailable: "
LONG_STATEMENTS = {"MINDSCAPE_STATEMENT_TIMEOUT_MS": "600000"}  # calls wait on held locks, not on a timer


@dataclass(frozen=True)
class Tenant:
    slug: str
    tenant_id: Any
    key: str


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with throwaway_cluster(tmp_path_factory.mktemp("http-faults")) as found:
        yield found


@pytest.fixture(scope="module")
def tenant(cluster: Cluster) -> Tenant:
    async def seed() -> Tenant:
        caller = await make_tenant(cluster.targets, PERSONAS_A, "hf")
        await set_quota(cluster.targets, caller.tenant_slug, calls_per_minute=0)  # clients go on through faults
        return Tenant(caller.tenant_slug, caller.tenant_id, await new_key(cluster.targets, caller.tenant_slug, "write"))

    return anyio.run(seed)


@pytest.fixture(scope="module")
def url(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("http-faults-server") / "server.log"
    with server_process(cluster.targets, log, "--transport", "http", "--stateless", env=LONG_STATEMENTS) as (_, found):
        yield found
    text = log.read_text()
    assert "Traceback" not in text  # every fault was an expected state, logged in one line
    assert "released back to the pool" not in text


@pytest.fixture(autouse=True)
def database_up(cluster: Cluster) -> Iterator[None]:
    if not cluster.running:
        cluster.start()
    yield
    if not cluster.running:
        cluster.start()


def headers(key: str) -> dict[str, str]:
    return {**MCP_HEADERS, "Authorization": f"Bearer {key}", "MCP-Protocol-Version": "2025-11-25"}


@dataclass(frozen=True)
class Answer:
    """One POST's answer, classified: a result, a temporary tool error, or a 503 refusal."""

    status: int
    kind: str  # "result" | "tool error" | "refused"
    message: str = ""
    data: Any = None


def classify(response: httpx2.Response) -> Answer:
    """Fails the test on anything but the three clean answers."""
    if response.status_code == 503:
        assert int(response.headers["retry-after"]) >= 1
        body = response.json()
        assert body["jsonrpc"] == "2.0"
        error = body["error"]
        assert error["code"] == UNAVAILABLE
        assert error["message"].startswith(TEMPORARY), error
        assert error["data"]["temporary"] is True
        assert error["data"]["retry_after"] == int(response.headers["retry-after"])
        return Answer(503, "refused", error["message"], error["data"])
    assert response.status_code == 200, (response.status_code, response.text)
    (message,) = jsonrpc_messages(response)
    result = message["result"]
    if not result.get("isError"):
        return Answer(200, "result", data=result.get("structuredContent"))
    text = " ".join(c["text"] for c in result["content"])
    assert text.startswith(TEMPORARY), text  # not "Error executing tool ..." nor an internal error
    return Answer(200, "tool error", text)


async def post(http: httpx2.AsyncClient, url: str, key: str, body: dict[str, Any]) -> Answer:
    return classify(await http.post(f"{url}/mcp", json=body, headers=headers(key)))


async def test_the_key_check_during_an_outage_is_a_503_with_retry_after_and_a_json_rpc_error(
    cluster: Cluster, tenant: Tenant, url: str
) -> None:
    async with httpx2.AsyncClient(timeout=60) as http:
        assert (await post(http, url, tenant.key, tool_call("get_persona", {"slug": "ada"}))).kind == "result"
        await anyio.to_thread.run_sync(cluster.stop)
        response = await http.post(f"{url}/mcp", json=tool_call("list_tasks", {}), headers=headers(tenant.key))
        refused = classify(response)
        assert refused.kind == "refused"
        assert f"API key {tenant.key.split('_')[1]} could not be checked" in refused.message
        assert refused.data["reason"] == "database_unavailable"
        assert 'error="temporarily_unavailable"' in response.headers["www-authenticate"]
        assert response.json()["id"] is None  # refused before the body was read
        await anyio.to_thread.run_sync(cluster.start)

        async def answered() -> bool:
            return (await post(http, url, tenant.key, tool_call("get_persona", {"slug": "ada"}))).kind == "result"

        await polled(answered)  # the server recovered by itself


async def test_a_call_whose_backend_is_terminated_mid_call_answers_a_clean_tool_error(
    cluster: Cluster, tenant: Tenant, url: str
) -> None:
    answers: list[Answer] = []
    async with (
        httpx2.AsyncClient(timeout=60) as http,
        memory_writes_held(cluster.targets, tenant.tenant_id) as held,
        anyio.create_task_group() as group,
    ):

        async def remember() -> None:
            answers.append(await post(http, url, tenant.key, tool_call("remember", {"content": "cut over http"})))

        group.start_soon(remember)
        await polled(held.holds_calls)
        assert await cluster.terminate_backends() >= 1
    assert answers[0].kind == "tool error"
    # remember is one statement that commits as it ends: cut off, it may have been saved, and the
    # answer says so and how to retry (a transaction cut off before COMMIT says nothing was changed).
    assert answers[0].message.startswith("temporarily unavailable: the database is restarting or ended this connection")
    assert "remembering the same content again returns the stored memory if it was saved" in answers[0].message


async def test_calls_through_a_fast_stop_and_start_get_only_clean_answers_and_no_write_is_lost(
    cluster: Cluster, tenant: Tenant, url: str
) -> None:
    answers: list[tuple[str, Answer]] = []
    async with httpx2.AsyncClient(timeout=60) as http, anyio.create_task_group() as group:
        stop = anyio.Event()

        async def client(n: int) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                key = f"stop-{n}-{i}"
                body = tool_call("create_task", {"title": key, "idempotency_key": key})
                answers.append((key, await post(http, url, tenant.key, body)))

        for n in range(4):
            group.start_soon(client, n)
        await polled(lambda: seen(answers, "result"))
        await anyio.to_thread.run_sync(cluster.stop)
        await polled(lambda: seen(answers, "refused"))  # the key check fails first, and cleanly
        await anyio.to_thread.run_sync(cluster.start)
        back = len(answers)
        await polled(lambda: seen(answers[back:], "result"))
        stop.set()
    acknowledged = {key for key, answer in answers if answer.kind == "result"}
    conn = await connect(cluster.targets.owner)
    try:
        rows = await conn.fetch(
            "SELECT idempotency_key, count(*) AS n FROM mindscape.tasks WHERE tenant_id = $1 GROUP BY 1",
            tenant.tenant_id,
        )
    finally:
        await conn.close()
    stored = {r["idempotency_key"]: r["n"] for r in rows}
    assert acknowledged <= set(stored)  # no acknowledged write was lost
    assert all(n == 1 for n in stored.values())  # and none was stored twice


async def seen(answers: list[tuple[str, Answer]], kind: str) -> bool:
    return any(answer.kind == kind for _, answer in answers)


@pytest.mark.parametrize("flags", [[], ["--stateless"]], ids=["stateful", "stateless"])
async def test_a_call_cut_off_by_the_shutdown_timeout_is_told_the_server_is_shutting_down(
    cluster: Cluster, tenant: Tenant, tmp_path: Path, flags: list[str]
) -> None:
    log = tmp_path / "server.log"
    env = {**LONG_STATEMENTS, "MINDSCAPE_HTTP_SHUTDOWN_TIMEOUT_S": "1"}
    with server_process(cluster.targets, log, "--transport", "http", *flags, env=env) as (proc, base):
        sent = headers(tenant.key)
        async with httpx2.AsyncClient(timeout=httpx2.Timeout(30.0, read=None), headers=sent) as http:
            if not flags:
                opened = await http.post(f"{base}/mcp", json=INITIALIZE)
                sent = {**sent, "mcp-session-id": opened.headers["mcp-session-id"]}
                notified = {"jsonrpc": "2.0", "method": "notifications/initialized"}
                assert (await http.post(f"{base}/mcp", json=notified, headers=sent)).status_code == 202
            responses: list[httpx2.Response] = []
            async with (
                memory_writes_held(cluster.targets, tenant.tenant_id) as held,
                anyio.create_task_group() as group,
            ):

                async def remember() -> None:
                    body = tool_call("remember", {"content": "cut off by shutdown"}, request_id=41)
                    responses.append(await http.post(f"{base}/mcp", json=body, headers=sent))

                group.start_soon(remember)
                await polled(held.holds_calls)
                proc.send_signal(signal.SIGTERM)  # the lock stays held: the call outlives the timeout
            code = await anyio.to_thread.run_sync(lambda: proc.wait(timeout=120))
    assert code == 0
    (message,) = jsonrpc_messages(responses[0])
    assert message["id"] == 41
    error = message["error"]
    assert error["code"] == UNAVAILABLE
    assert error["data"] == {"temporary": True, "reason": "shutting_down", "retry_after": 2}
    assert error["message"].startswith(TEMPORARY + "the server is shutting down")
    assert "may or may not have been saved" in error["message"]
    assert "remembering the same content again returns the stored memory" in error["message"]
    text = log.read_text()
    assert "Exception in ASGI application" not in text
