"""Semantic memory: embedding models per tenant, storing (remember) and finding (recall)."""
