"""SQL per domain. Functions take a connection and keyword-only arguments; no MCP imports here."""
