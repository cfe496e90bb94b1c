"""Legacy SSE (`serve --transport sse`): the same API keys as /mcp, checked with the SDK's SSE client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.sse import sse_client

from mindscape.database.targets import Targets
from tests.support.http import Keys, seed_keys
from tests.support.results import data as structured
from tests.support.results import text_of
from tests.support.serving import running_server


@pytest.fixture(scope="module")
def sse_url(targets: Targets, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_server(targets, "sse", tmp_path_factory.mktemp("sse") / "server.log") as url:
        yield url


@pytest.fixture(scope="module")
def sse_keys(targets: Targets) -> Keys:
    return anyio.run(seed_keys, targets, "s")


def sse_client_for(url: str, key: str) -> Client:
    transport = sse_client(f"{url}/sse", headers={"Authorization": f"Bearer {key}"})
    return Client(transport, mode="legacy", cache=None)  # pyright: ignore[reportArgumentType]


@pytest.mark.anyio
async def test_sse_lists_tools_and_calls_get_persona_with_a_key(sse_url: str, sse_keys: Keys) -> None:
    async with sse_client_for(sse_url, sse_keys.a_write) as a:
        names = {t.name for t in (await a.list_tools()).tools}
        assert {"get_persona", "remember", "recall"} <= names
        assert structured(await a.call_tool("get_persona", {"slug": "ada"}))["name"] == "Ada Analyst"
        missing = await a.call_tool("get_persona", {"slug": "zed"})  # B's persona
        assert missing.is_error
    async with sse_client_for(sse_url, sse_keys.b_write) as b:
        assert structured(await b.call_tool("get_persona", {"slug": "ada"}))["name"] == "Ada of B"


@pytest.mark.anyio
async def test_sse_read_key_is_refused_write_tools(sse_url: str, sse_keys: Keys) -> None:
    async with sse_client_for(sse_url, sse_keys.a_read) as reader:
        refused = await reader.call_tool("remember", {"content": "not over sse"})
        assert refused.is_error
        assert "only the 'read' scope" in text_of(refused)


@pytest.mark.parametrize("path", ["/sse", "/messages/?session_id=00000000000000000000000000000000"])
@pytest.mark.parametrize("authorization", [None, "Bearer msk_nope_nope", "Basic abc"])
def test_sse_routes_without_a_good_key_get_401(sse_url: str, path: str, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    method = "GET" if path == "/sse" else "POST"
    response = httpx2.request(method, f"{sse_url}{path}", headers=headers, json={})
    assert response.status_code == 401
    assert "Bearer" in response.headers["www-authenticate"]


def test_sse_serves_health_routes(sse_url: str) -> None:
    assert httpx2.get(f"{sse_url}/healthz").text == "ok"
    assert httpx2.get(f"{sse_url}/readyz").status_code == 200
    assert httpx2.get(f"{sse_url}/mcp").status_code == 404  # one transport per process


@pytest.mark.anyio
async def test_another_key_cannot_post_into_a_session(sse_url: str, sse_keys: Keys) -> None:
    """The SDK binds an SSE session to the key that opened it; a foreign key's post finds no session."""
    sessions: list[str] = []
    transport = sse_client(
        f"{sse_url}/sse", headers={"Authorization": f"Bearer {sse_keys.a_write}"}, on_session_created=sessions.append
    )
    async with Client(transport, mode="legacy", cache=None) as a:  # pyright: ignore[reportArgumentType]
        assert not (await a.call_tool("list_personas", {})).is_error
        (session,) = sessions
        call: dict[str, Any] = {
            "jsonrpc": "2.0",
            "id": 99,
            "method": "tools/call",
            "params": {"name": "remember", "arguments": {}},
        }
        async with httpx2.AsyncClient() as http:
            foreign = await http.post(
                f"{sse_url}/messages/?session_id={session}",
                json=call,
                headers={"Authorization": f"Bearer {sse_keys.b_write}"},
            )
        assert foreign.status_code == 404
        assert not (await a.call_tool("list_personas", {})).is_error  # the session itself is unharmed
