"""API key stamps: noted in memory, written in one batch with the time of use, skipped on a standby."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest

from mindscape.database.pool import Pool, create_pool, owner_connection
from mindscape.database.targets import Targets
from mindscape.tenancy import keys
from mindscape.tenancy.key_usage import KeyUsage
from tests.support.http import new_key
from tests.support.replication import Replicated
from tests.support.tenants import World

pytestmark = pytest.mark.anyio


async def key_id_and_stamp(targets: Targets, token: str) -> tuple[uuid.UUID, datetime | None, datetime]:
    parsed = keys.parse(token)
    assert parsed is not None
    async with owner_connection(targets.owner) as conn:
        row = await conn.fetchrow(
            "SELECT id, last_used_at, now() AS now FROM mindscape.api_keys WHERE prefix = $1", parsed[0]
        )
    assert row is not None
    return row["id"], row["last_used_at"], row["now"]


async def test_a_flush_writes_each_key_once_with_the_time_it_was_used(
    targets: Targets, pool: Pool, world: World
) -> None:
    clock = [1000.0]
    usage = KeyUsage(pool, interval_s=30, clock=lambda: clock[0])
    first, second = [await new_key(targets, world.a.tenant_slug, "read") for _ in range(2)]
    first_id, _, _ = await key_id_and_stamp(targets, first)
    second_id, _, _ = await key_id_and_stamp(targets, second)
    usage.note(first_id)
    usage.note(second_id)
    clock[0] += 20.0
    usage.note(second_id)  # used again: the later use counts
    clock[0] += 10.0  # the flush runs 30 s after the first use, 10 s after the second's last
    assert usage.pending == 2
    assert await usage.flush() == 2
    assert usage.pending == 0
    _, first_at, now = await key_id_and_stamp(targets, first)
    _, second_at, _ = await key_id_and_stamp(targets, second)
    assert first_at is not None
    assert second_at is not None
    assert now - timedelta(seconds=31) <= first_at <= now - timedelta(seconds=30)
    assert now - timedelta(seconds=11) <= second_at <= now - timedelta(seconds=10)
    usage.note(first_id)
    clock[0] += 100.0  # a use older than the one stored moves nothing back
    assert await usage.flush() == 0
    assert (await key_id_and_stamp(targets, first))[1] == first_at
    usage.note(first_id)
    assert await usage.flush() == 1  # a newer one does


async def test_a_failed_flush_keeps_its_stamps_for_the_next(targets: Targets, world: World) -> None:
    token = await new_key(targets, world.a.tenant_slug, "read")
    key_id, _, _ = await key_id_and_stamp(targets, token)
    closed = await create_pool(targets.runtime, min_size=1, max_size=1, pooled=targets.pooled)
    await closed.close()
    usage = KeyUsage(closed, interval_s=30)
    usage.note(key_id)
    assert await usage.flush() == 0
    assert usage.pending == 1
    working = await create_pool(targets.runtime, min_size=1, max_size=1, pooled=targets.pooled)
    try:
        usage._pool = working  # pyright: ignore[reportPrivateUsage]  # the database is back
        assert await usage.flush() == 1
    finally:
        await working.close()
    assert (await key_id_and_stamp(targets, token))[1] is not None


async def test_on_a_standby_nothing_is_written_and_nothing_fails(replication: Replicated) -> None:
    standby = await create_pool(replication.standby_runtime, min_size=1, max_size=1, pooled=False)
    try:
        usage = KeyUsage(standby, interval_s=30)
        usage.note(uuid.uuid4())
        assert await usage.flush() is None  # a standby: dropped, not retried forever
        assert usage.pending == 0
    finally:
        await standby.close()
