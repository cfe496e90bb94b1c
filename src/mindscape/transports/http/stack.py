"""The HTTP request path: every middleware in one list, in the order a request meets them.

    TraceContext              the caller's `traceparent` header, when traces are exported (app.tracing)
    BodyTimeout               408 for a body still arriving after http_body_timeout_s (slowloris)
    BodyLimit                 413 for a body over http_max_body_bytes, before anything reads it
    Drain                     /mcp only: on shutdown, end idle event streams, never an answer in flight
    MediaTypes                /mcp only: 415 / 406 for a wrong Content-Type / Accept
    AuthenticationMiddleware  the SDK's, verifying the bearer credential (auth.api_keys, auth.jwt);
                              refusals answer 401 / 403 / 503 (refusals)
    AuthContextMiddleware     the SDK's: the verified token, for the tool call's context
    TenantLimits              429 past the tenant's concurrent calls, calls per minute, open sessions
                              or share of database time
                              (needs the verified token; middleware.quota)
    -> the SDK's MCP handler (Streamable HTTP or SSE), then app.server.MindscapeServer

Around all of them, Starlette's ServerErrorMiddleware answers what escaped everything else with
refusals.answer_crash: a JSON-RPC error (503 + Retry-After when temporary), never bare text.

Legacy SSE has no Drain or MediaTypes: its event stream is one GET and its posts are answered 202.
"""

from __future__ import annotations

from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware

from mindscape.quotas.call_rate import CallQuota
from mindscape.quotas.concurrency import ConcurrentCalls
from mindscape.quotas.db_time import DbTimeBudget
from mindscape.quotas.sessions import OpenSessions
from mindscape.transports.http.middleware.body_limit import BodyLimit
from mindscape.transports.http.middleware.body_timeout import BodyTimeout
from mindscape.transports.http.middleware.drain import Drain
from mindscape.transports.http.middleware.media_types import MediaTypes
from mindscape.transports.http.middleware.quota import TenantLimits
from mindscape.transports.http.middleware.trace_context import TraceContext
from mindscape.transports.http.refusals import answer_crash, refusing


def install_middleware(
    app: Starlette,
    *,
    max_body_bytes: int,
    body_timeout_s: float,
    calls: CallQuota,
    running: ConcurrentCalls,
    open_sessions: OpenSessions,
    streamable: bool,
    db_budget: DbTimeBudget | None = None,
    resource_metadata_url: str | None,
    protected: tuple[str, ...],
    trace_headers: bool = False,
) -> None:
    """Replace the SDK-built app's middleware with the full list above (it keeps the SDK's two entries).

    Starlette builds the stack on the first request, so setting the list right after the SDK built
    the app is in time. Fails loudly if a future SDK changes its own middleware.
    """
    sdk = [entry.cls for entry in app.user_middleware]
    if sdk != [AuthenticationMiddleware, AuthContextMiddleware]:
        raise RuntimeError(f"unexpected middleware in the SDK's app: {sdk!r}")
    authentication, auth_context = app.user_middleware
    app.exception_handlers[Exception] = answer_crash
    app.user_middleware[:] = [
        *([Middleware(TraceContext)] if trace_headers else []),
        Middleware(BodyTimeout, timeout_s=body_timeout_s),
        Middleware(BodyLimit, max_bytes=max_body_bytes),
        *([Middleware(Drain), Middleware(MediaTypes)] if streamable else []),
        refusing(authentication, resource_metadata_url, protected),
        auth_context,
        Middleware(
            TenantLimits,
            calls=calls,
            running=running,
            open_sessions=open_sessions,
            db_budget=db_budget,
            sse_stream_path=None if streamable else "/sse",
        ),
    ]
