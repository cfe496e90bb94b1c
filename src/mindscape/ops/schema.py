"""Schema migrations behind `mindscape db ...`, over the owner connection."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from alembic.util import CommandError

from mindscape.config.settings import Settings
from mindscape.database import migrate
from mindscape.database.pool import owner_connection
from mindscape.database.prepare import ensure_vector_index
from mindscape.database.targets import Targets
from mindscape.embeddings.factory import configured_spec
from mindscape.errors import InvalidArgument


async def _migrate(step: Callable[[str, str], Awaitable[None]], owner_url: str, revision: str) -> None:
    """An Alembic step whose anticipated failures (no database, unknown revision) are one line, not a traceback."""
    async with owner_connection(owner_url):  # a one-line StartupError without the password
        pass
    try:
        await step(owner_url, revision)
    except CommandError as exc:
        raise InvalidArgument(f"{exc}; `mindscape db current` shows the revisions") from exc


async def upgrade(settings: Settings, targets: Targets, revision: str) -> None:
    await _migrate(migrate.upgrade, targets.owner, revision)
    # Which model is in use is configuration, so its index is not a migration.
    await ensure_vector_index(targets.owner, configured_spec(settings))


async def downgrade(targets: Targets, revision: str) -> None:
    await _migrate(migrate.downgrade, targets.owner, revision)


async def current_revision(targets: Targets) -> str | None:
    async with owner_connection(targets.owner) as conn:
        return await migrate.current_revision(conn)
