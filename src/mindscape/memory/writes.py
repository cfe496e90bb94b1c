"""Remember and backfill: nothing an agent stores is lost to an embedding provider outage.

A memory is written even when its embedding fails; it is then "pending" for the tenant's
model. Keyword recall finds it at once, and the next successful `remember` (in the background,
after its reply) or `mindscape memory backfill` embeds the pending rows.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from mindscape.embeddings.base import EmbeddingError, ModelSpec, ModelUnavailable
from mindscape.embeddings.registry import Embedders
from mindscape.errors import InvalidArgument
from mindscape.memory.context import embed_with_context
from mindscape.models.memory import Remembered
from mindscape.queries import lookups, memories
from mindscape.quotas.limits import Limit
from mindscape.quotas.memories import check_content_size
from mindscape.tenancy.transaction import TenantTx

log = logging.getLogger(__name__)
BACKFILL_BATCH = 32

OpenTx = Callable[[bool], AbstractAsyncContextManager[TenantTx]]


@dataclass(frozen=True)
class Prepared:
    """A memory checked and embedded before its transaction opens."""

    content: str
    spec: ModelSpec
    vector: list[float] | None
    problem: str | None


async def prepare(
    embedders: Embedders, tenant_id: UUID, content: str, *, max_bytes: Limit, context: str | None = None
) -> Prepared:
    """Check `content` and embed it (with its `context`, see memory/context.py)."""
    size = len(content.encode("utf-8"))
    if not content.strip():
        raise InvalidArgument("content is empty; send the text to remember")
    check_content_size(size, max_bytes)  # before paying the provider; rechecked in the transaction
    spec = embedders.model_for(tenant_id)
    try:
        vector = (await embed_with_context(embedders.get(spec), [(content, context)]))[0]
    except EmbeddingError as exc:
        # A missing local model was reported once already, in one line with the fix.
        level = logging.DEBUG if isinstance(exc, ModelUnavailable) else logging.WARNING
        log.log(level, "embedding failed, memory stored as pending: %s", exc)
        return Prepared(content, spec, None, str(exc))
    return Prepared(content, spec, vector, None)


async def persona_id(tx: TenantTx, slug: str | None) -> UUID | None:
    return await lookups.persona_id(tx.conn, tenant_id=tx.tenant_id, slug=slug)


async def store(
    tx: TenantTx,
    embedders: Embedders,
    prepared: Prepared,
    *,
    persona: str | None,
    kind: str,
    metadata: dict[str, Any],
    importance: float | None,
    expires_in_days: int | None,
) -> Remembered:
    expires_at = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
    memory_id, duplicate = await memories.insert(
        tx.conn,
        tenant_id=tx.tenant_id,
        persona_id=await persona_id(tx, persona),
        kind=kind,
        content=prepared.content,
        metadata=metadata,
        importance=importance,
        expires_at=expires_at,
    )
    active = embedders.observe(tx.tenant_id, tx.settings)
    if prepared.vector is not None and prepared.spec == active:
        await memories.store_embeddings(
            tx.conn, tenant_id=tx.tenant_id, model=active.key, memory_ids=[memory_id], vectors=[prepared.vector]
        )
        ready = True
    else:
        ready = await memories.has_embedding(tx.conn, tenant_id=tx.tenant_id, model=active.key, memory_id=memory_id)
    note = None
    if not ready:
        embedders.mark(tx.tenant_id, active, clean=False)
        note = "stored; embedding is pending (provider unavailable), keyword recall finds it now"
    return Remembered(id=memory_id, duplicate=duplicate, embedding="ready" if ready else "pending", note=note)


async def backfill(open_tx: OpenTx, embedders: Embedders, spec: ModelSpec, *, batch: int = BACKFILL_BATCH) -> int:
    """Embed one batch of the tenant's pending memories; returns how many were embedded."""
    async with open_tx(True) as tx:
        tenant_id = tx.tenant_id
        todo = await memories.pending(tx.conn, tenant_id=tenant_id, model=spec.key, limit=batch)
    if todo:
        vectors = await embed_with_context(embedders.get(spec), [(content, context) for _, content, context in todo])
        async with open_tx(False) as tx:
            await memories.store_embeddings(
                tx.conn, tenant_id=tx.tenant_id, model=spec.key, memory_ids=[i for i, _, _ in todo], vectors=vectors
            )
    if len(todo) < batch:  # the backlog is empty now: later remembers need not look again
        embedders.mark(tenant_id, spec, clean=True)
    return len(todo)


async def backfill_quietly(run: Callable[[], Awaitable[int]]) -> None:
    """For the background: a failure is logged, never raised into the server's task group."""
    try:
        done = await run()
        if done:
            log.info("embedded %d pending memories", done)
    except EmbeddingError as exc:  # the provider failed again: nothing is lost, no traceback needed
        log.warning("background backfill stopped (%s); `mindscape memory backfill` retries it", exc)
    except Exception:
        log.warning("background backfill failed; `mindscape memory backfill` retries it", exc_info=True)
