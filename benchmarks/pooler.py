"""Mindscape through PgBouncer in transaction mode: calls, successes, foreign rows, leftover context.

An external PostgreSQL 18 (the embedded binaries, over TCP) set up as docs/operations.md says,
with PgBouncer 1.18 (Debian) in front of it from config/examples/pgbouncer.ini:
`python -m tests.support.external_db start` (the same setup `.ci/run` tests with), unless
MINDSCAPE_TEST_DATABASE_URL / MINDSCAPE_TEST_OWNER_URL already name one.

Two tenants, each with `--clients` in-memory MCP clients (default 8) on a server of its own whose
pool goes through PgBouncer, call for `--duration` seconds (default 30) a mix of get_persona,
list_personas, remember, recall, create_task and list_tasks. Every answer is searched for the
other tenant's marker (a foreign row). Meanwhile `--probers` connections (default 2) through the
same PgBouncer probe the server connections the calls just released for leftover session state
(role, tenant, principal, call, session-level settings such as statement_timeout, advisory locks,
LISTEN, prepared statements). The run is made twice: with `database_pooler = "transaction"` and,
for comparison, with "none" (asyncpg's statement cache on, as before the setting existed).

    uv run python benchmarks/pooler.py                     # 2 tenants x 8 clients, 30 s per row
    uv run python benchmarks/pooler.py --duration 10 --only transaction
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

from mcp import Client  # noqa: E402
from mcp.types import TextContent  # noqa: E402

from mindscape.app.server import build_server  # noqa: E402
from mindscape.app.state import open_state  # noqa: E402
from mindscape.config.settings import Settings  # noqa: E402
from mindscape.database.pool import create_pool  # noqa: E402
from mindscape.database.targets import Targets  # noqa: E402
from mindscape.models.persona import PersonaIn  # noqa: E402
from mindscape.ops import personas as persona_ops  # noqa: E402
from mindscape.ops import tenants as tenant_ops  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# The leftover-context probe of tests/support/probes.py (benchmarks do not import the tests).
PROBE = """
SELECT current_user::text AS role, session_user::text AS login,
       coalesce(current_setting('app.tenant_id', true), '') AS tenant,
       coalesce(current_setting('app.principal', true), '') AS principal,
       coalesce(current_setting('app.call', true), '') AS call,
       coalesce(current_setting('app.source', true), '') AS source,
       array(SELECT name || '=' || setting FROM pg_settings
             WHERE source = 'session' AND setting IS DISTINCT FROM reset_val AND name <> ALL($1::text[])) AS changed,
       (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()) AS advisory_locks,
       (SELECT count(*) FROM pg_listening_channels()) AS listening,
       (SELECT count(*) FROM pg_prepared_statements WHERE from_sql OR name <> '') AS prepared
"""
POOLER_TRACKED = ["application_name", "client_encoding", "datestyle", "timezone", "standard_conforming_strings"]


def leftovers(row: Any) -> list[str]:
    found = [f"role {row['role']}"] if row["role"] != row["login"] else []
    found += [f"{k}={row[k]}" for k in ("tenant", "principal", "call", "source") if row[k]]
    found += list(row["changed"])
    found += [f"{k}={row[k]}" for k in ("advisory_locks", "listening", "prepared") if row[k]]
    return found


@dataclass
class Tally:
    calls: int = 0
    ok: int = 0
    foreign: int = 0
    errors: Counter[str] = field(default_factory=Counter[str])
    probes: int = 0
    leftover: int = 0
    leftover_kinds: Counter[str] = field(default_factory=Counter[str])


def external_targets() -> tuple[Targets, Path | None]:
    """The database the environment names, or one started now (its dir, to stop at the end)."""
    runtime = os.environ.get("MINDSCAPE_TEST_DATABASE_URL")
    if runtime:
        owner = os.environ["MINDSCAPE_TEST_OWNER_URL"]
        return Targets(runtime=runtime, owner=owner, embedded=False, pooled=True), None
    base = Path(tempfile.mkdtemp(prefix="mindscape-pooler-"))
    subprocess.run(
        [sys.executable, "-m", "tests.support.external_db", "start", "--dir", str(base)],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    env = dict(
        line.removeprefix("export ").replace("'", "").split("=", 1)
        for line in (base / "env.sh").read_text().splitlines()
    )
    targets = Targets(
        runtime=env["MINDSCAPE_TEST_DATABASE_URL"], owner=env["MINDSCAPE_TEST_OWNER_URL"], embedded=False, pooled=True
    )
    return targets, base


async def seed(targets: Targets, marker: str) -> str:
    slug = f"{marker}-{uuid.uuid4().hex[:8]}"
    await tenant_ops.create_tenant(targets, slug=slug, name=f"Tenant {marker}")
    personas = [
        PersonaIn(slug="ada", name=f"Ada {marker}", summary=f"{marker} analyst", tags=[marker]),
        PersonaIn(slug="basil", name=f"Basil {marker}", summary=f"{marker} support", tags=[marker]),
    ]
    await persona_ops.import_personas(Settings(), targets, tenant_slug=slug, items=personas)
    return slug


def text_of(result: Any) -> str:
    parts = [c.text for c in result.content if isinstance(c, TextContent)]
    return " ".join(parts) + (str(result.structured_content) if result.structured_content else "")


async def client_loop(client: Client, own: str, other: str, tally: Tally, deadline: float, n: int) -> None:
    i = 0
    while time.monotonic() < deadline:
        i += 1
        step = i % 6
        if step == 0:
            call = ("get_persona", {"slug": "ada"})
        elif step == 1:
            call = ("list_personas", {"query": own, "limit": 5})
        elif step == 2:
            call = ("remember", {"content": f"{own} note {n}-{i}: pooler run", "persona": "ada"})
        elif step == 3:
            call = ("recall", {"query": "pooler run note", "k": 5})
        elif step == 4:
            call = ("create_task", {"title": f"{own} task {n}-{i}", "persona": "basil"})
        else:
            call = ("list_tasks", {"limit": 5})
        tally.calls += 1
        try:
            result = await client.call_tool(*call)
        except Exception as exc:  # a transport-level failure: count it, keep going
            tally.errors[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1
            continue
        text = text_of(result)
        if other in text:
            tally.foreign += 1
        if result.is_error:
            tally.errors[text[:100]] += 1
        else:
            tally.ok += 1


async def prober(targets: Targets, tally: Tally, deadline: float) -> None:
    pool = await create_pool(targets.runtime, min_size=1, max_size=1, pooled=True)
    try:
        while time.monotonic() < deadline:
            async with pool.acquire() as conn:
                for in_transaction in (False, True):
                    if in_transaction:
                        async with conn.transaction():
                            row = await conn.fetchrow(PROBE, POOLER_TRACKED)
                    else:
                        row = await conn.fetchrow(PROBE, POOLER_TRACKED)
                    tally.probes += 1
                    found = leftovers(row)
                    if found:
                        tally.leftover += 1
                        tally.leftover_kinds.update(found)
            await asyncio.sleep(0.002)
    finally:
        await pool.close()


async def run(targets: Targets, pooler: str, clients: int, duration: float, probers: int) -> Tally:
    slugs = {m: await seed(targets, m) for m in ("alpha", "bravo")}
    tally = Tally()
    settings = {
        marker: Settings.model_validate(
            {
                "database_url": targets.runtime,
                "database_pooler": pooler,
                "tenant": slug,
                "embedding_provider": "hashing",  # the database path, not the model, is measured
                "quota_calls_per_minute": 0,
                "quota_max_concurrent_calls": 0,
                "pool_max_size": clients,
            }
        )
        for marker, slug in slugs.items()
    }
    deadline = time.monotonic() + duration
    async with asyncio.TaskGroup() as tg:
        for marker, other in (("alpha", "bravo"), ("bravo", "alpha")):
            configured = settings[marker]
            server = build_server(lambda configured=configured: open_state(configured, targets.runtime))
            for n in range(clients):
                tg.create_task(one_client(server, marker, other, tally, deadline, n))
        for _ in range(probers):
            tg.create_task(prober(targets, tally, deadline))
    return tally


async def one_client(server: Any, own: str, other: str, tally: Tally, deadline: float, n: int) -> None:
    try:
        async with Client(server, raise_exceptions=False) as client:
            await client_loop(client, own, other, tally, deadline, n)
    except Exception as exc:  # the server could not even start its session
        tally.errors[f"session: {type(exc).__name__}: {str(exc)[:80]}"] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--clients", type=int, default=8, help="clients per tenant")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per row")
    parser.add_argument("--probers", type=int, default=2)
    parser.add_argument("--only", choices=["transaction", "none"], default=None)
    args = parser.parse_args()
    logging.getLogger("mindscape").setLevel(logging.ERROR)  # one "hashing model" warning per session
    targets, started = external_targets()
    rows: list[tuple[str, Tally]] = []
    try:
        for pooler in [args.only] if args.only else ["transaction", "none"]:
            tally = asyncio.run(run(targets, pooler, args.clients, args.duration, args.probers))
            rows.append((pooler, tally))
    finally:
        if started is not None:
            subprocess.run(
                [sys.executable, "-m", "tests.support.external_db", "stop", "--dir", str(started), "--remove"],
                cwd=REPO,
                check=False,
            )
    print(f"\n2 tenants x {args.clients} clients, {args.duration:g} s per row, through PgBouncer (transaction mode)\n")
    print("| database_pooler | calls | succeeded | foreign rows seen | probes | probes with leftover context |")
    print("|---|---:|---:|---:|---:|---:|")
    for pooler, t in rows:
        share = 100 * t.ok / t.calls if t.calls else 0
        print(f"| `{pooler}` | {t.calls:,} | {t.ok:,} ({share:.1f}%) | {t.foreign} | {t.probes:,} | {t.leftover} |")
    for pooler, t in rows:
        for message, count in t.errors.most_common(3):
            print(f"\n{pooler}: {count} x {message}")
        for kind, count in t.leftover_kinds.most_common(3):
            print(f"{pooler}: leftover {kind}: {count}")


if __name__ == "__main__":
    main()
