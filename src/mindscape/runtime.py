"""Getting a database ready for a command: where to connect, and migrations on the embedded one."""

from __future__ import annotations

from mindscape.database import migrate
from mindscape.database.targets import resolve_targets
from mindscape.database.urls import Targets
from mindscape.settings import Settings


async def prepare(settings: Settings, *, migrate_embedded: bool = True) -> Targets:
    """Resolve connection targets; the embedded database is always brought to the latest schema."""
    targets = await resolve_targets(settings)
    if targets.embedded and migrate_embedded:
        await migrate.upgrade(targets.owner)
    return targets
