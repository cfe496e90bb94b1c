"""A memory's context: the text that came just before it (the previous turn of a conversation, the
question it answers), embedded together with it by an explicit convention, never guessed.

The convention is the metadata key `context`, a string, set by whoever stores the memory
(`remember`, `mindscape memory import`). The memory's vector is then
normalise(v(content) + CONTEXT_WEIGHT * v(context)): the content still dominates, and a reply like
"Yes, every Sunday since May" can be found by what it answers. Keyword recall matches the
context's words too, at CONTEXT_WORDS_WEIGHT (the `context_search` column, migration 0007); what
recall returns is the content alone. On LoCoMo (docs/memory-ranking.md), the previous turn as
context raised dense recall@10 from 0.512 to 0.538; with score fusion, dropping the context vector
costs 0.036 recall@10 and dropping the context words 0.037.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from mindscape.embeddings.base import Embedder

CONTEXT_KEY = "context"
CONTEXT_WEIGHT = 0.35
# Keyword recall: a query word found only in the context counts this much of one in the content
# (migration 0007 indexes the context's words). LoCoMo, leave-one-conversation-out: 0.5 to 1.0
# chosen on every pair of conversations; docs/memory-ranking.md.
CONTEXT_WORDS_WEIGHT = 0.5


def context_of(metadata: Mapping[str, Any] | None) -> str | None:
    value = (metadata or {}).get(CONTEXT_KEY)
    return value if isinstance(value, str) and value.strip() else None


def mix(content: Sequence[float], context: Sequence[float] | None) -> list[float]:
    if context is None:
        return list(content)
    summed = [a + CONTEXT_WEIGHT * b for a, b in zip(content, context, strict=True)]
    norm = math.sqrt(sum(x * x for x in summed)) or 1.0
    return [x / norm for x in summed]


async def embed_with_context(embedder: Embedder, items: Sequence[tuple[str, str | None]]) -> list[list[float]]:
    """One vector per (content, context): each distinct text is embedded once, so a context that is
    another memory of the same batch (the previous turn, in an import) costs nothing extra."""
    texts = list(dict.fromkeys([content for content, _ in items] + [c for _, c in items if c is not None]))
    vectors = dict(zip(texts, await embedder.embed(texts), strict=True))
    return [mix(vectors[content], vectors[c] if c is not None else None) for content, c in items]
