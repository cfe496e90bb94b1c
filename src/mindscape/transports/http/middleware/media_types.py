"""Clear refusals for MCP posts with the wrong Content-Type or Accept header.

The SDK refuses them too, but tersely and differently per protocol era ("Invalid Content-Type
header" as a 400, an empty 406). Checked here with the SDK's own rules, so nothing the SDK
accepts is refused; the answer is a JSON-RPC error naming the header, what was sent and what to
send instead.
"""

from __future__ import annotations

from mcp.server.streamable_http import check_accept_headers
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

INVALID_REQUEST = -32600
SHOWN = 100  # characters of a bad header value echoed back


class MediaTypes:
    def __init__(self, app: ASGIApp, path: str = "/mcp") -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"].rstrip("/") != self.path:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        content_type = request.headers.get("content-type", "")
        problem: tuple[int, str] | None = None
        if not content_type.lower().startswith("application/json"):
            problem = (415, f"Content-Type must be application/json (got {_shown(content_type)})")
        elif not all(check_accept_headers(request)):
            accept = request.headers.get("accept", "")
            problem = (406, f"Accept must list application/json and text/event-stream (got {_shown(accept)})")
        if problem is None:
            await self.app(scope, receive, send)
            return
        status, message = problem
        body = {"jsonrpc": "2.0", "id": None, "error": {"code": INVALID_REQUEST, "message": message}}
        await JSONResponse(body, status_code=status)(scope, receive, send)


def _shown(value: str) -> str:
    return repr(value[:SHOWN]) if value else "nothing"
