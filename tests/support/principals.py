"""In-memory clients acting as one principal of a tenant, the way an API key makes the HTTP transport act.

The verifier (transports.http.auth.api_keys) puts the key's tenant and principal in an AccessToken;
here the same token is placed in the SDK's auth context before the in-memory client starts, so
that the server's tasks (which copy the context when they start) see it on every call.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

from mcp import Client
from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken

from mindscape.app.identity import PRINCIPAL, TENANT_ID, TENANT_SLUG
from mindscape.tenancy.caller import Caller
from tests.support.tenants import ClientFactory


def key_token(caller: Caller, prefix: str, scope: str = "write") -> AccessToken:
    """The AccessToken ApiKeyVerifier builds for a key `msk_<prefix>_...` of the caller's tenant."""
    principal = f"key:{prefix}"
    return AccessToken(
        token=f"msk_{prefix}",
        client_id=principal,
        subject=principal,
        scopes=["read", "write"] if scope == "write" else ["read"],
        claims={TENANT_ID: str(caller.tenant_id), TENANT_SLUG: caller.tenant_slug, PRINCIPAL: principal},
    )


@asynccontextmanager
async def client_as(client_for: ClientFactory, caller: Caller, prefix: str) -> AsyncGenerator[Client]:
    """An in-memory client whose calls come from the API key with public prefix `prefix`."""
    manager = client_for(caller.tenant_slug)
    reset = auth_context_var.set(AuthenticatedUser(key_token(caller, prefix)))
    try:
        client = await manager.__aenter__()
    finally:
        auth_context_var.reset(reset)  # only the server's tasks, started just now, keep the token
    try:
        yield client
    except BaseException as exc:
        if not await manager.__aexit__(type(exc), exc, exc.__traceback__):
            raise
    else:
        await manager.__aexit__(None, None, None)
