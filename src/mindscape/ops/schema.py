"""Schema migrations behind `mindscape db ...`, over the owner connection."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
from alembic.util import CommandError

from mindscape.config.settings import Settings
from mindscape.database import migrate
from mindscape.database.pool import Connection, owner_connection
from mindscape.database.prepare import ensure_vector_index
from mindscape.database.targets import Targets
from mindscape.embeddings.factory import configured_spec
from mindscape.errors import InvalidArgument, StartupError

SETUP = "config/examples/postgres-setup.sql, docs/operations.md: External PostgreSQL"

# What the migrations need of the role that runs them, read before they start: createrole_self_grant
# exists from PostgreSQL 16 on (NULL before).
MIGRATOR = """
SELECT current_user::text AS name, r.rolsuper AS superuser,
       current_setting('server_version_num')::int AS version,
       coalesce(current_setting('createrole_self_grant', true), '') AS self_grant,
       EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mindscape_owner') AS owner_exists
FROM pg_roles r WHERE r.rolname = current_user
"""


async def check_migrator(conn: Connection) -> None:
    """Refuse in one line, naming the fix, a migrator the migrations would fail halfway for.

    The migrations switch to mindscape_owner (SET LOCAL ROLE) to create what it owns. From
    PostgreSQL 16 on, a CREATEROLE role may not do that with a role it created itself (unless
    createrole_self_grant includes `set`), so the administrator creates mindscape_owner and
    grants it to the migrator first; then the membership must carry SET.
    """
    row = await conn.fetchrow(MIGRATOR)
    if row is None or row["superuser"]:
        return
    user = row["name"]
    if row["owner_exists"]:
        try:
            async with conn.transaction():
                await conn.execute("SET LOCAL ROLE mindscape_owner")
        except asyncpg.InsufficientPrivilegeError:
            raise StartupError(
                f"the migrator {user} cannot SET ROLE mindscape_owner, which the migrations need: as an "
                f"administrator run `GRANT mindscape_owner TO {user}` ({SETUP})"
            ) from None
    elif row["version"] >= 160000 and "set" not in row["self_grant"].replace(" ", "").split(","):
        raise StartupError(
            f"the role mindscape_owner does not exist, and on PostgreSQL 16+ the migrator {user} could not "
            f"use it after creating it: as an administrator run `CREATE ROLE mindscape_owner NOLOGIN; "
            f"GRANT mindscape_owner TO {user};` first ({SETUP})"
        )


async def _migrate(step: Callable[[str, str], Awaitable[None]], owner_url: str, revision: str) -> None:
    """An Alembic step whose anticipated failures (no database, unknown revision) are one line, not a traceback."""
    async with owner_connection(owner_url):  # a one-line StartupError without the password
        pass
    try:
        await step(owner_url, revision)
    except CommandError as exc:
        raise InvalidArgument(f"{exc}; `mindscape db current` shows the revisions") from exc


async def upgrade(settings: Settings, targets: Targets, revision: str) -> None:
    async with owner_connection(targets.owner) as conn:
        await check_migrator(conn)
    await _migrate(migrate.upgrade, targets.owner, revision)
    # Which model is in use is configuration, so its index is not a migration.
    await ensure_vector_index(targets.owner, configured_spec(settings))


async def downgrade(targets: Targets, revision: str) -> None:
    await _migrate(migrate.downgrade, targets.owner, revision)


async def current_revision(targets: Targets) -> str | None:
    async with owner_connection(targets.owner) as conn:
        return await migrate.current_revision(conn)
