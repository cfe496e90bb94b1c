"""In-memory clients acting as one principal of a tenant, the way an API key makes the HTTP transport act.

The verifier (transports.http.auth.api_keys) puts the key's tenant and principal in an AccessToken;
here the same token is placed in the SDK's auth context. The in-memory transport runs a request
either in the caller's task (2026-07-28 era) or in the server's own tasks, which copy the context
when the client starts (2025-11-25 era), so the token is set both while the client starts and
around every call.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

from mcp import Client
from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.types import CallToolResult, GetPromptResult, ReadResourceResult, Tool

from mindscape.app.identity import PERSONA, PRINCIPAL, TENANT_ID, TENANT_SLUG
from mindscape.tenancy.caller import Caller
from tests.support.tenants import ClientFactory

T = TypeVar("T")


def key_token(caller: Caller, prefix: str, scope: str = "write", persona: str | None = None) -> AccessToken:
    """The AccessToken ApiKeyVerifier builds for a key `msk_<prefix>_...` of the caller's tenant
    (created with `--persona` when `persona` is given)."""
    principal = f"key:{prefix}"
    return AccessToken(
        token=f"msk_{prefix}",
        client_id=principal,
        subject=principal,
        scopes=["read", "write"] if scope == "write" else ["read"],
        claims={
            TENANT_ID: str(caller.tenant_id),
            TENANT_SLUG: caller.tenant_slug,
            PRINCIPAL: principal,
            PERSONA: persona,
        },
    )


class KeyClient:
    """Tool calls, tool lists, resource reads and prompt gets as the key's principal."""

    def __init__(self, client: Client, token: AccessToken) -> None:
        self._client = client
        self._token = token

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> CallToolResult:
        return await self._as_key(lambda: self._client.call_tool(name, arguments))

    async def read_resource(self, uri: str) -> ReadResourceResult:
        return await self._as_key(lambda: self._client.read_resource(uri))

    async def get_prompt(self, name: str, arguments: dict[str, str]) -> GetPromptResult:
        return await self._as_key(lambda: self._client.get_prompt(name, arguments))

    async def list_tools(self) -> list[Tool]:
        with acting(self._token):
            return (await self._client.list_tools()).tools

    async def _as_key(self, call: Callable[[], Awaitable[T]]) -> T:
        with acting(self._token):
            return await call()


@contextmanager
def acting(token: AccessToken) -> Generator[None]:
    reset = auth_context_var.set(AuthenticatedUser(token))
    try:
        yield
    finally:
        auth_context_var.reset(reset)


@asynccontextmanager
async def client_as(
    client_for: ClientFactory,
    caller: Caller,
    prefix: str,
    scope: str = "write",
    persona: str | None = None,
    **options: Any,
) -> AsyncGenerator[KeyClient]:
    """An in-memory client whose calls come from the API key with public prefix `prefix` (bound to
    `persona`, if given). `options`: passed to the client factory (`mode="legacy"`, say)."""
    token = key_token(caller, prefix, scope, persona=persona)
    manager = client_for(caller.tenant_slug, **options)
    with acting(token):
        client = await manager.__aenter__()
    try:
        yield KeyClient(client, token)
    except BaseException as exc:
        if not await manager.__aexit__(type(exc), exc, exc.__traceback__):
            raise
    else:
        await manager.__aexit__(None, None, None)
