"""Per-tenant quotas: calls per minute, max memories, max content size (docs/operations.md: Quotas)."""
