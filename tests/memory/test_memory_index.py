"""Large tenants' own HNSW indexes: who gets one, that recall searches it, and who builds it."""

from __future__ import annotations

import anyio
import numpy as np
import pytest
from typer.testing import CliRunner

from mindscape.app.state import open_state
from mindscape.cli import app
from mindscape.config.settings import Settings
from mindscape.database.pool import Pool, connect, create_pool
from mindscape.database.targets import Targets
from mindscape.database.vector_index import ensure_index, has_tenant_index, tenant_index_name
from mindscape.embeddings.base import ModelSpec
from mindscape.memory import recall as recall_module
from mindscape.memory.indexing import index_tenants
from mindscape.memory.recall import (
    OWN_INDEX_EF_MAX,
    OWN_INDEX_EF_ROWS,
    OWN_INDEX_EF_SEARCH,
    TenantSizes,
    own_index_ef,
    semantic_search,
)
from mindscape.queries import memories
from mindscape.queries.memories import Filters
from mindscape.tenancy.caller import Caller
from mindscape.tenancy.transaction import tenant_transaction
from tests.support.cli import cli_env
from tests.support.tenants import TenantFactory
from tests.support.vectors import clustered, load_vectors

pytestmark = pytest.mark.anyio

DIMS = 32
THRESHOLD = 300


def settings(targets: Targets, model: str) -> Settings:
    return Settings.model_validate(
        {
            "database_url": targets.runtime,
            "owner_database_url": targets.owner,
            "embedding_provider": "hashing",
            "embedding_model": model,
            "embedding_dimensions": DIMS,
            "memory_exact_max_rows": THRESHOLD,
        }
    )


async def plan(pool: Pool, caller: Caller, spec: ModelSpec, vector: list[float]) -> str:
    """The own-index query's plan, as `caller`."""
    async with tenant_transaction(pool, caller, read_only=True, statement_timeout_ms=10_000) as tx:
        await tx.conn.execute(memories.HNSW_SETTINGS, "100")
        sql = "EXPLAIN " + memories.semantic_hnsw_sql(spec.dimensions, own_index=True)
        rows = await tx.conn.fetch(sql, *Filters().params(caller.tenant_id), spec.key, vector, 30)
    return "\n".join(r[0] for r in rows)


async def test_large_tenants_get_and_search_their_own_index(
    targets: Targets, pool: Pool, tenant_factory: TenantFactory
) -> None:
    """Off-topic queries on a large tenant beside others: its own graph keeps recall@10 at 1.0-ish."""
    config = settings(targets, "own-index")
    spec = ModelSpec("hashing", "own-index", DIMS)
    rng = np.random.default_rng(3)
    centres = rng.normal(0, 1, (16, DIMS))
    large, small, neighbour = [await tenant_factory([], p) for p in ("large", "small", "neighbour")]
    # The large tenant writes about 4 of 16 topics; its neighbour (also large) about the rest.
    large_vectors = clustered(rng, 1500, DIMS, centres[:4])
    large_ids = await load_vectors(pool, large, spec.key, large_vectors)
    await load_vectors(pool, neighbour, spec.key, clustered(rng, 3000, DIMS, centres[4:]))
    await load_vectors(pool, small, spec.key, clustered(rng, 50, DIMS, centres))
    owner = await connect(targets.owner)
    try:
        await ensure_index(owner, spec)
    finally:
        await owner.close()

    async with pool.acquire() as conn:
        assert not await has_tenant_index(conn, spec, large.tenant_id)
    reports = {
        slug: (await index_tenants(config, targets, tenant_slug=slug))[0]
        for slug in (large.tenant_slug, small.tenant_slug, neighbour.tenant_slug)
    }
    assert reports[large.tenant_slug].state == "built"
    assert reports[small.tenant_slug].state == "not needed"
    assert reports[small.tenant_slug].embeddings == 50
    again = await index_tenants(config, targets, tenant_slug=large.tenant_slug)
    assert again[0].state == "present"
    owner = await connect(targets.owner)
    try:
        await owner.execute("ANALYZE mindscape.memory_embeddings")
        predicate = await owner.fetchval(
            "SELECT pg_get_expr(indpred, indrelid) FROM pg_index WHERE indexrelid = to_regclass($1)",
            f"mindscape.{tenant_index_name(spec, large.tenant_id)}",
        )
    finally:
        await owner.close()
    assert str(large.tenant_id) in predicate
    assert spec.key in predicate

    queries = clustered(rng, 20, DIMS, centres[4:])  # near topics the large tenant never wrote about
    own = tenant_index_name(spec, large.tenant_id)
    assert own in await plan(pool, large, spec, queries[0].tolist())
    # Another tenant's query can never reach that index: its predicate names the large tenant.
    small_plan = await plan(pool, small, spec, queries[0].tolist())
    assert own not in small_plan
    assert tenant_index_name(spec, neighbour.tenant_id) not in small_plan

    sizes = TenantSizes(exact_max_rows=THRESHOLD)
    recalls: list[float] = []
    async with tenant_transaction(pool, large, read_only=True, statement_timeout_ms=10_000) as tx:
        assert await sizes.path(tx.conn, large.tenant_id, spec) == ("own_index", OWN_INDEX_EF_SEARCH)
        for query in queries:
            hits = await semantic_search(
                tx.conn,
                tenant_id=large.tenant_id,
                spec=spec,
                vector=query.tolist(),
                filters=Filters(),
                limit=10,
                sizes=sizes,
            )
            assert {h[0] for h in hits} <= set(large_ids)
            nearest: list[int] = np.argsort(-(large_vectors @ query))[:10].tolist()
            truth = {large_ids[i] for i in nearest}
            recalls.append(len(truth & {h[0] for h in hits}) / 10)
    assert sum(recalls) / len(recalls) >= 0.95, recalls


async def test_the_embedded_server_builds_a_missing_index(
    targets: Targets, pool: Pool, tenant_factory: TenantFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recall on a large tenant without its own index starts a background build (owner URL given)."""
    # The cached path never expires here, however slow the build: only the builder's word changes it.
    monkeypatch.setattr(recall_module, "SIZE_TTL_S", 3600.0)
    spec = ModelSpec("hashing", "grown", DIMS)
    tenant = await tenant_factory([], "grown")
    await load_vectors(pool, tenant, spec.key, clustered(np.random.default_rng(5), THRESHOLD + 50, DIMS, np.eye(DIMS)))
    config = settings(targets, "grown")
    async with open_state(config, targets.runtime, transport="http", owner_url=targets.owner) as state:
        async with tenant_transaction(pool, tenant, read_only=True, statement_timeout_ms=10_000) as tx:
            assert (await state.sizes.path(tx.conn, tenant.tenant_id, spec))[0] == "shared_index"
        for _ in range(600):  # the build runs in the server's background task group
            async with pool.acquire() as conn:
                if await has_tenant_index(conn, spec, tenant.tenant_id):
                    break
            await anyio.sleep(0.1)
        # The index turns valid when its build commits; the builder tells the cache a moment later,
        # after closing its connection.
        path = "shared_index"
        for _ in range(50):
            async with tenant_transaction(pool, tenant, read_only=True, statement_timeout_ms=10_000) as tx:
                path = (await state.sizes.path(tx.conn, tenant.tenant_id, spec))[0]
            if path == "own_index":
                break
            await anyio.sleep(0.1)
        assert path == "own_index"


async def test_without_owner_url_the_server_only_warns(
    targets: Targets, pool: Pool, caplog: pytest.LogCaptureFixture, tenant_factory: TenantFactory
) -> None:
    spec = ModelSpec("hashing", "warned", DIMS)
    tenant = await tenant_factory([], "warned")
    await load_vectors(pool, tenant, spec.key, clustered(np.random.default_rng(6), THRESHOLD + 5, DIMS, np.eye(DIMS)))
    async with (
        open_state(settings(targets, "warned"), targets.runtime, transport="http") as state,
        tenant_transaction(pool, tenant, read_only=True, statement_timeout_ms=10_000) as tx,
    ):
        assert (await state.sizes.path(tx.conn, tenant.tenant_id, spec))[0] == "shared_index"
    async with pool.acquire() as conn:
        assert not await has_tenant_index(conn, spec, tenant.tenant_id)
    assert "run `mindscape memory index`" in caplog.text


def test_memory_index_command(targets: Targets, tenant_factory: TenantFactory) -> None:
    spec = ModelSpec("hashing", "cli-index", DIMS)

    async def seed() -> Caller:
        tenant = await tenant_factory([], "cli")
        pool = await create_pool(targets.runtime, min_size=1, max_size=1, pooled=targets.pooled)
        try:
            await load_vectors(
                pool, tenant, spec.key, clustered(np.random.default_rng(8), THRESHOLD + 1, DIMS, np.eye(DIMS))
            )
        finally:
            await pool.close()
        return tenant

    tenant = anyio.run(seed)
    env = cli_env(
        targets,
        MINDSCAPE_EMBEDDING_PROVIDER="hashing",
        MINDSCAPE_EMBEDDING_MODEL="cli-index",
        MINDSCAPE_EMBEDDING_DIMENSIONS=str(DIMS),
        MINDSCAPE_MEMORY_EXACT_MAX_ROWS=str(THRESHOLD),
    )
    runner = CliRunner()

    def index(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, ["memory", "index", *args], env=env)
        return result.exit_code, result.output

    code, output = index("--tenant", tenant.tenant_slug, "--check")
    assert (code, "missing" in output, f"> {THRESHOLD}" in output) == (1, True, True), output
    doctor = runner.invoke(app, ["doctor"], env=env).output
    assert "warn  tenant indexes: 1 of 1 tenant(s)" in doctor, doctor
    assert tenant.tenant_slug in doctor
    assert "fix: run `mindscape memory index`" in doctor
    code, output = index("--tenant", tenant.tenant_slug)
    assert (code, "built" in output) == (0, True), output
    doctor = runner.invoke(app, ["doctor"], env=env).output
    assert "ok    tenant indexes: 1 tenant(s) above" in doctor, doctor
    code, output = index("--tenant", tenant.tenant_slug, "--check")
    assert (code, "present" in output) == (0, True), output
    code, output = index("--tenant", "no-such-tenant")
    assert (code, "does not exist" in output) == (1, True), output


def test_bigger_graphs_get_a_wider_beam() -> None:
    assert own_index_ef(0) == own_index_ef(OWN_INDEX_EF_ROWS) == OWN_INDEX_EF_SEARCH
    assert own_index_ef(4 * OWN_INDEX_EF_ROWS) == 2 * OWN_INDEX_EF_SEARCH
    assert own_index_ef(100_000_000) == OWN_INDEX_EF_MAX
