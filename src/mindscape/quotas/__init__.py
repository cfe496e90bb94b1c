"""Per-tenant quotas: calls per minute, concurrent calls, open sessions, max memories, max content size
(docs/operations.md: Quotas)."""
