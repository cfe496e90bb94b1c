"""A bare MCPServer with one trivial async tool: the SDK's own floor for a stdio tool call.

python benchmarks/bare_server.py                 # stock transport (server.run())
python benchmarks/bare_server.py --native-stdio  # Mindscape's asyncio-native pipe transport
"""

# No `from __future__ import annotations`: the SDK reads the tool's annotations at registration.
import argparse

import anyio
from mcp.server import MCPServer

server: MCPServer[object] = MCPServer("bare")


@server.tool()
async def echo(text: str) -> str:
    """Return the text unchanged."""
    # `async def` so the SDK runs it on the event loop, like Mindscape's tools (no worker thread).
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--native-stdio", action="store_true", help="serve through mindscape.server.stdio")
    if parser.parse_args().native_stdio:
        from mindscape.server.stdio import serve_stdio

        anyio.run(serve_stdio, server)
    else:
        server.run()


if __name__ == "__main__":
    main()
