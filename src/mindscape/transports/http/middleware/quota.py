"""Calls per minute over HTTP: 429 with Retry-After, before the MCP handler sees the request.

An ASGI middleware placed inside the SDK's authentication middleware (transports.http.stack),
so `scope["user"]` holds the verified access token (and so the tenant). It reads the POST body (and replays it
unchanged to the app), counts only the JSON-RPC methods that do work for a tenant (tools/call,
resources/read, prompts/get) and answers 429 when the tenant is over its limit. Everything else
(initialize, lists, notifications, GETs, unauthenticated requests) passes straight through.
"""

from __future__ import annotations

import json
from typing import Any

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mindscape.app.identity import caller_from_token
from mindscape.errors import QuotaExceeded
from mindscape.quotas.call_rate import CallQuota

COUNTED = frozenset({"tools/call", "resources/read", "prompts/get"})
QUOTA_ERROR_CODE = -32000  # JSON-RPC "server error" range


class CallQuotaMiddleware:
    def __init__(self, app: ASGIApp, calls: CallQuota) -> None:
        self._app = app
        self._calls = calls

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        user = scope.get("user")
        if scope["type"] != "http" or scope["method"] != "POST" or not isinstance(user, AuthenticatedUser):
            await self._app(scope, receive, send)
            return
        messages, body = await _read_body(receive)
        replay = _replayer(messages, receive)
        counted = _counted_requests(body)
        if counted:
            caller = caller_from_token(user.access_token)
            try:
                for _ in counted:
                    await self._calls.check(caller.tenant_id, caller.tenant_slug)
            except QuotaExceeded as exc:
                await _too_many(exc, counted[0])(scope, replay, send)
                return
        await self._app(scope, replay, send)


async def _read_body(receive: Receive) -> tuple[list[Message], bytes]:
    """The request's messages as received, and its body (up to the SDK's own body limit)."""
    messages: list[Message] = []
    body = bytearray()
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break  # a disconnect: let the app see it
        body += message.get("body", b"")
        if not message.get("more_body", False) or len(body) > DEFAULT_MAX_REQUEST_BODY_SIZE:
            break  # past the limit the SDK refuses the request anyway; the rest is streamed through
    return messages, bytes(body)


def _replayer(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay


def _counted_requests(body: bytes) -> list[Any]:
    """The ids of the counted JSON-RPC requests in a body (a message or a batch); malformed bodies count nothing."""
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        return []  # the SDK answers malformed JSON itself
    items: list[Any] = parsed if isinstance(parsed, list) else [parsed]  # pyright: ignore[reportUnknownVariableType]
    ids: list[Any] = []
    for item in items:
        if isinstance(item, dict):
            message: dict[str, Any] = item  # pyright: ignore[reportUnknownVariableType]
            if message.get("method") in COUNTED:
                ids.append(message.get("id"))
    return ids


def _too_many(exc: QuotaExceeded, request_id: Any) -> JSONResponse:
    retry_after = exc.retry_after or 1
    return JSONResponse(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "error": {
                "code": QUOTA_ERROR_CODE,
                "message": str(exc),
                "data": {"limit": exc.limit, "value": exc.value, "retry_after": retry_after},
            },
        },
        status_code=429,
        headers={"Retry-After": str(retry_after)},
    )
