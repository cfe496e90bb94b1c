"""Isolation checklist items (docs/isolation.md) for memories, including item 20 (tenant-filtered vector recall)."""

from __future__ import annotations

import random
import uuid
from typing import Any

import anyio
import asyncpg
import numpy as np
import pytest

from mindscape.database.pool import Pool, connect
from mindscape.database.targets import Targets
from mindscape.database.vector_index import ensure_index, index_name
from mindscape.embeddings.base import ModelSpec
from mindscape.memory.recall import TenantSizes, semantic_search
from mindscape.queries import memories
from mindscape.queries.memories import Filters, NewMemory
from mindscape.tenancy.caller import Caller
from mindscape.tenancy.transaction import tenant_transaction
from tests.support.results import text_of
from tests.support.tenants import ClientFactory, TenantFactory, persona
from tests.support.vectors import clustered, load_vectors

pytestmark = pytest.mark.anyio


async def as_tenant_fetch(pool: Pool, caller: Caller, statement: str, *args: Any) -> list[asyncpg.Record]:
    async with tenant_transaction(pool, caller, read_only=False, statement_timeout_ms=5000) as tx:
        return await tx.conn.fetch(statement, *args)


async def test_tools_never_cross_tenants(client_for: ClientFactory, pool: Pool, tenant_factory: TenantFactory) -> None:
    a = await tenant_factory([persona("ada", "Ada")], "ma")
    b = await tenant_factory([persona("ada", "Ada"), persona("zed", "Zed")], "mb")
    async with client_for(b.tenant_slug) as client:
        secret = await client.call_tool("remember", {"content": "B's secret launch plan", "persona": "zed"})
    assert secret.structured_content is not None
    b_id = secret.structured_content["id"]
    async with client_for(a.tenant_slug) as client:
        recalled = await client.call_tool("recall", {"query": "secret launch plan"})
        keyword = await client.call_tool("recall", {"query": "secret launch plan", "mode": "keyword"})
        forgot = await client.call_tool("forget", {"id": b_id})
        missing = await client.call_tool("forget", {"id": str(uuid.uuid4())})
        foreign_persona = await client.call_tool("remember", {"content": "x", "persona": "zed"})
        no_persona = await client.call_tool("remember", {"content": "x", "persona": "nope"})
        same_content = await client.call_tool("remember", {"content": "B's secret launch plan"})
    assert recalled.structured_content is not None
    assert recalled.structured_content["memories"] == []
    assert keyword.structured_content is not None
    assert keyword.structured_content["memories"] == []
    assert forgot.is_error
    assert missing.is_error
    missing_id = text_of(missing).split("no memory with id ")[1].split(" ")[0]
    assert text_of(forgot).replace(b_id, "X") == text_of(missing).replace(missing_id, "X")
    assert text_of(foreign_persona).replace("zed", "?") == text_of(no_persona).replace("nope", "?")
    assert same_content.structured_content is not None
    assert same_content.structured_content["duplicate"] is False  # checklist 17
    rows = await as_tenant_fetch(pool, b, "SELECT content FROM mindscape.memories")
    assert [r["content"] for r in rows] == ["B's secret launch plan"]


async def test_rls_on_memory_tables(pool: Pool, tenant_factory: TenantFactory) -> None:
    a = await tenant_factory([], "ra")
    b = await tenant_factory([persona("zed", "Zed")], "rb")
    key = "hashing:mindscape-hash-v1:384"
    async with tenant_transaction(pool, b, read_only=False, statement_timeout_ms=5000) as tx:
        ids = await memories.insert_many(tx.conn, tenant_id=b.tenant_id, rows=[NewMemory("b one"), NewMemory("b two")])
        await memories.store_embeddings(
            tx.conn, tenant_id=b.tenant_id, model=key, memory_ids=list(ids.values()), vectors=[[1.0] + [0.0] * 383] * 2
        )
        b_persona = await tx.conn.fetchval("SELECT id FROM mindscape.personas WHERE slug = 'zed'")
    b_memory = ids[0]
    # 4, 5: A sees none of B's rows, by scan or by id
    counts = await as_tenant_fetch(
        pool,
        a,
        "SELECT (SELECT count(*) FROM mindscape.memories) AS m,"
        " (SELECT count(*) FROM mindscape.memory_embeddings) AS e,"
        " (SELECT count(*) FROM mindscape.memories WHERE id = $1) AS by_id",
        b_memory,
    )
    assert dict(counts[0]) == {"m": 0, "e": 0, "by_id": 0}
    # 6: updates and deletes of B's rows change nothing
    changed = await as_tenant_fetch(
        pool,
        a,
        "WITH u AS (UPDATE mindscape.memories SET metadata = '{\"hacked\": true}' WHERE id = $1 RETURNING 1),"
        " d AS (DELETE FROM mindscape.memory_embeddings WHERE memory_id = $1 RETURNING 1)"
        " SELECT (SELECT count(*) FROM u) AS u, (SELECT count(*) FROM d) AS d",
        b_memory,
    )
    assert dict(changed[0]) == {"u": 0, "d": 0}
    # 7: writing rows for B is refused
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        await as_tenant_fetch(
            pool,
            a,
            "INSERT INTO mindscape.memories (tenant_id, content, content_sha256) VALUES ($1, 'x', $2)",
            b.tenant_id,
            memories.content_hash("x"),
        )
    # 16: pointing at B's memory or persona fails exactly like pointing at nothing
    embed_for = (
        "INSERT INTO mindscape.memory_embeddings (tenant_id, model, memory_id, embedding)"
        f" VALUES ($1, '{key}', $2, array_fill(0.5, ARRAY[384])::vector)"
    )
    remember_for = (
        "INSERT INTO mindscape.memories (tenant_id, persona_id, content, content_sha256)"
        " VALUES ($1, $2, 'x', sha256('x'::bytea))"
    )
    # Since 0009 an embedding must belong to a memory the caller can see: the policy refuses one for
    # a memory that is not there (or not visible) before the foreign key is checked. Either way, B's
    # memory and no memory at all get the same error.
    refused = (asyncpg.ForeignKeyViolationError, asyncpg.InsufficientPrivilegeError)
    for statement, foreign in ((embed_for, b_memory), (remember_for, b_persona)):
        errors: list[str] = []
        for target in (foreign, uuid.uuid4()):
            with pytest.raises(refused) as caught:
                await as_tenant_fetch(pool, a, statement, a.tenant_id, target)
            errors.append(str(caught.value).replace(str(target), "X"))
        assert errors[0] == errors[1]
    after = await as_tenant_fetch(pool, b, "SELECT count(*) AS n FROM mindscape.memory_embeddings")
    assert after[0]["n"] == 2


# 20
async def test_one_percent_tenant_gets_k_results_with_high_recall(
    targets: Targets, pool: Pool, tenant_factory: TenantFactory
) -> None:
    """A small tenant beside a big one, one shared HNSW index: exact and approximate paths both deliver."""
    spec = ModelSpec("hashing", "item20", 32)
    rng = np.random.default_rng(20)
    centres = rng.normal(0, 1, (12, spec.dimensions))
    big = await tenant_factory([], "big")
    small = await tenant_factory([], "small")
    others = [await tenant_factory([], "other") for _ in range(4)]
    await load_vectors(pool, big, spec.key, clustered(rng, 8000, spec.dimensions, centres))
    for other in others:
        await load_vectors(pool, other, spec.key, clustered(rng, 400, spec.dimensions, centres))
    small_vectors = clustered(rng, 100, spec.dimensions, centres)  # about 1% of 9,700
    small_ids = await load_vectors(pool, small, spec.key, small_vectors)
    owner = await connect(targets.owner)
    try:
        assert await ensure_index(owner, spec)
        await owner.execute("ANALYZE mindscape.memory_embeddings")
    finally:
        await owner.close()

    queries = clustered(rng, 20, spec.dimensions, centres)
    for exact_max_rows in (10_000, 0):  # 10,000: the small tenant is ranked exactly; 0: forced through HNSW
        sizes = TenantSizes(exact_max_rows=exact_max_rows)
        recalls: list[float] = []
        async with tenant_transaction(pool, small, read_only=True, statement_timeout_ms=10_000) as tx:
            if exact_max_rows == 0:
                await tx.conn.execute(memories.HNSW_SETTINGS, "40")
                plan = await tx.conn.fetch(
                    "EXPLAIN " + memories.semantic_hnsw_sql(spec.dimensions),
                    *Filters().params(small.tenant_id),
                    spec.key,
                    queries[0].tolist(),
                    30,
                )
                assert index_name(spec) in "\n".join(r[0] for r in plan)  # the approximate path is real
            for query in queries:
                nearest: list[int] = np.argsort(-(small_vectors @ query))[:10].tolist()
                truth = {small_ids[i] for i in nearest}
                if exact_max_rows == 0:  # the approximate query alone, without the exact fallback
                    hits = await memories.semantic_candidates(
                        tx.conn,
                        tenant_id=small.tenant_id,
                        model=spec.key,
                        dims=spec.dimensions,
                        vector=query.tolist(),
                        filters=Filters(),
                        limit=30,  # as recall runs it for k=10
                        exact=False,
                    )
                    assert len(hits) == 30
                    hits = hits[:10]
                else:
                    hits = await semantic_search(
                        tx.conn,
                        tenant_id=small.tenant_id,
                        spec=spec,
                        vector=query.tolist(),
                        filters=Filters(),
                        limit=10,
                        sizes=sizes,
                    )
                assert len(hits) == 10
                assert {h[0] for h in hits} <= set(small_ids)
                recalls.append(len(truth & {h[0] for h in hits}) / 10)
        # Recall ranks a tenant this small exactly (1.0). Through the shared index, iterative scanning
        # still delivers every row asked for (a plain filtered HNSW scan returns almost none), but
        # misses some neighbours in other clusters: the reason small tenants are ranked exactly.
        floor = 0.95 if exact_max_rows else 0.9
        assert sum(recalls) / len(recalls) >= floor, (exact_max_rows, recalls)


async def test_filters_never_leave_a_tenant_short(targets: Targets, pool: Pool, tenant_factory: TenantFactory) -> None:
    """With a restrictive filter the approximate scan finds too few; the exact fallback fills k."""
    spec = ModelSpec("hashing", "shortfall", 16)
    rng = np.random.default_rng(7)
    tenant = await tenant_factory([], "short")
    vectors = rng.normal(0, 1, (3000, spec.dimensions))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = await load_vectors(pool, tenant, spec.key, vectors)
    rare = set(random.Random(1).sample(ids, 12))
    async with tenant_transaction(pool, tenant, read_only=False, statement_timeout_ms=10_000) as tx:
        await tx.conn.execute("UPDATE mindscape.memories SET kind = 'fact' WHERE id = ANY($1::uuid[])", list(rare))
    owner = await connect(targets.owner)
    try:
        await ensure_index(owner, spec)
    finally:
        await owner.close()
    async with tenant_transaction(pool, tenant, read_only=True, statement_timeout_ms=10_000) as tx:
        hits = await semantic_search(
            tx.conn,
            tenant_id=tenant.tenant_id,
            spec=spec,
            vector=vectors[0].tolist(),
            filters=Filters(kinds=["fact"]),
            limit=10,
            sizes=TenantSizes(exact_max_rows=0),
        )
    assert len(hits) == 10
    assert {h[0] for h in hits} <= rare
    await anyio.lowlevel.checkpoint()
