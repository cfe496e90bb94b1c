"""Persona reads and the import upsert."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from asyncpg import Record

from mindscape.database.pool import Connection, Reader
from mindscape.models.persona import Persona, PersonaIn, PersonaPage, PersonaSummary, TraitFilter
from mindscape.queries import cursor, fulltext

GET = """
SELECT slug, name, summary, traits, instructions, tags, version, created_at, updated_at
FROM mindscape.personas
WHERE tenant_id = $1 AND slug = $2 AND deleted_at IS NULL
"""

LIST_BY_SLUG = """
SELECT slug, name, left(summary, 200) AS summary, tags
FROM mindscape.personas
WHERE tenant_id = $1 AND deleted_at IS NULL
  AND ($2::text[] IS NULL OR tags @> $2)
  AND ($3::jsonb IS NULL OR traits @> $3)
  AND ($4::text IS NULL OR slug > $4)
ORDER BY slug
LIMIT $5
"""

# Any term may match (queries/fulltext.py): the rank counts the matched terms, plus their mean
# ts_rank_cd over name (weight A) and summary (B) squashed below 1 (flag 32), so a persona matching
# more terms always ranks first. A substring match on name or slug adds 1, so that short or
# partial names ("ad" for "Ada") still find their persona. Excluded terms ($9) remove a persona.
LIST_BY_RANK = """
SELECT slug, name, summary, tags, rank FROM (
  SELECT p.slug, p.name, left(p.summary, 200) AS summary, p.tags,
         (coalesce(t.matched, 0) + coalesce(t.cd, 0)
          + CASE WHEN p.name ILIKE $3 OR p.slug ILIKE $3 THEN 1 ELSE 0 END)::real AS rank
  FROM mindscape.personas p
  LEFT JOIN LATERAL (
    SELECT count(*) AS matched, avg(ts_rank_cd(p.search, tq, 32)) AS cd
    FROM unnest($2::text[]) AS x(term), websearch_to_tsquery('english', x.term) AS tq
    WHERE numnode(tq) > 0 AND p.search @@ tq
  ) t ON true
  WHERE p.tenant_id = $1 AND p.deleted_at IS NULL
    AND (t.matched > 0 OR p.name ILIKE $3 OR p.slug ILIKE $3)
    AND NOT EXISTS (
      SELECT 1 FROM unnest($9::text[]) AS x(term) WHERE p.search @@ websearch_to_tsquery('english', x.term)
    )
    AND ($4::text[] IS NULL OR p.tags @> $4)
    AND ($5::jsonb IS NULL OR p.traits @> $5)
) ranked
WHERE $6::real IS NULL OR rank < $6 OR (rank = $6 AND slug > $7)
ORDER BY rank DESC, slug
LIMIT $8
"""

UPSERT = """
INSERT INTO mindscape.personas AS p (tenant_id, slug, name, summary, traits, instructions, tags)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (tenant_id, slug) DO UPDATE
SET name = EXCLUDED.name, summary = EXCLUDED.summary, traits = EXCLUDED.traits,
    instructions = EXCLUDED.instructions, tags = EXCLUDED.tags,
    deleted_at = NULL, version = p.version + 1, updated_at = now()
WHERE (p.name, p.summary, p.traits, p.instructions, p.tags, p.deleted_at IS NULL)
      IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.summary, EXCLUDED.traits, EXCLUDED.instructions, EXCLUDED.tags, true)
RETURNING (xmax = 0) AS created
"""


async def get(conn: Reader, *, tenant_id: UUID, slug: str) -> Persona | None:
    row = await conn.fetchrow(GET, tenant_id, slug)
    return Persona.model_validate(dict(row)) if row else None


def trait_containment(trait: TraitFilter) -> dict[str, Any]:
    """{"path": "a.b", "equals": 1} -> {"a": {"b": 1}}, matched with jsonb containment (GIN-indexed)."""
    value: Any = trait.equals
    for part in reversed(trait.path.split(".")):
        value = {part: value}
    result: dict[str, Any] = value
    return result


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def list_page(
    conn: Reader,
    *,
    tenant_id: UUID,
    query: str | None,
    tags: list[str] | None,
    trait: TraitFilter | None,
    limit: int,
    after: str | None,
) -> PersonaPage:
    """One page of persona summaries; `after` is the cursor of the previous page."""
    # The tenant is part of the fingerprint: a cursor never carries over to another tenant.
    filters = {
        "tenant": str(tenant_id),
        "query": query,
        "tags": sorted(tags) if tags else None,
        "trait": trait.model_dump() if trait else None,
    }
    key = cursor.decode(after, filters) if after else None
    contains = trait_containment(trait) if trait else None
    tag_list = tags or None
    if query is None:
        last_slug = cursor.key_str(key, 0) if key else None
        rows = await conn.fetch(LIST_BY_SLUG, tenant_id, tag_list, contains, last_slug, limit + 1)
        key_of = _slug_key
    else:
        last_rank = cursor.key_float(key, 0) if key else None
        last_slug = cursor.key_str(key, 1) if key else None
        terms = fulltext.parse(query)
        rows = await conn.fetch(
            LIST_BY_RANK,
            tenant_id,
            list(terms.included),
            _like_pattern(terms.text),
            tag_list,
            contains,
            last_rank,
            last_slug,
            limit + 1,
            list(terms.excluded),
        )
        key_of = _rank_key
    page = [PersonaSummary(slug=r["slug"], name=r["name"], summary=r["summary"], tags=r["tags"]) for r in rows[:limit]]
    more = len(rows) > limit
    return PersonaPage(personas=page, next_cursor=cursor.encode(key_of(rows[limit - 1]), filters) if more else None)


def _slug_key(row: Record) -> list[Any]:
    return [row["slug"]]


def _rank_key(row: Record) -> list[Any]:
    return [row["rank"], row["slug"]]


async def upsert(conn: Connection, *, tenant_id: UUID, persona: PersonaIn) -> str:
    """Create or update one persona by slug; returns 'created', 'updated' or 'unchanged'."""
    p = persona
    row = await conn.fetchrow(UPSERT, tenant_id, p.slug, p.name, p.summary, p.traits, p.instructions, p.tags)
    if row is None:
        return "unchanged"
    return "created" if row["created"] else "updated"
