"""What a server connection carries over from whoever used it before: the leftover-context probe.

Through PgBouncer in transaction mode every transaction may run on a server connection another
client used just before, so anything a transaction left at session level would be seen by the
next one. The probe reads everything that could be left: the role, the tenant, principal, call
and source variables, every setting whose value differs from its session default (statement
timeouts included), session advisory locks, LISTEN channels and named prepared statements.

A setting counts when it was SET at session level (`source = 'session'`) to a value other than
its session default, except the few that PgBouncer itself sets to each client's own startup
values whenever it hands that client a server connection (its tracked parameters): those follow
the client, by design. (asyncpg's type introspection turns `jit` off and back on at session
level, inside the calling transaction: it leaves the default value, which does not count.)
"""

from __future__ import annotations

from dataclasses import dataclass

from mindscape.database.pool import Connection

PROBE = """
SELECT pg_backend_pid() AS pid,
       current_user::text AS role,
       session_user::text AS login,
       coalesce(current_setting('app.tenant_id', true), '') AS tenant,
       coalesce(current_setting('app.principal', true), '') AS principal,
       coalesce(current_setting('app.call', true), '') AS call,
       coalesce(current_setting('app.source', true), '') AS source,
       array(SELECT name || '=' || setting FROM pg_settings
             WHERE source = 'session' AND setting IS DISTINCT FROM reset_val AND name <> ALL($1::text[])
             ORDER BY name) AS changed,
       (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()) AS advisory_locks,
       (SELECT count(*) FROM pg_listening_channels()) AS listening,
       (SELECT count(*) FROM pg_prepared_statements WHERE from_sql OR name <> '') AS prepared
"""


POOLER_TRACKED = ["application_name", "client_encoding", "datestyle", "timezone", "standard_conforming_strings"]


@dataclass(frozen=True)
class Probe:
    pid: int
    leftovers: list[str]  # empty: the connection is as fresh as a new session


async def probe(conn: Connection, *, pooled: bool) -> Probe:
    """Probe the server connection `conn` runs on (outside or at the start of a transaction).

    Named prepared statements count only through a pooler: on a connection of its own, asyncpg's
    statement cache keeps them (the probe's own among them), and no other client sees them.
    """
    row = await conn.fetchrow(PROBE, POOLER_TRACKED)
    assert row is not None
    left = [f"role {row['role']}"] if row["role"] != row["login"] else []
    left += [f"{name} {row[name]!r}" for name in ("tenant", "principal", "call", "source") if row[name]]
    left += [f"setting {changed}" for changed in row["changed"]]
    counted = ("advisory_locks", "listening", "prepared") if pooled else ("advisory_locks", "listening")
    left += [f"{row[name]} {name}" for name in counted if row[name]]
    return Probe(pid=row["pid"], leftovers=left)
