"""Memory SQL: writes, candidate searches (vector and full text) and reads.

Every search query shares the filter block below, whose parameters are always $1..$10:
$1 tenant, $2 persona slug, $3 kinds, $4 metadata containment, $5 since, $6 until, $7 as of (NULL:
now), $8 include superseded versions, $9 written by (principal), $10 task id.

Which memories a caller may see at all (visibility: tenant, persona, private) is not here: it is
row-level security on `app.principal` and `app.persona` (migration 0009). The filter block only
narrows what the policy shows: by default to the versions valid now.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
from pgvector import Vector

from mindscape.database.pool import Connection, Reader
from mindscape.database.scripts import Script, ScriptRunner, literal
from mindscape.models.memory import Memory, RecalledMemory
from mindscape.queries.lookups import PERSONA_IDS, live_persona, persona_not_found
from mindscape.queries.quotas import LIVE, LOCK_CLASS, UP_TO
from mindscape.queries.settings import set_locally


@dataclass(frozen=True)
class Filters:
    persona: str | None = None  # a slug: no live persona of that slug, no memories
    kinds: list[str] | None = None
    metadata: dict[str, Any] | None = None
    since: datetime | None = None
    until: datetime | None = None
    as_of: datetime | None = None
    include_superseded: bool = False
    written_by: str | None = None
    task_id: UUID | None = None

    def params(self, tenant_id: UUID) -> tuple[Any, ...]:
        return (
            tenant_id,
            self.persona,
            self.kinds,
            self.metadata,
            self.since,
            self.until,
            self.as_of,
            self.include_superseded,
            self.written_by,
            self.task_id,
        )


FILTERS = f"""
  AND ($2::text IS NULL OR m.persona_id = {live_persona("$1", "$2")})
  AND ($3::text[] IS NULL OR m.kind = ANY($3))
  AND ($4::jsonb IS NULL OR m.metadata @> $4)
  AND ($5::timestamptz IS NULL OR m.created_at >= $5)
  AND ($6::timestamptz IS NULL OR m.created_at < $6)
  AND (m.expires_at IS NULL OR m.expires_at > now())
  AND ($8::boolean OR (m.valid_from <= coalesce($7::timestamptz, now())
                       AND (m.valid_to IS NULL OR m.valid_to > coalesce($7::timestamptz, now()))))
  AND ($9::text IS NULL OR m.written_by = $9)
  AND ($10::uuid IS NULL OR m.task_id = $10)
"""

# A memory as models.memory.Memory reads it (m: the memory, p: its persona).
MEMORY_FIELDS = """m.id, m.content, m.kind, p.slug AS persona, m.metadata, m.importance, m.created_at, m.expires_at,
       m.visibility, m.written_by, m.client_name, m.client_version, m.source, m.task_id AS task,
       m.valid_from, m.valid_to, m.superseded_by, m.version"""

# The dedup key (migration 0009): current versions only, per visibility, and per writer for a
# private memory. written_by and the client come from the transaction's context (column defaults).
DEDUP = (
    "(tenant_id, persona_id, content_sha256, visibility,"
    " (CASE WHEN visibility = 'private' THEN written_by ELSE '' END)) WHERE valid_to IS NULL"
)
_INSERT = """
INSERT INTO mindscape.memories AS m
    (tenant_id, persona_id, kind, content, content_sha256, metadata, importance, expires_at, visibility, task_id,
     source)
SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'tool'{locked}
ON CONFLICT {dedup}
DO UPDATE SET expires_at = EXCLUDED.expires_at, updated_at = now()
RETURNING m.id, (m.xmax = 0) AS created
"""
INSERT = _INSERT.format(locked="", dedup=DEDUP)
# The same, first taking the tenant's memory-writes lock (queries/quotas.py LOCK_MEMORY_WRITES,
# $11 its class): the row to insert comes from the lock's subquery, so the lock is held before
# the row is written, as a statement of its own before it would (quotas/memories.py).
INSERT_LOCKED = _INSERT.format(
    locked="\nFROM (SELECT pg_advisory_xact_lock($11::int, hashtext($1::uuid::text))) AS locked", dedup=DEDUP
)


def content_hash(content: str) -> bytes:
    return hashlib.sha256(content.encode("utf-8")).digest()


def _insert_args(
    tenant_id: UUID,
    persona_id: UUID | None,
    kind: str | None,
    content: str,
    metadata: dict[str, Any],
    importance: float | None,
    expires_at: datetime | None,
    visibility: str | None,
    task_id: UUID | None,
) -> tuple[Any, ...]:
    """INSERT's $1-$10, in order (REMEMBER runs INSERT as written, so it takes them in the same places)."""
    return (
        tenant_id,
        persona_id,
        kind,
        content,
        content_hash(content),
        metadata,
        importance,
        expires_at,
        visibility,
        task_id,
    )


async def insert(
    conn: Connection,
    *,
    tenant_id: UUID,
    persona_id: UUID | None,
    kind: str,
    content: str,
    metadata: dict[str, Any],
    importance: float | None,
    expires_at: datetime | None,
    visibility: str = "tenant",
    task_id: UUID | None = None,
    lock: bool = False,
) -> tuple[UUID, bool]:
    """(id, duplicate). Storing the same content for the same persona and visibility again renews its
    expiry only. With `lock`, the tenant's memory-writes lock is taken first, in the same statement."""
    args = _insert_args(tenant_id, persona_id, kind, content, metadata, importance, expires_at, visibility, task_id)
    row = await conn.fetchrow(INSERT_LOCKED if lock else INSERT, *args, *((LOCK_CLASS,) if lock else ()))
    assert row is not None
    return row["id"], not row["created"]


# Imported memories are tenant- or persona-visible (never private: see memory/jsonl.py), valid
# from their creation time.
INSERT_MANY = f"""
INSERT INTO mindscape.memories
    (tenant_id, persona_id, kind, content, content_sha256, metadata, importance, expires_at, created_at, valid_from,
     source, visibility)
SELECT $1, r.persona_id, r.kind, r.content, r.sha, r.metadata, r.importance, NULL, coalesce(r.created_at, now()),
       coalesce(r.created_at, now()), 'import', r.visibility
FROM unnest($2::uuid[], $3::text[], $4::text[], $5::bytea[], $6::jsonb[], $7::real[], $8::timestamptz[], $9::text[])
     AS r(persona_id, kind, content, sha, metadata, importance, created_at, visibility)
ON CONFLICT {DEDUP} DO NOTHING
RETURNING id, content_sha256, persona_id, visibility
"""


@dataclass(frozen=True)
class NewMemory:
    content: str
    persona_id: UUID | None = None
    kind: str = "note"
    metadata: dict[str, Any] | None = None
    importance: float | None = None
    created_at: datetime | None = None
    visibility: str = "tenant"


async def insert_many(conn: Connection, *, tenant_id: UUID, rows: Sequence[NewMemory]) -> dict[int, UUID]:
    """Insert a batch in one statement; returns {index in `rows`: new id} (duplicates are skipped).

    `COPY` is refused on tables under row-level security, so bulk loads send arrays instead.
    """
    hashes = [content_hash(r.content) for r in rows]
    inserted = await conn.fetch(
        INSERT_MANY,
        tenant_id,
        [r.persona_id for r in rows],
        [r.kind for r in rows],
        [r.content for r in rows],
        hashes,
        [r.metadata or {} for r in rows],
        [r.importance for r in rows],
        [r.created_at for r in rows],
        [r.visibility for r in rows],
    )
    where: dict[tuple[bytes, UUID | None, str], int] = {}
    for i, (h, r) in enumerate(zip(hashes, rows, strict=True)):
        where.setdefault((h, r.persona_id, r.visibility), i)  # a repeat within the batch is the duplicate
    return {where[(row["content_sha256"], row["persona_id"], row["visibility"])]: row["id"] for row in inserted}


# Each embedding carries its memory's visibility, writer and persona (migration 0009: the
# embeddings policy reads them without a join, and checks they match on insert).
STORE_EMBEDDINGS = """
INSERT INTO mindscape.memory_embeddings (tenant_id, model, memory_id, embedding, visibility, written_by, persona_id)
SELECT $1, $2, r.memory_id, r.embedding, m.visibility, m.written_by, m.persona_id
FROM unnest($3::uuid[], $4::vector[]) AS r(memory_id, embedding)
JOIN mindscape.memories m ON m.tenant_id = $1 AND m.id = r.memory_id
ON CONFLICT DO NOTHING
"""


async def store_embeddings(
    conn: Connection, *, tenant_id: UUID, model: str, memory_ids: Sequence[UUID], vectors: Sequence[Sequence[float]]
) -> None:
    # Vector objects, not lists: asyncpg would read a list of lists as a 2-D array of numbers.
    await conn.execute(STORE_EMBEDDINGS, tenant_id, model, list(memory_ids), [Vector(list(v)) for v in vectors])


HAS_EMBEDDING = """
SELECT EXISTS (SELECT 1 FROM mindscape.memory_embeddings WHERE tenant_id = $1 AND model = $2 AND memory_id = $3)
"""


async def has_embedding(conn: Connection, *, tenant_id: UUID, model: str, memory_id: UUID) -> bool:
    return bool(await conn.fetchval(HAS_EMBEDDING, tenant_id, model, memory_id))


# Closes the old version in the new one's transaction: valid_to is the transaction's time, the
# new version's valid_from. `valid_to IS NULL` makes a concurrent second supersede of the same
# memory wait for the first and then match nothing (the row it re-reads is closed).
SUPERSEDE = """
UPDATE mindscape.memories SET valid_to = now(), superseded_by = $3, version = version + 1, updated_at = now()
WHERE tenant_id = $1 AND id = $2 AND valid_to IS NULL
RETURNING id
"""

# remember in one statement (tenancy.one_statement.tenant_write): the persona's id from its slug
# ($15, as lookups.persona_id finds it), the insert as INSERT runs it ($1-$11; under the lock
# when there is a limit, $12 > 0), the embedding ($13 model, $14 vector),
# and, for a new row under a limit, the count over every memory. Each statement of the function
# takes its own snapshot as it starts, so the count sees every earlier lock holder's rows, and the
# embeddings policy sees the new row. Over the limit it raises OVER_LIMIT with the live count as
# its detail: the statement, the insert with it, is rolled back.
# With $16, the new version of that memory: its persona, kind and visibility unless given ($15,
# $3, $9 NULL), and the old version closed (SUPERSEDE) before the count, as store() does it.
# Anything but the plain case (no such current memory, the same content already stored, a persona
# visibility, a concurrent supersede) raises NOT_AT_ONCE: nothing is written, and the transaction
# path (memory.writes.store) finds the same and says what it is.
OVER_LIMIT = "MS429"
NO_PERSONA = "MS404"  # $15 names no live persona
NOT_AT_ONCE = "MS428"  # a case this script leaves to the transaction path
REMEMBER = Script(
    # INSERT's tenant, persona (its id, set here from $15), kind, content, hash, metadata,
    # importance, expiry, visibility, task, lock class; then the limit, the model, the vector, the
    # persona's slug and the memory this one supersedes.
    parameters=(
        "uuid, uuid, text, text, bytea, jsonb, real, timestamptz, text, uuid, integer, integer, text, vector, text,"
        " uuid"
    ),
    returns="id uuid, created boolean",
    declare="""
        mindscape_slug__ text;
        mindscape_persona__ uuid;
        mindscape_id__ uuid;
        mindscape_created__ boolean;
        mindscape_n__ bigint;
        mindscape_before__ text;
        mindscape_old__ record;
        mindscape_closed__ uuid;
    """,
    body=f"""
  IF $15 IS NOT NULL THEN
    EXECUTE {literal(PERSONA_IDS)} INTO mindscape_slug__, mindscape_persona__ USING $1, ARRAY[$15];
    IF mindscape_persona__ IS NULL THEN
      RAISE EXCEPTION 'no such persona' USING ERRCODE = '{NO_PERSONA}';
    END IF;
    $2 := mindscape_persona__;
  END IF;
  IF $16 IS NOT NULL THEN
    SELECT m.persona_id, m.kind, m.visibility INTO mindscape_old__
    FROM mindscape.memories m WHERE m.tenant_id = $1 AND m.id = $16 AND m.valid_to IS NULL;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'not the current version' USING ERRCODE = '{NOT_AT_ONCE}';
    END IF;
    IF $15 IS NULL THEN
      $2 := mindscape_old__.persona_id;
    END IF;
    $3 := coalesce($3, mindscape_old__.kind);
    $9 := coalesce($9, mindscape_old__.visibility);
  END IF;
  $3 := coalesce($3, 'note');
  $9 := coalesce($9, 'tenant');
  IF $9 = 'persona' THEN
    RAISE EXCEPTION 'persona visibility' USING ERRCODE = '{NOT_AT_ONCE}';
  END IF;
  IF $12 > 0 THEN
    {INSERT_LOCKED.strip()}
    INTO mindscape_id__, mindscape_created__;
  ELSE
    {INSERT.strip()}
    INTO mindscape_id__, mindscape_created__;
  END IF;
  IF $16 IS NOT NULL THEN
    IF NOT mindscape_created__ THEN
      RAISE EXCEPTION 'already stored' USING ERRCODE = '{NOT_AT_ONCE}';
    END IF;
    EXECUTE {literal(SUPERSEDE)} INTO mindscape_closed__ USING $1, $16, mindscape_id__;
    IF mindscape_closed__ IS NULL THEN
      RAISE EXCEPTION 'superseded meanwhile' USING ERRCODE = '{NOT_AT_ONCE}';
    END IF;
  END IF;
  EXECUTE {literal(STORE_EMBEDDINGS)} USING $1, $13, ARRAY[mindscape_id__], ARRAY[$14];
  IF $12 > 0 AND mindscape_created__ THEN
    mindscape_before__ := coalesce(current_setting('app.all_memories', true), '');
    PERFORM set_config('app.all_memories', 'on', true);  -- the quota counts every memory (queries/quotas.py)
    EXECUTE {literal(UP_TO)} INTO mindscape_n__ USING $1, $12 + 1;
    IF mindscape_n__ > $12 THEN
      EXECUTE {literal(LIVE)} INTO mindscape_n__ USING $1;
    END IF;
    PERFORM set_config('app.all_memories', mindscape_before__, true);
    IF mindscape_n__ > $12 THEN
      RAISE EXCEPTION 'over max_memories' USING ERRCODE = '{OVER_LIMIT}', DETAIL = mindscape_n__::text;
    END IF;
  END IF;
  RETURN QUERY SELECT mindscape_id__, mindscape_created__;
""",
)


class MemoryLimitReached(Exception):
    """REMEMBER found the tenant over its limit and wrote nothing; `live`: its live memories, the
    refused one included."""

    def __init__(self, live: int) -> None:
        super().__init__(f"{live} live memories")
        self.live = live


async def remember_at_once(
    writer: ScriptRunner,
    *,
    tenant_id: UUID,
    persona: str | None,
    kind: str | None,
    content: str,
    metadata: dict[str, Any],
    importance: float | None,
    expires_at: datetime | None,
    visibility: str | None,
    task_id: UUID | None,
    max_memories: int,
    model: str,
    vector: Sequence[float],
    seen: Mapping[str, Any],
    supersedes: UUID | None = None,
) -> tuple[UUID, bool] | None:
    """REMEMBER's (id, duplicate), for the persona of slug `persona` (NotFound when none is live;
    MemoryLimitReached over `max_memories`), as the new version of `supersedes` if given (kind,
    visibility and persona None: the old version's; else note, tenant and none); None when nothing
    was written and the caller should write in a transaction (`seen`, the tenant's settings
    `max_memories` and `model` came from, changed; the connection cannot run scripts; a case the
    script leaves to the transaction, NOT_AT_ONCE)."""
    try:
        rows = await writer.run(
            REMEMBER,
            *_insert_args(tenant_id, None, kind, content, metadata, importance, expires_at, visibility, task_id),
            LOCK_CLASS,
            max_memories,
            model,
            Vector(list(vector)),
            persona,
            supersedes,
            seen=seen,
        )
    except asyncpg.PostgresError as exc:
        if exc.sqlstate == NOT_AT_ONCE:
            return None
        if exc.sqlstate == NO_PERSONA and persona is not None:
            raise persona_not_found(persona) from None
        if exc.sqlstate != OVER_LIMIT:
            raise
        raise MemoryLimitReached(int(str(exc.detail))) from None
    if rows is None:
        return None
    return rows[0]["id"], not rows[0]["created"]


PENDING = """
SELECT m.id, m.content,
       CASE WHEN jsonb_typeof(m.metadata->'context') = 'string' THEN m.metadata->>'context' END AS context
FROM mindscape.memories m
WHERE m.tenant_id = $1
  AND NOT EXISTS (SELECT 1 FROM mindscape.memory_embeddings e
                  WHERE e.tenant_id = m.tenant_id AND e.model = $2 AND e.memory_id = m.id)
ORDER BY m.id
LIMIT $3
"""
COUNT_PENDING = """
SELECT count(*) FROM mindscape.memories m
WHERE m.tenant_id = $1
  AND NOT EXISTS (SELECT 1 FROM mindscape.memory_embeddings e
                  WHERE e.tenant_id = m.tenant_id AND e.model = $2 AND e.memory_id = m.id)
"""


async def pending(conn: Connection, *, tenant_id: UUID, model: str, limit: int) -> list[tuple[UUID, str, str | None]]:
    """(id, content, metadata context) of memories with no embedding for `model` yet, in a stable
    order (so batches resume)."""
    return [(r["id"], r["content"], r["context"]) for r in await conn.fetch(PENDING, tenant_id, model, limit)]


async def count_pending(conn: Connection, *, tenant_id: UUID, model: str) -> int:
    count: int = await conn.fetchval(COUNT_PENDING, tenant_id, model)
    return count


COUNT_EMBEDDED = """
SELECT count(*) FROM (
  SELECT 1 FROM mindscape.memory_embeddings WHERE tenant_id = $1 AND model = $2 LIMIT $3
) capped
"""


async def count_embedded(conn: Connection, *, tenant_id: UUID, model: str, cap: int) -> int:
    """How many of the tenant's memories have a `model` embedding, counting at most `cap`."""
    count: int = await conn.fetchval(COUNT_EMBEDDED, tenant_id, model, cap)
    return count


# Exact: ordering by the bare column cannot use the per-model HNSW index (built on a cast), so
# the tenant's rows are scanned through the primary key and every match is ranked exactly.
# (Without a query vector, nothing: RECALL_EXACT passes none for keyword recall.)
SEMANTIC_EXACT = (
    """
SELECT e.memory_id, e.embedding <=> $12::vector AS distance
FROM mindscape.memory_embeddings e
JOIN mindscape.memories m ON m.tenant_id = e.tenant_id AND m.id = e.memory_id
WHERE $12::vector IS NOT NULL AND e.tenant_id = $1 AND e.model = $11
"""
    + FILTERS
    + """
ORDER BY e.embedding <=> $12::vector
LIMIT $13
"""
)

# Approximate: the per-model partial HNSW index, scanned iteratively until enough of this
# tenant's rows turn up, then re-sorted (relaxed order). Other filters apply after the join,
# so the caller asks for extra candidates and falls back to the exact query when short.
# {dims} is a validated integer type modifier, not a value: it must match the index expression.
SEMANTIC_HNSW_TEMPLATE = """
SELECT c.memory_id, c.distance FROM (
  SELECT e.memory_id, e.embedding::vector({dims}) <=> $12::vector({dims}) AS distance
  FROM mindscape.memory_embeddings e
  WHERE e.tenant_id = $1 AND e.model = $11
  ORDER BY e.embedding::vector({dims}) <=> $12::vector({dims})
  LIMIT $13
) c
JOIN mindscape.memories m ON m.tenant_id = $1 AND m.id = c.memory_id
WHERE true {filters}
ORDER BY c.distance
"""

# The same through a large tenant's own index (vector_index.tenant_create_sql), whose expression
# only this query matches: l2_normalize does not change cosine distance.
SEMANTIC_OWN_TEMPLATE = """
SELECT c.memory_id, c.distance FROM (
  SELECT e.memory_id, l2_normalize(e.embedding::vector({dims}))::vector({dims}) <=> $12::vector({dims}) AS distance
  FROM mindscape.memory_embeddings e
  WHERE e.tenant_id = $1 AND e.model = $11
  ORDER BY l2_normalize(e.embedding::vector({dims}))::vector({dims}) <=> $12::vector({dims})
  LIMIT $13
) c
JOIN mindscape.memories m ON m.tenant_id = $1 AND m.id = c.memory_id
WHERE true {filters}
ORDER BY c.distance
"""

# enable_sort=off: the index's own order is the point of this path, so the planner must not
# prefer sorting the tenant's rows itself (it does for smaller tenants); the outer re-sort of a
# few rows is disabled for every plan alike. The last two are RECALL_SETTINGS, for the recall
# query that follows in the same transaction.
HNSW_SETTINGS = """
SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true),
       set_config('hnsw.ef_search', $1, true),
       set_config('enable_sort', 'off', true),
       set_config('plan_cache_mode', 'force_custom_plan', true),
       set_config('max_parallel_workers_per_gather', '0', true)
"""


# For the exact path and recall: a custom plan per call (a generic plan scans big tenants badly,
# and recall's switches fold away only in a custom one), and no parallel workers (starting one
# costs ~3-4 ms, more than a small tenant's whole scan).
PLAN_PER_CALL = {"plan_cache_mode": "force_custom_plan", "max_parallel_workers_per_gather": "0"}


def semantic_hnsw_sql(dims: int, *, own_index: bool = False) -> str:
    if not isinstance(dims, int) or not 1 <= dims <= 2000:  # pyright: ignore[reportUnnecessaryIsInstance]
        raise ValueError(f"bad vector dimensions {dims!r}")
    template = SEMANTIC_OWN_TEMPLATE if own_index else SEMANTIC_HNSW_TEMPLATE
    return template.format(dims=dims, filters=FILTERS)


async def semantic_candidates(
    conn: Connection,
    *,
    tenant_id: UUID,
    model: str,
    dims: int,
    vector: Sequence[float],
    filters: Filters,
    limit: int,
    exact: bool,
    ef_search: int = 100,
    own_index: bool = False,
) -> list[tuple[UUID, float]]:
    """Up to `limit` (id, cosine distance) pairs, nearest first; approximate ones from the tenant's own
    index with `own_index`, else from the model's shared one."""
    params = (*filters.params(tenant_id), model, list(vector), limit)
    if exact:
        await set_locally(conn, PLAN_PER_CALL)
        rows = await conn.fetch(SEMANTIC_EXACT, *params)
    else:
        # force_custom_plan lets the planner see the model value and match the partial index.
        await conn.execute(HNSW_SETTINGS, str(max(ef_search, limit)))
        rows = await conn.fetch(semantic_hnsw_sql(dims, own_index=own_index), *params)
    return [(r["memory_id"], float(r["distance"])) for r in rows]


# Recall in one statement: the semantic candidates, the keyword candidates, their fusion and the
# k best memories' rows (memory/recall.py says why each step is as it is).
#
# Semantic: the `depth` nearest embeddings ($13), computed here exactly (RECALL_EXACT) or given
# by an approximate search ($23 ids, $24 distances: RECALL_GIVEN); those at least $18 similar
# and holding no excluded term ($15) are kept, ranked by distance. No query vector ($12 NULL):
# none.
#
# Keyword (only with $19): any term may match (see queries/fulltext.py). Each term weighs its
# inverse document frequency (BM25's idf) in the tenant, so rare words outweigh common ones:
# ts_rank_cd alone knows nothing of the tenant's other memories, and let a speaker's name present
# in half of them outrank the one word that mattered (docs/memory-ranking.md). A memory scores the
# idf of the terms in its content, plus $17 (the context weight) times the idf of those in its
# context (`context_search`, migration 0007), as a share of the query's whole idf: its
# `coverage`, 1 when the content has every term, comparable across queries. The tenant's rows are
# read once: `hits` keeps those holding any term (one OR-ed tsquery), with whether the filters and
# exclusions let them through; each term's document frequency is counted in `hits` (every row
# holding the term is there), and each eligible hit's coverage is summed over the terms in place.
# Reading the table once per term (for its frequency, then again for its matches) and grouping one
# row per memory and term cost ~30 ms a term at 10,000 memories (benchmarks/query_bounds.py has
# both). The corpus count stops at $16 rows, and a frequency at the corpus count: a term that
# common scores ~0 anyway. Picked: the `depth` best matches, plus any kept semantic candidate that
# matches, so that both signals are known for each; each with its cosine similarity (NULL when not
# embedded yet), and dropped under the $18 floor. Coverage is rounded so that equal shares tie
# exactly (the sum's order varies); the newest memory ranks first among equals.
#
# Fusion: $20 is the mode; the score is the similarity in semantic mode, the coverage in keyword
# mode or without a query vector, else $21 * similarity + (1 - $21) * coverage (no similarity
# counts 0). Ties go to the better rank in either signal, then to semantic candidates. A convex
# combination of the two scores, not reciprocal rank fusion: ranks drop how far apart candidates
# are, and on LoCoMo RRF lost 0.03 recall@10 and 0.08 recall@5 against it. The
# `$12 IS NULL` and `$19` switches fold away in the per-call plan (run it with PLAN_PER_CALL).
# Memory m holds none of the excluded terms ($15).
_NOT_EXCLUDED = """NOT EXISTS (
    SELECT 1 FROM unnest($15::text[]) AS x(term) WHERE m.search @@ websearch_to_tsquery('english', x.term)
  )"""
# Best first: by score, then by the better rank in either signal, then semantic candidates first.
_BEST_FIRST = """score DESC, least(coalesce(semantic_rank, 1073741824), coalesce(keyword_rank, 1073741824)),
         semantic_rank NULLS LAST, keyword_rank"""
_RECALL_KEPT = (
    """
), kept AS MATERIALIZED (
  SELECT s.id, 1 - s.distance AS similarity, row_number() OVER (ORDER BY s.distance, s.id) AS semantic_rank
  FROM semantic s
  JOIN mindscape.memories m ON m.tenant_id = $1 AND m.id = s.id
  WHERE 1 - s.distance >= $18 AND """
    + _NOT_EXCLUDED
    + """
), terms AS MATERIALIZED (
  SELECT DISTINCT tq FROM unnest($14::text[]) AS t(term), websearch_to_tsquery('english', t.term) AS tq
  WHERE $19 AND numnode(tq) > 0
), anyterm AS MATERIALIZED (
  SELECT string_agg('(' || tq::text || ')', ' | ')::tsquery AS q FROM terms
), corpus AS MATERIALIZED (
  SELECT count(*) AS n FROM (SELECT 1 FROM mindscape.memories m WHERE $19 AND m.tenant_id = $1 LIMIT $16) capped
), hits AS MATERIALIZED (
  SELECT m.id, m.created_at, m.search, m.context_search,
         (true"""
)
_RECALL_KEYWORD = (
    """
          AND """
    + _NOT_EXCLUDED
    + """) AS eligible
  FROM mindscape.memories m, anyterm
  WHERE $19 AND m.tenant_id = $1 AND (m.search @@ anyterm.q OR m.context_search @@ anyterm.q)
), weights AS MATERIALIZED (
  SELECT terms.tq, ln(1 + (corpus.n - df.n + 0.5) / (df.n + 0.5)) AS idf
  FROM terms CROSS JOIN corpus
  CROSS JOIN LATERAL (SELECT least(count(*), corpus.n) AS n FROM hits h WHERE h.search @@ terms.tq) df
), total AS MATERIALIZED (
  SELECT sum(idf) AS idf FROM weights
), matched AS MATERIALIZED (
  SELECT h.id, h.created_at,
         round((
           (SELECT sum(w.idf * ((h.search @@ w.tq)::int + $17::float8 * (h.context_search @@ w.tq)::int))
            FROM weights w)
           / total.idf)::numeric, 12)::float8 AS coverage
  FROM hits h, total
  WHERE h.eligible
), picked AS (
  (SELECT id, coverage, created_at FROM matched ORDER BY coverage DESC, created_at DESC, id LIMIT $13)
  UNION
  SELECT id, coverage, created_at FROM matched WHERE id IN (SELECT id FROM kept)
), keyword AS MATERIALIZED (
  SELECT p.id, p.coverage, v.similarity,
         row_number() OVER (ORDER BY p.coverage DESC, p.created_at DESC, p.id) AS keyword_rank
  FROM picked p
  LEFT JOIN mindscape.memory_embeddings e ON e.tenant_id = $1 AND e.model = $11 AND e.memory_id = p.id
  CROSS JOIN LATERAL (SELECT 1 - (e.embedding <=> $12::vector) AS similarity) v
  WHERE v.similarity IS NULL OR v.similarity >= $18
), fused AS (
  SELECT coalesce(s.id, k.id) AS id, coalesce(s.similarity, k.similarity) AS similarity,
         coalesce(k.coverage, 0) AS coverage, s.semantic_rank, k.keyword_rank
  FROM kept s FULL JOIN keyword k ON k.id = s.id
), best AS (
  SELECT f.*, CASE
      WHEN $20 = 'semantic' THEN coalesce(f.similarity, 0)
      WHEN $20 = 'keyword' OR $12::vector IS NULL THEN f.coverage
      ELSE $21 * coalesce(f.similarity, 0) + (1 - $21) * f.coverage
    END AS score
  FROM fused f
  ORDER BY """
    + _BEST_FIRST
    + """
  LIMIT $22
)
SELECT """
)
_RECALL_TAIL = (
    """, b.score, b.similarity, b.semantic_rank, b.keyword_rank
FROM best b
JOIN mindscape.memories m ON m.tenant_id = $1 AND m.id = b.id
LEFT JOIN mindscape.personas p ON p.tenant_id = m.tenant_id AND p.id = m.persona_id
ORDER BY """
    + _BEST_FIRST
    + "\n"
)
_SEMANTIC_EXACT = "WITH semantic(id, distance) AS MATERIALIZED (" + SEMANTIC_EXACT
_SEMANTIC_GIVEN = """
WITH semantic(id, distance) AS MATERIALIZED (
  SELECT g.id, g.distance FROM unnest($23::uuid[], $24::float8[]) AS g(id, distance)
"""


def _recall_sql(semantic: str) -> str:
    return semantic + _RECALL_KEPT + FILTERS + _RECALL_KEYWORD + MEMORY_FIELDS + _RECALL_TAIL


RECALL_EXACT = _recall_sql(_SEMANTIC_EXACT)
RECALL_GIVEN = _recall_sql(_SEMANTIC_GIVEN)
KEYWORD_COUNT_CAP = 20_000


@dataclass(frozen=True)
class RecallArgs:
    """One recall's arguments, as RECALL_EXACT and RECALL_GIVEN take them."""

    filters: Filters
    model: str
    vector: Sequence[float] | None  # None: no semantic signal
    depth: int  # candidates per signal
    included: Sequence[str]
    excluded: Sequence[str]
    keyword: bool  # search by words
    context_weight: float
    min_similarity: float
    mode: str
    similarity_weight: float
    k: int

    def params(self, tenant_id: UUID) -> tuple[Any, ...]:
        return (
            *self.filters.params(tenant_id),
            self.model,
            None if self.vector is None else list(self.vector),
            self.depth,
            list(self.included),
            list(self.excluded),
            KEYWORD_COUNT_CAP,
            self.context_weight,
            self.min_similarity,
            self.keyword,
            self.mode,
            self.similarity_weight,
            self.k,
        )


async def recall(
    reader: Reader, *, tenant_id: UUID, args: RecallArgs, given: Sequence[tuple[UUID, float]] | None = None
) -> list[RecalledMemory]:
    """The k best memories, best first; semantic candidates searched exactly, or `given` as (id,
    cosine distance) pairs, nearest first. Run with PLAN_PER_CALL in effect."""
    if given is None:
        rows = await reader.fetch(RECALL_EXACT, *args.params(tenant_id))
    else:
        ids, distances = [i for i, _ in given], [d for _, d in given]
        rows = await reader.fetch(RECALL_GIVEN, *args.params(tenant_id), ids, distances)
    return [RecalledMemory.model_validate(dict(r)) for r in rows]


_MEMORY_COLUMNS = (
    "SELECT "
    + MEMORY_FIELDS
    + """
FROM mindscape.memories m
LEFT JOIN mindscape.personas p ON p.tenant_id = m.tenant_id AND p.id = m.persona_id
"""
)
FETCH = _MEMORY_COLUMNS + "WHERE m.tenant_id = $1 AND m.id = ANY($2::uuid[])"
GET = _MEMORY_COLUMNS + "WHERE m.tenant_id = $1 AND m.id = $2 AND (m.expires_at IS NULL OR m.expires_at > now())"
RECENT = (
    _MEMORY_COLUMNS
    + "WHERE m.tenant_id = $1"
    + FILTERS
    + """
ORDER BY m.created_at DESC
LIMIT $11
"""
)


async def fetch(conn: Connection, *, tenant_id: UUID, ids: Sequence[UUID]) -> dict[UUID, Memory]:
    rows = await conn.fetch(FETCH, tenant_id, list(ids))
    return {r["id"]: Memory.model_validate(dict(r)) for r in rows}


async def get(conn: Connection, *, tenant_id: UUID, memory_id: UUID) -> Memory | None:
    row = await conn.fetchrow(GET, tenant_id, memory_id)
    return Memory.model_validate(dict(row)) if row else None


async def recent(conn: Connection, *, tenant_id: UUID, filters: Filters, limit: int) -> list[Memory]:
    rows = await conn.fetch(RECENT, *filters.params(tenant_id), limit)
    return [Memory.model_validate(dict(r)) for r in rows]


# Facts that change: a version chain is linked by `superseded_by` (old -> new). A memory has at
# most one successor, and only a current version (valid_to IS NULL) can be superseded, so a chain
# is a line. Only versions the caller may see are walked (row-level security).
# A memory's version chain: `back` its older versions, `fwd` itself and its newer ones.
_CHAIN_OF = """
WITH RECURSIVE back AS (
  SELECT m.id, 0 AS depth FROM mindscape.memories m WHERE m.tenant_id = $1 AND m.id = $2
  UNION ALL
  SELECT p.id, b.depth - 1 FROM back b
  JOIN mindscape.memories p ON p.tenant_id = $1 AND p.superseded_by = b.id
  WHERE b.depth > -10000
), fwd AS (
  SELECT m.id, m.superseded_by, 0 AS depth FROM mindscape.memories m WHERE m.tenant_id = $1 AND m.id = $2
  UNION ALL
  SELECT n.id, n.superseded_by, f.depth + 1 FROM fwd f
  JOIN mindscape.memories n ON n.tenant_id = $1 AND n.id = f.superseded_by
  WHERE f.depth < 10000
)"""
CHAIN = _CHAIN_OF + "\nSELECT id FROM (SELECT id, depth FROM back UNION SELECT id, depth FROM fwd) c ORDER BY depth"


async def chain(conn: Connection, *, tenant_id: UUID, memory_id: UUID) -> list[UUID]:
    """The ids of `memory_id`'s version chain, oldest first; empty when there is no such memory."""
    return [r["id"] for r in await conn.fetch(CHAIN, tenant_id, memory_id)]


async def versions(conn: Connection, *, tenant_id: UUID, memory_id: UUID) -> list[Memory]:
    """`memory_id`'s version chain as memories, oldest first."""
    ids = await chain(conn, tenant_id=tenant_id, memory_id=memory_id)
    found = await fetch(conn, tenant_id=tenant_id, ids=ids)
    return [found[i] for i in ids if i in found]


STATE = (
    "SELECT id, version, valid_to, superseded_by, visibility, written_by, persona_id, metadata, kind, importance"
    ", content_sha256, expires_at FROM mindscape.memories WHERE tenant_id = $1 AND id = $2"
)


async def supersede(conn: Connection, *, tenant_id: UUID, old_id: UUID, new_id: UUID) -> bool:
    """Close `old_id` as superseded by `new_id`; False when it is not (or no longer) current."""
    return await conn.fetchval(SUPERSEDE, tenant_id, old_id, new_id) is not None


async def state(conn: Connection, *, tenant_id: UUID, memory_id: UUID) -> dict[str, Any] | None:
    """The columns supersede and update decide on, or None when the caller cannot see such a memory."""
    row = await conn.fetchrow(STATE, tenant_id, memory_id)
    return dict(row) if row else None


_CHANGE = """
UPDATE mindscape.memories m SET
    kind = coalesce($4, m.kind),
    metadata = coalesce($5, m.metadata),
    importance = CASE WHEN $8 THEN NULL ELSE coalesce($6, m.importance) END,
    visibility = coalesce($7, m.visibility),
    expires_at = CASE WHEN $9 THEN NULL WHEN $10::int IS NOT NULL THEN now() + make_interval(days => $10)
                      ELSE m.expires_at END,
    version = m.version + 1,
    updated_at = now()
WHERE m.tenant_id = $1 AND m.id = $2 AND m.version = $3 AND m.valid_to IS NULL"""
UPDATE = _CHANGE + "\nRETURNING m.id"
# update_memory's fast path: the change and the memory read back in one statement, when the rules
# that need no read allow it: metadata.context ($5) exactly as it is, a private memory only for
# its writer, no persona visibility (its check needs the caller's persona binding), not expired
# unless the change renews or clears the expiry. No row: not necessarily a refusal; the caller
# decides with a read first (memory.writes.update).
UPDATE_AT_ONCE = f"""
WITH m AS ({_CHANGE}
    AND ($5::jsonb IS NULL OR ($5 -> 'context') IS NOT DISTINCT FROM (m.metadata -> 'context'))
    AND ($7::text IS DISTINCT FROM 'private' OR m.written_by = current_setting('app.principal'))
    AND $7::text IS DISTINCT FROM 'persona'
    AND (m.expires_at IS NULL OR m.expires_at > now() OR $9 OR $10::int IS NOT NULL)
  RETURNING m.*
)
SELECT {MEMORY_FIELDS}
FROM m LEFT JOIN mindscape.personas p ON p.tenant_id = m.tenant_id AND p.id = m.persona_id
"""


@dataclass(frozen=True)
class MemoryChanges:
    kind: str | None = None
    metadata: dict[str, Any] | None = None
    importance: float | None = None
    visibility: str | None = None
    clear_importance: bool = False
    clear_expiry: bool = False
    expires_in_days: int | None = None


def _change_args(tenant_id: UUID, memory_id: UUID, expected_version: int, changes: MemoryChanges) -> tuple[Any, ...]:
    c = changes
    return (
        tenant_id,
        memory_id,
        expected_version,
        c.kind,
        c.metadata,
        c.importance,
        c.visibility,
        c.clear_importance,
        c.clear_expiry,
        c.expires_in_days,
    )


async def update(
    conn: Connection, *, tenant_id: UUID, memory_id: UUID, expected_version: int, changes: MemoryChanges
) -> bool:
    """Apply `changes` to the current version at `expected_version`; False when it is not that."""
    return await conn.fetchval(UPDATE, *_change_args(tenant_id, memory_id, expected_version, changes)) is not None


async def update_at_once(
    conn: Connection, *, tenant_id: UUID, memory_id: UUID, expected_version: int, changes: MemoryChanges
) -> Memory | None:
    """UPDATE_AT_ONCE: the memory as changed, or None when the fast path did not apply (see there)."""
    row = await conn.fetchrow(UPDATE_AT_ONCE, *_change_args(tenant_id, memory_id, expected_version, changes))
    return Memory.model_validate(dict(row)) if row else None


# Browse: newest first, a keyset cursor on (created_at, id), and a count that stops at a bound.
# list_memories in one statement: the page ($11, $12: the cursor; $13: rows) and how many match,
# counting at most $14, from the same snapshot. Each row carries the total; an empty page is one
# row with only the total.
PAGE = f"""
WITH total AS (
  SELECT count(*) AS total FROM (
    SELECT 1 FROM mindscape.memories m WHERE m.tenant_id = $1 {FILTERS}
    LIMIT $14
  ) capped
)
SELECT total.total, page.* FROM total LEFT JOIN LATERAL (
  {_MEMORY_COLUMNS}WHERE m.tenant_id = $1 {FILTERS}
    AND ($11::timestamptz IS NULL OR (m.created_at, m.id) < ($11, $12::uuid))
  ORDER BY m.created_at DESC, m.id DESC
  LIMIT $13
) page ON true
ORDER BY page.created_at DESC, page.id DESC
"""


async def page(
    conn: Reader,
    *,
    tenant_id: UUID,
    filters: Filters,
    limit: int,
    after: tuple[datetime, UUID] | None,
    cap: int,
) -> tuple[list[Memory], int]:
    """Up to `limit` memories newest first (after the cursor `after`), and how many match in all,
    counting at most `cap`."""
    at, last = after if after is not None else (None, None)
    rows = await conn.fetch(PAGE, *filters.params(tenant_id), at, last, limit, cap)
    found = [Memory.model_validate({k: v for k, v in r.items() if k != "total"}) for r in rows if r["id"] is not None]
    return found, rows[0]["total"]


# The chain found and deleted in one statement (one snapshot): forget's one round trip.
DELETE = (
    _CHAIN_OF
    + "\nDELETE FROM mindscape.memories d"
    + "\nWHERE d.tenant_id = $1 AND d.id IN (SELECT id FROM back UNION SELECT id FROM fwd)"
)


async def delete(conn: Connection, *, tenant_id: UUID, memory_id: UUID) -> int:
    """Delete one memory with every version of its chain the caller can see (and, by cascade, their
    embeddings); how many rows went (0: no such memory). A version the caller cannot see stays,
    closed: its `superseded_by` is set to NULL by the foreign key, so nothing dangles."""
    done = await conn.execute(DELETE, tenant_id, memory_id)
    return int(done.split()[-1])


# Bulk import (mindscape memory import): the checks it makes before writing anything.

# Only what an import could collide with: current tenant-visible memories (the operator's session
# sees every memory, but a private one is never a reason to skip, nor reported).
EXISTING = """
SELECT persona_id, content_sha256, visibility FROM mindscape.memories
WHERE tenant_id = $1 AND content_sha256 = ANY($2::bytea[]) AND visibility <> 'private' AND valid_to IS NULL
"""


async def existing(
    conn: Connection, *, tenant_id: UUID, hashes: Sequence[bytes]
) -> set[tuple[UUID | None, bytes, str]]:
    """(persona id, content hash, visibility) of the stored tenant and persona memories among
    `hashes`: what an insert would skip as duplicates."""
    rows = await conn.fetch(EXISTING, tenant_id, list(hashes))
    return {(r["persona_id"], r["content_sha256"], r["visibility"]) for r in rows}
