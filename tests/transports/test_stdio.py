"""The real server process over stdio: the SDK client, a raw JSON-RPC peer, and the MCP Inspector."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.types import TextContent

from mindscape.app.calls import REPLICA_NOTE
from tests.support.inspector import inspector_cli
from tests.support.replication import Replicated
from tests.support.tenants import PERSONAS_A, World, make_tenant


def server_env(world: World, tenant: str) -> dict[str, str]:
    # The shared model's path (conftest) is the one MINDSCAPE_ setting the servers keep.
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("MINDSCAPE_") or k == "MINDSCAPE_EMBEDDING_MODEL_PATH"
    }
    return env | {"MINDSCAPE_DATABASE_URL": world.targets.runtime, "MINDSCAPE_TENANT": tenant}


SERVE = [sys.executable, "-m", "mindscape", "serve"]
PERSONA_TOOLS = ["get_persona", "list_personas"]
MEMORY_TOOLS = ["remember", "recall", "forget", "update_memory", "list_memories"]
CAMPAIGN_TOOLS = ["create_campaign", "get_campaign", "list_campaigns", "update_campaign"]
TASK_TOOLS = ["create_task", "get_task", "list_tasks", "update_task", "claim_next_task"]
ALL_TOOLS = sorted([*PERSONA_TOOLS, *MEMORY_TOOLS, *CAMPAIGN_TOOLS, *TASK_TOOLS])


@pytest.mark.anyio
async def test_stdio_subprocess_end_to_end(world: World) -> None:
    params = StdioServerParameters(command=SERVE[0], args=SERVE[1:], env=server_env(world, world.a.tenant_slug))
    async with Client(params, mode="legacy") as client:
        tools = sorted(t.name for t in (await client.list_tools()).tools)
        ada = await client.call_tool("get_persona", {"slug": "ada"})
        foreign = await client.call_tool("get_persona", {"slug": "zed"})
        listed = await client.call_tool("list_personas", {"tags": ["support"]})
    assert tools == ALL_TOOLS
    assert ada.structured_content is not None
    assert ada.structured_content["name"] == "Ada Analyst"
    assert foreign.is_error
    assert listed.structured_content is not None
    assert [p["slug"] for p in listed.structured_content["personas"]] == ["basil", "cora"]


@pytest.mark.anyio
async def test_with_a_read_replica_the_tools_that_read_after_writes_say_reads_may_lag(
    replication: Replicated, world: World
) -> None:
    """`serve` over stdio with read_database_url: recall and list_tasks carry the read-after-write note."""
    tenant = await make_tenant(replication.primary, PERSONAS_A, "stdio-replica")
    await replication.catch_up()
    env = server_env(world, tenant.tenant_slug) | {
        "MINDSCAPE_DATABASE_URL": replication.primary.runtime,
        "MINDSCAPE_READ_DATABASE_URL": replication.standby_runtime,
    }
    async with Client(StdioServerParameters(command=SERVE[0], args=SERVE[1:], env=env), mode="legacy") as client:
        noted = sorted(t.name for t in (await client.list_tools()).tools if REPLICA_NOTE in (t.description or ""))
    assert noted == ["list_tasks", "recall"]


def test_raw_peer_gets_answers_after_garbage(world: World) -> None:
    """Malformed lines and bad arguments never take the server down; stdout carries only JSON-RPC."""
    messages: list[dict[str, Any] | str] = [
        "this is not json",
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "1"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        '{"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "get_persona", "arguments": {"slug": ',
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "get_persona", "arguments": {"slug": 7}},
        },
        {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "no_such_tool", "arguments": {}}},
        {
            "jsonrpc": "2.0",
            "id": 5,
            "method": "tools/call",
            "params": {"name": "list_personas", "arguments": {"query": "x" * 100_000}},
        },
        {
            "jsonrpc": "2.0",
            "id": 6,
            "method": "tools/call",
            "params": {"name": "get_persona", "arguments": {"slug": "ada"}},
        },
    ]
    payload = "".join((m if isinstance(m, str) else json.dumps(m)) + "\n" for m in messages)
    proc = subprocess.Popen(
        SERVE,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=server_env(world, world.a.tenant_slug),
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        proc.stdin.write(payload)
        proc.stdin.flush()
        replies: list[dict[str, Any]] = []
        while not any(r.get("id") == 6 for r in replies):  # stdin stays open until the last answer
            line = proc.stdout.readline()
            assert line, "server closed stdout early"
            replies.append(json.loads(line))  # every stdout line is JSON-RPC
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    by_id = {r["id"]: r for r in replies if "id" in r}
    assert by_id[1]["result"]["serverInfo"]["name"] == "mindscape"
    assert by_id[3]["result"]["isError"] is True
    assert "slug" in by_id[3]["result"]["content"][0]["text"]
    assert by_id[4]["result"]["isError"] is True or "error" in by_id[4]
    assert by_id[5].get("result", {}).get("isError") is True, str(by_id[5])[:300]
    assert by_id[6]["result"]["structuredContent"]["name"] == "Ada Analyst"
    assert "Traceback" not in json.dumps(replies)


def test_mcp_inspector_lists_and_calls_over_stdio(world: World, repo_root: Path) -> None:
    inspector = inspector_cli(repo_root)
    env_flags = [
        "-e",
        f"MINDSCAPE_DATABASE_URL={world.targets.runtime}",
        "-e",
        f"MINDSCAPE_TENANT={world.a.tenant_slug}",
    ]

    def run(*method: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*inspector, *env_flags, *method, "--format", "json", *SERVE], capture_output=True, text=True, timeout=120
        )

    listed = run("--method", "tools/list", "--strict")
    assert listed.returncode == 0, listed.stderr
    names = sorted(t["name"] for t in json.loads(listed.stdout)["result"]["tools"])
    assert names == ALL_TOOLS

    called = run("--method", "tools/call", "--tool-name", "get_persona", "--tool-arg", "slug=ada")
    assert called.returncode == 0, called.stderr
    result = json.loads(called.stdout)["result"]
    assert result["structuredContent"]["name"] == "Ada Analyst"

    missing = run("--method", "tools/call", "--tool-name", "get_persona", "--tool-arg", "slug=zed")
    assert missing.returncode == 5, missing.stdout  # the Inspector's exit code for an isError result
    assert "list_personas" in missing.stdout
    assert "Only B has Zed" not in missing.stdout


def test_prompt_text_is_plain_text(world: World) -> None:
    """The `persona` prompt arrives as one text message a client can use as a system prompt."""
    import anyio

    async def main() -> str:
        params = StdioServerParameters(command=SERVE[0], args=SERVE[1:], env=server_env(world, world.a.tenant_slug))
        async with Client(params) as client:
            prompt = await client.get_prompt("persona", {"slug": "basil"})
        content = prompt.messages[0].content
        assert isinstance(content, TextContent)
        return content.text

    assert anyio.run(main).startswith("You are Basil Support.")
