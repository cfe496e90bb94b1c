"""Operator commands act for one tenant through the same tenant transaction as the tools."""

from __future__ import annotations

import getpass
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

from mindscape.config.settings import Settings
from mindscape.database.checks import check_database
from mindscape.database.pool import Pool, create_pool
from mindscape.database.targets import Targets
from mindscape.tenancy.caller import Caller, resolve_caller


@asynccontextmanager
async def operator_session(
    settings: Settings, targets: Targets, tenant_slug: str
) -> AsyncGenerator[tuple[Pool, Caller]]:
    """A small runtime pool and the tenant it acts for, after the same checks `serve` makes."""
    pool = await create_pool(targets.runtime, min_size=1, max_size=2, pooled=targets.pooled)
    try:
        async with pool.acquire() as conn:
            await check_database(conn)
            # Operator commands maintain every memory (backfill, re-embedding), private ones included.
            caller = await resolve_caller(
                conn, tenant_slug=tenant_slug, principal=f"cli:{getpass.getuser()}", sees_all=True
            )
        yield pool, caller
    finally:
        await pool.close()
