"""Talking to a real `mindscape serve --transport http`: API keys, MCP clients and raw JSON-RPC posts."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from mindscape.database.pool import connect
from mindscape.database.targets import Targets
from mindscape.models.api_key import Scope
from mindscape.queries import api_keys
from mindscape.tenancy import keys
from tests.support.tenants import PERSONAS_A, PERSONAS_B, make_tenant

MODES = ["legacy", "auto"]
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


async def new_key(targets: Targets, tenant_slug: str, scope: Scope, lifetime: timedelta | None = None) -> str:
    """A key created the way `mindscape key create` does, through the owner connection."""
    new = keys.generate()
    conn = await connect(targets.owner)
    try:
        created = await api_keys.create(
            conn,
            tenant_slug=tenant_slug,
            name="test",
            scope=scope,
            prefix=new.prefix,
            key_hash=new.key_hash,
            lifetime=lifetime,
        )
    finally:
        await conn.close()
    assert created is not None
    return new.token


@dataclass(frozen=True)
class Keys:
    a_slug: str
    a_write: str
    a_read: str
    b_write: str


async def seed_keys(targets: Targets, prefix: str) -> Keys:
    """Tenants A and B (the shared persona sets) with a write and a read key for A, a write key for B."""
    a = await make_tenant(targets, PERSONAS_A, f"{prefix}a")
    b = await make_tenant(targets, PERSONAS_B, f"{prefix}b")
    return Keys(
        a_slug=a.tenant_slug,
        a_write=await new_key(targets, a.tenant_slug, "write"),
        a_read=await new_key(targets, a.tenant_slug, "read"),
        b_write=await new_key(targets, b.tenant_slug, "write"),
    )


@asynccontextmanager
async def mcp_client(base_url: str, key: str, mode: str) -> AsyncGenerator[Client]:
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0)) as http,
        Client(streamable_http_client(f"{base_url}/mcp", http_client=http), mode=mode, cache=None) as client,  # pyright: ignore[reportArgumentType]
    ):
        yield client


def post_mcp(base_url: str, authorization: str | None, **headers: str) -> httpx2.Response:
    sent = {**MCP_HEADERS, **headers}
    if authorization is not None:
        sent["Authorization"] = authorization
    return httpx2.post(f"{base_url}/mcp", json=INITIALIZE, headers=sent)


def jsonrpc_messages(response: httpx2.Response) -> list[dict[str, Any]]:
    """The JSON-RPC messages a POST was answered with: a JSON body, or the data lines of an SSE stream."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        lines = [line.removeprefix("data:").strip() for line in response.text.splitlines()]
        return [json.loads(line) for line in lines if line.startswith("{")]
    return [response.json()]


def tool_call(name: str, arguments: dict[str, Any], request_id: int = 7) -> dict[str, Any]:
    """A 2025-11-25 tools/call body (stateless servers answer it without a session)."""
    params = {"name": name, "arguments": arguments}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}
