"""HNSW indexes of their own for tenants above `memory_exact_max_rows` (see memory/recall.py).

Built with the owner connection, which the runtime role never has: by `mindscape memory index`,
after `memory import|backfill|reembed`, at the embedded server's start, and by the embedded
server in the background when a tenant grows past the threshold while it serves. Against an
external database the server only warns (`mindscape doctor` lists the tenants concerned).
"""

from __future__ import annotations

import getpass
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Literal
from uuid import UUID

import anyio
from anyio.abc import TaskGroup

from mindscape.config.settings import Settings
from mindscape.database import vector_index
from mindscape.database.pool import FAILURES, Pool, create_pool, owner_connection
from mindscape.database.targets import Targets
from mindscape.embeddings.base import ModelSpec
from mindscape.embeddings.factory import configured_spec
from mindscape.embeddings.registry import active_spec
from mindscape.errors import StartupError
from mindscape.memory.recall import warn_missing_index
from mindscape.models.tenant import Tenant
from mindscape.queries import lookups, memories, tenants
from mindscape.tenancy.caller import Caller
from mindscape.tenancy.transaction import tenant_transaction

log = logging.getLogger(__name__)

IndexState = Literal["built", "present", "missing", "not needed", "disabled"]


@dataclass(frozen=True)
class TenantIndex:
    tenant: str
    model: str
    embeddings: int  # counted up to memory_exact_max_rows + 1: that value means "more than the threshold"
    state: IndexState


async def index_tenants(
    settings: Settings, targets: Targets, *, tenant_slug: str | None = None, build: bool = True
) -> list[TenantIndex]:
    """For each tenant (or the one named) above the threshold for its model: its own index, built if missing.

    With `build=False` nothing is built: missing indexes are reported (for `mindscape doctor`).
    """
    found = await _tenants(targets, tenant_slug)
    threshold, default = settings.memory_exact_max_rows, configured_spec(settings)
    principal = f"cli:{getpass.getuser()}"
    report: list[TenantIndex] = []
    async with AsyncExitStack() as stack:
        pool = await create_pool(targets.runtime, min_size=1, max_size=1, pooled=targets.pooled)
        stack.push_async_callback(pool.close)
        owner = await stack.enter_async_context(owner_connection(targets.owner)) if build else None
        for t in found:
            if t.status != "active":
                report.append(TenantIndex(t.slug, "", 0, "disabled"))
                continue
            caller = Caller(tenant_id=t.id, tenant_slug=t.slug, principal=principal)
            spec, count = await _size(pool, caller, default, threshold, settings.statement_timeout_ms)
            state: IndexState = "not needed"
            if count > threshold:
                if owner is not None:
                    await vector_index.ensure_index(owner, spec)  # the shared one, for the model's other tenants
                    built = await vector_index.ensure_tenant_index(owner, spec, t.id)
                    state = "built" if built else "present"
                else:
                    async with pool.acquire() as conn:
                        present = await vector_index.has_tenant_index(conn, spec, t.id)
                    state = "present" if present else "missing"
            report.append(TenantIndex(t.slug, spec.key, count, state))
    return report


async def _tenants(targets: Targets, slug: str | None) -> list[Tenant]:
    """Every tenant, or the one named (looked up alone: bulk commands name theirs)."""
    async with owner_connection(targets.owner) as conn:
        if slug is None:
            return await tenants.list_all(conn)
        return [await lookups.tenant_by_slug(conn, slug=slug)]


async def _size(
    pool: Pool, caller: Caller, default: ModelSpec, threshold: int, timeout_ms: int
) -> tuple[ModelSpec, int]:
    """The tenant's active model and its embeddings for it, counted up to threshold + 1."""
    async with tenant_transaction(pool, caller, read_only=True, statement_timeout_ms=timeout_ms) as tx:
        spec = active_spec(tx.settings, default)
        count = await memories.count_embedded(tx.conn, tenant_id=tx.tenant_id, model=spec.key, cap=threshold + 1)
    return spec, count


@dataclass
class BackgroundIndexer:
    """For the embedded server: builds a large tenant's own index when recall finds it missing.

    `done` is told when a build ends, so recall's cache of search paths picks the index up.
    Builds are cancelled when the server stops; the invalid index an interrupted
    `CREATE INDEX CONCURRENTLY` leaves is dropped and rebuilt on the next attempt.
    """

    owner_url: str
    group: TaskGroup
    done: Callable[[UUID, ModelSpec], None]
    _started: set[tuple[UUID, str]] = field(default_factory=lambda: set())
    _scopes: set[anyio.CancelScope] = field(default_factory=lambda: set())

    def __call__(self, tenant_id: UUID, spec: ModelSpec) -> None:
        if (tenant_id, spec.key) in self._started:
            return
        self._started.add((tenant_id, spec.key))
        log.warning("tenant %s outgrew exact ranking for %s: building its own HNSW index", tenant_id, spec.key)
        self.group.start_soon(self._build, tenant_id, spec)

    async def _build(self, tenant_id: UUID, spec: ModelSpec) -> None:
        with anyio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                async with owner_connection(self.owner_url) as conn:
                    await vector_index.ensure_tenant_index(conn, spec, tenant_id)
            except (*FAILURES, StartupError) as exc:  # a background task: never into the server's task group
                log.warning("could not build the HNSW index of tenant %s: %s", tenant_id, exc)
                warn_missing_index(tenant_id, spec)
                return
            finally:
                self._scopes.discard(scope)
        self.done(tenant_id, spec)

    def cancel(self) -> None:
        for scope in list(self._scopes):
            scope.cancel()
