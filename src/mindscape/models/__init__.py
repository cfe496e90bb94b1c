"""Typed results returned by the query layer and, unchanged, by the tools."""
