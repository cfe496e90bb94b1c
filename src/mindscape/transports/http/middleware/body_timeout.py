"""Cut off a client that sends its request body too slowly (slowloris): 408 after `http_body_timeout_s`.

The deadline runs from the moment the request's headers are in until its last body byte; a
client that trickles a byte now and then would otherwise hold a connection, a request task and
the body buffer for as long as it likes. The answer is a JSON-RPC error with `Connection: close`,
so the server drops the connection and its slot. Once the body is complete, nothing here limits
the request any further: an event stream may stay open as long as it is wanted.

It sits outside every other layer, BodyLimit included, so the time spent reading the body is
the only thing it measures.
"""

from __future__ import annotations

import logging

import anyio
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


class _TooSlow(Exception):
    """The body did not arrive in time (raised through the inner layers by `receive`)."""


class BodyTimeout:
    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = anyio.current_time() + self.timeout_s
        body_complete = False
        started = False

        async def timed_receive() -> Message:
            nonlocal body_complete
            if body_complete:
                return await receive()
            message: Message | None = None
            with anyio.move_on_after(max(deadline - anyio.current_time(), 0)):
                message = await receive()
            if message is None:
                raise _TooSlow
            body_complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, timed_receive, watched_send)
        except _TooSlow:
            log.info("cut off a request body still arriving after %s s (http_body_timeout_s)", self.timeout_s)
            if not started:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A JSON-RPC error without an id, like the other transport-level refusals (see BodyLimit).
        message = (
            f"the request body did not arrive within {self.timeout_s:g} s (http_body_timeout_s); "
            "send the whole body at once, or retry over a faster connection"
        )
        body = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": message}}
        await JSONResponse(body, status_code=408, headers={"Connection": "close"})(scope, receive, send)
