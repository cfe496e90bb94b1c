"""API keys. Administration needs the owner connection; the runtime role may only look a key up by
its prefix and touch it, through SECURITY DEFINER functions (migration 0006): it cannot list keys.

No query returns a secret: the table holds only its hash, and the admin listings not even that.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from mindscape.database.pool import Connection
from mindscape.models.api_key import ApiKey, KeyRecord, Scope

_COLUMNS = (
    "k.id, t.slug AS tenant_slug, k.name, k.scope, k.prefix, k.persona, k.created_at, k.expires_at,"
    " k.revoked_at, k.last_used_at"
)

CREATE = f"""
WITH new AS (
    INSERT INTO mindscape.api_keys (tenant_id, name, scope, prefix, key_hash, expires_at, persona)
    SELECT t.id, $2, $3, $4, $5, now() + $6::interval, $7 FROM mindscape.tenants t WHERE t.slug = $1
    RETURNING *
)
SELECT {_COLUMNS} FROM new k JOIN mindscape.tenants t ON t.id = k.tenant_id
"""


async def create(
    conn: Connection,
    *,
    tenant_slug: str,
    name: str,
    scope: Scope,
    prefix: str,
    key_hash: bytes,
    lifetime: timedelta | None,
    persona: str | None = None,
) -> ApiKey | None:
    """The new key, or None when the tenant does not exist. `persona` must be a persona of the
    tenant (a foreign key): the key then acts as that persona."""
    row = await conn.fetchrow(CREATE, tenant_slug, name, scope, prefix, key_hash, lifetime, persona)
    return ApiKey.model_validate(dict(row)) if row else None


LIST = f"""
SELECT {_COLUMNS} FROM mindscape.api_keys k JOIN mindscape.tenants t ON t.id = k.tenant_id
WHERE $1::text IS NULL OR t.slug = $1
ORDER BY t.slug, k.created_at, k.id
"""


async def list_keys(conn: Connection, *, tenant_slug: str | None) -> list[ApiKey]:
    return [ApiKey.model_validate(dict(row)) for row in await conn.fetch(LIST, tenant_slug)]


# Revoking twice keeps the first revocation time.
REVOKE = f"""
WITH done AS (
    UPDATE mindscape.api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 RETURNING *
)
SELECT {_COLUMNS} FROM done k JOIN mindscape.tenants t ON t.id = k.tenant_id
"""


async def revoke(conn: Connection, *, key_id: UUID) -> ApiKey | None:
    row = await conn.fetchrow(REVOKE, key_id)
    return ApiKey.model_validate(dict(row)) if row else None


# The replacement keeps the tenant, scope and name, and by default the old key's lifetime
# (counted from now). FOR UPDATE makes two concurrent rotations of one key fail one of them.
ROTATE = f"""
WITH old AS (
    SELECT * FROM mindscape.api_keys WHERE id = $1 AND revoked_at IS NULL FOR UPDATE
), revoked AS (
    UPDATE mindscape.api_keys k SET revoked_at = now() FROM old WHERE k.id = old.id RETURNING k.id
), new AS (
    INSERT INTO mindscape.api_keys (tenant_id, name, scope, prefix, key_hash, expires_at, persona)
    SELECT old.tenant_id, old.name, old.scope, $2, $3,
           now() + coalesce($4::interval, old.expires_at - old.created_at), old.persona
    FROM old JOIN revoked ON revoked.id = old.id
    RETURNING *
)
SELECT {_COLUMNS} FROM new k JOIN mindscape.tenants t ON t.id = k.tenant_id
"""


async def rotate(
    conn: Connection, *, key_id: UUID, prefix: str, key_hash: bytes, lifetime: timedelta | None
) -> ApiKey | None:
    """The replacement key, or None when `key_id` is unknown or already revoked."""
    row = await conn.fetchrow(ROTATE, key_id, prefix, key_hash, lifetime)
    return ApiKey.model_validate(dict(row)) if row else None


# Runtime role: expiry is judged by the database clock, the same one that wrote created_at;
# `expires_in_s` (migration 0010) lets a cached key expire on time.
LOOKUP = """
SELECT id, tenant_id, tenant_slug, tenant_active, scope, key_hash, expired, revoked, persona, expires_in_s
FROM mindscape.api_key_lookup($1)
"""


async def lookup(conn: Connection, *, prefix: str) -> list[KeyRecord]:
    """Every key with this prefix: almost always one, but the prefix is not declared unique (see 0004)."""
    return [KeyRecord.model_validate(dict(row)) for row in await conn.fetch(LOOKUP, prefix)]


# Many keys' last use at once (migration 0008), written by tenancy.key_usage off the request path.
# On a hot standby nothing can be written: the CASE skips the call there (NULL instead of a count).
TOUCH_MANY = "SELECT CASE WHEN pg_is_in_recovery() THEN NULL ELSE mindscape.touch_api_keys($1, $2) END"


async def touch_many(conn: Connection, *, key_ids: list[UUID], seconds_ago: list[float]) -> int | None:
    """Stamp each key's last use (`seconds_ago` before now); how many changed, or None on a standby."""
    return await conn.fetchval(TOUCH_MANY, key_ids, seconds_ago)
