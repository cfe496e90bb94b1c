"""Synthetic embeddings for recall and index tests: clustered unit vectors, stored as a tenant."""

from __future__ import annotations

import uuid

import numpy as np

from mindscape.database.pool import Pool
from mindscape.queries import memories
from mindscape.queries.memories import NewMemory
from mindscape.tenancy.caller import Caller
from mindscape.tenancy.transaction import tenant_transaction


def clustered(rng: np.random.Generator, n: int, dims: int, centres: np.ndarray) -> np.ndarray:
    picks = centres[rng.integers(0, len(centres), n)]
    vectors = picks + rng.normal(0, 0.35, (n, dims))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


async def load_vectors(pool: Pool, caller: Caller, key: str, vectors: np.ndarray) -> list[uuid.UUID]:
    """One memory per vector, with that vector as its embedding under model `key`; ids in order."""
    async with tenant_transaction(pool, caller, read_only=False, statement_timeout_ms=60_000) as tx:
        ids = await memories.insert_many(
            tx.conn,
            tenant_id=caller.tenant_id,
            rows=[NewMemory(f"{caller.tenant_slug} {i}") for i in range(len(vectors))],
        )
        ordered = [ids[i] for i in range(len(vectors))]
        await memories.store_embeddings(
            tx.conn, tenant_id=caller.tenant_id, model=key, memory_ids=ordered, vectors=vectors.tolist()
        )
    return ordered
