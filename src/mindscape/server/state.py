"""The lifespan: one pool and one resolved caller per server process (per connection in-memory)."""

from __future__ import annotations

import getpass
import logging
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
from anyio.abc import TaskGroup

from mindscape.database.checks import check_database
from mindscape.database.pool import Pool, create_pool
from mindscape.embeddings.factory import describe
from mindscape.errors import StartupError
from mindscape.memory.models import Embedders
from mindscape.memory.recall import TenantSizes
from mindscape.server.identity import Caller, resolve_caller
from mindscape.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AppState:
    pool: Pool
    caller: Caller
    settings: Settings
    background: TaskGroup  # work after the reply: ending read-only transactions, embedding backfill
    embedders: Embedders
    sizes: TenantSizes


@asynccontextmanager
async def open_state(settings: Settings, runtime_url: str) -> AsyncGenerator[AppState]:
    if settings.tenant is None:
        raise StartupError("no tenant to serve: pass --tenant SLUG or set MINDSCAPE_TENANT")
    pool = await create_pool(runtime_url, min_size=settings.pool_min_size, max_size=settings.pool_max_size)
    try:
        async with pool.acquire() as conn:
            await check_database(conn)
            caller = await resolve_caller(conn, tenant_slug=settings.tenant, principal=f"stdio:{getpass.getuser()}")
        embedders = Embedders(settings)
        default = embedders.get(embedders.default)
        # WARNING, not INFO: an operator must notice that recall is word-based, not semantic.
        log.log(logging.INFO if default.semantic else logging.WARNING, "embedding model: %s", describe(default))
        try:
            async with anyio.create_task_group() as background:
                yield AppState(
                    pool=pool,
                    caller=caller,
                    settings=settings,
                    background=background,
                    embedders=embedders,
                    sizes=TenantSizes(exact_max_rows=settings.memory_exact_max_rows),
                )
        finally:
            await embedders.aclose()
    finally:
        await pool.close()
