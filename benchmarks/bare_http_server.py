"""A bare MCPServer with one trivial async tool over Streamable HTTP: the SDK's own floor for the load run.

Served the way `mindscape serve --transport http` serves (the SDK's `streamable_http_app`, uvicorn with
the same options, DNS-rebinding protection on), minus auth, the database and the tools' work:

python benchmarks/bare_http_server.py --port 8001
"""

# No `from __future__ import annotations`: the SDK reads the tool's annotations at registration.
import argparse

import uvicorn
from mcp.server import MCPServer

server: MCPServer[object] = MCPServer("bare")


@server.tool()
async def echo(text: str) -> str:
    """Return the text unchanged."""
    # `async def` so the SDK runs it on the event loop, like Mindscape's tools (no worker thread).
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    app = server.streamable_http_app(host=args.host)
    # The options of mindscape.server.http.serve_http, so only the server's own work differs.
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, lifespan="on", timeout_graceful_shutdown=10)


if __name__ == "__main__":
    main()
