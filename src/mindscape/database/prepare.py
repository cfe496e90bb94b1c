"""Getting a database ready for a command: where to connect, migrations and the vector index."""

from __future__ import annotations

from mindscape.config.settings import Settings
from mindscape.database import migrate, vector_index
from mindscape.database.embedded import start_embedded
from mindscape.database.pool import owner_connection
from mindscape.database.targets import Targets
from mindscape.embeddings.base import ModelSpec
from mindscape.embeddings.factory import configured_spec


async def resolve_targets(settings: Settings) -> Targets:
    """An external URL from the settings, or the embedded server (started or joined)."""
    if settings.database_url is None:
        return await start_embedded(settings.data_dir)
    runtime = settings.database_url.get_secret_value()
    owner = settings.owner_database_url.get_secret_value() if settings.owner_database_url else runtime
    return Targets(runtime=runtime, owner=owner, embedded=False, pooled=settings.database_pooler == "transaction")


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
    async with owner_connection(owner_url) as conn:
        if await migrate.current_revision(conn) != migrate.head_revision():
            return False
        return await vector_index.ensure_index(conn, spec)
