"""HTTP robustness against real `mindscape serve` processes: stateless workers, bad requests, shutdown.

Every bad request must get its own status and a message saying what to fix, leave the tenant's
data untouched and leave the server serving.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import httpx2
import psutil
import pytest

from mindscape.database.pool import connect
from mindscape.database.targets import Targets
from tests.support.cli import mindscape
from tests.support.http import INITIALIZE, MCP_HEADERS, mcp_client, new_key
from tests.support.results import data as structured
from tests.support.serving import running_server, server_process
from tests.support.tenant_snapshot import snapshot
from tests.support.tenants import PERSONAS_A, make_tenant

MODES = ["legacy", "auto"]
LEGACY = "2025-11-25"
SSE = "text/event-stream"


@dataclass(frozen=True)
class Tenant:
    slug: str
    tenant_id: Any
    key: str


@pytest.fixture(scope="module")
def tenant(targets: Targets) -> Tenant:
    async def seed() -> Tenant:
        caller = await make_tenant(targets, PERSONAS_A, "hr")
        return Tenant(caller.tenant_slug, caller.tenant_id, await new_key(targets, caller.tenant_slug, "write"))

    return anyio.run(seed)


@pytest.fixture(scope="module")
def workers(
    targets: Targets, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`serve --transport http --stateless --workers 2`, the command the load benchmark runs."""
    log = tmp_path_factory.mktemp("workers") / "server.log"
    with server_process(targets, log, "--transport", "http", "--stateless", "--workers", "2") as running:
        yield running


@pytest.fixture(scope="module")
def stateful_url(targets: Targets, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_server(targets, "http", tmp_path_factory.mktemp("stateful") / "server.log") as url:
        yield url


def worker_processes(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    return [c for c in psutil.Process(proc.pid).children() if "spawn_main" in " ".join(c.cmdline())]


def tool_call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """A 2025-11-25 tools/call: stateless servers answer it without a session or handshake."""
    return {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": name, "arguments": arguments}}


def post(url: str, key: str, body: bytes | Iterator[bytes], **headers: str) -> httpx2.Response:
    """POST to /mcp; a header given as "" is left out altogether (httpx would add its own Accept)."""
    sent = {**MCP_HEADERS, "mcp-protocol-version": LEGACY, "Authorization": f"Bearer {key}", **headers}
    with httpx2.Client() as http:
        request = http.build_request("POST", f"{url}/mcp", content=body, headers={k: v for k, v in sent.items() if v})
        for name in (k for k, v in sent.items() if not v and k in request.headers):
            del request.headers[name]
        return http.send(request)


def sse_result(response: httpx2.Response) -> dict[str, Any]:
    """The JSON-RPC result carried in an SSE response's data line."""
    lines = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
    return json.loads(lines[-1])["result"]


def remember_body(content: str) -> bytes:
    return json.dumps(tool_call("remember", {"content": content})).encode()


# --- stateless mode and workers ------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_stateless_workers_serve_both_eras(
    workers: tuple[subprocess.Popen[bytes], str], tenant: Tenant, mode: str
) -> None:
    proc, url = workers
    assert len(worker_processes(proc)) == 2
    note = f"stateless note {mode}"
    async with mcp_client(url, tenant.key, mode) as client:
        assert structured(await client.call_tool("get_persona", {"slug": "ada"}))["name"] == "Ada Analyst"
        assert not structured(await client.call_tool("remember", {"content": note}))["duplicate"]
    # Every client connection is new, so the reads may land on either worker: both see the write.
    for _ in range(4):
        async with mcp_client(url, tenant.key, mode) as client:
            found = structured(await client.call_tool("recall", {"query": note, "mode": "keyword"}))
            assert note in [m["content"] for m in found["memories"]]


def test_stateless_initialize_opens_no_session(workers: tuple[subprocess.Popen[bytes], str], tenant: Tenant) -> None:
    _, url = workers
    response = post(url, tenant.key, json.dumps(INITIALIZE).encode())
    assert response.status_code == 200
    assert "mcp-session-id" not in response.headers
    # ... and a call without any session id is served directly.
    answered = post(url, tenant.key, json.dumps(tool_call("get_persona", {"slug": "ada"})).encode())
    assert answered.status_code == 200
    assert sse_result(answered)["structuredContent"]["name"] == "Ada Analyst"


def test_stateful_initialize_opens_a_session(stateful_url: str, tenant: Tenant) -> None:
    response = post(stateful_url, tenant.key, json.dumps(INITIALIZE).encode())
    assert response.status_code == 200
    assert response.headers["mcp-session-id"]


def test_workers_need_stateless_and_http(targets: Targets) -> None:
    refused = mindscape(targets, "serve", "--transport", "http", "--workers", "2")
    assert refused.exit_code == 1
    assert "http_workers > 1 needs http_stateless (--stateless): sessions live in one process's memory" in (
        refused.stderr
    )
    sse = mindscape(targets, "serve", "--transport", "sse", "--stateless", "--workers", "2")
    assert sse.exit_code == 1
    assert "--workers > 1 needs --transport http" in sse.stderr


def test_workers_warn_when_their_pools_exceed_the_database(targets: Targets, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    flags = ("--transport", "http", "--stateless", "--workers", "2")
    with server_process(targets, log, *flags, env={"MINDSCAPE_POOL_MAX_SIZE": "60"}) as (proc, _):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
    # The embedded server's max_connections is 100, 3 of them reserved for superusers.
    expected = (
        "2 workers x (pool_max_size 60 + auth_pool_size 2 + 1 credential listener) = 126 connections, "
        "but the database accepts 97"
    )
    assert expected in log.read_text()


# --- bad requests ----------------------------------------------------------------------------------

MIB = 1024 * 1024


def oversized() -> bytes:
    return remember_body("x" * (2 * MIB))


def chunked() -> Iterator[bytes]:
    """No Content-Length: the limit must hold while the body streams in."""
    body = oversized()
    for start in range(0, len(body), 64 * 1024):
        yield body[start : start + 64 * 1024]


# (name, body, extra headers, status, words the message must contain)
BAD: list[tuple[str, Any, dict[str, str], int, str]] = [
    ("oversized", oversized, {}, 413, "larger than the server's limit of 1048576 bytes (http_max_body_bytes)"),
    ("oversized-chunked", chunked, {}, 413, "larger than the server's limit of 1048576 bytes (http_max_body_bytes)"),
    (
        "text-plain",
        None,
        {"Content-Type": "text/plain"},
        415,
        "Content-Type must be application/json (got 'text/plain')",
    ),
    ("no-content-type", None, {"Content-Type": ""}, 415, "Content-Type must be application/json (got nothing)"),
    ("no-accept", None, {"Accept": ""}, 406, "Accept must list application/json and text/event-stream (got nothing)"),
    ("json-only-accept", None, {"Accept": "application/json"}, 406, "(got 'application/json')"),
    ("malformed-json", lambda: b'{"jsonrpc": "2.0", "id": 2, "method": ', {}, 400, "Parse error"),
    ("not-json-rpc", lambda: b'{"hello": "world"}', {}, 400, "Validation error"),
]


@pytest.mark.anyio
@pytest.mark.parametrize("server", ["stateless", "stateful"])
@pytest.mark.parametrize(("name", "body", "headers", "status", "message"), BAD, ids=[b[0] for b in BAD])
async def test_bad_requests_get_a_clear_status_and_write_nothing(
    workers: tuple[subprocess.Popen[bytes], str],
    stateful_url: str,
    targets: Targets,
    tenant: Tenant,
    server: str,
    name: str,
    body: Any,
    headers: dict[str, str],
    status: int,
    message: str,
) -> None:
    url = workers[1] if server == "stateless" else stateful_url
    before = await snapshot(targets, tenant.tenant_id)
    sent = body() if body is not None else remember_body(f"must not be stored: {name}")
    response = post(url, tenant.key, sent, **headers)
    assert response.status_code == status, response.text
    assert message in response.text
    assert await snapshot(targets, tenant.tenant_id) == before
    assert post(url, tenant.key, json.dumps(INITIALIZE).encode()).status_code == 200  # still serving


def test_the_same_post_done_right_is_stored(workers: tuple[subprocess.Popen[bytes], str], tenant: Tenant) -> None:
    """The control for the bad-request cases: a well-formed post of the same shape does write."""
    response = post(workers[1], tenant.key, remember_body("stored through a raw post"))
    assert response.status_code == 200
    assert sse_result(response)["structuredContent"]["duplicate"] is False


@pytest.mark.anyio
async def test_malformed_json_in_the_2026_era_is_a_parse_error(
    workers: tuple[subprocess.Popen[bytes], str], targets: Targets, tenant: Tenant
) -> None:
    before = await snapshot(targets, tenant.tenant_id)
    response = post(workers[1], tenant.key, b"{not json", **{"mcp-protocol-version": "2026-07-28"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == -32700
    assert await snapshot(targets, tenant.tenant_id) == before


@pytest.mark.anyio
async def test_an_unknown_session_id_gets_404(stateful_url: str, targets: Targets, tenant: Tenant) -> None:
    before = await snapshot(targets, tenant.tenant_id)
    body = json.dumps(tool_call("remember", {"content": "must not be stored: unknown session"})).encode()
    response = post(stateful_url, tenant.key, body, **{"mcp-session-id": "0" * 32})
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Session not found"
    assert await snapshot(targets, tenant.tenant_id) == before


def test_another_keys_session_is_not_found(stateful_url: str, targets: Targets, tenant: Tenant) -> None:
    """A session opened with one key answers another key exactly like an unknown session."""
    opened = post(stateful_url, tenant.key, json.dumps(INITIALIZE).encode())
    other = anyio.run(new_key, targets, tenant.slug, "write")
    body = json.dumps(tool_call("get_persona", {"slug": "ada"})).encode()
    response = post(stateful_url, other, body, **{"mcp-session-id": opened.headers["mcp-session-id"]})
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Session not found"


# --- graceful shutdown -----------------------------------------------------------------------------

BLOCKED_ON_LOCK = (
    "SELECT count(*) FROM pg_stat_activity WHERE usename = 'mindscape_app' AND wait_event_type = 'Lock' "
    "AND query LIKE '%tasks%'"
)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "flags", [[], ["--stateless"], ["--stateless", "--workers", "2"]], ids=["stateful", "stateless", "workers"]
)
async def test_sigterm_lets_the_call_in_flight_finish_and_starts_no_new_ones(
    targets: Targets, tenant: Tenant, tmp_path: Path, flags: list[str]
) -> None:
    log = tmp_path / "server.log"
    # The call waits on a row lock for as long as the test needs: no statement timeout in the way.
    env = {"MINDSCAPE_STATEMENT_TIMEOUT_MS": "600000"}
    args = ["--transport", "http", *flags]
    stateless = "--stateless" in flags
    with server_process(targets, log, *args, env=env) as (proc, url):
        async with mcp_client(url, tenant.key, "auto") as client:
            task = structured(await client.call_tool("create_task", {"title": "finish me during shutdown"}))
        # Raw requests, so the client makes no request of its own after the answer (the MCP client
        # would list the tools to check the result against its schema, and find the server gone).
        headers = {**MCP_HEADERS, "Authorization": f"Bearer {tenant.key}", "mcp-protocol-version": LEGACY}
        async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=None)) as http:
            opened = await http.post(f"{url}/mcp", json=INITIALIZE)
            if not stateless:
                headers["mcp-session-id"] = opened.headers["mcp-session-id"]
                initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
                assert (await http.post(f"{url}/mcp", json=initialized, headers=headers)).status_code == 202
            locker = await connect(targets.owner)
            watcher = await connect(targets.owner)
            try:
                lock = locker.transaction()
                await lock.start()
                await locker.execute("SELECT 1 FROM mindscape.tasks WHERE id = $1 FOR UPDATE", task["id"])
                answers: list[httpx2.Response] = []
                change = {"id": task["id"], "expected_version": task["version"], "status": "in_progress"}

                async def update() -> None:
                    answers.append(
                        await http.post(f"{url}/mcp", json=tool_call("update_task", change), headers=headers)
                    )

                stream_open, stream_ended = anyio.Event(), anyio.Event()

                async def listen() -> None:
                    """The session's idle GET event stream, as 2025-11-25 clients keep one open."""
                    async with http.stream("GET", f"{url}/mcp", headers={**headers, "Accept": SSE}) as stream:
                        assert stream.status_code == 200
                        stream_open.set()
                        try:
                            async for _ in stream.aiter_bytes():
                                pass
                        except httpx2.ReadError:
                            # Ended as its connection closed under it (the closing races the last
                            # read): ended either way, which is what this stream is checked for.
                            pass
                    stream_ended.set()

                async with anyio.create_task_group() as group:
                    if not stateless:
                        group.start_soon(listen)
                        await stream_open.wait()
                    group.start_soon(update)
                    await polled(lambda: blocked_on_the_lock(watcher))  # the call is in flight
                    proc.send_signal(signal.SIGTERM)
                    await polled(lambda: refused(url))  # no new connections once shutdown began
                    if not stateless:
                        # Idle streams end at once (they would hold shutdown up to its timeout); a
                        # response stream cut at the same moment would lose the call's answer.
                        await polled(lambda: is_set(stream_ended))
                    # sse-starlette's own drain (now off) polled every 0.5 s and cut *all* streams, the
                    # call's answer included; this pause gives it the chance to, so a regression shows.
                    # A pause, not a timed assertion: a slow machine can only make the test pass.
                    await anyio.sleep(1)
                    assert proc.poll() is None  # ... while the call in flight keeps the process alive
                    await lock.rollback()
            finally:
                await locker.close()
                await watcher.close()
        assert answers[0].status_code == 200
        updated = sse_result(answers[0])["structuredContent"]
        assert (updated["status"], updated["version"]) == ("in_progress", task["version"] + 1)
        assert await anyio.to_thread.run_sync(lambda: proc.wait(timeout=120)) == 0
    text = log.read_text()
    assert "Shutting down" in text
    assert "Traceback" not in text


async def polled(check: Callable[[], Awaitable[bool]]) -> None:
    """Wait until `check` holds. Polling, not timing: the bound only ends a wait that would never end."""
    with anyio.fail_after(120):
        for _ in itertools.count():
            if await check():
                return
            await anyio.sleep(0.05)


async def blocked_on_the_lock(watcher: asyncpg.Connection[Any]) -> bool:
    return await watcher.fetchval(BLOCKED_ON_LOCK) > 0


async def is_set(event: anyio.Event) -> bool:
    return event.is_set()


async def refused(url: str) -> bool:
    """Not served: refused, or (with workers, while the listening socket closes) accepted and closed
    without an answer."""
    async with httpx2.AsyncClient() as http:
        try:
            await http.get(f"{url}/healthz")
        except (httpx2.ConnectError, httpx2.ReadError, httpx2.RemoteProtocolError):
            return True
    return False


# --- credentials on a write ------------------------------------------------------------------------

EXPIRE = "UPDATE mindscape.api_keys SET created_at = now() - interval '2 days', expires_at = now() WHERE prefix = $1"
REVOKE = "UPDATE mindscape.api_keys SET revoked_at = now() WHERE prefix = $1"


@pytest.fixture(scope="module")
def spoiled_keys(targets: Targets, tenant: Tenant) -> dict[str, str]:
    """An expired and a revoked key of the tenant, spoiled through the owner connection."""

    async def spoil() -> dict[str, str]:
        found: dict[str, str] = {}
        conn = await connect(targets.owner)
        try:
            for name, sql in (("expired", EXPIRE), ("revoked", REVOKE)):
                key = await new_key(targets, tenant.slug, "write")
                await conn.execute(sql, key.split("_")[1])
                found[name] = key
        finally:
            await conn.close()
        return found

    return anyio.run(spoil)


@pytest.mark.anyio
@pytest.mark.parametrize("credential", ["missing", "malformed", "unknown", "expired", "revoked"])
async def test_a_write_with_bad_credentials_gets_401_and_writes_nothing(
    workers: tuple[subprocess.Popen[bytes], str],
    targets: Targets,
    tenant: Tenant,
    spoiled_keys: dict[str, str],
    credential: str,
) -> None:
    _, url = workers
    authorization = {
        "missing": "",
        "malformed": "Bearer msk_not-a-key",
        "unknown": "Bearer msk_0123456789ab_" + "x" * 43,
        "expired": f"Bearer {spoiled_keys['expired']}",
        "revoked": f"Bearer {spoiled_keys['revoked']}",
    }[credential]
    before = await snapshot(targets, tenant.tenant_id)
    response = post(url, tenant.key, remember_body(f"must not be stored: {credential}"), Authorization=authorization)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer ")
    assert response.json()["error"] == "invalid_token"
    assert await snapshot(targets, tenant.tenant_id) == before
    assert post(url, tenant.key, json.dumps(INITIALIZE).encode()).status_code == 200  # still serving
