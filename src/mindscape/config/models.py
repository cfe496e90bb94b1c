"""Default embedding model names per provider, known to the settings (which pick one per provider) and the embedders."""

from __future__ import annotations

LOCAL_DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
HASHING_DEFAULT_MODEL = "mindscape-hash-v1"
OPENAI_DEFAULT_MODEL = "text-embedding-3-small"
# Models the local provider knows, with their dimensions (a mismatching setting is refused).
KNOWN_DIMENSIONS = {LOCAL_DEFAULT_MODEL: 384}
