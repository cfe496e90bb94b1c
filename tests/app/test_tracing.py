"""Traces: a span per request (the SDK's) with the tenant, a span per tool call with tenant, tool and
outcome, the caller's traceparent continued, nothing of the content, and no exporter unless configured."""

from __future__ import annotations

import json
import uuid
from contextlib import nullcontext
from types import SimpleNamespace
from typing import Any, cast

import mcp.server._otel as sdk_otel
import pytest
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from starlette.types import Message, Scope

from mindscape.app import tracing
from mindscape.config.settings import Settings
from mindscape.transports.http.middleware.trace_context import TraceContext
from tests.support.results import data
from tests.support.tenants import ClientFactory, TenantFactory, persona
from tests.support.tracing import recording

pytestmark = pytest.mark.anyio

SECRET = "the vault code is 4417-quokka"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def everything_in(span: ReadableSpan) -> str:
    """All a span would export, as text: name, attributes, status, events."""
    events = [(e.name, dict(e.attributes or {})) for e in span.events]
    return json.dumps([span.name, dict(span.attributes or {}), span.status.description, events], default=str)


async def test_tool_calls_are_traced_with_tenant_tool_and_outcome(
    tenant_factory: TenantFactory, client_for: ClientFactory
) -> None:
    tenant = await tenant_factory([persona("ada", "Ada")], "traced")
    with recording() as exporter:
        async with client_for(tenant.tenant_slug) as client:
            stored = data(await client.call_tool("remember", {"content": SECRET}, meta={"traceparent": PARENT}))
            missing = await client.call_tool("forget", {"id": str(uuid.uuid4())})
            await client.read_resource(f"memory://{stored['id']}")
        spans = list(exporter.get_finished_spans())
    by_name = {span.name: span for span in spans}
    remember, forget = by_name["tool remember"], by_name["tool forget"]
    assert dict(remember.attributes or {}) == {
        tracing.TOOL: "remember",
        tracing.TENANT: tenant.tenant_slug,
        tracing.OUTCOME: "ok",
    }
    assert missing.is_error
    assert (forget.attributes or {})[tracing.OUTCOME] == "error"
    assert not forget.status.is_ok
    request = by_name["tools/call remember"]  # the SDK's span for the request, our tool span beneath it
    assert remember.parent is not None
    assert request.context is not None
    assert remember.parent.span_id == request.context.span_id
    assert (request.attributes or {})[tracing.TENANT] == tenant.tenant_slug
    assert f"{request.context.trace_id:032x}" == TRACE_ID  # the caller's traceparent, continued
    assert (by_name["resources/read"].attributes or {})[tracing.TENANT] == tenant.tenant_slug
    for span in spans:
        assert SECRET not in everything_in(span)
        assert "4417" not in everything_in(span)


async def test_the_traceparent_header_becomes_the_parent() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        seen.append(f"{trace.get_current_span().get_span_context().trace_id:032x}")

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        return None

    headers = [(b"traceparent", PARENT.encode()), (b"content-type", b"application/json")]
    await TraceContext(app)({"type": "http", "headers": headers}, receive, send)
    await TraceContext(app)({"type": "http", "headers": [(b"traceparent", b"garbage")]}, receive, send)
    await TraceContext(app)({"type": "http", "headers": []}, receive, send)
    assert seen == [TRACE_ID, "0" * 32, "0" * 32]


@pytest.mark.parametrize(
    ("configured", "environ", "expected"),
    [
        (None, {}, None),
        ("http://collector:4318", {}, "http://collector:4318/v1/traces"),
        (
            "http://collector:4318/",
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://other:4318"},
            "http://collector:4318/v1/traces",
        ),
        (None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318"}, "http://otel:4318/v1/traces"),
        (None, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://otel:4318/t"}, "http://otel:4318/t"),
        ("http://collector:4318", {"OTEL_SDK_DISABLED": "true"}, None),
    ],
)
def test_traces_go_where_configured_and_nowhere_by_default(
    configured: str | None, environ: dict[str, str], expected: str | None
) -> None:
    settings = Settings(database_url=None, otel_exporter_otlp_endpoint=configured)
    assert tracing.endpoint(settings, environ) == expected


async def test_while_tracing_is_off_no_span_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    """No tracer provider installed: the SDK's request-span middleware is passed by and a tool
    call's span is the no-op one; once one is installed, both are back at the next request."""
    assert tracing.OpenTelemetryMiddleware is not None
    seen: list[str] = []

    class Other:
        async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
            seen.append("other")
            return await call_next(ctx)

    async def handler(ctx: ServerRequestContext[Any, Any]) -> HandlerResult:
        seen.append("handler")
        return None

    sdk, other = tracing.OpenTelemetryMiddleware(), Other()
    wrapped, kept = tracing.only_when_tracing([sdk, other])
    assert isinstance(wrapped, tracing.RequestSpans)
    assert kept is other
    ctx = cast(
        ServerRequestContext[Any, Any],
        SimpleNamespace(method="tools/call", params={}, request_id=1, meta=None, protocol_version="2026-07-28"),
    )

    def entered(*_: Any, **__: Any) -> Any:
        seen.append("span")
        return nullcontext(trace.INVALID_SPAN)

    monkeypatch.setattr(sdk_otel, "otel_span", entered)
    monkeypatch.setattr(trace, "get_tracer_provider", trace.ProxyTracerProvider)
    assert tracing.off()
    assert await wrapped(ctx, handler) is None
    with tracing.tool_span("get_persona", None) as span:
        assert span is trace.INVALID_SPAN
    assert seen == ["handler"]

    seen.clear()
    monkeypatch.setattr(trace, "get_tracer_provider", TracerProvider)
    assert not tracing.off()
    await wrapped(ctx, handler)
    assert seen == ["span", "handler"]
    with tracing.tool_span("get_persona", None) as span:
        assert span is not trace.INVALID_SPAN
