"""On shutdown, end the idle event streams (GET /mcp) but never the answer of a call in flight.

sse-starlette, under the SDK's SSE responses, cuts *every* event stream within half a second of
SIGTERM by default, the POST responses that carry tool results included. A call in flight would
then finish its transaction and lose its answer. `keep_answers_on_shutdown` turns that off.
Instead, once SIGTERM or SIGINT arrives, a GET stream's next `receive` reports a disconnect, so
sse-starlette ends just those streams. uvicorn then waits only for the calls in flight.

A call still running when `http_shutdown_timeout_s` runs out is cancelled by uvicorn, which would
cut its SSE stream mid-way (or, before the response started, answer a bare text 500). Its POST
gets a JSON-RPC error instead, for each request it carried: "the server is shutting down", with
whether a write may have been saved and how to retry it (app.errors.describe). Before the
response started that is an HTTP 503 with Retry-After; after, an SSE event on the open stream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading
from types import FrameType
from typing import Any

import anyio
from sse_starlette.sse import AppStatus
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mindscape.app.errors import UNAVAILABLE, Temporary, describe
from mindscape.transports.http.refusals import jsonrpc_error, unavailable_response

log = logging.getLogger(__name__)
SIGNALS = (signal.SIGINT, signal.SIGTERM)
SHUTTING_DOWN = Temporary("the server is shutting down", "shutting_down", 2)


def keep_answers_on_shutdown() -> None:
    """Process-wide: no event stream is cut by sse-starlette when the server begins to shut down."""
    AppStatus.disable_automatic_graceful_drain()


class Drain:
    def __init__(self, app: ASGIApp, path: str = "/mcp") -> None:
        self.app = app
        self.path = path
        self._draining: anyio.Event | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            draining = self._draining or self._watch_signals()
            if scope["method"] == "GET" and scope["path"].rstrip("/") == self.path:
                await self._stream(scope, _until(draining, receive), send)
                return
            if scope["method"] == "POST" and scope["path"].rstrip("/") == self.path:
                await self._answer(scope, receive, send, draining)
                return
        await self.app(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive, send: Send, draining: anyio.Event) -> None:
        """Serve a POST; if the shutdown timeout cancels it, answer its requests "shutting down"."""
        body = bytearray()
        started = completed = False
        event_stream = False

        async def reading() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body.extend(message.get("body", b""))
            return message

        async def watched(message: Message) -> None:
            nonlocal started, completed, event_stream
            if message["type"] == "http.response.start":
                started = True
                headers = dict(message.get("headers", []))
                event_stream = headers.get(b"content-type", b"").startswith(b"text/event-stream")
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                completed = True
            await send(message)

        try:
            await self.app(scope, reading, watched)
        except asyncio.CancelledError:
            if not draining.is_set() or completed:
                raise
            # uvicorn gave up waiting for this call (http_shutdown_timeout_s) and cancelled it. It is
            # answered, and the cancellation ends here: the process is stopping either way.
            requests = _requests(bytes(body))
            log.warning("shutdown timeout: answered %d unfinished request(s) 'shutting down'", len(requests))
            if not started:
                request_id, tool = requests[0] if len(requests) == 1 else (None, None)
                await unavailable_response(SHUTTING_DOWN, describe(SHUTTING_DOWN, tool=tool), request_id)(
                    scope, receive, send
                )
                return
            if event_stream:
                for request_id, tool in requests:
                    message = describe(SHUTTING_DOWN, tool=tool)
                    error = jsonrpc_error(request_id, UNAVAILABLE, message, SHUTTING_DOWN.data)
                    event = f"event: message\r\ndata: {json.dumps(error)}\r\n\r\n".encode()
                    await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve an event stream; if shutdown ended it, close its body properly for the client."""
        started = completed = False

        async def watched(message: Message) -> None:
            nonlocal started, completed
            started = started or message["type"] == "http.response.start"
            completed = completed or (message["type"] == "http.response.body" and not message.get("more_body"))
            await send(message)

        await self.app(scope, receive, watched)
        if started and not completed:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _watch_signals(self) -> anyio.Event:
        """Chain onto the server's signal handlers; done at the first request, when they are installed."""
        draining = self._draining = anyio.Event()
        if threading.current_thread() is not threading.main_thread():
            return draining  # signals reach only the main thread's handlers; not serving from there
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            previous = signal.getsignal(sig)

            def handler(signum: int, frame: FrameType | None, previous: object = previous) -> None:
                loop.call_soon_threadsafe(draining.set)
                if callable(previous):
                    previous(signum, frame)

            signal.signal(sig, handler)
        return draining


def _until(draining: anyio.Event, receive: Receive) -> Receive:
    async def receive_or_disconnect() -> Message:
        message: Message = {"type": "http.disconnect"}
        async with anyio.create_task_group() as group:

            async def pass_on() -> None:
                nonlocal message
                message = await receive()
                group.cancel_scope.cancel()

            group.start_soon(pass_on)
            await draining.wait()
            group.cancel_scope.cancel()
        return message

    return receive_or_disconnect


def _requests(body: bytes) -> list[tuple[Any, str | None]]:
    """(id, tool name or None) of each JSON-RPC request in a POST body (a message or a batch)."""
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        return []
    items: list[Any] = parsed if isinstance(parsed, list) else [parsed]  # pyright: ignore[reportUnknownVariableType]
    found: list[tuple[Any, str | None]] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        message: dict[str, Any] = item  # pyright: ignore[reportUnknownVariableType]
        if "method" not in message or message.get("id") is None:
            continue  # a notification or a response: nothing to answer
        params: Any = message.get("params")
        tool: Any = None
        if message["method"] == "tools/call" and isinstance(params, dict):
            tool = params.get("name")  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
        found.append((message["id"], tool if isinstance(tool, str) else None))
    return found
