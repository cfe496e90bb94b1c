"""Alembic environment: runs migrations over asyncpg with the owner URL.

`mindscape db upgrade` passes the URL in `config.attributes["url"]`; a developer running
`alembic` directly sets MINDSCAPE_OWNER_DATABASE_URL (or MINDSCAPE_DATABASE_URL).
"""

import asyncio
import os

import asyncpg
from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool


def _url() -> str:
    url = context.config.attributes.get("url") or os.environ.get("MINDSCAPE_OWNER_DATABASE_URL")
    url = url or os.environ.get("MINDSCAPE_DATABASE_URL")
    if not url:
        raise SystemExit("set MINDSCAPE_OWNER_DATABASE_URL, or use `mindscape db upgrade` for the embedded database")
    return str(url)


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=None, transaction_per_migration=False)
    with context.begin_transaction():
        context.run_migrations()


async def _main(url: str) -> None:
    # The creator hands asyncpg the URL untouched (Unix-socket URLs included).
    engine = create_async_engine(
        "postgresql+asyncpg://", async_creator=lambda: asyncpg.connect(url), poolclass=NullPool
    )
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: the migrations check roles at run time")
asyncio.run(_main(_url()))
