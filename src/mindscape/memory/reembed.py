"""Embedding a tenant's memories for one model, in batches: `memory backfill` and `memory reembed`.

Both loop over memory.writes.backfill: take a batch of the tenant's memories that lack an
embedding for the model (in id order), embed it outside any transaction, store it in a short
tenant write transaction. Every stored batch stays stored, so an interrupted run (Ctrl-C, a
provider outage) loses at most the batch in flight, and running the command again continues
with exactly the memories still missing.

`reembed` leaves the tenant on its current model until every memory has an embedding for the
new one, so recall keeps working, with the old vectors, the whole time. Only then is the
tenant's `settings.embedding_model` set to the new model's key (over the owner connection:
tenants cannot change their own settings); servers use it from their next call that reads the
tenant's settings (embeddings.registry.Embedders.observe), and a recall in one statement, which
does not, within MODEL_TTL_S (30 s): until then it searches the old vectors. The old model's
embeddings stay, next to the new ones, whatever their dimensions, so switching back costs nothing.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

from rich.progress import Progress

from mindscape.config.models import KNOWN_DIMENSIONS
from mindscape.config.settings import Settings
from mindscape.database.pool import Pool, owner_connection
from mindscape.database.prepare import ensure_vector_index
from mindscape.database.targets import Targets
from mindscape.embeddings.base import EmbeddingError, ModelSpec
from mindscape.embeddings.factory import configured_spec
from mindscape.embeddings.registry import TENANT_MODEL_KEY, Embedders, active_spec
from mindscape.errors import InvalidArgument, NotFound
from mindscape.memory import writes
from mindscape.queries import memories, tenants
from mindscape.tenancy.caller import Caller
from mindscape.tenancy.operator import operator_session
from mindscape.tenancy.transaction import TenantTx, tenant_transaction


@dataclass(frozen=True)
class BackfillReport:
    model: str
    embedded: int


@dataclass(frozen=True)
class ReembedReport:
    previous: str
    target: str
    embedded: int
    switched: bool
    index_built: bool


@dataclass(frozen=True)
class _Tenant:
    """An operator session on one tenant: its transactions and the embedders to use."""

    settings: Settings
    pool: Pool
    caller: Caller
    embedders: Embedders

    def open_tx(self, read_only: bool) -> AbstractAsyncContextManager[TenantTx]:
        return tenant_transaction(
            self.pool, self.caller, read_only=read_only, statement_timeout_ms=self.settings.statement_timeout_ms
        )

    async def active_model(self) -> ModelSpec:
        async with self.open_tx(True) as tx:
            return active_spec(tx.settings, configured_spec(self.settings))

    async def count_pending(self, spec: ModelSpec) -> int:
        async with self.open_tx(True) as tx:
            return await memories.count_pending(tx.conn, tenant_id=tx.tenant_id, model=spec.key)

    async def embed_all(self, spec: ModelSpec, *, batch: int, progress: Progress, rerun: str) -> int:
        """Embed every memory lacking a `spec` embedding; how many were embedded."""
        total = await self.count_pending(spec)
        if total == 0:
            return 0
        task = progress.add_task(f"embedding with {spec.key}", total=total)
        done = 0
        while True:
            try:
                embedded = await writes.backfill(self.open_tx, self.embedders, spec, batch=batch)
            except EmbeddingError as exc:
                left = await self.count_pending(spec)
                raise EmbeddingError(
                    f"{exc}; {done} embedded now, {left} memories still lack a {spec.key} embedding: "
                    f"run `{rerun}` again to continue"
                ) from exc
            if embedded == 0:
                return done
            done += embedded
            if done > total:  # memories stored meanwhile
                total = done
                progress.update(task, total=total)
            progress.advance(task, embedded)


@asynccontextmanager
async def _tenant(settings: Settings, targets: Targets, tenant_slug: str) -> AsyncGenerator[_Tenant]:
    async with operator_session(settings, targets, tenant_slug) as (pool, caller):
        embedders = Embedders(settings)
        try:
            yield _Tenant(settings, pool, caller, embedders)
        finally:
            await embedders.aclose()


async def backfill(
    settings: Settings, targets: Targets, *, tenant_slug: str, batch: int, progress: Progress
) -> BackfillReport:
    """Embed the tenant's pending memories with its active model."""
    async with _tenant(settings, targets, tenant_slug) as tenant:
        spec = await tenant.active_model()
        rerun = f"mindscape memory backfill --tenant {tenant_slug}"
        done = await tenant.embed_all(spec, batch=batch, progress=progress, rerun=rerun)
    return BackfillReport(spec.key, done)


def target_spec(settings: Settings, *, model: str, provider: str | None, dimensions: int | None) -> ModelSpec:
    """The model to re-embed with; provider and dimensions default to the configured ones.

    A known local model's dimensions are its own (all-MiniLM-L6-v2: 384), whatever is configured.
    """
    provider = provider or settings.embedding_provider
    if dimensions is None and provider == "local":
        dimensions = KNOWN_DIMENSIONS.get(model)
    key = f"{provider}:{model}:{dimensions or settings.embedding_dimensions}"
    try:
        return ModelSpec.parse(key)
    except ValueError:
        raise InvalidArgument(
            f"{model!r} is not a model name: use letters, digits and . _ / : @ - (at most 100)"
        ) from None


async def reembed(
    settings: Settings, targets: Targets, *, tenant_slug: str, target: ModelSpec, batch: int, progress: Progress
) -> ReembedReport:
    """Embed every memory with `target`, then switch the tenant to it."""
    # Before the first batch, so the new vectors go into the index as they are stored.
    index_built = await ensure_vector_index(targets.owner, target)
    async with _tenant(settings, targets, tenant_slug) as tenant:
        previous = await tenant.active_model()
        rerun = f"mindscape memory reembed --tenant {tenant_slug} --provider {target.provider} "
        rerun += f"--model {target.model} --dimensions {target.dimensions}"
        done = await tenant.embed_all(target, batch=batch, progress=progress, rerun=rerun)
        switched = previous != target
        if switched:
            await _switch(targets, tenant.caller, target)
            # Memories stored between the last batch and the switch have the old model's vector
            # only. Any stored later are pending like any other, for `memory backfill` or the
            # server's own background backfill.
            done += await tenant.embed_all(target, batch=batch, progress=progress, rerun=rerun)
    return ReembedReport(previous.key, target.key, done, switched, index_built)


async def _switch(targets: Targets, caller: Caller, target: ModelSpec) -> None:
    async with owner_connection(targets.owner) as conn:
        updated = await tenants.set_setting(conn, tenant_id=caller.tenant_id, key=TENANT_MODEL_KEY, value=target.key)
    if updated is None:
        raise NotFound(f"tenant {caller.tenant_slug!r} was removed during the re-embed")
