"""A loopback reverse proxy that adds `Authorization: Bearer <key>` to every request, for tests only.

The MCP conformance suite's server mode has no option to send a header, and Mindscape's `/mcp`
refuses every request without a key. Rather than give the server a way to switch auth off (which
production could then switch off too), the test puts this proxy in front of an unmodified
`mindscape serve`: the proxy plays the part of a client that holds a key. Everything else passes
through byte for byte, including the Host and Origin headers (so the DNS-rebinding checks still
reach the server) and streamed SSE bodies (forwarded chunk by chunk, as they arrive).
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from contextlib import contextmanager

import anyio
import httpx2
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tests.support.serving import free_port

# Connection-level headers describe one hop; the proxy's own hops set their own.
HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"te", b"upgrade"}


def header_adding_app(upstream: str, key: str) -> ASGIApp:
    client = httpx2.AsyncClient(timeout=httpx2.Timeout(None))

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await client.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in {b"authorization", *HOP_BY_HOP}]
        headers.append((b"authorization", f"Bearer {key}".encode()))
        url = upstream + scope["raw_path"].decode()
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode()
        request = client.build_request(scope["method"], url, headers=headers, content=body)
        response = await client.send(request, stream=True)
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [(k, v) for k, v in response.headers.raw if k.lower() not in HOP_BY_HOP],
                }
            )
            # A client that hangs up on an open SSE stream must close the upstream stream too.
            async with anyio.create_task_group() as tg:

                async def watch_disconnect() -> None:
                    message: Message = await receive()
                    while message["type"] != "http.disconnect":
                        message = await receive()
                    tg.cancel_scope.cancel()

                tg.start_soon(watch_disconnect)
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
                tg.cancel_scope.cancel()
        finally:
            await response.aclose()

    return app


@contextmanager
def bearer_proxy(upstream: str, key: str) -> Generator[str]:
    """Yield the base URL of a proxy to UPSTREAM that authenticates every request with KEY."""
    port = free_port()
    config = uvicorn.Config(
        header_adding_app(upstream, key), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the auth proxy did not start")
            threading.Event().wait(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
