"""Startup checks on the runtime connection: each failure is one line saying what to do."""

from __future__ import annotations

from dataclasses import dataclass

from mindscape.database.migrate import current_revision, head_revision
from mindscape.database.pool import Connection
from mindscape.database.targets import RUNTIME_ROLE
from mindscape.errors import StartupError

MIN_SERVER_VERSION = 150000
MIN_PGVECTOR = (0, 8)

FACTS = """
SELECT current_setting('server_version_num')::int AS server_version,
       (SELECT extversion FROM pg_extension WHERE extname = 'vector') AS pgvector,
       current_user AS role,
       r.rolsuper AS superuser,
       r.rolbypassrls AS bypassrls
FROM pg_roles r WHERE r.rolname = current_user
"""


@dataclass(frozen=True)
class DatabaseFacts:
    server_version: int
    pgvector: str | None
    role: str
    revision: str | None


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


async def check_database(conn: Connection) -> DatabaseFacts:
    """Refuse to serve on an unsuitable database: old server, missing pgvector, privileged role, old schema."""
    row = await conn.fetchrow(FACTS)
    assert row is not None
    facts = DatabaseFacts(row["server_version"], row["pgvector"], row["role"], await current_revision(conn))
    if facts.server_version < MIN_SERVER_VERSION:
        raise StartupError(f"PostgreSQL 15 or newer is required; this server is version {facts.server_version}")
    if facts.pgvector is None:
        raise StartupError("pgvector is not installed in this database; run `mindscape db upgrade` (it creates it)")
    if _version_tuple(facts.pgvector) < MIN_PGVECTOR:
        raise StartupError(
            f"pgvector 0.8 or newer is required, found {facts.pgvector}; run ALTER EXTENSION vector UPDATE"
        )
    if row["superuser"] or row["bypassrls"]:
        raise StartupError(
            f"refusing to serve as role {facts.role!r}: it bypasses row-level security; "
            f"connect as {RUNTIME_ROLE} (docs/operations.md: External PostgreSQL)"
        )
    head = head_revision()
    if facts.revision != head:
        raise StartupError(
            f"database schema is at revision {facts.revision or 'none'} but this Mindscape needs {head}; "
            "run `mindscape db upgrade`"
        )
    return facts


async def in_recovery(conn: Connection) -> bool:
    """Whether this server is a hot standby (replaying WAL): it answers reads and refuses every write."""
    return bool(await conn.fetchval("SELECT pg_is_in_recovery()"))
