"""HNSW indexes on memory_embeddings, created on demand with the owner connection.

Which models are in use, and which tenants are large, is data, not schema, so migrations cannot
create these. Two kinds, both partial over the vector cast to the model's dimensions (so models
of different sizes share one table):
- one per model (`WHERE model = '<key>'`), shared by every tenant;
- one per large tenant and model (`WHERE model = '<key>' AND tenant_id = '<uuid>'`). A shared
  graph filtered to one tenant misses true neighbours when the query lands where that tenant
  has no rows (recall@10 0.81 measured); a graph of the tenant's own rows does not.
Without them recall still works: it ranks exactly, or searches the shared index.
"""

from __future__ import annotations

import hashlib
import logging
from uuid import UUID

import asyncpg

from mindscape.database.pool import Connection
from mindscape.embeddings.base import ModelSpec

log = logging.getLogger(__name__)

TENANT_M = 32
TENANT_EF_CONSTRUCTION = 128
INDEX_STATE = "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass($1)"
INDEX_ROWS = """
SELECT c.reltuples FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE i.indexrelid = to_regclass($1) AND i.indisvalid
"""
# Memory for a build: a graph that does not fit is built far more slowly (pgvector says so in a notice).
BUILD_MEMORY = "512MB"


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


def tenant_index_name(spec: ModelSpec, tenant_id: UUID) -> str:
    digest = hashlib.sha1(f"{spec.key}|{tenant_id}".encode()).hexdigest()[:16]  # noqa: S324 - a name
    return "memory_embeddings_hnsw_t_" + digest


def tenant_create_sql(spec: ModelSpec, tenant_id: UUID) -> str:
    # As in create_sql: the key is re-validated, the dimensions are an int, and the tenant id is
    # re-parsed as a UUID (hex and dashes only) before it is written into the DDL.
    checked, tenant = ModelSpec.parse(spec.key), UUID(str(tenant_id))
    d = int(checked.dimensions)
    # The expression differs from the shared index's on purpose: l2_normalize leaves cosine distance
    # unchanged, but only this index matches the own-index query (memories.semantic_own_sql), so the
    # planner cannot pick the shared one, as it did when both matched. A denser graph (m 32,
    # ef_construction 128) keeps queries far from the tenant's rows accurate (measured in
    # benchmarks/memory_recall.py).
    return (
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {tenant_index_name(checked, tenant)} "
        f"ON mindscape.memory_embeddings "
        f"USING hnsw ((l2_normalize(embedding::vector({d}))::vector({d})) vector_cosine_ops) "
        f"WITH (m = {TENANT_M}, ef_construction = {TENANT_EF_CONSTRUCTION}) "
        f"WHERE model = '{checked.key}' AND tenant_id = '{tenant}'"
    )


async def has_index(conn: asyncpg.Connection[asyncpg.Record], spec: ModelSpec) -> bool:
    return bool(await conn.fetchval(INDEX_STATE, f"mindscape.{index_name(spec)}"))


async def has_tenant_index(conn: Connection, spec: ModelSpec, tenant_id: UUID) -> bool:
    return await tenant_index_rows(conn, spec, tenant_id) is not None


async def tenant_index_rows(conn: Connection, spec: ModelSpec, tenant_id: UUID) -> float | None:
    """The vectors in the tenant's own index as the catalog last counted them (0.0 if never counted),
    or None when it has no valid one."""
    rows: float | None = await conn.fetchval(INDEX_ROWS, f"mindscape.{tenant_index_name(spec, tenant_id)}")
    return None if rows is None else max(rows, 0.0)


async def ensure_index(conn: asyncpg.Connection[asyncpg.Record], spec: ModelSpec) -> bool:
    """Create the model's shared index unless a valid one exists; True when it was built now."""
    return await _ensure(conn, index_name(spec), create_sql(spec), spec.key)


async def ensure_tenant_index(conn: asyncpg.Connection[asyncpg.Record], spec: ModelSpec, tenant_id: UUID) -> bool:
    """Create the tenant's own index for `spec` unless a valid one exists; True when it was built now."""
    name = tenant_index_name(spec, tenant_id)
    return await _ensure(conn, name, tenant_create_sql(spec, tenant_id), f"{spec.key} of tenant {tenant_id}")


async def _ensure(conn: asyncpg.Connection[asyncpg.Record], name: str, create: str, what: str) -> bool:
    """Build index `name` with `create` unless a valid one exists; True when it was built now.

    Runs outside a transaction (CONCURRENTLY: writers are not blocked). An invalid index left by
    an interrupted build is dropped and built again.
    """
    state = await conn.fetchval(INDEX_STATE, f"mindscape.{name}")
    if state is True:
        return False
    if state is False:
        await conn.execute(f"DROP INDEX CONCURRENTLY mindscape.{name}")
    log.info("building the HNSW index for %s", what)
    await conn.execute("SELECT set_config('maintenance_work_mem', $1, false)", BUILD_MEMORY)
    await conn.execute(create)
    return True
