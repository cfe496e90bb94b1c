"""Checks `mindscape serve` makes before it starts several HTTP workers."""

from __future__ import annotations

from mindscape.config.settings import Settings
from mindscape.database.pool import Pool
from mindscape.queries import capacity


async def workers_capacity_warning(settings: Settings, pool: Pool) -> str | None:
    """Why the database may refuse `http_workers` x `http_connections` connections, or None."""
    async with pool.acquire() as conn:
        usable = await capacity.usable_connections(conn)
    needed = settings.http_workers * settings.http_connections
    if needed <= usable:
        return None
    # A warning, not a refusal: pools open connections only as load needs them.
    listener = " + 1 credential listener" if settings.credential_listener else ""
    return (
        f"{settings.http_workers} workers x (pool_max_size {settings.pool_max_size} + auth_pool_size "
        f"{settings.auth_pool_size}{listener}) = {needed} "
        f"connections, but the database accepts {usable}; lower pool_max_size or max_connections will "
        "refuse some under load"
    )
