"""Calls held in flight on purpose, without timing: the tenant's memory-write lock, held by the test.

With a memory limit set (the default), `remember` takes a transaction-level advisory lock keyed by
its tenant (queries.quotas.LOCK_MEMORY_WRITES). A test holding the same lock from an owner connection
keeps every `remember` of that tenant waiting inside its transaction, on a pool connection and in a
call slot, until the test lets go (`release`); `waiting` tells when the calls have got there.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import anyio

from mindscape.database.pool import connect
from mindscape.database.targets import Targets
from mindscape.queries.quotas import LOCK_CLASS

WAITING = """
SELECT count(*) FROM pg_stat_activity
WHERE wait_event_type = 'Lock' AND wait_event = 'advisory' AND pid <> pg_backend_pid()
"""


@dataclass
class HeldLock:
    conn: Any  # the owner connection holding the lock
    key: str

    async def waiting(self) -> int:
        """How many calls wait on a memory-write lock now."""
        return await self.conn.fetchval(WAITING)

    async def holds_calls(self, count: int = 1) -> bool:
        return await self.waiting() >= count

    async def release(self) -> None:
        """Let the waiting calls go on (before waiting for them to finish, or they never will)."""
        await self.conn.execute("SELECT pg_advisory_unlock($1::int, hashtext($2::text))", LOCK_CLASS, self.key)


@asynccontextmanager
async def memory_writes_held(targets: Targets, tenant_id: UUID) -> AsyncGenerator[HeldLock]:
    """Hold the tenant's memory-write lock until `release` (or the end of the block)."""
    conn = await connect(targets.owner)
    try:
        await conn.execute("SELECT pg_advisory_lock($1::int, hashtext($2::text))", LOCK_CLASS, str(tenant_id))
        yield HeldLock(conn, str(tenant_id))
    finally:
        await conn.close()  # ends the session, and with it the lock if it is still held


async def polled(check: Callable[[], Awaitable[bool]]) -> None:
    """Wait until `check` holds. Polling, not timing: the bound only ends a wait that would never end."""
    with anyio.fail_after(120):
        for _ in itertools.count():
            if await check():
                return
            await anyio.sleep(0.05)
