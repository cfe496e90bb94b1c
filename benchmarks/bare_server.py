"""A bare MCPServer with one trivial async tool: the SDK's own floor for a tool call.

python benchmarks/bare_server.py                 # stdio, stock transport (server.run())
python benchmarks/bare_server.py --native-stdio  # stdio, Mindscape's asyncio-native pipe transport
python benchmarks/bare_server.py --http 8001     # Streamable HTTP at /mcp, for the load run

Over HTTP it is served the way `mindscape serve --transport http` serves (the SDK's
`streamable_http_app`, uvicorn with the same options, DNS-rebinding protection on), minus auth,
the database and the tools' work.
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
    parser.add_argument("--native-stdio", action="store_true", help="serve through mindscape.transports.stdio")
    parser.add_argument("--http", type=int, metavar="PORT", help="serve Streamable HTTP on 127.0.0.1:PORT instead")
    args = parser.parse_args()
    if args.http is not None:
        import uvicorn

        app = server.streamable_http_app(host="127.0.0.1")
        # The options of mindscape.transports.http.app.serve_http, so only the server's own work differs.
        uvicorn.run(app, host="127.0.0.1", port=args.http, log_config=None, lifespan="on", timeout_graceful_shutdown=10)
    elif args.native_stdio:
        from mindscape.transports.stdio import serve_stdio

        anyio.run(serve_stdio, server)
    else:
        server.run()


if __name__ == "__main__":
    main()
