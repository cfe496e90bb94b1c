"""Prefix lookups for completion/complete: persona slugs and record ids, in the caller's tenant.

Each takes the text typed so far and returns at most `limit` + 1 matches (one more than shown:
the caller learns whether there are more). Prefixes are matched with starts_with, so `%` and `_`
are plain characters. Ids match on their text form; the newest records come first.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from mindscape.database.pool import Connection

PERSONA_SLUGS = """
SELECT slug FROM mindscape.personas
WHERE tenant_id = $1 AND deleted_at IS NULL AND starts_with(slug, $2)
ORDER BY slug
LIMIT $3
"""

MEMORY_IDS = """
SELECT id::text AS id FROM mindscape.memories
WHERE tenant_id = $1 AND starts_with(id::text, $2) AND (expires_at IS NULL OR expires_at > now())
ORDER BY created_at DESC, id
LIMIT $3
"""

CAMPAIGN_IDS = """
SELECT id::text AS id FROM mindscape.campaigns
WHERE tenant_id = $1 AND starts_with(id::text, $2)
ORDER BY created_at DESC, id
LIMIT $3
"""

TASK_IDS = """
SELECT id::text AS id FROM mindscape.tasks
WHERE tenant_id = $1 AND starts_with(id::text, $2)
ORDER BY created_at DESC, id
LIMIT $3
"""


async def persona_slugs(conn: Connection, *, tenant_id: UUID, prefix: str, limit: int) -> list[str]:
    return [row["slug"] for row in await conn.fetch(PERSONA_SLUGS, tenant_id, prefix, limit + 1)]


Record = Literal["memory", "campaign", "task"]
RECORD_IDS: dict[Record, str] = {"memory": MEMORY_IDS, "campaign": CAMPAIGN_IDS, "task": TASK_IDS}


async def record_ids(conn: Connection, record: Record, *, tenant_id: UUID, prefix: str, limit: int) -> list[str]:
    return [row["id"] for row in await conn.fetch(RECORD_IDS[record], tenant_id, prefix, limit + 1)]
