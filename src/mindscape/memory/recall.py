"""Recall: vector and full-text candidates inside one tenant, fused by reciprocal rank.

Tenant filtering is the hard part. pgvector applies filters after an approximate index scan,
so a shared HNSW index plus `WHERE tenant_id = ...` can return almost nothing for a small
tenant. Two ways to search are used:
- a tenant with at most `exact_max_rows` embeddings for the model is ranked exactly. This
  scans only its own rows through the primary key (tenant_id, model, ...), costs in proportion
  to its size, and has recall 1.0;
- a larger tenant uses the per-model HNSW index with iterative scanning
  (`hnsw.iterative_scan = relaxed_order`), which keeps walking the graph until enough of its
  rows turn up.
If filters leave the approximate search short of the rows it asked for, the exact query runs,
so a tenant with at least k matching memories always gets k.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from uuid import UUID

from mindscape.database.pool import Connection
from mindscape.embeddings.base import ModelSpec
from mindscape.models.memory import Mode, Recall, RecalledMemory
from mindscape.queries import memories
from mindscape.queries.memories import Filters

RRF_K = 60  # the constant of reciprocal rank fusion (Cormack et al.); damps the top ranks' weight
SIZE_TTL_S = 60.0


@dataclass
class TenantSizes:
    """Per-process cache of "is this tenant small enough for an exact scan", per model.

    It only picks the faster search; both searches return the tenant's own rows.
    """

    exact_max_rows: int
    _seen: dict[tuple[UUID, str], tuple[bool, float]] = field(default_factory=lambda: {})

    async def is_small(self, conn: Connection, tenant_id: UUID, model: str) -> bool:
        cached = self._seen.get((tenant_id, model))
        now = time.monotonic()
        if cached is not None and now - cached[1] < SIZE_TTL_S:
            return cached[0]
        count = await memories.count_embedded(conn, tenant_id=tenant_id, model=model, cap=self.exact_max_rows + 1)
        small = count <= self.exact_max_rows
        self._seen[(tenant_id, model)] = (small, now)
        return small


async def semantic_search(
    conn: Connection,
    *,
    tenant_id: UUID,
    spec: ModelSpec,
    vector: list[float],
    filters: Filters,
    limit: int,
    sizes: TenantSizes,
) -> list[tuple[UUID, float]]:
    async def search(exact: bool) -> list[tuple[UUID, float]]:
        return await memories.semantic_candidates(
            conn,
            tenant_id=tenant_id,
            model=spec.key,
            dims=spec.dimensions,
            vector=vector,
            filters=filters,
            limit=limit,
            exact=exact,
        )

    if not await sizes.is_small(conn, tenant_id, spec.key):
        hits = await search(exact=False)
        if len(hits) >= limit:
            return hits
    return await search(exact=True)


def fuse(
    semantic: list[tuple[UUID, float]], keyword: list[tuple[UUID, float]], k: int
) -> list[tuple[UUID, float, int | None, int | None]]:
    """Reciprocal rank fusion: (id, score, semantic rank, keyword rank), best first."""
    ranks: dict[UUID, list[int | None]] = {}
    for signal, hits in enumerate((semantic, keyword)):
        for rank, (memory_id, _) in enumerate(hits, start=1):
            ranks.setdefault(memory_id, [None, None])[signal] = rank
    scored = [
        (memory_id, sum(1.0 / (RRF_K + r) for r in pair if r is not None), pair[0], pair[1])
        for memory_id, pair in ranks.items()
    ]
    scored.sort(key=lambda item: (-item[1], min(r for r in item[2:] if r is not None)))
    return scored[:k]


async def recall(
    conn: Connection,
    *,
    tenant_id: UUID,
    query: str,
    k: int,
    filters: Filters,
    mode: Mode,
    spec: ModelSpec,
    vector: list[float] | None,
    sizes: TenantSizes,
    note: str | None = None,
) -> Recall:
    """The k best memories; `vector` is the query's embedding (None: no semantic signal)."""
    depth = min(max(k * 3, 30), 300)  # candidates per signal: enough for fusion to reorder
    semantic: list[tuple[UUID, float]] = []
    keyword: list[tuple[UUID, float]] = []
    if mode != "keyword" and vector is not None:
        semantic = await semantic_search(
            conn, tenant_id=tenant_id, spec=spec, vector=vector, filters=filters, limit=depth, sizes=sizes
        )
    if mode != "semantic":
        keyword = await memories.keyword_candidates(
            conn, tenant_id=tenant_id, query=query, filters=filters, limit=depth
        )
    fused = fuse(semantic, keyword, k)
    rows = await memories.fetch(conn, tenant_id=tenant_id, ids=[f[0] for f in fused])
    found = [
        RecalledMemory(**rows[memory_id].model_dump(), score=score, semantic_rank=s_rank, keyword_rank=k_rank)
        for memory_id, score, s_rank, k_rank in fused
        if memory_id in rows
    ]
    return Recall(memories=found, mode=mode, note=note)
