"""The pinned MCP Inspector CLI against a real `serve --transport http` process, with a bearer key."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from mindscape.database.targets import Targets
from tests.support.http import new_key
from tests.support.inspector import inspector_cli
from tests.support.serving import running_server
from tests.support.tenants import PERSONAS_A, make_tenant


@pytest.fixture(scope="module")
def http_url(targets: Targets, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_server(targets, "http", tmp_path_factory.mktemp("inspector") / "server.log") as url:
        yield url


@pytest.fixture(scope="module")
def read_key(targets: Targets) -> str:
    async def seed() -> str:
        tenant = await make_tenant(targets, PERSONAS_A, "in")
        return await new_key(targets, tenant.tenant_slug, "read")

    return anyio.run(seed)


def test_mcp_inspector_lists_and_calls_over_http_with_a_bearer_key(
    http_url: str, read_key: str, repo_root: Path
) -> None:
    inspector = inspector_cli(repo_root)
    common = ["--transport", "http", "--format", "json"]

    def run(*method: str, key: str = read_key) -> subprocess.CompletedProcess[str]:
        auth = ["--header", f"Authorization: Bearer {key}"]
        return subprocess.run(
            [*inspector, f"{http_url}/mcp", *common, *auth, *method], capture_output=True, text=True, timeout=120
        )

    listed = run("--method", "tools/list")
    assert listed.returncode == 0, listed.stderr
    names = {t["name"] for t in json.loads(listed.stdout)["result"]["tools"]}
    assert {"get_persona", "list_personas", "recall"} <= names
    assert "remember" not in names  # a read key lists the read tools only

    called = run("--method", "tools/call", "--tool-name", "get_persona", "--tool-arg", "slug=ada")
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout)["result"]["structuredContent"]["name"] == "Ada Analyst"

    refused = run("--method", "tools/list", key="msk_nope_nope")
    assert refused.returncode != 0
    assert "Ada Analyst" not in refused.stdout
