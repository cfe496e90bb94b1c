"""Continue the caller's trace: a W3C `traceparent` (and `tracestate`) header becomes the current context.

The SDK's span for each MCP request (app.tracing) then has the caller's span as its parent, unless
the request carries its own `_meta.traceparent`, which wins. The SDK hands contextvars set here on
to the task that handles the message, stateful sessions included. Installed only when traces are
exported: otherwise there is nothing to continue.
"""

from __future__ import annotations

from opentelemetry import context
from opentelemetry.propagate import extract
from starlette.types import ASGIApp, Receive, Scope, Send


class TraceContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in (b"traceparent", b"tracestate")
        }
        if not carrier:
            await self.app(scope, receive, send)
            return
        token = context.attach(extract(carrier))  # a malformed header extracts to an empty context
        try:
            await self.app(scope, receive, send)
        finally:
            context.detach(token)
