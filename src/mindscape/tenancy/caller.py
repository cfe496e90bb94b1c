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


async def resolve_caller(conn: Connection, *, tenant_slug: str, principal: str) -> Caller:
    tenant = await tenants.resolve(conn, slug=tenant_slug)
    if tenant is None:
        raise TenantUnavailable(
            f"tenant {tenant_slug!r} does not exist; create it with `mindscape tenant create {tenant_slug} --name ...`"
        )
    if tenant.status != "active":
        raise TenantUnavailable(f"tenant {tenant_slug!r} is disabled; an operator must re-enable it")
    return Caller(tenant_id=tenant.id, tenant_slug=tenant.slug, principal=principal)
