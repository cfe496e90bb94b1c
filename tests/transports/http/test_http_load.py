"""The load benchmark's generator (benchmarks/http_load.py) against a real `serve --transport http`.

The benchmark's figures are only as good as its hand-written HTTP client and its workload, so
both are checked here: every call the mixed workload can make succeeds in both protocol eras,
and tool errors and HTTP errors are told apart.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import anyio
import pytest

from benchmarks.http_load import Connection, HttpError, mixed_workload, seed_through_server
from mindscape.cli.demo import DEMO_PERSONAS
from mindscape.database.targets import Targets
from tests.support.http import new_key
from tests.support.serving import running_server
from tests.support.tenants import make_tenant

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def served(targets: Targets, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str]]:
    """(port, write key) of a server whose tenant has the demo personas."""

    async def seed() -> str:
        tenant = await make_tenant(targets, list(DEMO_PERSONAS), "ld")
        return await new_key(targets, tenant.tenant_slug, "write")

    key = anyio.run(seed)
    # Like the benchmark itself: the load must not run into the default calls-per-minute quota.
    no_quota = {"MINDSCAPE_QUOTA_CALLS_PER_MINUTE": "0"}
    with running_server(targets, "http", tmp_path_factory.mktemp("load") / "server.log", no_quota) as url:
        yield int(url.rsplit(":", 1)[1]), key


@pytest.mark.parametrize("era", ["modern", "legacy"])
async def test_every_call_of_the_mixed_workload_succeeds(served: tuple[int, str], era: str) -> None:
    port, key = served
    campaign = await seed_through_server(port, key)
    pick = mixed_workload(campaign)
    conn = Connection("127.0.0.1", port, key, era)
    rng, seen = random.Random(0), set[str]()
    try:
        for i in range(200):
            tool, arguments = pick(rng, 0, i)
            result = await conn.call(tool, arguments)
            assert not result.get("isError"), (tool, result)
            seen.add(tool)
    finally:
        conn.close()
    assert seen == {"get_persona", "recall", "list_tasks", "remember", "create_task", "claim_next_task"}


async def test_tool_errors_and_http_errors_are_told_apart(served: tuple[int, str]) -> None:
    port, key = served
    conn = Connection("127.0.0.1", port, key)
    try:
        result = await conn.call("get_persona", {"slug": "no-such-persona"})
    finally:
        conn.close()
    assert result["isError"] is True
    refused = Connection("127.0.0.1", port, "msk_nope_nope")
    try:
        with pytest.raises(HttpError, match="HTTP 401"):
            await refused.call("get_persona", {"slug": DEMO_PERSONAS[0].slug})
    finally:
        refused.close()
