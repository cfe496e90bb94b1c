"""The lifespan: one pool per server process (per connection in-memory), and on stdio its one caller.

Over HTTP there is no configured tenant: each request's API key names it (identity.current_caller),
and a second, small pool serves the credential checks and limit lookups alone, so that they never
wait behind tool calls holding every connection of the main pool.
"""

from __future__ import annotations

import getpass
import logging
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

import anyio
from anyio.abc import TaskGroup

from mindscape.config.settings import Settings
from mindscape.database.checks import check_database
from mindscape.database.pool import Pool, create_pool
from mindscape.embeddings.factory import describe
from mindscape.embeddings.local import LocalEmbedder
from mindscape.embeddings.registry import Embedders
from mindscape.errors import StartupError
from mindscape.memory.indexing import BackgroundIndexer
from mindscape.memory.recall import TenantSizes
from mindscape.queries import tenants
from mindscape.quotas.call_rate import CallQuota
from mindscape.quotas.concurrency import ConcurrentCalls
from mindscape.quotas.sessions import OpenSessions
from mindscape.tenancy.caller import Caller, resolve_caller

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AppState:
    pool: Pool
    caller: Caller | None  # the stdio tenant; None over HTTP
    settings: Settings
    background: TaskGroup  # work after the reply: ending read-only transactions, embedding backfill
    embedders: Embedders
    sizes: TenantSizes
    calls: CallQuota  # calls per minute, per tenant, in this process; and every tenant's limits
    running: ConcurrentCalls  # calls running now, per tenant, in this process
    sessions: OpenSessions  # open HTTP sessions and SSE streams, per tenant, in this process
    auth_pool: Pool | None = None  # HTTP: credential checks and limit lookups; None on stdio

    @property
    def admission_pool(self) -> Pool:
        """Where credentials and limits are read: the credential pool over HTTP, else the only pool."""
        return self.auth_pool or self.pool


@asynccontextmanager
async def open_state(
    settings: Settings,
    runtime_url: str,
    *,
    transport: Literal["stdio", "http"] = "stdio",
    owner_url: str | None = None,
) -> AsyncGenerator[AppState]:
    """`owner_url` (given for the embedded database only) lets the server build large tenants' indexes."""
    if transport == "stdio" and settings.tenant is None:
        raise StartupError("no tenant to serve: pass --tenant SLUG or set MINDSCAPE_TENANT")
    pooled = settings.database_pooler == "transaction"
    pool = await create_pool(
        runtime_url, min_size=settings.pool_min_size, max_size=settings.pool_max_size, pooled=pooled
    )
    auth_pool: Pool | None = None
    try:
        if transport == "http":
            auth_pool = await create_pool(runtime_url, min_size=1, max_size=settings.auth_pool_size, pooled=pooled)
        caller: Caller | None = None
        async with pool.acquire() as conn:
            await check_database(conn)
            if transport == "stdio" and settings.tenant is not None:
                principal = f"stdio:{getpass.getuser()}"
                caller = await resolve_caller(conn, tenant_slug=settings.tenant, principal=principal)
            calls = CallQuota(settings, auth_pool or pool)
            if caller is not None:
                # Known before the first call, so no call waits on this lookup (and replies stay in order).
                calls.observe(caller.tenant_id, await tenants.get_settings(conn, tenant_id=caller.tenant_id) or {})
        embedders = Embedders(settings)
        default = embedders.get(embedders.default)
        # WARNING, not INFO: an operator must notice that recall is word-based, not semantic.
        log.log(logging.INFO if default.semantic else logging.WARNING, "embedding model: %s", describe(default))
        if isinstance(default, LocalEmbedder):
            default.start()  # a missing model is reported (and downloaded) now; serving starts at once
        try:
            async with anyio.create_task_group() as background:
                sizes = TenantSizes(exact_max_rows=settings.memory_exact_max_rows)
                indexer = None
                if owner_url is not None:
                    indexer = BackgroundIndexer(owner_url, background, done=sizes.forget)
                    sizes.on_missing_index = indexer
                try:
                    yield AppState(
                        pool=pool,
                        caller=caller,
                        settings=settings,
                        background=background,
                        embedders=embedders,
                        sizes=sizes,
                        calls=calls,
                        running=ConcurrentCalls(),
                        sessions=OpenSessions(),
                        auth_pool=auth_pool,
                    )
                finally:
                    if indexer is not None:
                        indexer.cancel()
        finally:
            await embedders.aclose()
    finally:
        if auth_pool is not None:
            await auth_pool.close()
        await pool.close()
