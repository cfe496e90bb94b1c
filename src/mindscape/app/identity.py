"""Who is calling: the tenant and principal every tool call runs as.

On stdio the tenant is configuration (`--tenant`); it is resolved once at startup. Over HTTP it
is whatever the request's verified API key or JWT is bound to (server.auth and server.jwt_auth
put it in the access token), so it is decided per request, never by a tool argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken

from mindscape.database.pool import Connection
from mindscape.errors import TenantUnavailable
from mindscape.models.api_key import Scope
from mindscape.queries import tenants

if TYPE_CHECKING:
    from mcp.server.mcpserver import Context

    from mindscape.app.state import AppState

# Claim names in the AccessToken the verifiers build (server.auth, server.jwt_auth).
TENANT_ID = "mindscape_tenant_id"
TENANT_SLUG = "mindscape_tenant_slug"
PRINCIPAL = "mindscape_principal"  # `key:<prefix>` or `jwt:<iss>#<sub>`


@dataclass(frozen=True)
class Caller:
    tenant_id: UUID
    tenant_slug: str
    principal: str
    scope: Scope = "write"  # stdio and operator commands act with full rights for their tenant


async def resolve_caller(conn: Connection, *, tenant_slug: str, principal: str) -> Caller:
    tenant = await tenants.get_by_slug(conn, slug=tenant_slug)
    if tenant is None:
        raise TenantUnavailable(
            f"tenant {tenant_slug!r} does not exist; create it with `mindscape tenant create {tenant_slug} --name ...`"
        )
    if tenant.status != "active":
        raise TenantUnavailable(f"tenant {tenant_slug!r} is disabled; an operator must re-enable it")
    return Caller(tenant_id=tenant.id, tenant_slug=tenant.slug, principal=principal)


def caller_from_token(token: AccessToken) -> Caller:
    claims: dict[str, Any] = token.claims or {}
    scope: Scope = "write" if "write" in token.scopes else "read"
    return Caller(
        tenant_id=UUID(str(claims[TENANT_ID])),
        tenant_slug=str(claims[TENANT_SLUG]),
        principal=str(claims.get(PRINCIPAL) or token.subject or token.client_id),
        scope=scope,
    )


def current_caller(ctx: Context[AppState, Any]) -> Caller:
    """The caller of the request being handled: the verified key's tenant, else the stdio tenant."""
    token = get_access_token()
    if token is not None:
        return caller_from_token(token)
    caller = ctx.request_context.lifespan_context.caller
    if caller is None:
        # Unreachable behind the HTTP auth middleware; fail closed if it ever is reached.
        raise TenantUnavailable("no tenant for this request: an API key (Authorization: Bearer msk_...) is required")
    return caller
