"""The embedder interface and the identity of an embedding model.

A stored embedding records its model key (`provider:model:dimensions`), so vectors of
different models and dimensions coexist and are never compared with each other.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from mindscape.errors import MindscapeError

Provider = Literal["local", "hashing", "openai"]
_KEY = re.compile(r"^(local|hashing|openai):([A-Za-z0-9._/:@-]{1,100}):([0-9]{1,4})$")


class EmbeddingError(MindscapeError):
    """The provider could not embed (unreachable, refused, timed out, or answered wrongly)."""


class ModelUnavailable(EmbeddingError):
    """The local model is not there (missing, or still downloading); the embedder has said so once already.

    The message is for operators (where, and the fix); `reason` is a few words for agents.
    """

    def __init__(self, message: str, reason: str = "the embedding model is not installed on this server") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ModelSpec:
    provider: Provider
    model: str
    dimensions: int

    @property
    def key(self) -> str:
        return f"{self.provider}:{self.model}:{self.dimensions}"

    @classmethod
    def parse(cls, key: str) -> ModelSpec:
        match = _KEY.match(key)
        if match is None:
            raise ValueError(f"not a model key (provider:model:dimensions): {key!r}")
        provider, model, dimensions = match.groups()
        return cls(provider=provider, model=model, dimensions=int(dimensions))  # type: ignore[arg-type]


class Embedder(Protocol):
    @property
    def spec(self) -> ModelSpec: ...

    @property
    def semantic(self) -> bool:
        """False for lexical embedders (hashing): similar words, not similar meanings."""
        ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit-length vector of `spec.dimensions` floats per text, in order.

        Batches internally. Raises EmbeddingError when the provider fails after retries.
        """
        ...

    async def aclose(self) -> None: ...
