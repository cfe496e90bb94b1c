"""Which embedding model a tenant uses, and one embedder per model for the whole process."""

from __future__ import annotations

import logging
import time
from typing import Any
from uuid import UUID

from mindscape.config.settings import Settings
from mindscape.embeddings.base import Embedder, ModelSpec
from mindscape.embeddings.factory import configured_spec, make_embedder

log = logging.getLogger(__name__)
TENANT_MODEL_KEY = "embedding_model"
# How old a tenant's last known model may be for a read that cannot check it (recall in one
# statement): a switch (a re-embed completing) shows within this, as a limit change does.
MODEL_TTL_S = 30.0


def active_spec(tenant_settings: dict[str, Any], default: ModelSpec) -> ModelSpec:
    """The tenant's model: its own setting (written when a re-embed completes) or the configured one."""
    key = tenant_settings.get(TENANT_MODEL_KEY)
    if isinstance(key, str):
        try:
            return ModelSpec.parse(key)
        except ValueError:
            log.warning("tenant setting %s=%r is not a model key; using %s", TENANT_MODEL_KEY, key, default.key)
    return default


class Embedders:
    """Embedders by model key, created on first use, plus each tenant's last known model.

    The last known model lets a call embed before it opens its transaction (a provider call
    must not hold a connection); the transaction then confirms it.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.default = configured_spec(settings)
        self._embedders: dict[str, Embedder] = {}
        self._tenant_models: dict[UUID, ModelSpec] = {}
        self._observed_at: dict[UUID, float] = {}
        # (tenant, model key) pairs this process found with nothing pending. Pending rows come
        # from failed embeddings; another process (an import) can add some, which the next
        # restart or `mindscape memory backfill` picks up.
        self._clean: set[tuple[UUID, str]] = set()

    def get(self, spec: ModelSpec) -> Embedder:
        embedder = self._embedders.get(spec.key)
        if embedder is None:
            embedder = self._embedders[spec.key] = make_embedder(spec, self._settings)
        return embedder

    def model_for(self, tenant_id: UUID) -> ModelSpec:
        return self._tenant_models.get(tenant_id, self.default)

    def observe(self, tenant_id: UUID, tenant_settings: dict[str, Any]) -> ModelSpec:
        spec = active_spec(tenant_settings, self.default)
        self._tenant_models[tenant_id] = spec
        self._observed_at[tenant_id] = time.monotonic()
        return spec

    def known_model(self, tenant_id: UUID) -> ModelSpec | None:
        """The tenant's model if read from its settings less than MODEL_TTL_S ago, else None."""
        seen = self._observed_at.get(tenant_id)
        if seen is None or time.monotonic() - seen >= MODEL_TTL_S:
            return None
        return self._tenant_models[tenant_id]

    def pending_possible(self, tenant_id: UUID, spec: ModelSpec) -> bool:
        return (tenant_id, spec.key) not in self._clean

    def mark(self, tenant_id: UUID, spec: ModelSpec, *, clean: bool) -> None:
        if clean:
            self._clean.add((tenant_id, spec.key))
        else:
            self._clean.discard((tenant_id, spec.key))

    async def aclose(self) -> None:
        for embedder in self._embedders.values():
            await embedder.aclose()
        self._embedders.clear()
