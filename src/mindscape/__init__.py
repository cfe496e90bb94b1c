"""Mindscape: a tenant-scoped PostgreSQL database for AI agents, served over MCP."""
