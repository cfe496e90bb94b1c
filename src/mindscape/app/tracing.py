"""Traces: OpenTelemetry spans for every request and tool call, exported with OTLP when configured.

The MCP SDK opens a SERVER span for every request it handles ("tools/call remember",
"resources/read"...), continuing the caller's trace from `_meta.traceparent` or, over HTTP, from
the `traceparent` header (transports.http.middleware.trace_context puts it in the context). Mindscape
adds to it the tenant (`mindscape.tenant`), and opens one span per tool call beneath it,
"tool <name>", with the tenant, the tool and the outcome (`mindscape.outcome`: ok, error for an
isError result, failed for a JSON-RPC error). Never arguments, content, keys or tokens.

Off unless an endpoint is configured (`otel_exporter_otlp_endpoint`, or the standard
OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT; OTEL_SDK_DISABLED=true turns it off):
then no provider is installed, no span is made (the SDK's request spans included: RequestSpans),
and the SDK packages are not even imported. Started once per process (`start`); spans are batched and flushed at exit.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Generator, Mapping
from contextlib import contextmanager
from importlib.metadata import version
from typing import Any, Literal
from urllib.parse import urlsplit

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from mcp.server.mcpserver import Context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, StatusCode

from mindscape.app.identity import TENANT_SLUG
from mindscape.app.state import AppState
from mindscape.config.settings import Settings

try:
    # The SDK's own request spans. It documents removing them from `Server.middleware` to opt out,
    # but exports the class only from this private module, which a 2.x release may move: then its
    # spans are simply always made.
    from mcp.server._otel import OpenTelemetryMiddleware
except ImportError:  # pragma: no cover - depends on the SDK's layout
    OpenTelemetryMiddleware = None

log = logging.getLogger(__name__)
TRACER = trace.get_tracer("mindscape")
TENANT = "mindscape.tenant"
TOOL = "mindscape.tool"
OUTCOME = "mindscape.outcome"
Outcome = Literal["ok", "error", "failed"]
_started = False


def endpoint(settings: Settings, environ: Mapping[str, str] = os.environ) -> str | None:
    """Where traces go (the full /v1/traces URL), or None: tracing is off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if settings.otel_exporter_otlp_endpoint:
        return settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
    if environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
    if environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return environ["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
    return None


def start(settings: Settings) -> bool:
    """Install the OTLP exporter as this process's tracer provider, once; False when tracing is off."""
    global _started
    url = endpoint(settings)
    if url is None or _started:
        return _started
    # Imported only when exporting: a server without traces never loads the SDK.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes: dict[str, Any] = {"service.version": version("mindscape-mcp")}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = "mindscape"
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    trace.set_tracer_provider(provider)
    _started = True
    parts = urlsplit(url)
    log.info("exporting traces with OTLP to %s://%s%s", parts.scheme, parts.hostname or "", parts.path)  # no userinfo
    return True


def tenant_of(context: Context[AppState, Any] | None) -> str | None:
    """The caller's tenant slug: the verified credential's, else the stdio tenant's; None when unknown."""
    token = get_access_token()
    if token is not None:
        slug = (token.claims or {}).get(TENANT_SLUG)
        return str(slug) if slug is not None else None
    try:
        caller = context.request_context.lifespan_context.caller if context is not None else None
    except (ValueError, AttributeError):  # outside a request, or no state
        return None
    return caller.tenant_slug if caller is not None else None


def mark_request(context: Context[AppState, Any] | None) -> str | None:
    """Put the tenant on the request's span (the SDK's); returns it (None, unlooked-up, while tracing is off)."""
    return None if off() else _mark(context)


def _mark(context: Context[AppState, Any] | None) -> str | None:
    tenant = tenant_of(context)
    span = trace.get_current_span()
    if tenant is not None and span.is_recording():
        span.set_attribute(TENANT, tenant)
    return tenant


def off() -> bool:
    """No tracer provider is installed (start was not called, nor one set by the embedding
    application): every span would be a no-op, so none need be made."""
    return isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


class RequestSpans:
    """The SDK's request-span middleware (a SERVER span per message), passed by while tracing is
    off: even its no-op span costs each request an attribute dict, a context switch and a
    `_meta` trace-context lookup. A provider installed later turns it on at the next request."""

    def __init__(self, inner: ServerMiddleware[Any]) -> None:
        self._inner = inner

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if off():
            return await call_next(ctx)
        return await self._inner(ctx, call_next)


def only_when_tracing(middleware: list[ServerMiddleware[Any]]) -> list[ServerMiddleware[Any]]:
    """`middleware` (a low-level server's), its OpenTelemetry layer made a RequestSpans."""
    if OpenTelemetryMiddleware is None:  # pragma: no cover
        return middleware
    return [RequestSpans(m) if isinstance(m, OpenTelemetryMiddleware) else m for m in middleware]


@contextmanager
def tool_span(tool: str, context: Context[AppState, Any] | None) -> Generator[Span]:
    """The span of one tool call, with the tenant also put on the request's span; set its
    outcome with `outcome`. With tracing off, a no-op span and no work."""
    if off():
        yield trace.INVALID_SPAN
        return
    tenant = _mark(context)
    attributes: dict[str, Any] = {TOOL: tool}
    if tenant is not None:
        attributes[TENANT] = tenant
    with TRACER.start_as_current_span(
        f"tool {tool}",
        kind=SpanKind.INTERNAL,
        attributes=attributes,
        record_exception=False,  # an exception's text may quote what the agent sent
        set_status_on_exception=False,
    ) as span:
        yield span


def outcome(span: Span, result: Outcome) -> None:
    span.set_attribute(OUTCOME, result)
    if result != "ok":
        span.set_status(StatusCode.ERROR)
