"""Embedding providers behind one small interface (see base.Embedder)."""
