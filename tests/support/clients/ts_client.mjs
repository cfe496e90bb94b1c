// An MCP client on the TypeScript SDK (run by the test matrix with node, from the SDK's install dir).
//
//   node ts_client.mjs stdio '<json: {"command", "args", "env"}>' CONTENT
//   node ts_client.mjs http URL BEARER_KEY CONTENT
//
// Lists tools, calls get_persona(ada) and remember(CONTENT), reads persona://ada and prints
// what it saw as one JSON object on stdout.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [transportName, ...rest] = process.argv.slice(2);
const content = rest[rest.length - 1];
let transport;
if (transportName === "stdio") {
  const spec = JSON.parse(rest[0]);
  transport = new StdioClientTransport({ command: spec.command, args: spec.args, env: spec.env, stderr: "inherit" });
} else {
  transport = new StreamableHTTPClientTransport(new URL(rest[0]), {
    requestInit: { headers: { Authorization: `Bearer ${rest[1]}` } },
  });
}

const textOf = (result) => result.content.map((block) => block.text ?? "").join("");
const client = new Client({ name: "mindscape-matrix-ts", version: "1.0.0" });
await client.connect(transport);
const tools = (await client.listTools()).tools.map((t) => t.name).sort();
const persona = await client.callTool({ name: "get_persona", arguments: { slug: "ada" } });
const remembered = await client.callTool({ name: "remember", arguments: { content } });
const resource = await client.readResource({ uri: "persona://ada" });
await client.close();
console.log(
  JSON.stringify({
    tools,
    read: { is_error: Boolean(persona.isError), text: textOf(persona) },
    write: { is_error: Boolean(remembered.isError), text: textOf(remembered) },
    resource: resource.contents[0].text,
  }),
);
