"""Database round trips per tool call: exact counts, so a regression in the call path shows."""

from __future__ import annotations

import anyio
import pytest
from mcp import Client

from mindscape.app.server import MindscapeServer, build_server
from mindscape.app.state import open_state
from mindscape.database.targets import Targets
from tests.support.results import data
from tests.support.tenants import PERSONAS_A, TenantFactory, settings_for

pytestmark = pytest.mark.anyio


def _server(targets: Targets, tenant_slug: str) -> MindscapeServer:
    # One connection: every call after the first finds its statements prepared (the cache's
    # misses are round trips too, and a pool would spread them over calls).
    settings = settings_for(targets, tenant_slug, pool_min_size=1, pool_max_size=1)
    return build_server(lambda: open_state(settings, targets.runtime))


async def _trips(server: MindscapeServer, tool: str, calls: int) -> list[int]:
    """Each call's round trips, once all are counted (a read's end comes after its reply)."""
    seen: list[int] = []
    observe = server.metrics.observe_trips

    def record(name: str, trips: int) -> None:
        if name == tool:
            seen.append(trips)
        observe(name, trips)

    server.metrics.observe_trips = record  # pyright: ignore[reportAttributeAccessIssue]
    with anyio.fail_after(30):
        while len(seen) < calls:
            await anyio.sleep(0.01)
    return seen


async def test_get_persona_takes_four_round_trips(targets: Targets, tenant_factory: TenantFactory) -> None:
    tenant = await tenant_factory(PERSONAS_A, "trips")
    server = _server(targets, tenant.tenant_slug)
    async with Client(server, raise_exceptions=False) as client:  # pyright: ignore[reportArgumentType]
        async with anyio.create_task_group() as tg:
            counted: list[int] = []

            async def watch() -> None:
                counted.extend(await _trips(server, "get_persona", 3))

            tg.start_soon(watch)
            await anyio.sleep(0)
            for _ in range(3):
                assert data(await client.call_tool("get_persona", {"slug": "ada"}))["slug"] == "ada"
    # BEGIN READ ONLY, the context statement, the query; after the reply, ROLLBACK with the reset.
    # Through PgBouncer the statement cache is off: each statement with parameters is prepared
    # (one round trip) before it runs.
    warm = 6 if targets.pooled else 4
    assert counted[1:] == [warm, warm]
    assert counted[0] >= warm  # the first call prepares its statements


async def test_a_write_takes_four_round_trips(targets: Targets, tenant_factory: TenantFactory) -> None:
    tenant = await tenant_factory(PERSONAS_A, "tripw")
    server = _server(targets, tenant.tenant_slug)
    async with Client(server, raise_exceptions=False) as client:  # pyright: ignore[reportArgumentType]
        async with anyio.create_task_group() as tg:
            counted: list[int] = []

            async def watch() -> None:
                counted.extend(await _trips(server, "forget", 3))

            tg.start_soon(watch)
            await anyio.sleep(0)
            for _ in range(3):
                result = await client.call_tool("forget", {"id": "00000000-0000-4000-8000-000000000000"})
                assert result.is_error  # no such memory: the call still runs its transaction
    # BEGIN, the context statement, the delete, COMMIT with the reset.
    warm = 6 if targets.pooled else 4
    assert counted[1:] == [warm, warm]
