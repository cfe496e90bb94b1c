"""Streamable HTTP at `/mcp` (or legacy SSE at `/sse`) behind API keys; `/healthz`, `/readyz`, `/metrics` open.

Legacy SSE (`/sse` for the event stream, `/messages/` for the client's posts) is for clients that predate
Streamable HTTP; the SDK wraps both of its routes in the same bearer check as `/mcp`. The SSE session's
identity is the key that opened the stream (`/sse`): tools run in that request's context.

One Starlette app per process; the caller's state (pool, embedders) is opened before serving,
like stdio, so a bad database stops the process with one line instead of failing requests.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Literal

import anyio
import asyncpg
import uvicorn
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from mindscape.database import migrate
from mindscape.database.pool import Pool
from mindscape.server import quota_http
from mindscape.server.app import build_server
from mindscape.server.auth import ApiKeyVerifier, key_auth_settings
from mindscape.server.metrics import CONTENT_TYPE
from mindscape.server.state import AppState

log = logging.getLogger(__name__)
READY_TIMEOUT_S = 5.0


HttpTransport = Literal["http", "sse"]


def build_http_app(state: AppState, *, host: str, port: int, transport: HttpTransport = "http") -> Starlette:
    server = build_server(
        lambda: nullcontext(state),
        token_verifier=ApiKeyVerifier(state.pool),
        auth=key_auth_settings(f"http://{host}:{port}"),
    )
    head = migrate.head_revision()

    @server.custom_route("/healthz", methods=["GET"])
    async def healthz(_request: Request) -> Response:  # pyright: ignore[reportUnusedFunction]
        return PlainTextResponse("ok")

    @server.custom_route("/readyz", methods=["GET"])
    async def readyz(_request: Request) -> Response:  # pyright: ignore[reportUnusedFunction]
        reason = await not_ready(state.pool, head)
        return PlainTextResponse(reason or "ready", status_code=503 if reason else 200)

    # Unauthenticated like /healthz, for the scraper; it shows tool names and counts, never tenant
    # data, but operators should still keep it off the public internet (README: Serving over HTTP).
    @server.custom_route("/metrics", methods=["GET"])
    async def metrics(_request: Request) -> Response:  # pyright: ignore[reportUnusedFunction]
        return PlainTextResponse(server.metrics.render(state.pool), media_type=CONTENT_TYPE)

    # DNS-rebinding protection stays on; only the configured Host/Origin values get through.
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=list(state.settings.http_allowed_hosts),
        allowed_origins=list(state.settings.http_allowed_origins),
    )
    if transport == "sse":
        app = server.sse_app(transport_security=security, host=host)
    else:
        app = server.streamable_http_app(transport_security=security, host=host)
    quota_http.install(app, state.calls)  # 429 with Retry-After past a tenant's calls_per_minute
    return app


async def not_ready(pool: Pool, head: str) -> str | None:
    """One line saying why the service cannot serve, or None when it can."""
    try:
        with anyio.fail_after(READY_TIMEOUT_S):
            async with pool.acquire() as conn:
                revision = await migrate.current_revision(conn)
    except TimeoutError:
        return f"database did not answer within {READY_TIMEOUT_S:g} s"
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        log.warning("readiness check failed: %s", exc)  # asyncpg errors carry no password
        return f"database unreachable ({type(exc).__name__})"
    if revision != head:
        return f"schema is at revision {revision or 'none'}, this Mindscape needs {head}: run `mindscape db upgrade`"
    return None


async def serve_http(state: AppState, *, host: str, port: int, transport: HttpTransport = "http") -> None:
    app = build_http_app(state, host=host, port=port, transport=transport)
    # log_config=None: uvicorn's loggers go through the root logger (stderr, configured level).
    config = uvicorn.Config(app, host=host, port=port, log_config=None, lifespan="on", timeout_graceful_shutdown=10)
    where = "legacy SSE at http://%s:%d/sse" if transport == "sse" else "Streamable HTTP at http://%s:%d/mcp"
    log.warning("serving MCP over " + where, host, port)
    await uvicorn.Server(config).serve()
