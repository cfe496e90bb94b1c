"""The shipped HAProxy config in front of two stateless replicas: calls spread, a dead replica is routed around.

Real processes: two `mindscape serve --transport http --stateless` on the session's database and
HAProxy from config/examples/haproxy.cfg (tests/support/load_balancer.py).
"""

from __future__ import annotations

import re
from contextlib import ExitStack
from typing import Any

import anyio
import httpx2
import pytest

from mindscape.database.targets import Targets
from tests.support.http import new_key, seed_keys
from tests.support.load_balancer import haproxy
from tests.support.replication import Replicated
from tests.support.serving import server_process
from tests.support.tenants import PERSONAS_A, make_tenant

pytestmark = pytest.mark.anyio
PROTOCOL = "2026-07-28"  # stateless requests: no session, so any replica can answer any of them


def call(base_url: str, key: str, tool: str, arguments: dict[str, Any]) -> httpx2.Response:
    meta = {
        "io.modelcontextprotocol/protocolVersion": PROTOCOL,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "lb-test", "version": "1"},
    }
    return httpx2.post(
        f"{base_url}/mcp",
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": tool, "arguments": arguments, "_meta": meta},
        },
        headers={
            "Authorization": f"Bearer {key}",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": PROTOCOL,
            "Mcp-Method": "tools/call",
            "Mcp-Name": tool,
        },
    )


def answered(response: httpx2.Response) -> bool:
    return response.status_code == 200 and '"isError":false' in response.text.replace(" ", "")


def calls_served(base_url: str) -> int:
    found = re.search(
        r'^mindscape_tool_calls_total\{tool="get_persona"\} (\d+)$', httpx2.get(f"{base_url}/metrics").text, re.M
    )
    return int(found.group(1)) if found else 0


async def test_haproxy_spreads_calls_over_the_replicas_and_routes_around_a_dead_one(
    targets: Targets, tmp_path_factory: pytest.TempPathFactory
) -> None:
    keys = await seed_keys(targets, "lb")
    logs = tmp_path_factory.mktemp("load-balancer")
    with ExitStack() as stack:
        replicas = [
            stack.enter_context(server_process(targets, logs / f"{n}.log", "--transport", "http", "--stateless"))
            for n in range(2)
        ]
        lb = stack.enter_context(haproxy([url for _, url in replicas], logs / "haproxy.log"))
        for _ in range(6):
            assert answered(call(lb, keys.a_write, "get_persona", {"slug": "ada"}))
        served = [calls_served(url) for _, url in replicas]
        assert served == [3, 3]  # round robin over two ready replicas
        dead, _ = replicas[0]
        dead.kill()  # no goodbye: its port refuses connections from now on
        dead.wait(timeout=30)
        results = [call(lb, keys.a_write, "get_persona", {"slug": "basil"}) for _ in range(10)]
        assert [r.status_code for r in results] == [200] * 10  # refused connections are retried on the other
        assert all(answered(r) for r in results)
        assert calls_served(replicas[1][1]) == 3 + 10


async def test_a_replica_whose_readyz_fails_is_taken_out_while_its_process_lives(
    replication: Replicated, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Replica 1 on the primary, replica 2 on its standby alone: with the primary down, replica 1 still
    runs (and /healthz answers) but /readyz says 503, so HAProxy sends every call to replica 2."""
    tenant = await make_tenant(replication.primary, PERSONAS_A, "lbready")
    key = await new_key(replication.primary, tenant.tenant_slug, "read")
    await replication.catch_up()
    logs = tmp_path_factory.mktemp("load-balancer-ready")
    on_standby = {"MINDSCAPE_DATABASE_URL": replication.standby_runtime}
    with ExitStack() as stack:
        primary_replica = stack.enter_context(
            server_process(replication.primary, logs / "1.log", "--transport", "http", "--stateless")
        )
        standby_replica = stack.enter_context(
            server_process(replication.primary, logs / "2.log", "--transport", "http", "--stateless", env=on_standby)
        )
        lb_log = logs / "haproxy.log"
        lb = stack.enter_context(haproxy([primary_replica[1], standby_replica[1]], lb_log))
        replication.stop_primary()
        try:
            assert httpx2.get(f"{primary_replica[1]}/healthz").status_code == 200
            assert httpx2.get(f"{primary_replica[1]}/readyz").status_code == 503
            with anyio.fail_after(60):  # a hang guard: HAProxy needs 2 failed checks, 1 s apart
                while True:
                    if "replica1 is DOWN" in lb_log.read_text():
                        break
                    await anyio.sleep(0.1)
            assert "Layer7 wrong status, code: 503" in lb_log.read_text()
            before = calls_served(standby_replica[1])
            results = [call(lb, key, "get_persona", {"slug": "ada"}) for _ in range(6)]
            assert all(answered(r) for r in results)
            assert calls_served(standby_replica[1]) == before + 6
        finally:
            replication.start_primary()
