"""Settings for the rest of the open transaction, by name (planner settings a query needs)."""

from __future__ import annotations

from collections.abc import Mapping

from mindscape.database.pool import Connection

SET_LOCALLY = "SELECT set_config(s.name, s.value, true) FROM unnest($1::text[], $2::text[]) AS s(name, value)"


async def set_locally(conn: Connection, settings: Mapping[str, str]) -> None:
    """Set `settings` (name: value) until the open transaction ends; nothing to send for none."""
    if settings:
        await conn.execute(SET_LOCALLY, list(settings), list(settings.values()))
