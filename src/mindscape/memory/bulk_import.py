"""`mindscape memory import`: a JSON Lines file into one tenant, checked first, written all or nothing.

Steps:
1. the tenant's active model is read (its dimensions are what `embedding` fields must have);
2. the whole file is checked (memory/jsonl.py), then every persona slug it names, in one query;
   any problem stops the import with every problem listed by line, before anything is written;
3. lines repeating an earlier line's content for the same persona are skipped (the same rule as
   `remember`: the first one wins), and so are memories the tenant already has;
4. memories without an `embedding` are embedded with the active model, before the write
   transaction opens (a provider call must not hold a connection or a transaction). If the
   provider fails, the rest are written without an embedding, "pending", and
   `mindscape memory backfill` embeds them later; nothing is lost;
5. everything is written in one tenant transaction, as principal `cli:<os user>`, so a failure
   anywhere (or Ctrl-C) leaves the tenant as it was. The database audits each memory written
   (call `memory_import`, the file as `source`).

Why not COPY: `COPY FROM` is refused on a table with row-level security for a role the policies
apply to ("COPY FROM not supported with row-level security"), and the runtime role writes
tenant data only as `mindscape_tenant`, under the policies. Copying as the owner would bypass
RLS, the one thing that keeps tenants apart. Instead each batch is one
`INSERT ... SELECT FROM unnest(<one array per column>)` (queries.memories.insert_many), plus one
for its embeddings: a few round trips per thousand rows, still checked by the tenant policies.
"""

from __future__ import annotations

import logging
import time
from array import array
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import anyio.to_thread
from rich.progress import Progress

from mindscape.config.settings import Settings
from mindscape.database.targets import Targets
from mindscape.embeddings.base import EmbeddingError, ModelSpec
from mindscape.embeddings.factory import configured_spec
from mindscape.embeddings.registry import Embedders, active_spec
from mindscape.memory.context import context_of, embed_with_context
from mindscape.memory.jsonl import FileMemory, MemoryFile, read_memory_file
from mindscape.queries import lookups, memories
from mindscape.queries.memories import NewMemory, content_hash
from mindscape.quotas import memories as memory_quota
from mindscape.quotas.limits import Limit, effective
from mindscape.tenancy.operator import operator_session
from mindscape.tenancy.transaction import TenantTx, tenant_transaction

log = logging.getLogger(__name__)

LOOKUP_BATCH = 50_000
# Memories per embedding request. The embedder batches within it (the local model shortest text
# first, so a large request wastes less on padding; a provider `embedding_batch_size` texts per
# call), and a context that is the previous line's content is embedded once.
EMBED_ROWS = 512
OpenTx = Callable[[bool], AbstractAsyncContextManager[TenantTx]]


@dataclass(frozen=True)
class ImportReport:
    model: str
    imported: int
    duplicates: int
    from_file: int
    by_provider: int
    pending: int
    provider_error: str | None
    embedding_s: float  # wall time spent embedding (model load included), for the rate operators see


@dataclass
class Row:
    """A memory to write, and the vector it will be stored with (from the file or the provider)."""

    memory: FileMemory
    persona_id: UUID | None
    sha: bytes
    vector: array[float] | list[float] | None
    from_file: bool

    @property
    def key(self) -> tuple[UUID | None, bytes, str]:
        """What makes two memories duplicates (queries.memories DEDUP): persona, content, visibility."""
        return (self.persona_id, self.sha, self.memory.visibility)

    def vector_list(self) -> list[float] | None:
        # tolist() converts in C; store_embeddings wants lists.
        return self.vector.tolist() if isinstance(self.vector, array) else self.vector


async def import_memories(
    settings: Settings, targets: Targets, *, tenant_slug: str, path: Path, batch: int, progress: Progress
) -> ImportReport:
    async with operator_session(settings, targets, tenant_slug) as (pool, caller):

        def open_tx(read_only: bool) -> AbstractAsyncContextManager[TenantTx]:
            # The database audits every memory written as `memory_import`, naming the file.
            return tenant_transaction(
                pool,
                caller,
                read_only=read_only,
                statement_timeout_ms=settings.statement_timeout_ms,
                call="memory_import",
                source=str(path),
            )

        async with open_tx(True) as tx:
            spec = active_spec(tx.settings, configured_spec(settings))
            limits = effective(tx.settings, settings)
        rows = await _checked_rows(open_tx, limits.max_content_bytes.value, spec, path, progress)
        unique = _first_of_each(rows)
        await _skip_stored(open_tx, unique)
        async with open_tx(True) as tx:  # refuse before embedding anything; _write checks again
            await memory_quota.check_room(tx, tenant_slug, limits.max_memories, adding=len(unique))
        embedders = Embedders(settings)
        started = time.perf_counter()
        try:
            error = await _embed_missing(embedders, spec, unique, EMBED_ROWS, progress)
        finally:
            await embedders.aclose()
        embedding_s = time.perf_counter() - started
        written = await _write(open_tx, spec, unique, batch, progress, quota=(tenant_slug, limits.max_memories))
    stored = [row for row in unique if row.memory.line in written]
    from_file = sum(1 for row in stored if row.from_file)
    by_provider = sum(1 for row in stored if row.vector is not None and not row.from_file)
    return ImportReport(
        model=spec.key,
        imported=len(stored),
        duplicates=len(rows) - len(stored),
        from_file=from_file,
        by_provider=by_provider,
        pending=len(stored) - from_file - by_provider,
        provider_error=error,
        embedding_s=embedding_s,
    )


async def _checked_rows(
    open_tx: OpenTx, max_content_bytes: int, spec: ModelSpec, path: Path, progress: Progress
) -> list[Row]:
    """Every memory of a file without any problem, or MemoryFileError listing them all."""

    def parse() -> MemoryFile:
        try:
            size = path.stat().st_size
        except OSError:
            size = None  # read_memory_file reports it
        task = progress.add_task("checking", total=size, bytes=True)
        return read_memory_file(
            path,
            dimensions=spec.dimensions,
            model=spec.key,
            max_content_bytes=max_content_bytes,
            on_bytes=lambda n: progress.advance(task, n),
        )

    # A worker thread: reading and parsing a large file would stall the event loop (and the pool).
    parsed = await anyio.to_thread.run_sync(parse)
    async with open_tx(True) as tx:
        ids = await lookups.live_persona_ids(tx.conn, tenant_id=tx.tenant_id, slugs=list(parsed.persona_lines))
    parsed.raise_if_problems(known_personas=set(ids))
    return [
        Row(
            memory=m,
            persona_id=ids[m.persona] if m.persona is not None else None,
            sha=content_hash(m.content),
            vector=m.embedding,
            from_file=m.embedding is not None,
        )
        for m in parsed.memories
    ]


def _first_of_each(rows: list[Row]) -> list[Row]:
    """The first line of each (persona, content, visibility): later ones are duplicates, as with `remember`."""
    seen: set[tuple[UUID | None, bytes, str]] = set()
    unique: list[Row] = []
    for row in rows:
        if row.key not in seen:
            seen.add(row.key)
            unique.append(row)
    return unique


async def _skip_stored(open_tx: OpenTx, rows: list[Row]) -> None:
    """Drop memories the tenant already has, so that a re-run does not pay the provider again.

    The insert skips duplicates by itself; this only saves the embedding work. Rows with a vector
    from the file cost nothing to embed, so only the others are looked up.
    """
    need = [row for row in rows if row.vector is None]
    if not need:
        return
    stored: set[tuple[UUID | None, bytes, str]] = set()
    async with open_tx(True) as tx:
        # Each lookup scans the tenant's memories once, so few large ones beat many small ones.
        for start in range(0, len(need), LOOKUP_BATCH):
            hashes = [row.sha for row in need[start : start + LOOKUP_BATCH]]
            stored |= await memories.existing(tx.conn, tenant_id=tx.tenant_id, hashes=hashes)
    if stored:
        rows[:] = [row for row in rows if row.key not in stored]


async def _embed_missing(
    embedders: Embedders, spec: ModelSpec, rows: list[Row], batch: int, progress: Progress
) -> str | None:
    """Embed the rows without a vector; on the first provider failure leave the rest pending."""
    need = [row for row in rows if row.vector is None]
    if not need:
        return None
    task = progress.add_task(f"embedding with {spec.key}", total=len(need))
    embedder = embedders.get(spec)
    for start in range(0, len(need), batch):
        chunk = need[start : start + batch]
        try:
            vectors = await embed_with_context(
                embedder, [(row.memory.content, context_of(row.memory.metadata)) for row in chunk]
            )
        except EmbeddingError as exc:
            log.info("embedding failed; %d memories will be stored as pending: %s", len(need) - start, exc)
            return str(exc)
        for row, vector in zip(chunk, vectors, strict=True):
            row.vector = vector
        progress.advance(task, len(chunk))
    return None


async def _write(
    open_tx: OpenTx, spec: ModelSpec, rows: list[Row], batch: int, progress: Progress, *, quota: tuple[str, Limit]
) -> set[int]:
    """Insert every row and its vector in one transaction; returns the file lines actually inserted.

    `quota` is (tenant slug, max_memories): checked after the inserts, before the commit.
    """
    task = progress.add_task("writing", total=len(rows))
    written: set[int] = set()
    tenant_slug, max_memories = quota
    async with open_tx(False) as tx:
        await memory_quota.lock_for_insert(tx, max_memories)
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            new = [
                NewMemory(
                    content=row.memory.content,
                    persona_id=row.persona_id,
                    kind=row.memory.kind,
                    metadata=row.memory.metadata,
                    importance=row.memory.importance,
                    created_at=row.memory.created_at,
                    visibility=row.memory.visibility,
                )
                for row in chunk
            ]
            ids = await memories.insert_many(tx.conn, tenant_id=tx.tenant_id, rows=new)
            embedded = [(memory_id, chunk[index].vector_list()) for index, memory_id in ids.items()]
            with_vectors = [(memory_id, vector) for memory_id, vector in embedded if vector is not None]
            if with_vectors:
                await memories.store_embeddings(
                    tx.conn,
                    tenant_id=tx.tenant_id,
                    model=spec.key,
                    memory_ids=[memory_id for memory_id, _ in with_vectors],
                    vectors=[vector for _, vector in with_vectors],
                )
            written.update(chunk[index].memory.line for index in ids)
            progress.advance(task, len(chunk))
        await memory_quota.check_count(tx, tenant_slug, max_memories, added=len(written))
    return written
