"""The lifespan: one pool per server process (per connection in-memory), and on stdio its one caller.

Over HTTP there is no configured tenant: each request's API key names it (identity.current_caller),
and a second, small pool serves the credential checks and limit lookups alone, so that they never
wait behind tool calls holding every connection of the main pool.

With `read_database_url`, a third pool on that replica serves read-only tools, resources and
prompts (app.calls.tenant_call); writes, credential checks, the call counter and key stamps stay
on `database_url`, the primary.
"""

from __future__ import annotations

import gc
import getpass
import logging
import math
import time
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

import anyio
from anyio.abc import TaskGroup

from mindscape.config.settings import Settings
from mindscape.database.checks import check_database, in_recovery
from mindscape.database.pool import Pool, create_pool
from mindscape.embeddings.factory import describe
from mindscape.embeddings.local import LocalEmbedder
from mindscape.embeddings.registry import Embedders
from mindscape.errors import NotFound, StartupError
from mindscape.memory.indexing import BackgroundIndexer
from mindscape.memory.recall import TenantSizes
from mindscape.queries import lookups, tenants
from mindscape.quotas.call_rate import CallQuota
from mindscape.quotas.concurrency import ConcurrentCalls
from mindscape.quotas.db_time import DbTimeBudget
from mindscape.quotas.sessions import OpenSessions
from mindscape.tenancy.caller import Caller, resolve_caller
from mindscape.tenancy.credential_cache import CredentialCache
from mindscape.tenancy.credential_listener import CredentialListener
from mindscape.tenancy.key_usage import KeyUsage
from mindscape.tenancy.transaction import tenant_transaction

log = logging.getLogger(__name__)
READ_APPLICATION_NAME = "mindscape-read"  # how the replica's pg_stat_activity names the read pool
REPLICA_RETRY_S = 5.0


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
    replica: ReadReplica | None = None  # read_database_url: read-only calls; None: they use `pool`
    key_usage: KeyUsage | None = None  # HTTP: API keys' last use, written in batches
    credentials: CredentialCache | None = None  # HTTP: verified keys and JWT tenants; None: cache off
    db_time: DbTimeBudget = field(default_factory=lambda: DbTimeBudget(burst_ms=0))  # per tenant, this process

    @property
    def admission_pool(self) -> Pool:
        """Where credentials and limits are read: the credential pool over HTTP, else the only pool."""
        return self.auth_pool or self.pool

    @property
    def read_pool(self) -> Pool | None:
        return self.replica.pool if self.replica is not None else None

    def pool_for(self, *, read_only: bool) -> Pool:
        """Read-only work goes to the replica when there is one (and it answered lately); the rest to the primary."""
        if read_only and self.replica is not None and time.monotonic() >= self.replica.skip_until:
            return self.replica.pool
        return self.pool


@dataclass
class ReadReplica:
    """The read_database_url pool. After it failed to answer, reads go to the primary for REPLICA_RETRY_S."""

    pool: Pool
    skip_until: float = -math.inf

    def failed(self) -> None:
        self.skip_until = time.monotonic() + REPLICA_RETRY_S


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
        runtime_url,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        pooled=pooled,
        # The sessions' own timeout is what governs a one-statement read (tenancy.one_statement).
        statement_timeout_ms=settings.statement_timeout_ms,
    )
    auth_pool: Pool | None = None
    read_pool: Pool | None = None
    try:
        if transport == "http":
            auth_pool = await create_pool(runtime_url, min_size=1, max_size=settings.auth_pool_size, pooled=pooled)
        if settings.read_database_url is not None:
            read_pool = await create_pool(
                settings.read_database_url.get_secret_value(),
                min_size=settings.pool_min_size,
                max_size=settings.pool_max_size,
                application_name=READ_APPLICATION_NAME,
                pooled=pooled,
            )
            async with read_pool.acquire() as conn:
                await check_database(conn)
        caller: Caller | None = None
        async with pool.acquire() as conn:
            await check_database(conn)
            if await in_recovery(conn):
                log.warning(
                    "database_url is a hot standby: read-only tools, resources and prompts work, tools that write "
                    "fail, and calls per minute are counted in this process"
                )
            if transport == "stdio" and settings.tenant is not None:
                principal = f"stdio:{getpass.getuser()}"
                caller = await resolve_caller(
                    conn, tenant_slug=settings.tenant, principal=principal, persona=settings.persona
                )
                if caller.persona is not None:
                    await _check_persona(pool, caller, settings)
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
                key_usage = None
                stamping = anyio.CancelScope()
                listening = anyio.CancelScope()
                credentials = None
                if auth_pool is not None:
                    key_usage = KeyUsage(auth_pool, interval_s=settings.api_key_usage_flush_s)
                    background.start_soon(_stamp_until_cancelled, key_usage, stamping)
                    credentials = _credential_cache(settings, runtime_url, background, listening)
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
                        replica=ReadReplica(read_pool) if read_pool is not None else None,
                        key_usage=key_usage,
                        credentials=credentials,
                        db_time=DbTimeBudget(burst_ms=settings.quota_db_burst_ms),
                    )
                finally:
                    stamping.cancel()  # its last flush runs shielded, before the pools close
                    listening.cancel()
                    if indexer is not None:
                        indexer.cancel()
        finally:
            await embedders.aclose()
    finally:
        if read_pool is not None:
            await read_pool.close()
        if auth_pool is not None:
            await auth_pool.close()
        await pool.close()


def _credential_cache(
    settings: Settings, runtime_url: str, background: TaskGroup, scope: anyio.CancelScope
) -> CredentialCache | None:
    """The credential cache and its listener (started in `background`, stopped with `scope`), or None.

    The listener needs a direct connection to the primary: credential_listen_url, else database_url
    unless that is a transaction-mode pooler, through which LISTEN does not work (docs/decisions.md).
    """
    if settings.credential_cache_ttl_s <= 0:
        log.info("credential cache off (credential_cache_ttl_s = 0): every request checks its credential")
        return None
    if not settings.credential_listener:  # the one place that decides it (connection counts use it too)
        log.info(
            "credential cache off: database_url is a transaction-mode pooler, where LISTEN does not work; "
            "set credential_listen_url to a direct PostgreSQL URL to turn it on"
        )
        return None
    listen_url = settings.credential_listen_url
    url = listen_url.get_secret_value() if listen_url is not None else runtime_url
    cache = CredentialCache(ttl_s=settings.credential_cache_ttl_s, max_entries=settings.credential_cache_size)
    listener = CredentialListener(url, cache, check_s=max(0.5, settings.credential_cache_ttl_s / 2))
    background.start_soon(_listen_until_cancelled, listener, scope)
    return cache


async def _listen_until_cancelled(listener: CredentialListener, scope: anyio.CancelScope) -> None:
    with scope:
        await listener.run()


async def _stamp_until_cancelled(key_usage: KeyUsage, scope: anyio.CancelScope) -> None:
    with scope:
        await key_usage.run()


async def _check_persona(pool: Pool, caller: Caller, settings: Settings) -> None:
    """`--persona` must name a persona of the tenant: a typo would silently hide its memories."""
    timeout = settings.statement_timeout_ms
    async with tenant_transaction(pool, caller, read_only=True, statement_timeout_ms=timeout) as tx:
        try:
            await lookups.persona_id(tx.conn, tenant_id=tx.tenant_id, slug=caller.persona)
        except NotFound:
            raise StartupError(
                f"--persona {caller.persona!r}: tenant {caller.tenant_slug!r} has no such persona; "
                f"`mindscape persona list --tenant {caller.tenant_slug}` shows them"
            ) from None


def freeze_startup_objects() -> None:
    """Called once a serving process has started: what start-up allocated (modules, the SDK, the
    state) lives as long as the process, so the collector stops re-scanning it at every full
    collection (`gc.freeze`, ~16 us per call measured). Not in open_state: a test process opens
    many states, and frozen cycles are never collected."""
    gc.freeze()
