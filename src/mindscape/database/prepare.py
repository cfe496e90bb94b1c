"""Getting a database ready for a command: where to connect, migrations and the vector index."""

from __future__ import annotations

from mindscape.config.settings import Settings
from mindscape.database import migrate, vector_index
from mindscape.database.pool import connect
from mindscape.database.targets import resolve_targets
from mindscape.database.urls import Targets
from mindscape.embeddings.base import ModelSpec
from mindscape.embeddings.factory import configured_spec


async def prepare(settings: Settings, *, migrate_embedded: bool = True) -> Targets:
    """Resolve connection targets; the embedded database is always brought to the latest schema.

    It also gets the configured model's HNSW index: recall works without it, but ranks exactly,
    which gets slow as a tenant grows. On an external database `mindscape db upgrade` builds it.
    """
    targets = await resolve_targets(settings)
    if targets.embedded and migrate_embedded:
        await migrate.upgrade(targets.owner)
        await ensure_vector_index(targets.owner, configured_spec(settings))
    return targets


async def ensure_vector_index(owner_url: str, spec: ModelSpec) -> bool:
    """Build `spec`'s HNSW index unless it exists; True when it was built now.

    Cheap when it exists: one connection and one catalog lookup. Skipped (False) on a schema that
    is not at the latest revision, which may not have the embeddings table.
    """
    conn = await connect(owner_url)
    try:
        if await migrate.current_revision(conn) != migrate.head_revision():
            return False
        return await vector_index.ensure_index(conn, spec)
    finally:
        await conn.close()
