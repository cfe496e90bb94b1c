"""What a tools/list costs an agent: characters of each tool as the client receives it (compact JSON).

`sizes` counts name + title + description + input schema, and the output schema apart; both
are the JSON text of the tools/list result a client decoded (`Tool.model_dump` by alias, no
whitespace), the way the SDK writes it on the wire.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, cast

from mcp import Client
from mcp.types import Tool

from mindscape.app.server import build_server
from mindscape.app.state import AppState

INPUT_BUDGET = 10_000  # name + title + description + input schema, all tools together
OUTPUT_BUDGET = 10_000  # output schemas, all tools together


@dataclass(frozen=True)
class ToolSize:
    name: str
    input: int
    output: int


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def size_of(tool: Tool) -> ToolSize:
    wire = tool.model_dump(mode="json", by_alias=True, exclude_none=True)
    text = len(tool.name) + len(tool.title or "") + len(tool.description or "")
    return ToolSize(tool.name, text + len(compact(wire["inputSchema"])), len(compact(wire.get("outputSchema", {}))))


def table(sizes: list[ToolSize]) -> str:
    lines = [f"{'tool':<18} {'name+title+description+input':>29} {'output schema':>14}"]
    lines += [f"{s.name:<18} {s.input:>29} {s.output:>14}" for s in sizes]
    lines.append(f"{'total':<18} {sum(s.input for s in sizes):>29} {sum(s.output for s in sizes):>14}")
    return "\n".join(lines)


async def listed_tools() -> list[Tool]:
    """tools/list through the in-memory client, from a server that needs no database to list."""
    server = build_server(lambda: nullcontext(cast(AppState, None)))
    async with Client(server) as client:
        return (await client.list_tools()).tools
