"""Streamable HTTP at `/mcp` (or legacy SSE at `/sse`) behind API keys; `/healthz`, `/readyz`, `/metrics` open.

With `oauth_issuer` set, JWTs from that issuer are accepted too (auth.jwt) and the
protected-resource metadata is served (auth.protected_resource). Refusals answer 401, 403 or 503
with a reason (refusals).

Legacy SSE (`/sse` for the event stream, `/messages/` for the client's posts) is for clients that predate
Streamable HTTP; the SDK wraps both of its routes in the same bearer check as `/mcp`. The SSE session's
identity is the key that opened the stream (`/sse`): tools run in that request's context.

One Starlette app per process; the caller's state (pool, embedders) is opened before serving,
like stdio, so a bad database stops the process with one line instead of failing requests.
Several processes (`--stateless --workers N`) are transports.http.workers. The middleware around
the SDK's app is one list, in request order, in transports.http.stack.
"""

from __future__ import annotations

import logging
import socket
from contextlib import nullcontext
from typing import Literal

import anyio
import uvicorn
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from mindscape.app import tracing
from mindscape.app.metrics import CONTENT_TYPE
from mindscape.app.server import build_server
from mindscape.app.state import AppState
from mindscape.config.settings import Settings
from mindscape.database import migrate
from mindscape.database.pool import FAILURES, Pool
from mindscape.embeddings.factory import semantic
from mindscape.transports.http.auth.api_keys import BearerVerifier, key_auth_settings
from mindscape.transports.http.auth.jwt import JwtConfig, JwtVerifier
from mindscape.transports.http.auth.protected_resource import ProtectedResource, public_base_url
from mindscape.transports.http.graceful import GracefulServer
from mindscape.transports.http.middleware.drain import keep_answers_on_shutdown
from mindscape.transports.http.sessions import limit_sessions
from mindscape.transports.http.stack import install_middleware

log = logging.getLogger(__name__)
READY_TIMEOUT_S = 5.0


HttpTransport = Literal["http", "sse"]


def build_http_app(state: AppState, *, host: str, port: int, transport: HttpTransport = "http") -> Starlette:
    jwt_config = JwtConfig.from_settings(state.settings)
    base_url = public_base_url(state.settings.public_url, host, port)
    resource = None
    if jwt_config is not None:
        resource = ProtectedResource(f"{base_url}/{'sse' if transport == 'sse' else 'mcp'}", jwt_config.issuer)
    server = build_server(
        lambda: nullcontext(state),
        token_verifier=BearerVerifier(
            state.admission_pool,
            JwtVerifier(jwt_config, state.admission_pool, cache=state.credentials) if jwt_config else None,
            usage=state.key_usage,
            standby=state.read_pool,
            cache=state.credentials,
        ),
        auth=resource.auth_settings() if resource else key_auth_settings(base_url),
        semantic=semantic(state.settings),
        replica_reads=state.read_pool is not None,
    )
    head = migrate.head_revision()

    @server.custom_route("/healthz", methods=["GET"])
    async def healthz(_request: Request) -> Response:  # pyright: ignore[reportUnusedFunction]
        return PlainTextResponse("ok")

    @server.custom_route("/readyz", methods=["GET"])
    async def readyz(_request: Request) -> Response:  # pyright: ignore[reportUnusedFunction]
        status, text = await readiness(state, head)
        return PlainTextResponse(text, status_code=status)

    # Unauthenticated like /healthz, for the scraper; it shows tool names and counts, never tenant
    # data, but operators should still keep it off the public internet (docs/http.md).
    @server.custom_route("/metrics", methods=["GET"])
    async def metrics(_request: Request) -> Response:  # pyright: ignore[reportUnusedFunction]
        return PlainTextResponse(server.metrics.render(state.pool, state.credentials), media_type=CONTENT_TYPE)

    # DNS-rebinding protection stays on; only the configured Host/Origin values get through.
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=list(state.settings.http_allowed_hosts),
        allowed_origins=list(state.settings.http_allowed_origins),
    )
    limit = state.settings.http_max_body_bytes
    keep_answers_on_shutdown()
    if transport == "sse":
        app = server.sse_app(transport_security=security, host=host, max_request_body_size=limit)
    else:
        app = server.streamable_http_app(
            transport_security=security,
            host=host,
            stateless_http=state.settings.http_stateless,
            max_request_body_size=limit,
            session_idle_timeout=state.settings.http_session_idle_timeout_s,
            max_sessions=state.settings.http_max_sessions,
        )
        if not state.settings.http_stateless:
            limit_sessions(server.session_manager, state.sessions, state.calls)
    if resource is not None:
        app.router.routes[0:0] = resource.routes()  # ahead of the SDK's own metadata route
    install_middleware(
        app,
        max_body_bytes=limit,
        body_timeout_s=state.settings.http_body_timeout_s,
        calls=state.calls,
        running=state.running,
        open_sessions=state.sessions,
        db_budget=state.db_time,
        streamable=transport != "sse",
        resource_metadata_url=resource.metadata_url if resource else None,
        protected=("/sse", "/messages/") if transport == "sse" else ("/mcp",),
        trace_headers=tracing.start(state.settings),
    )
    return app


async def readiness(state: AppState, head: str) -> tuple[int, str]:
    """The /readyz answer: 200 while the server can serve, else 503 with the reason.

    With a read replica it can serve while either database answers (reads fall back to the
    primary; keys are checked on the replica when the primary is down), so one of them down is
    200 "degraded", not an outage a load balancer would spread to every replica. A schema at the
    wrong revision on either is 503: a deployment to finish, not something to serve through.
    """
    primary = await not_ready(state.pool, head)
    if state.read_pool is None:
        return (503, primary) if primary else (200, "ready")
    replica = await not_ready(state.read_pool, head)
    if primary is None and replica is None:
        return 200, "ready"
    problems = "; ".join(f"{name}: {why}" for name, why in (("primary", primary), ("read replica", replica)) if why)
    wrong_schema = any(why is not None and why.startswith("schema") for why in (primary, replica))
    if wrong_schema or (primary is not None and replica is not None):
        return 503, problems
    return 200, f"ready, degraded: {problems}"


async def not_ready(pool: Pool, head: str) -> str | None:
    """One line saying why the service cannot serve, or None when it can."""
    try:
        with anyio.fail_after(READY_TIMEOUT_S):
            async with pool.acquire() as conn:
                revision = await migrate.current_revision(conn)
    except TimeoutError:
        return f"database did not answer within {READY_TIMEOUT_S:g} s"
    except FAILURES as exc:
        log.warning("readiness check failed: %s", exc)  # asyncpg errors carry no password
        return f"database unreachable ({type(exc).__name__})"
    if revision != head:
        return f"schema is at revision {revision or 'none'}, this Mindscape needs {head}: run `mindscape db upgrade`"
    return None


async def serve_http(
    state: AppState, sock: socket.socket, *, host: str, port: int, transport: HttpTransport = "http"
) -> None:
    """Serve on `sock` (transports.http.listen.bind) until SIGTERM or SIGINT."""
    app = build_http_app(state, host=host, port=port, transport=transport)
    # log_config=None: uvicorn's loggers go through the root logger (stderr, configured level).
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=state.settings.http_shutdown_timeout_s,
    )
    where = "legacy SSE at http://%s:%d/sse" if transport == "sse" else "Streamable HTTP at http://%s:%d/mcp"
    log.info("serving MCP over " + where + describe_mode(state.settings), host, port)
    if state.settings.oauth_shared_secret is not None:
        log.warning("JWTs are verified with oauth_shared_secret (HS256): for development only, use oauth_jwks_url")
    await GracefulServer(config).serve(sockets=[sock])
    log.info("stopped serving MCP on port %d", port)


def describe_mode(settings: Settings) -> str:
    if not settings.http_stateless:
        return f" (sessions in this process; up to {settings.http_connections} database connections)"
    return f" (stateless; up to {settings.http_connections} database connections in this process)"
