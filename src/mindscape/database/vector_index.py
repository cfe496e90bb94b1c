"""Per-model HNSW indexes on memory_embeddings, created on demand with the owner connection.

Which models are in use is configuration, not schema, so migrations cannot create these. Each
index is partial (`WHERE model = '<key>'`) over the vector cast to the model's dimensions, so
models of different sizes share one table. Without its index a model still works: recall then
ranks exactly, which is correct but slower for large tenants.
"""

from __future__ import annotations

import hashlib
import logging

import asyncpg

from mindscape.embeddings.base import ModelSpec

log = logging.getLogger(__name__)

INDEX_STATE = "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass($1)"


def index_name(spec: ModelSpec) -> str:
    return "memory_embeddings_hnsw_" + hashlib.sha1(spec.key.encode()).hexdigest()[:12]  # noqa: S324 - a name, not security


def create_sql(spec: ModelSpec) -> str:
    # DDL cannot take parameters. The key is validated by ModelSpec.parse's pattern (no quotes),
    # and the dimensions are an int; both are re-checked here before being written into SQL.
    checked = ModelSpec.parse(spec.key)
    return (
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {index_name(checked)} ON mindscape.memory_embeddings "
        f"USING hnsw ((embedding::vector({int(checked.dimensions)})) vector_cosine_ops) "
        f"WITH (m = 16, ef_construction = 64) WHERE model = '{checked.key}'"
    )


async def has_index(conn: asyncpg.Connection[asyncpg.Record], spec: ModelSpec) -> bool:
    return bool(await conn.fetchval(INDEX_STATE, f"mindscape.{index_name(spec)}"))


async def ensure_index(conn: asyncpg.Connection[asyncpg.Record], spec: ModelSpec) -> bool:
    """Create the model's index unless a valid one exists; True when it was built now.

    Runs outside a transaction (CONCURRENTLY: writers are not blocked). An invalid index left by
    an interrupted build is dropped and built again.
    """
    state = await conn.fetchval(INDEX_STATE, f"mindscape.{index_name(spec)}")
    if state is True:
        return False
    if state is False:
        await conn.execute(f"DROP INDEX CONCURRENTLY mindscape.{index_name(spec)}")
    log.info("building the HNSW index for %s", spec.key)
    await conn.execute("SET maintenance_work_mem = '512MB'")
    await conn.execute(create_sql(spec))
    return True
