"""Spans recorded in memory: the process's tracer provider, installed once, recording only while a test asks.

OpenTelemetry allows one global tracer provider per process, and the MCP SDK's spans go to the
global one; so the first test that records installs it, and later tests reuse it. Outside
`recording()` nothing is kept.
"""

from __future__ import annotations

from collections.abc import Generator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


class _WhileOn(SimpleSpanProcessor):
    on = False

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if self.on:
            super().on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if self.on:
            super().on_end(span)


_EXPORTER = InMemorySpanExporter()
_PROCESSOR = _WhileOn(_EXPORTER)
_installed = False


@contextmanager
def recording() -> Generator[InMemorySpanExporter]:
    """The exporter that holds the spans ended inside the block."""
    global _installed
    if not _installed:
        provider = TracerProvider()
        provider.add_span_processor(_PROCESSOR)
        trace.set_tracer_provider(provider)
        _installed = True
    _EXPORTER.clear()
    _PROCESSOR.on = True
    try:
        yield _EXPORTER
    finally:
        _PROCESSOR.on = False
