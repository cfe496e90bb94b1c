"""The caller every tenant transaction runs as: tenant, principal and scope.

On stdio the tenant is configuration (`--tenant`), resolved once at startup; over HTTP it comes
from the verified credential (app.identity). Never from a tool argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from mindscape.database.pool import Connection
from mindscape.errors import TenantUnavailable
from mindscape.models.api_key import Scope
from mindscape.queries import tenants


@dataclass(frozen=True)
class Caller:
    tenant_id: UUID
    tenant_slug: str
    principal: str
    scope: Scope = "write"  # stdio and operator commands act with full rights for their tenant
    # The persona this caller acts as (an API key's or JWT's binding, `serve --persona`): it sees
    # that persona's `persona`-visibility memories. Never a tool argument.
    persona: str | None = None
    # The MCP client as the session's initialize said (provenance of what it writes).
    client_name: str | None = None
    client_version: str | None = None
    # Operator commands that maintain every memory (backfill, re-embedding): private and persona
    # memories included. Never set for a tool call.
    sees_all: bool = False


async def resolve_caller(
    conn: Connection, *, tenant_slug: str, principal: str, persona: str | None = None, sees_all: bool = False
) -> Caller:
    tenant = await tenants.resolve(conn, slug=tenant_slug)
    if tenant is None:
        raise TenantUnavailable(
            f"tenant {tenant_slug!r} does not exist; create it with `mindscape tenant create {tenant_slug} --name ...`"
        )
    if tenant.status != "active":
        raise TenantUnavailable(f"tenant {tenant_slug!r} is disabled; an operator must re-enable it")
    return Caller(tenant_id=tenant.id, tenant_slug=tenant.slug, principal=principal, persona=persona, sees_all=sees_all)
