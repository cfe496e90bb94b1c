"""Reading tool results in tests: the structured data of a success, the text of an error."""

from __future__ import annotations

from typing import Any

from mcp.types import CallToolResult, TextContent


def text_of(result: CallToolResult) -> str:
    return " ".join(c.text for c in result.content if isinstance(c, TextContent))


def data(result: CallToolResult) -> dict[str, Any]:
    """The structured content of a successful call (fails the test on an error result)."""
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    return result.structured_content


def error_text(result: CallToolResult) -> str:
    """The text of an error result (fails the test on a success)."""
    assert result.is_error, result.structured_content
    return text_of(result)
