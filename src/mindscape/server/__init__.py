"""The MCP server: factory, lifespan, transports, caller identity and tenant context."""
