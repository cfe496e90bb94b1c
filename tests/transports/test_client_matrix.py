"""The client matrix: real clients of each generation, installed from PyPI and npm, against real servers.

Each client lists the tools, calls get_persona (a read) and remember (a write), and reads
persona://ada, over stdio and over HTTP:

| client | stdio | HTTP |
|---|---|---|
| Python `mcp` 1.3 (oldest 1.x that connects) | yes | legacy SSE (1.3 predates Streamable HTTP) |
| Python `mcp` 1.30 (latest 1.x) | yes | Streamable HTTP |
| TypeScript SDK 1.32 | yes | Streamable HTTP |
| MCP Inspector CLI 2.12 | yes | Streamable HTTP |

The SDK 2.x client (this project's own) is exercised by every other test. The Node clients are
skipped, with the reason, only where Node.js is not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from mindscape.database.targets import Targets
from mindscape.tenancy.caller import Caller
from tests.support.cli import owner_fetch
from tests.support.client_envs import PYTHON_LATEST, PYTHON_OLDEST, python_client, typescript_client
from tests.support.http import new_key
from tests.support.inspector import inspector_cli
from tests.support.serving import running_server
from tests.support.tenants import PERSONAS_A, make_tenant

ALL_TOOLS = sorted(
    [
        *("get_persona", "list_personas", "remember", "recall", "forget", "update_memory", "list_memories"),
        *("create_campaign", "get_campaign", "list_campaigns", "update_campaign"),
        *("create_task", "get_task", "list_tasks", "update_task", "claim_next_task"),
    ]
)


@pytest.fixture(scope="module")
def tenant(targets: Targets) -> Caller:
    return anyio.run(make_tenant, targets, PERSONAS_A, "matrix")


@pytest.fixture(scope="module")
def write_key(targets: Targets, tenant: Caller) -> str:
    return anyio.run(new_key, targets, tenant.tenant_slug, "write")


@pytest.fixture(scope="module")
def http_url(targets: Targets, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_server(targets, "http", tmp_path_factory.mktemp("matrix") / "http.log") as url:
        yield url


@pytest.fixture(scope="module")
def sse_url(targets: Targets, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_server(targets, "sse", tmp_path_factory.mktemp("matrix") / "sse.log") as url:
        yield url


def stdio_server(targets: Targets, tenant: Caller) -> dict[str, Any]:
    """How a client starts the server: the whole environment, as clients do not pass theirs on."""
    env = {k: os.environ[k] for k in ("HOME", "PATH") if k in os.environ}
    env |= {"MINDSCAPE_DATABASE_URL": targets.runtime, "MINDSCAPE_TENANT": tenant.tenant_slug, "HF_HUB_OFFLINE": "1"}
    if "MINDSCAPE_EMBEDDING_MODEL_PATH" in os.environ:
        env["MINDSCAPE_EMBEDDING_MODEL_PATH"] = os.environ["MINDSCAPE_EMBEDDING_MODEL_PATH"]
    return {"command": sys.executable, "args": ["-m", "mindscape", "serve"], "env": env}


def run_client(command: list[str]) -> dict[str, Any]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, f"the client failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    seen: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return seen


def assert_served(seen: dict[str, Any], targets: Targets, tenant: Caller, content: str) -> None:
    """What every client must have seen, and the write it made, stored in its tenant."""
    assert seen["tools"] == ALL_TOOLS
    assert not seen["read"]["is_error"], seen["read"]
    assert json.loads(seen["read"]["text"])["name"] == "Ada Analyst"
    assert not seen["write"]["is_error"], seen["write"]
    assert json.loads(seen["resource"])["name"] == "Ada Analyst"
    stored = owner_fetch(targets, "SELECT tenant_id FROM mindscape.memories WHERE content = $1", content)
    assert [r["tenant_id"] for r in stored] == [tenant.tenant_id]


def unique(client: str) -> str:
    return f"{client} was here ({uuid.uuid4().hex[:8]})"


@pytest.mark.parametrize("version", [PYTHON_OLDEST, PYTHON_LATEST])
def test_python_sdk_1x_client_over_stdio(repo_root: Path, targets: Targets, tenant: Caller, version: str) -> None:
    content = unique(f"python mcp {version} over stdio")
    client = python_client(repo_root, version)
    seen = run_client([*client, "stdio", json.dumps(stdio_server(targets, tenant)), content])
    assert_served(seen, targets, tenant, content)


def test_python_sdk_oldest_client_over_sse(
    repo_root: Path, targets: Targets, tenant: Caller, sse_url: str, write_key: str
) -> None:
    content = unique(f"python mcp {PYTHON_OLDEST} over SSE")
    seen = run_client([*python_client(repo_root, PYTHON_OLDEST), "sse", f"{sse_url}/sse", write_key, content])
    assert_served(seen, targets, tenant, content)


def test_python_sdk_latest_1x_client_over_http(
    repo_root: Path, targets: Targets, tenant: Caller, http_url: str, write_key: str
) -> None:
    content = unique(f"python mcp {PYTHON_LATEST} over HTTP")
    seen = run_client([*python_client(repo_root, PYTHON_LATEST), "http", f"{http_url}/mcp", write_key, content])
    assert_served(seen, targets, tenant, content)


def test_typescript_sdk_client_over_stdio(repo_root: Path, targets: Targets, tenant: Caller) -> None:
    content = unique("typescript over stdio")
    seen = run_client([*typescript_client(repo_root), "stdio", json.dumps(stdio_server(targets, tenant)), content])
    assert_served(seen, targets, tenant, content)


def test_typescript_sdk_client_over_http(
    repo_root: Path, targets: Targets, tenant: Caller, http_url: str, write_key: str
) -> None:
    content = unique("typescript over HTTP")
    seen = run_client([*typescript_client(repo_root), "http", f"{http_url}/mcp", write_key, content])
    assert_served(seen, targets, tenant, content)


def _inspector(repo_root: Path, connection: list[str], command: list[str], content: str) -> dict[str, Any]:
    """One Inspector CLI call per method, as its CLI works: connection flags, method, then the server command."""
    inspector = inspector_cli(repo_root)

    def call(*method: str) -> Any:
        # --tool-arg takes every word up to the next option: --format ends it, before the server command.
        argv = [*inspector, *connection, *method, "--format", "json", *command]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, f"{method}: {done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        return json.loads(done.stdout)["result"]

    def text(result: dict[str, Any]) -> dict[str, Any]:
        return {"is_error": bool(result.get("isError")), "text": "".join(c.get("text", "") for c in result["content"])}

    return {
        "tools": sorted(t["name"] for t in call("--method", "tools/list")["tools"]),
        "read": text(call("--method", "tools/call", "--tool-name", "get_persona", "--tool-arg", "slug=ada")),
        "write": text(call("--method", "tools/call", "--tool-name", "remember", "--tool-arg", f"content={content}")),
        "resource": call("--method", "resources/read", "--uri", "persona://ada")["contents"][0]["text"],
    }


def test_inspector_cli_over_stdio(repo_root: Path, targets: Targets, tenant: Caller) -> None:
    server = stdio_server(targets, tenant)
    settings = {k: v for k, v in server["env"].items() if k.startswith(("MINDSCAPE_", "HF_"))}
    env_flags = [flag for k, v in settings.items() for flag in ("-e", f"{k}={v}")]
    content = unique("the MCP Inspector over stdio")
    seen = _inspector(repo_root, env_flags, [server["command"], *server["args"]], content)
    assert_served(seen, targets, tenant, content)


def test_inspector_cli_over_http(
    repo_root: Path, targets: Targets, tenant: Caller, http_url: str, write_key: str
) -> None:
    auth = ["--transport", "http", "--header", f"Authorization: Bearer {write_key}"]
    content = unique("the MCP Inspector over HTTP")
    seen = _inspector(repo_root, [f"{http_url}/mcp", *auth], [], content)
    assert_served(seen, targets, tenant, content)
