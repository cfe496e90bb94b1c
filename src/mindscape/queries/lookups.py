"""Slug -> id lookups, written once: personas within a tenant, and tenants by slug.

Persona lookups run inside the tenant transaction (row-level security applies); a slug that
names no live persona is a NotFound with the same message everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from mindscape.database.pool import Connection, Reader
from mindscape.errors import NotFound
from mindscape.models.tenant import Tenant
from mindscape.queries import tenants


def persona_not_found(slug: str) -> NotFound:
    return NotFound(f"no persona with slug {slug!r} in this workspace; call list_personas to see the slugs")


def tenant_not_found(slug: str) -> NotFound:
    return NotFound(f"tenant {slug!r} does not exist; `mindscape tenant list` shows the tenants")


PERSONA_IDS = """
SELECT slug, id FROM mindscape.personas
WHERE tenant_id = $1 AND slug = ANY($2::text[]) AND deleted_at IS NULL
"""


def live_persona(tenant: str, slug: str) -> str:
    """A scalar subquery: the id of the live persona whose slug is the parameter `slug` of the
    tenant `tenant` (parameters such as "$2"), NULL when there is none. A query that filters by a
    persona this way needs no lookup first; when it finds nothing, `persona_id` tells whether the
    slug is why (NotFound)."""
    return (
        f"(SELECT lp.id FROM mindscape.personas lp"
        f" WHERE lp.tenant_id = {tenant} AND lp.slug = {slug}::text AND lp.deleted_at IS NULL)"
    )


async def live_persona_ids(conn: Reader, *, tenant_id: UUID, slugs: Sequence[str]) -> dict[str, UUID]:
    """Slug -> id for those of `slugs` that name a live persona (one query for any number)."""
    rows = await conn.fetch(PERSONA_IDS, tenant_id, list(slugs))
    return {r["slug"]: r["id"] for r in rows}


async def persona_ids(conn: Reader, *, tenant_id: UUID, slugs: Sequence[str]) -> list[UUID]:
    """Ids of `slugs`, in order; the first unknown slug is a NotFound."""
    found = await live_persona_ids(conn, tenant_id=tenant_id, slugs=slugs)
    for slug in slugs:
        if slug not in found:
            raise persona_not_found(slug)
    return [found[slug] for slug in slugs]


async def persona_id(conn: Reader, *, tenant_id: UUID, slug: str | None) -> UUID | None:
    """The persona's id; None when no slug is given; NotFound when it names no live persona."""
    if slug is None:
        return None
    return (await persona_ids(conn, tenant_id=tenant_id, slugs=[slug]))[0]


async def tenant_by_slug(conn: Connection, *, slug: str) -> Tenant:
    """The tenant (owner connection); NotFound when there is none."""
    found = await tenants.get_by_slug(conn, slug=slug)
    if found is None:
        raise tenant_not_found(slug)
    return found


PERSONA_SLUG = "SELECT slug FROM mindscape.personas WHERE id = $1"


async def persona_slug(conn: Connection, persona_id: UUID | None) -> str | None:
    """The slug of a persona id (row-level security limits it to the transaction's tenant)."""
    if persona_id is None:
        return None
    return await conn.fetchval(PERSONA_SLUG, persona_id)
