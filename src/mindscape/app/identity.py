"""Who is calling this request: the verified access token over HTTP, else the stdio tenant.

Over HTTP the verifiers (transports.http.auth) put the key's or JWT's tenant and principal in the
access token; this module reads them back as a tenancy.caller.Caller, so the tenant is decided per
request, never by a tool argument.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any
from uuid import UUID

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken

from mindscape.errors import TenantUnavailable
from mindscape.models.api_key import Scope
from mindscape.tenancy.caller import Caller

if TYPE_CHECKING:
    from mcp.server.mcpserver import Context

    from mindscape.app.state import AppState

# Claim names in the AccessToken the verifiers build (transports.http.auth).
TENANT_ID = "mindscape_tenant_id"
TENANT_SLUG = "mindscape_tenant_slug"
PRINCIPAL = "mindscape_principal"  # `key:<prefix>` or `jwt:<iss>#<sub>`
PERSONA = "mindscape_persona"  # the persona slug the credential is bound to, if any


def caller_from_token(token: AccessToken) -> Caller:
    claims: dict[str, Any] = token.claims or {}
    scope: Scope = "write" if "write" in token.scopes else "read"
    return Caller(
        tenant_id=UUID(str(claims[TENANT_ID])),
        tenant_slug=str(claims[TENANT_SLUG]),
        principal=str(claims.get(PRINCIPAL) or token.subject or token.client_id),
        scope=scope,
        persona=str(claims[PERSONA]) if claims.get(PERSONA) else None,
    )


def current_caller(ctx: Context[AppState, Any]) -> Caller:
    """The caller of the request being handled: the verified key's tenant, else the stdio tenant,
    with the MCP client the session named (recorded as provenance of what it writes)."""
    token = get_access_token()
    if token is not None:
        caller = caller_from_token(token)
    else:
        stdio = ctx.request_context.lifespan_context.caller
        if stdio is None:
            # Unreachable behind the HTTP auth middleware; fail closed if it ever is reached.
            raise TenantUnavailable(
                "no tenant for this request: an API key (Authorization: Bearer msk_...) is required"
            )
        caller = stdio
    name, version = client_of(ctx)
    return replace(caller, client_name=name, client_version=version) if name or version else caller


def client_of(ctx: Context[AppState, Any]) -> tuple[str | None, str | None]:
    """(name, version) from the session's client info, when the client sent one."""
    try:
        params = ctx.request_context.session.client_params
    except (AttributeError, ValueError):  # no session (a background task after the reply)
        return None, None
    if params is None:
        return None, None
    info = params.client_info
    return info.name or None, info.version or None
