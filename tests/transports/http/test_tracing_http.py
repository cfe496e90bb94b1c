"""Traces exported with OTLP by a real `serve --transport http`, continuing the caller's traceparent header."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared import jsonrpc_dispatcher

from mindscape.database.targets import Targets
from tests.support.http import new_key
from tests.support.otlp import otlp_receiver
from tests.support.serving import server_process
from tests.support.tenants import PERSONAS_A, TenantFactory

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
SECRET = "a note about 9931-wombat"


@pytest.mark.anyio
async def test_spans_reach_the_collector_under_the_callers_trace(
    targets: Targets, tenant_factory: TenantFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The header is the trace to continue here. With a tracer provider in this test process (one
    # set by an earlier test stays: OpenTelemetry sets it once), the SDK client would also put its
    # own span's traceparent in `_meta`, which the server rightly prefers (CI saw that).
    monkeypatch.setattr(jsonrpc_dispatcher, "inject_trace_context", _no_injection)
    tenant = await tenant_factory(PERSONAS_A, "otlp")
    key = await new_key(targets, tenant.tenant_slug, "write")
    with otlp_receiver() as (collector, received):
        env = {"MINDSCAPE_OTEL_EXPORTER_OTLP_ENDPOINT": collector}
        with server_process(targets, tmp_path / "server.log", "--transport", "http", env=env) as (proc, url):
            headers = {"Authorization": f"Bearer {key}", "traceparent": f"00-{TRACE_ID}-{PARENT_SPAN}-01"}
            async with (
                httpx2.AsyncClient(headers=headers, timeout=30) as http,
                Client(streamable_http_client(f"{url}/mcp", http_client=http), mode="legacy") as client,  # pyright: ignore[reportArgumentType]
            ):
                assert not (await client.call_tool("remember", {"content": SECRET})).is_error
            proc.send_signal(signal.SIGTERM)  # the spans still batched are flushed at exit
            assert proc.wait(timeout=60) == 0
    assert set(received.paths) == {"/v1/traces"}
    by_name = {span.name: span for span in received.spans}
    tool, request = by_name["tool remember"], by_name["tools/call remember"]
    attributes = {a.key: a.value.string_value for a in tool.attributes}
    assert attributes == {
        "mindscape.tool": "remember",
        "mindscape.tenant": tenant.tenant_slug,
        "mindscape.outcome": "ok",
    }
    assert tool.parent_span_id == request.span_id
    assert request.trace_id.hex() == TRACE_ID  # the header's trace, continued
    assert request.parent_span_id.hex() == PARENT_SPAN
    assert not any("9931" in str(span) for span in received.spans)


def _no_injection(meta: dict[str, Any]) -> None:
    del meta
