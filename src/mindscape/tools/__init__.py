"""MCP tool families, one module each; functions stay thin and call the query layer."""
