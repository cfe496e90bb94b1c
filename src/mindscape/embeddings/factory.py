"""From settings to an embedder, and a one-line description of it for logs and `doctor`."""

from __future__ import annotations

from mindscape.config.settings import Settings
from mindscape.embeddings.base import Embedder, ModelSpec
from mindscape.embeddings.hashing import HashingEmbedder
from mindscape.embeddings.local import DEFAULT_MODEL as LOCAL_DEFAULT_MODEL
from mindscape.embeddings.local import LocalEmbedder, ModelSource
from mindscape.embeddings.openai_compat import OpenAIEmbedder


def configured_spec(settings: Settings) -> ModelSpec:
    """The model new embeddings are made with."""
    return ModelSpec(settings.embedding_provider, settings.embedding_model, settings.embedding_dimensions)


def semantic(settings: Settings) -> bool:
    """Whether the configured model ranks by meaning (hashing ranks by shared words)."""
    return settings.embedding_provider != "hashing"


# ONNX Runtime threads when `embedding_threads` is unset. A server embeds one short query at a time,
# where a second thread only spins: on the shared 2-core machine the server spent 34 ms of CPU per
# hybrid recall with one thread per core and 14 ms with one, and answered faster (p50 66 vs 47 ms).
# Bulk commands (memory import, backfill, reembed) embed thousands: they ask for one per core.
SERVING_THREADS = 1


def local_source(settings: Settings, model: str | None = None) -> ModelSource:
    """Where the local `model` (default: the configured local model) is loaded from.

    `embedding_model_path` holds the configured local model (or, with another provider, the
    default one), so it is used for that model only; any other comes from the cache.
    """
    configured = settings.embedding_model if settings.embedding_provider == "local" else LOCAL_DEFAULT_MODEL
    model = model or configured
    return ModelSource(
        name=model,
        path=settings.embedding_model_path if model == configured else None,
        cache_dir=settings.data_dir / "models",
        threads=settings.embedding_threads or SERVING_THREADS,
    )


def make_embedder(spec: ModelSpec, settings: Settings) -> Embedder:
    """An embedder for `spec` (not necessarily the configured one), with the settings' endpoint and limits."""
    if spec.provider == "hashing":
        return HashingEmbedder(spec.model, spec.dimensions)
    if spec.provider == "local":
        return LocalEmbedder(spec, local_source(settings, spec.model))
    api_key = settings.embedding_api_key
    return OpenAIEmbedder(
        spec.model,
        spec.dimensions,
        base_url=settings.embedding_base_url,  # None: OpenAI's own API
        api_key=api_key.get_secret_value() if api_key is not None else None,
        timeout_s=settings.embedding_timeout_s,
        max_retries=settings.embedding_max_retries,
        batch_size=settings.embedding_batch_size,
    )


def describe(embedder: Embedder) -> str:
    """E.g. `openai:text-embedding-3-small:1536 via https://api.openai.com/v1 (semantic)`."""
    key = embedder.spec.key
    if isinstance(embedder, OpenAIEmbedder):
        return f"{key} via {embedder.base_url} (semantic)"
    if isinstance(embedder, LocalEmbedder):
        return f"{key} in this process, from {embedder.model.source.where} (semantic)"
    if embedder.semantic:
        return f"{key} (semantic)"
    return f"{key} (lexical: matches shared words and spellings, not meanings)"
