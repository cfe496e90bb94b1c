"""Remember and backfill: nothing an agent stores is lost to an embedding provider outage.

A memory is written even when its embedding fails; it is then "pending" for the tenant's
model. Keyword recall finds it at once, and the next successful `remember` (in the background,
after its reply) or `mindscape memory backfill` embeds the pending rows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from mindscape.database.scripts import ScriptRunner
from mindscape.embeddings.base import EmbeddingError, ModelSpec, ModelUnavailable
from mindscape.embeddings.registry import Embedders, active_spec
from mindscape.errors import InvalidArgument, NotFound
from mindscape.memory.context import context_of, embed_with_context
from mindscape.models.memory import Memory, Remembered, Visibility
from mindscape.queries import lookups, memories
from mindscape.quotas.limits import Limit, Limits
from mindscape.quotas.memories import check_content_size, refused
from mindscape.tenancy.caller import Caller
from mindscape.tenancy.transaction import TenantTx

log = logging.getLogger(__name__)
BACKFILL_BATCH = 32

OpenTx = Callable[[bool], AbstractAsyncContextManager[TenantTx]]


@dataclass(frozen=True)
class Prepared:
    """A memory checked and embedded before its transaction opens."""

    content: str
    spec: ModelSpec
    vector: list[float] | None
    problem: str | None


async def prepare(
    embedders: Embedders, tenant_id: UUID, content: str, *, max_bytes: Limit, context: str | None = None
) -> Prepared:
    """Check `content` and embed it (with its `context`, see memory/context.py)."""
    size = len(content.encode("utf-8"))
    if not content.strip():
        raise InvalidArgument("content is empty; send the text to remember")
    check_content_size(size, max_bytes)  # before paying the provider; rechecked in the transaction
    spec = embedders.model_for(tenant_id)
    try:
        vector = (await embed_with_context(embedders.get(spec), [(content, context)]))[0]
    except EmbeddingError as exc:
        # A missing local model was reported once already, in one line with the fix.
        level = logging.DEBUG if isinstance(exc, ModelUnavailable) else logging.WARNING
        log.log(level, "embedding failed, memory stored as pending: %s", exc)
        return Prepared(content, spec, None, str(exc))
    return Prepared(content, spec, vector, None)


async def persona_id(tx: TenantTx, slug: str | None) -> UUID | None:
    return await lookups.persona_id(tx.conn, tenant_id=tx.tenant_id, slug=slug)


@dataclass(frozen=True)
class Versioning:
    """Where a new memory sits: who may see it, the task it came from, the version it replaces."""

    visibility: Visibility | None = None  # None: tenant, or the superseded version's
    task_id: UUID | None = None
    supersedes: UUID | None = None


def memory_not_found(memory_id: UUID) -> NotFound:
    return NotFound(f"no memory with id {memory_id} in this workspace (forgotten, or not visible to you)")


def superseded_conflict(memory_id: UUID, current: UUID | None) -> InvalidArgument:
    """The memory is no longer the current version: name the one that is."""
    facts = {"conflict": {"id": str(memory_id), "current_version_id": str(current) if current else None}}
    where = f"the current version is {current}: read it (memory://{current}) and supersede or update that one"
    if current is None:
        where = "its chain has no current version any more"
    return InvalidArgument(f"conflict: memory {memory_id} was already superseded; {where}. {json.dumps(facts)}")


async def current_version(tx: TenantTx, memory_id: UUID) -> UUID | None:
    """The newest visible version of `memory_id`'s chain, if it is still current."""
    ids = await memories.chain(tx.conn, tenant_id=tx.tenant_id, memory_id=memory_id)
    if not ids:
        return None
    head = await memories.state(tx.conn, tenant_id=tx.tenant_id, memory_id=ids[-1])
    return ids[-1] if head is not None and head["valid_to"] is None else None


def check_visibility(caller: Caller, visibility: str, persona: str | None) -> None:
    """Clear words before the policy would refuse: persona visibility belongs to a bound persona."""
    if visibility != "persona":
        return
    if caller.persona is None:
        raise InvalidArgument(
            "visibility 'persona' needs a persona binding, and this credential acts as no persona "
            "(an API key created with --persona, a JWT persona claim, or serve --persona); use 'tenant' or 'private'"
        )
    if persona != caller.persona:
        raise InvalidArgument(
            f"visibility 'persona' is for memories of your own persona {caller.persona!r}; "
            f"pass persona={caller.persona!r} or omit it"
        )


async def store(
    tx: TenantTx,
    embedders: Embedders,
    prepared: Prepared,
    *,
    caller: Caller,
    persona: str | None,
    kind: str | None,
    metadata: dict[str, Any],
    importance: float | None,
    expires_in_days: int | None,
    versioning: Versioning | None = None,
    lock: bool = False,
) -> Remembered:
    """Store one memory; with `versioning.supersedes`, as the next version of that memory, whose
    persona, kind and visibility it keeps unless given, closing the old one in this transaction.
    With `lock`, the insert takes the tenant's memory-writes lock (quotas/memories.py) first."""
    how = versioning or Versioning()
    expires_at = expiry(expires_in_days)
    old: dict[str, Any] | None = None
    the_persona = await persona_id(tx, persona)
    visibility: str | None = how.visibility
    if how.supersedes is not None:
        old = await memories.state(tx.conn, tenant_id=tx.tenant_id, memory_id=how.supersedes)
        if old is None:
            raise memory_not_found(how.supersedes)
        if old["valid_to"] is not None:
            raise superseded_conflict(how.supersedes, await current_version(tx, how.supersedes))
        the_persona = the_persona if persona is not None else old["persona_id"]
        kind = kind or old["kind"]
        visibility = visibility or old["visibility"]
    visibility = visibility or "tenant"
    if visibility == "persona":
        if persona is None and old is None and caller.persona is not None:
            persona = caller.persona  # a persona memory of the persona the caller acts as
            the_persona = await persona_id(tx, persona)
        slug = persona if persona is not None else await lookups.persona_slug(tx.conn, the_persona)
        check_visibility(caller, visibility, slug)
    try:
        memory_id, duplicate = await memories.insert(
            tx.conn,
            tenant_id=tx.tenant_id,
            persona_id=the_persona,
            kind=kind or "note",
            content=prepared.content,
            metadata=metadata,
            importance=importance,
            expires_at=expires_at,
            visibility=visibility,
            task_id=how.task_id,
            lock=lock,
        )
    except asyncpg.ForeignKeyViolationError as exc:
        raise _no_such_task(exc, how.task_id) from None
    if old is not None and how.supersedes is not None:
        if duplicate:
            same = memory_id == how.supersedes
            raise InvalidArgument(
                f"memory {how.supersedes} already says exactly this; change its metadata with update_memory"
                if same
                else f"this content is already stored as current memory {memory_id}; forget or supersede that one"
            )
        if not await memories.supersede(tx.conn, tenant_id=tx.tenant_id, old_id=how.supersedes, new_id=memory_id):
            # Another supersede of the same memory committed while this one waited for its row.
            raise superseded_conflict(how.supersedes, await current_version(tx, how.supersedes))
    active = embedders.observe(tx.tenant_id, tx.settings)
    if prepared.vector is not None and prepared.spec == active:
        await memories.store_embeddings(
            tx.conn, tenant_id=tx.tenant_id, model=active.key, memory_ids=[memory_id], vectors=[prepared.vector]
        )
        ready = True
    else:
        ready = await memories.has_embedding(tx.conn, tenant_id=tx.tenant_id, model=active.key, memory_id=memory_id)
    note = None
    if not ready:
        embedders.mark(tx.tenant_id, active, clean=False)
        note = "stored; embedding is pending (provider unavailable), keyword recall finds it now"
    return Remembered(
        id=memory_id,
        duplicate=duplicate,
        embedding="ready" if ready else "pending",
        note=note,
    )


def _no_such_task(exc: asyncpg.ForeignKeyViolationError, task_id: UUID | None) -> Exception:
    if task_id is not None and "task" in (exc.constraint_name or ""):
        return NotFound(f"no task with id {task_id} in this workspace; list_tasks shows the ids")
    return exc


def at_once(embedders: Embedders, prepared: Prepared, seen: dict[str, Any], *, visibility: str | None) -> bool:
    """Whether store_at_once can store `prepared` for a tenant whose settings are `seen`: it is not
    persona-visible (a check that needs the caller's binding; a version that would inherit that
    visibility is left to store() by the statement itself), and was embedded with the model those
    settings name (JSON numbers only, as the statement compares them: json.dumps would write NaN
    or Infinity, which PostgreSQL refuses)."""
    if visibility == "persona" or prepared.vector is None:
        return False
    try:
        json.dumps(seen, allow_nan=False)
    except ValueError:
        return False
    return prepared.spec == active_spec(seen, embedders.default)


async def store_at_once(
    writer: ScriptRunner,
    prepared: Prepared,
    *,
    tenant_id: UUID,
    tenant_slug: str,
    seen: tuple[dict[str, Any], Limits],
    persona: str | None,
    kind: str | None,
    metadata: dict[str, Any],
    importance: float | None,
    expires_in_days: int | None,
    visibility: Visibility | None,
    task_id: UUID | None,
    supersedes: UUID | None = None,
) -> Remembered | None:
    """store() in one statement, where `at_once` says it can: the same answers, errors and quota
    check, from the tenant's settings as `seen` (settings and the limits made from them), also for
    a new version of `supersedes`. None: nothing was written, use store(), which also says why a
    version could not be written."""
    settings, limits = seen
    if prepared.vector is None:
        return None
    check_content_size(len(prepared.content.encode("utf-8")), limits.max_content_bytes)
    try:
        done = await memories.remember_at_once(
            writer,
            tenant_id=tenant_id,
            persona=persona,
            kind=kind,
            content=prepared.content,
            metadata=metadata,
            importance=importance,
            expires_at=expiry(expires_in_days),
            visibility=visibility,
            task_id=task_id,
            supersedes=supersedes,
            max_memories=limits.max_memories.value,
            model=prepared.spec.key,
            vector=prepared.vector,
            seen=settings,
        )
    except asyncpg.ForeignKeyViolationError as exc:
        raise _no_such_task(exc, task_id) from None
    except memories.MemoryLimitReached as over:
        raise refused(tenant_slug, limits.max_memories, held=over.live - 1, adding=1) from None
    if done is None:
        return None
    memory_id, duplicate = done
    return Remembered(id=memory_id, duplicate=duplicate, embedding="ready", note=None)


def expiry(expires_in_days: int | None) -> datetime | None:
    return datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None


async def backfill(open_tx: OpenTx, embedders: Embedders, spec: ModelSpec, *, batch: int = BACKFILL_BATCH) -> int:
    """Embed one batch of the tenant's pending memories; returns how many were embedded."""
    async with open_tx(True) as tx:
        tenant_id = tx.tenant_id
        todo = await memories.pending(tx.conn, tenant_id=tenant_id, model=spec.key, limit=batch)
    if todo:
        vectors = await embed_with_context(embedders.get(spec), [(content, context) for _, content, context in todo])
        async with open_tx(False) as tx:
            await memories.store_embeddings(
                tx.conn, tenant_id=tx.tenant_id, model=spec.key, memory_ids=[i for i, _, _ in todo], vectors=vectors
            )
    if len(todo) < batch:  # the backlog is empty now: later remembers need not look again
        embedders.mark(tenant_id, spec, clean=True)
    return len(todo)


async def backfill_quietly(run: Callable[[], Awaitable[int]]) -> None:
    """For the background: a failure is logged, never raised into the server's task group."""
    try:
        done = await run()
        if done:
            log.info("embedded %d pending memories", done)
    except EmbeddingError as exc:  # the provider failed again: nothing is lost, no traceback needed
        log.warning("background backfill stopped (%s); `mindscape memory backfill` retries it", exc)
    except Exception:
        log.warning("background backfill failed; `mindscape memory backfill` retries it", exc_info=True)


def _same_content(changes: memories.MemoryChanges) -> InvalidArgument:
    return InvalidArgument(
        f"the same content is already stored with visibility {changes.visibility!r}; forget one of the two"
    )


async def update(
    tx: TenantTx, caller: Caller, memory_id: UUID, expected_version: int, changes: memories.MemoryChanges
) -> Memory:
    """Correct the current version of a memory in place (never its content: that is a new version).

    First in one statement, where the rules that need no read first allow it (memories.UPDATE_AT_ONCE:
    it never applies a change the checks below would refuse); else read, check, then update."""
    try:
        done = await memories.update_at_once(
            tx.conn, tenant_id=tx.tenant_id, memory_id=memory_id, expected_version=expected_version, changes=changes
        )
    except asyncpg.UniqueViolationError:
        raise _same_content(changes) from None
    if done is not None:
        return done
    old = await memories.state(tx.conn, tenant_id=tx.tenant_id, memory_id=memory_id)
    if old is None:
        raise memory_not_found(memory_id)
    if old["valid_to"] is not None:
        raise superseded_conflict(memory_id, await current_version(tx, memory_id))
    if old["version"] != expected_version:
        raise version_conflict(memory_id, old["version"], expected_version)
    if changes.metadata is not None and context_of(changes.metadata) != context_of(old["metadata"]):
        raise InvalidArgument(
            "metadata.context is embedded with the content, so changing it makes a new version: "
            f"remember(content, metadata, supersedes={memory_id})"
        )
    if changes.visibility == "private" and old["written_by"] != caller.principal:
        raise InvalidArgument(f"only its writer ({old['written_by']}) can make memory {memory_id} private")
    if changes.visibility == "persona":
        check_visibility(caller, "persona", await lookups.persona_slug(tx.conn, old["persona_id"]))
    try:
        done = await memories.update(
            tx.conn, tenant_id=tx.tenant_id, memory_id=memory_id, expected_version=expected_version, changes=changes
        )
    except asyncpg.UniqueViolationError:
        raise _same_content(changes) from None
    if not done:  # changed between the read and the update: say what it is now
        now = await memories.state(tx.conn, tenant_id=tx.tenant_id, memory_id=memory_id)
        if now is None:
            raise memory_not_found(memory_id)
        if now["valid_to"] is not None:
            raise superseded_conflict(memory_id, await current_version(tx, memory_id))
        raise version_conflict(memory_id, now["version"], expected_version)
    updated = await memories.get(tx.conn, tenant_id=tx.tenant_id, memory_id=memory_id)
    if updated is None:
        raise memory_not_found(memory_id)
    return updated


def version_conflict(memory_id: UUID, current: int, expected: int) -> InvalidArgument:
    facts = {"conflict": {"id": str(memory_id), "current_version": current}}
    return InvalidArgument(
        f"version conflict: memory {memory_id} is at version {current}, not {expected}: it changed since you "
        f"read it. Re-read it (memory://{memory_id}), then retry with expected_version={current}. {json.dumps(facts)}"
    )
