"""Recall: vector and full-text candidates inside one tenant, fused by score.

Each candidate has a cosine similarity to the query and a keyword coverage (the share of the
query's idf its content holds, its context's words at CONTEXT_WORDS_WEIGHT); hybrid recall ranks
by SIMILARITY_WEIGHT * similarity + (1 - SIMILARITY_WEIGHT) * coverage. Both weights were chosen
on LoCoMo conversations and checked on held-out ones (docs/memory-ranking.md).

Tenant filtering is the hard part. pgvector applies filters after an approximate index scan,
so a shared HNSW index plus `WHERE tenant_id = ...` can return almost nothing for a small
tenant, and misses true neighbours for a large one. Three ways to search are used:
- a tenant with at most `exact_max_rows` embeddings for the model is ranked exactly. This
  scans only its own rows through the primary key (tenant_id, model, ...), costs in proportion
  to its size, and has recall 1.0;
- a larger tenant with an HNSW index of its own (vector_index.ensure_tenant_index; built by
  `mindscape memory index`, after imports and re-embeds, and by the embedded server itself)
  searches that graph, which holds only its rows;
- a larger tenant without one uses the per-model HNSW index with iterative scanning
  (`hnsw.iterative_scan = relaxed_order`), which keeps walking the graph until enough of its
  rows turn up. Recall drops on queries far from the tenant's rows, so this is reported
  (`on_missing_index`) for an operator or the embedded server to fix.
If filters leave an approximate search short of the rows it asked for, the exact query runs,
so a tenant with at least k matching memories always gets k.

The candidates' fusion and the fetch of the k best rows are SQL too, in one statement with the
keyword search (queries/memories.py `recall`): a tenant ranked exactly is recalled in one query
(recall_exact, which the recall tool runs as a one-statement read), a larger one in two.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal
from uuid import UUID

from mindscape.database import vector_index
from mindscape.database.pool import Connection, Reader
from mindscape.embeddings.base import ModelSpec
from mindscape.memory.context import CONTEXT_WORDS_WEIGHT
from mindscape.models.memory import Mode, Recall, RecalledMemory
from mindscape.queries import memories
from mindscape.queries.fulltext import SearchTerms
from mindscape.queries.memories import Filters
from mindscape.queries.settings import set_locally

log = logging.getLogger(__name__)

# Hybrid ranking: half similarity, half keyword coverage. Chosen by leave-one-conversation-out on
# LoCoMo (0.5 or 0.6 on every pair of conversations); docs/memory-ranking.md has the sweep.
SIMILARITY_WEIGHT = 0.5
SIZE_TTL_S = 60.0
# ef_search per approximate path. The tenant's own graph needs a wider beam than the default 40
# for queries far from its rows (near-ties). benchmarks/memory_recall.py, tenants of 14k-40k rows,
# off-topic queries: recall@10 0.950 at 200 (p50 1.05x the global baseline), 0.982 at 400 (1.53x).
# Bigger graphs need a wider beam for the same recall: it grows with the square root of the size
# beyond OWN_INDEX_EF_ROWS (see own_index_ef). At N = 1M, growth from 50k rows left tenants of
# 50k-100k rows at recall@10 0.82 on off-topic queries; growth from 10k rows is what is measured
# in benchmarks/README.md.
OWN_INDEX_EF_SEARCH = 200
OWN_INDEX_EF_ROWS = 10_000
OWN_INDEX_EF_MAX = 1000
SHARED_INDEX_EF_SEARCH = 100

SearchPath = Literal["exact", "own_index", "shared_index"]
MissingIndex = Callable[[UUID, ModelSpec], None]


def own_index_ef(rows: float) -> int:
    """ef_search for a tenant's own graph of about `rows` vectors."""
    if rows <= OWN_INDEX_EF_ROWS:
        return OWN_INDEX_EF_SEARCH
    return min(OWN_INDEX_EF_MAX, round(OWN_INDEX_EF_SEARCH * math.sqrt(rows / OWN_INDEX_EF_ROWS)))


def warn_missing_index(tenant_id: UUID, spec: ModelSpec) -> None:
    log.warning(
        "tenant %s has more embeddings for %s than memory_exact_max_rows but no HNSW index of its own; recall "
        "searches the shared index and may miss neighbours: run `mindscape memory index`",
        tenant_id,
        spec.key,
    )


@dataclass
class TenantSizes:
    """Per-process cache of which search suits a tenant and model (see the module docstring).

    It only picks the faster search; every search returns the tenant's own rows.
    `on_missing_index` hears, once per process, of a large tenant without its own index.
    """

    exact_max_rows: int
    on_missing_index: MissingIndex = warn_missing_index
    _seen: dict[tuple[UUID, str], tuple[SearchPath, int, float]] = field(default_factory=lambda: {})
    _reported: set[tuple[UUID, str]] = field(default_factory=lambda: set())

    async def path(self, conn: Connection, tenant_id: UUID, spec: ModelSpec) -> tuple[SearchPath, int]:
        """The search to use, and the ef_search for an approximate one."""
        cached = self._seen.get((tenant_id, spec.key))
        now = time.monotonic()
        if cached is not None and now - cached[2] < SIZE_TTL_S:
            return cached[0], cached[1]
        count = await memories.count_embedded(conn, tenant_id=tenant_id, model=spec.key, cap=self.exact_max_rows + 1)
        path: SearchPath = "exact"
        ef = SHARED_INDEX_EF_SEARCH
        if count > self.exact_max_rows:
            rows = await vector_index.tenant_index_rows(conn, spec, tenant_id)
            path = "shared_index" if rows is None else "own_index"
            if rows is not None:
                ef = own_index_ef(rows)
        if path == "shared_index" and (tenant_id, spec.key) not in self._reported:
            self._reported.add((tenant_id, spec.key))
            self.on_missing_index(tenant_id, spec)
        self._seen[(tenant_id, spec.key)] = (path, ef, now)
        return path, ef

    def known_exact(self, tenant_id: UUID, spec: ModelSpec) -> bool:
        """Whether the tenant is ranked exactly, as last counted (no more than SIZE_TTL_S ago)."""
        cached = self._seen.get((tenant_id, spec.key))
        return cached is not None and cached[0] == "exact" and time.monotonic() - cached[2] < SIZE_TTL_S

    def forget(self, tenant_id: UUID, spec: ModelSpec) -> None:
        """Drop the cached path (an index of its own was just built)."""
        self._seen.pop((tenant_id, spec.key), None)


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
    async def search(
        exact: bool, own_index: bool = False, ef_search: int = SHARED_INDEX_EF_SEARCH
    ) -> list[tuple[UUID, float]]:
        return await memories.semantic_candidates(
            conn,
            tenant_id=tenant_id,
            model=spec.key,
            dims=spec.dimensions,
            vector=vector,
            filters=filters,
            limit=limit,
            exact=exact,
            ef_search=ef_search,
            own_index=own_index,
        )

    path, ef = await sizes.path(conn, tenant_id, spec)
    if path != "exact":
        hits = await search(exact=False, own_index=path == "own_index", ef_search=ef)
        if len(hits) >= limit:
            return hits
    return await search(exact=True)


def nothing_relevant(mode: Mode, terms: SearchTerms, min_similarity: float, searched_meaning: bool) -> str:
    """Why recall came back empty, in words an agent can act on."""
    if not terms.included:
        return "nothing to look for: every term of the query is excluded (-word)"
    words = "no memory contains any of the query's words"
    if mode == "keyword" or not searched_meaning:
        return f"nothing relevant: {words}"
    return f"nothing relevant: no memory is at least {min_similarity:g} similar to the query (min_similarity)"


@dataclass(frozen=True)
class Question:
    """What one recall asks: `vector` is the embedding of `terms.text` (None: no semantic signal)."""

    terms: SearchTerms
    k: int
    filters: Filters
    mode: Mode
    spec: ModelSpec
    vector: list[float] | None
    min_similarity: float

    @property
    def searched_vector(self) -> list[float] | None:
        """The vector searched by meaning: none with nothing to look for, or in keyword mode."""
        return self.vector if self.terms.included and self.mode != "keyword" else None

    def args(self) -> memories.RecallArgs:
        return memories.RecallArgs(
            filters=self.filters,
            model=self.spec.key,
            vector=self.searched_vector,
            depth=min(max(self.k * 3, 30), 300),  # candidates per signal
            included=self.terms.included,
            excluded=self.terms.excluded,
            keyword=self.mode != "semantic" and bool(self.terms.included),
            context_weight=CONTEXT_WORDS_WEIGHT,
            min_similarity=self.min_similarity,
            mode=self.mode,
            similarity_weight=SIMILARITY_WEIGHT,
            k=self.k,
        )


async def recall(
    conn: Connection,
    *,
    tenant_id: UUID,
    terms: SearchTerms,
    k: int,
    filters: Filters,
    mode: Mode,
    spec: ModelSpec,
    vector: list[float] | None,
    sizes: TenantSizes,
    min_similarity: float,
    note: str | None = None,
) -> Recall:
    """The k best memories; `vector` is the embedding of `terms.text` (None: no semantic signal).

    With a vector, every memory returned is at least `min_similarity` similar to the query (cosine),
    whichever signal found it: words in common do not make an unrelated memory relevant. Memories
    not embedded yet are judged by their words alone. Keyword mode does not embed the query, so
    there the floor does not apply and `similarity` is null.

    Runs in the open transaction on `conn`: the semantic candidates of a large tenant come from an
    approximate search first, then one statement does the rest (queries.memories.recall).
    recall_exact does it all in one statement, for a tenant known to be ranked exactly.
    """
    question = Question(terms, k, filters, mode, spec, vector, min_similarity)
    args = question.args()
    given: list[tuple[UUID, float]] | None = None
    if args.vector is not None and (await sizes.path(conn, tenant_id, spec))[0] != "exact":
        # The approximate search (or the exact one when it comes up short); either sets PLAN_PER_CALL.
        given = await semantic_search(
            conn,
            tenant_id=tenant_id,
            spec=spec,
            vector=list(args.vector),
            filters=filters,
            limit=args.depth,
            sizes=sizes,
        )
    else:
        await set_locally(conn, memories.PLAN_PER_CALL)
    ranked = await memories.recall(conn, tenant_id=tenant_id, args=args, given=given)
    return answer(ranked, question, note)


async def recall_exact(reader: Reader, *, tenant_id: UUID, question: Question, note: str | None = None) -> Recall:
    """recall for a tenant ranked exactly (TenantSizes.known_exact), in one query; `reader` runs it
    with PLAN_PER_CALL in effect."""
    return answer(await memories.recall(reader, tenant_id=tenant_id, args=question.args()), question, note)


def answer(found: list[RecalledMemory], question: Question, note: str | None) -> Recall:
    if not found:
        searched = question.searched_vector is not None
        empty = nothing_relevant(question.mode, question.terms, question.min_similarity, searched_meaning=searched)
        note = f"{note}; {empty}" if note else empty
    return Recall(memories=found, mode=question.mode, note=note)
