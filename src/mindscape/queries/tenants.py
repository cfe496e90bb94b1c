"""The tenant registry. The owner connection reads and writes it; the runtime role may only
resolve a slug (`resolve`) and read the settings of a tenant whose id it has (`get_settings`),
through SECURITY DEFINER functions (migration 0006): it cannot list tenants."""

from __future__ import annotations

import json
from uuid import UUID

from mindscape.database.pool import Connection
from mindscape.models.tenant import Tenant, TenantRef

_COLUMNS = "id, slug, name, status, created_at"

GET_BY_SLUG = f"SELECT {_COLUMNS} FROM mindscape.tenants WHERE slug = $1"  # owner connection
RESOLVE = "SELECT id, slug, status FROM mindscape.resolve_tenant($1)"  # runtime role
LIST = f"SELECT {_COLUMNS} FROM mindscape.tenants ORDER BY slug"
CREATE = f"""
INSERT INTO mindscape.tenants (slug, name) VALUES ($1, $2)
ON CONFLICT (slug) DO NOTHING
RETURNING {_COLUMNS}
"""
SET_STATUS = f"UPDATE mindscape.tenants SET status = $2, updated_at = now() WHERE slug = $1 RETURNING {_COLUMNS}"


async def get_by_slug(conn: Connection, *, slug: str) -> Tenant | None:
    row = await conn.fetchrow(GET_BY_SLUG, slug)
    return Tenant.model_validate(dict(row)) if row else None


async def resolve(conn: Connection, *, slug: str) -> TenantRef | None:
    """The tenant a slug names (id and status only), for the runtime role; None when there is none."""
    row = await conn.fetchrow(RESOLVE, slug)
    return TenantRef.model_validate(dict(row)) if row else None


async def list_all(conn: Connection) -> list[Tenant]:
    return [Tenant.model_validate(dict(row)) for row in await conn.fetch(LIST)]


async def create(conn: Connection, *, slug: str, name: str) -> Tenant | None:
    """The new tenant, or None when the slug is taken."""
    row = await conn.fetchrow(CREATE, slug, name)
    return Tenant.model_validate(dict(row)) if row else None


async def set_status(conn: Connection, *, slug: str, status: str) -> Tenant | None:
    row = await conn.fetchrow(SET_STATUS, slug, status)
    return Tenant.model_validate(dict(row)) if row else None


# Owner connection only: tenants cannot change their own settings.
SET_SETTING = f"""
UPDATE mindscape.tenants
SET settings = jsonb_set(settings, ARRAY[$2::text], to_jsonb($3::text)), updated_at = now()
WHERE id = $1
RETURNING {_COLUMNS}
"""


async def set_setting(conn: Connection, *, tenant_id: UUID, key: str, value: str) -> Tenant | None:
    """Set one text value in the tenant's `settings` object, keeping the other keys."""
    row = await conn.fetchrow(SET_SETTING, tenant_id, key, value)
    return Tenant.model_validate(dict(row)) if row else None


# Runtime role: one tenant's settings by id (the call quota needs them before any transaction),
# never a list. Anyone who can call this can also set that tenant's context and read its row.
GET_SETTINGS = "SELECT mindscape.tenant_settings($1)"


async def get_settings(conn: Connection, *, tenant_id: UUID) -> dict[str, object] | None:
    return await conn.fetchval(GET_SETTINGS, tenant_id)


# Owner connection only (a plain connection without a jsonb codec, hence text in and out).
# The keys in $3 are removed, then $2 (a JSON object) is merged into the settings.
UPDATE_SETTINGS = """
UPDATE mindscape.tenants
SET settings = (settings - $3::text[]) || $2::text::jsonb, updated_at = now()
WHERE slug = $1
RETURNING settings::text
"""


async def update_settings(
    conn: Connection, *, slug: str, merge: dict[str, object], remove: list[str]
) -> dict[str, object] | None:
    """The tenant's settings after the change, or None when there is no such tenant."""
    text: str | None = await conn.fetchval(UPDATE_SETTINGS, slug, json.dumps(merge), remove)
    return None if text is None else json.loads(text)


GET_SETTINGS_TEXT = "SELECT settings::text FROM mindscape.tenants WHERE slug = $1"


async def get_settings_text(conn: Connection, *, slug: str) -> dict[str, object] | None:
    """A tenant's settings over a plain (owner) connection, or None when there is no such tenant."""
    text: str | None = await conn.fetchval(GET_SETTINGS_TEXT, slug)
    return None if text is None else json.loads(text)


LIST_SETTINGS = "SELECT slug, settings::text AS settings FROM mindscape.tenants"


async def all_settings(conn: Connection) -> dict[str, dict[str, object]]:
    """Every tenant's settings by slug, over a plain (owner) connection."""
    return {row["slug"]: json.loads(row["settings"]) for row in await conn.fetch(LIST_SETTINGS)}
