"""An MCP client on the Python SDK 1.x (run by the test matrix in a throwaway venv, never imported).

    python mcp1_client.py stdio '<json: {"command", "args", "env"}>'
    python mcp1_client.py sse|http URL BEARER_KEY

Lists tools, calls get_persona(ada) and remember(CONTENT), reads persona://ada and prints
what it saw as one JSON object on stdout. Written for the oldest 1.x API (1.3) so that one
script serves every 1.x version: no structured content, resources read by AnyUrl.
"""

import asyncio
import json
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from pydantic import AnyUrl


def text_of(result):
    return "".join(getattr(block, "text", "") for block in result.content)


async def exercise(read, write, content):
    async with ClientSession(read, write) as session:
        await session.initialize()
        tools = (await session.list_tools()).tools
        persona = await session.call_tool("get_persona", {"slug": "ada"})
        remembered = await session.call_tool("remember", {"content": content})
        resource = await session.read_resource(AnyUrl("persona://ada"))
        return {
            "tools": sorted(t.name for t in tools),
            "read": {"is_error": bool(persona.isError), "text": text_of(persona)},
            "write": {"is_error": bool(remembered.isError), "text": text_of(remembered)},
            "resource": resource.contents[0].text,
        }


async def main(argv):
    transport, content = argv[1], argv[-1]
    if transport == "stdio":
        spec = json.loads(argv[2])
        params = StdioServerParameters(command=spec["command"], args=spec["args"], env=spec["env"])
        async with stdio_client(params) as (read, write):
            return await exercise(read, write, content)
    url, key = argv[2], argv[3]
    headers = {"Authorization": f"Bearer {key}"}
    if transport == "sse":
        from mcp.client.sse import sse_client

        async with sse_client(url, headers=headers) as (read, write):
            return await exercise(read, write, content)
    from mcp.client.streamable_http import streamablehttp_client

    async with streamablehttp_client(url, headers=headers) as (read, write, _session_id):
        return await exercise(read, write, content)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv))))
