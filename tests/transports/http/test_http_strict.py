"""Over real HTTP: numbers JSON does not have (NaN, Infinity) and NUL characters are refused by field,
and a body that trickles in (slowloris) is cut off with 408 after http_body_timeout_s."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx2
import pytest

from mindscape.database.targets import Targets
from tests.support.http import INITIALIZE, MCP_HEADERS, new_key
from tests.support.serving import server_process
from tests.support.tenant_snapshot import snapshot
from tests.support.tenants import PERSONAS_A, make_tenant

BODY_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class Served:
    url: str
    key: str
    tenant_id: Any


@pytest.fixture(scope="module")
def served(targets: Targets, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    async def seed() -> tuple[Any, str]:
        caller = await make_tenant(targets, PERSONAS_A, "hs")
        return caller.tenant_id, await new_key(targets, caller.tenant_slug, "write")

    tenant_id, key = anyio.run(seed)
    log = tmp_path_factory.mktemp("strict") / "server.log"
    env = {"MINDSCAPE_HTTP_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S)}
    with server_process(targets, log, "--transport", "http", "--stateless", env=env) as (_proc, url):
        yield Served(url, key, tenant_id)
    assert "Traceback" not in Path(log).read_text()


def raw_call(served: Served, tool: str, arguments_json: str) -> httpx2.Response:
    """A tools/call whose arguments are written as raw JSON text (so NaN and Infinity can be sent)."""
    body = (
        '{"jsonrpc": "2.0", "id": 2, "method": "tools/call", '
        f'"params": {{"name": "{tool}", "arguments": {arguments_json}}}}}'
    )
    headers = {**MCP_HEADERS, "mcp-protocol-version": "2025-11-25", "Authorization": f"Bearer {served.key}"}
    return httpx2.post(f"{served.url}/mcp", content=body.encode(), headers=headers)


def tool_result(response: httpx2.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    lines = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
    return json.loads(lines[-1])["result"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("tool", "arguments", "expected"),
    [
        (
            "list_personas",
            '{"trait": {"path": "level", "equals": NaN}}',
            "- trait.equals: is NaN; send a finite number",
        ),
        ("list_personas", '{"trait": {"path": "level", "equals": -Infinity}}', "- trait.equals: is -Infinity"),
        ("remember", '{"content": "x", "importance": Infinity}', "- importance: is Infinity"),
        ("remember", '{"content": "x", "metadata": {"score": NaN}}', "- metadata.score: is NaN"),
        ("create_task", '{"title": "t", "input": {"a": [1, -Infinity]}}', "- input.a.1: is -Infinity"),
        ("update_task", '{"id": "%s", "expected_version": 1, "result": {"r": NaN}}' % ("0" * 32), "- result.r: is NaN"),
        ("recall", '{"query": "x", "min_similarity": NaN}', "- min_similarity: is NaN"),
        ("create_campaign", '{"name": "n", "metadata": {"x": Infinity}}', "- metadata.x: is Infinity"),
        ("create_task", '{"title": "a\\u0000b"}', "- title: contains a NUL character"),
        ("create_task", '{"title": "t", "input": {"\\u0000": 1}}', "- input.\\x00: this key contains a NUL"),
    ],
)
async def test_non_finite_numbers_and_nul_are_refused_by_field(
    served: Served, targets: Targets, tool: str, arguments: str, expected: str
) -> None:
    before = await snapshot(targets, served.tenant_id)
    result = tool_result(raw_call(served, tool, arguments))
    assert result["isError"] is True
    text = result["content"][0]["text"]
    assert expected in text
    assert "internal error" not in text
    assert await snapshot(targets, served.tenant_id) == before


def open_slow_request(served: Served, declared: int) -> socket.socket:
    """A POST /mcp whose headers promise `declared` body bytes, none of which are sent yet."""
    parts = urlsplit(served.url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=30)
    head = (
        f"POST /mcp HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
        f"Accept: application/json, text/event-stream\r\nmcp-protocol-version: 2025-11-25\r\n"
        f"Authorization: Bearer {served.key}\r\nContent-Length: {declared}\r\n\r\n"
    )
    sock.sendall(head.encode())
    return sock


def test_a_trickled_body_is_cut_off_with_408_and_the_connection_closed(served: Served) -> None:
    body = json.dumps(INITIALIZE).encode()
    sock = open_slow_request(served, len(body))
    answer = b""
    sent = 0
    try:
        sock.settimeout(0.25)
        # One byte every quarter second: the whole body would take far longer than the deadline.
        while sent < len(body) and b"\r\n\r\n" not in answer:
            try:
                sock.sendall(body[sent : sent + 1])
                sent += 1
            except (BrokenPipeError, ConnectionResetError):
                break
            with contextlib.suppress(TimeoutError):
                answer += sock.recv(65536)
        sock.settimeout(30)
        # Read to the end: the server must close the connection. A byte of ours that crossed its
        # close makes the peer answer with a reset, which ends the stream as well.
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
    finally:
        sock.close()
    assert sent < len(body), "the server waited for the whole trickled body"
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"connection: close" in head.lower()
    error = json.loads(payload)["error"]
    assert error["code"] == -32600
    assert "did not arrive within 1 s (http_body_timeout_s)" in error["message"]


def test_a_body_sent_in_pieces_within_the_deadline_is_served(served: Served) -> None:
    body = json.dumps(INITIALIZE).encode()
    sock = open_slow_request(served, len(body))
    try:
        sock.sendall(body[:10])
        time.sleep(BODY_TIMEOUT_S / 4)
        sock.sendall(body[10:])
        answer = sock.recv(65536)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


def test_the_server_serves_after_cutting_slow_clients_off(served: Served) -> None:
    sockets = [open_slow_request(served, 100) for _ in range(5)]
    try:
        for sock in sockets:
            sock.sendall(b"{")
        for sock in sockets:
            assert sock.recv(65536).startswith(b"HTTP/1.1 408")
    finally:
        for sock in sockets:
            sock.close()
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {served.key}"}
    assert httpx2.post(f"{served.url}/mcp", json=INITIALIZE, headers=headers).status_code == 200
