"""On shutdown, end the idle event streams (GET /mcp) but never the answer of a call in flight.

sse-starlette, under the SDK's SSE responses, cuts *every* event stream within half a second of
SIGTERM by default, the POST responses that carry tool results included. A call in flight would
then finish its transaction and lose its answer. `keep_answers_on_shutdown` turns that off.
Instead, once SIGTERM or SIGINT arrives, a GET stream's next `receive` reports a disconnect, so
sse-starlette ends just those streams. uvicorn then waits only for the calls in flight.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from types import FrameType

import anyio
from sse_starlette.sse import AppStatus
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
        await self.app(scope, receive, send)

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
