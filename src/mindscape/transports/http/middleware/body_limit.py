"""Refuse HTTP request bodies over `http_max_body_bytes` with 413, before authentication or parsing.

It sits outside every other layer, so an oversized request costs no key lookup and no session.
A declared Content-Length over the limit is refused unread; a chunked body is read only until it
passes the limit. The SDK has its own 4 MiB check inside the transport; this one is the
operator's setting and answers with a message that says what to do.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        body = bytearray()
        pending: list[Message] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                pending.append(message)  # a disconnect: let the app see it
                break
            body.extend(message.get("body", b""))
            if len(body) > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                pending.insert(0, {"type": "http.request", "body": bytes(body), "more_body": False})
                break

        async def replay() -> Message:
            # The whole body in one message, then the live channel (for disconnects of long streams).
            return pending.pop(0) if pending else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A JSON-RPC error without an id, like the SDK's other transport-level refusals.
        message = (
            f"request body is larger than the server's limit of {self.max_bytes} bytes (http_max_body_bytes); "
            "send less data per call"
        )
        body = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": message}}
        await JSONResponse(body, status_code=413, headers={"Connection": "close"})(scope, receive, send)
