"""The server factory: one MCPServer with every tool family registered."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from importlib.metadata import version

from mcp.server import MCPServer

from mindscape.server.state import AppState
from mindscape.tools import personas

INSTRUCTIONS = (
    "Mindscape: this workspace's personas. list_personas finds slugs; get_persona returns one persona's "
    "instructions and traits; the `persona` prompt renders it as a system prompt."
)


def build_server(lifespan_state: Callable[[], AbstractAsyncContextManager[AppState]]) -> MCPServer[AppState]:
    """`lifespan_state` opens the pool and resolves the caller (see server.state.open_state)."""
    server: MCPServer[AppState] = MCPServer(
        "mindscape",
        version=version("mindscape-mcp"),
        instructions=INSTRUCTIONS,
        lifespan=lambda _server: lifespan_state(),
    )
    personas.register(server)
    return server
