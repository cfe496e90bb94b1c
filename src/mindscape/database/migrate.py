"""Schema migrations through Alembic, driven from code with the owner URL."""

from __future__ import annotations

from pathlib import Path

import anyio
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from mindscape.database.pool import Connection


def migrations_dir() -> Path:
    """The packaged copy in a wheel, else the repository's top-level `migrations/`."""
    here = Path(__file__).resolve().parent.parent
    packaged = here / "_migrations"
    return packaged if packaged.is_dir() else here.parents[1] / "migrations"


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["url"] = url
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no migrations found"
    return head


async def upgrade(owner_url: str, revision: str = "head") -> None:
    # Alembic's env.py runs its own event loop, so it gets a worker thread.
    await anyio.to_thread.run_sync(command.upgrade, alembic_config(owner_url), revision)


async def downgrade(owner_url: str, revision: str) -> None:
    await anyio.to_thread.run_sync(command.downgrade, alembic_config(owner_url), revision)


# Without read access (e.g. after `db downgrade base` revoked it) the schema counts as unmigrated.
HAS_VERSION_TABLE = """
SELECT to_regclass('public.alembic_version') IS NOT NULL
       AND has_table_privilege('public.alembic_version', 'SELECT')
"""
CURRENT_REVISION = "SELECT version_num FROM public.alembic_version LIMIT 1"


async def current_revision(conn: Connection) -> str | None:
    """The database's schema revision, or None on a database never migrated."""
    if not await conn.fetchval(HAS_VERSION_TABLE):
        return None
    revision: str | None = await conn.fetchval(CURRENT_REVISION)
    return revision
