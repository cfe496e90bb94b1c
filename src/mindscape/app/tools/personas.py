"""Persona lookup: get_persona, list_personas, the persona:// resource and the `persona` prompt."""

# No `from __future__ import annotations`: the SDK reads these annotations at registration.
import json
from typing import Annotated

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.types import ToolAnnotations
from pydantic import Field

from mindscape.app.arguments import Cursor, Limit, Slug
from mindscape.app.calls import tenant_call, tenant_read
from mindscape.app.identity import current_caller
from mindscape.app.rendering import memories_block, system_prompt
from mindscape.app.state import AppState
from mindscape.config.settings import is_slug
from mindscape.embeddings.base import EmbeddingError
from mindscape.errors import InvalidArgument
from mindscape.memory.recall import recall
from mindscape.models.memory import Memory
from mindscape.models.persona import Persona, PersonaPage, Tag, TraitFilter
from mindscape.queries import fulltext, lookups, memories, personas
from mindscape.queries.memories import Filters
from mindscape.tenancy.caller import Caller
from mindscape.tenancy.transaction import TenantTx

MAX_TASK = 4000
MAX_RECALL = 20
READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)


async def get_persona(slug: Slug, ctx: Context[AppState]) -> Persona:
    """A persona's traits, instructions (a system prompt) and tags."""
    async with tenant_read(ctx) as tx:
        found = await personas.get(tx.conn, tenant_id=tx.tenant_id, slug=slug)
    if found is None:
        raise lookups.persona_not_found(slug)
    return found


async def persona_exists(ctx: Context[AppState], slug: str) -> None:
    """NotFound when `slug` names no live persona: asked by a tool whose filter by it found nothing
    (the filter resolves the slug in its own statement, queries/lookups.py live_persona)."""
    async with tenant_read(ctx) as tx:
        await lookups.persona_id(tx.conn, tenant_id=tx.tenant_id, slug=slug)


async def list_personas(
    ctx: Context[AppState],
    query: Annotated[str | None, Field(min_length=1, max_length=200)] = None,
    tags: Annotated[list[Tag] | None, Field(max_length=16, description="All must match.")] = None,
    trait: TraitFilter | None = None,
    limit: Limit = 20,
    cursor: Cursor | None = None,
) -> PersonaPage:
    """List personas (slug, name, summary, tags), best match for `query` (name and summary) first."""
    async with tenant_read(ctx) as tx:
        return await personas.list_page(
            tx.conn, tenant_id=tx.tenant_id, query=query, tags=tags, trait=trait, limit=limit, after=cursor
        )


async def persona_resource(slug: str, ctx: Context[AppState]) -> str:
    """A persona as JSON."""
    if not is_slug(slug):
        raise lookups.persona_not_found(slug)
    async with tenant_read(ctx) as tx:
        found = await personas.get(tx.conn, tenant_id=tx.tenant_id, slug=slug)
    if found is None:
        raise lookups.persona_not_found(slug)
    return json.dumps(found.model_dump(mode="json"), ensure_ascii=False)


async def persona_prompt(ctx: Context[AppState], slug: str, task: str | None = None, recall: str | None = None) -> str:
    """Act as a persona: its instructions and traits as a system prompt, optionally with a task.

    `recall` (a number, 1-20) appends that many of the persona's memories: the best matches for
    the task, or the most recent ones without a task.
    """
    if not is_slug(slug):
        raise InvalidArgument(f"slug {slug[:80]!r} is not a persona slug (lowercase letters, digits, '-')")
    if task is not None and len(task) > MAX_TASK:
        raise InvalidArgument(f"task is longer than {MAX_TASK} characters; shorten it")
    count = _recall_count(recall)
    if count and task:
        # Embedded before the transaction: a provider call must not hold a connection.
        state = ctx.request_context.lifespan_context
        vector = await _embed_or_none(state, current_caller(ctx), fulltext.parse(task, truncate=True).text)
    else:
        vector = None
    async with tenant_call(ctx, read_only=True) as tx:
        found = await personas.get(tx.conn, tenant_id=tx.tenant_id, slug=slug)
        if found is None:
            raise lookups.persona_not_found(slug)
        recalled = await _persona_memories(ctx, tx, slug, task, count, vector) if count else []
    text = system_prompt(found, task)
    if recalled:
        text += "\n\n" + memories_block(recalled, "What you remember:")
    return text


def _recall_count(recall: str | None) -> int:
    if recall is None or recall.strip() == "":
        return 0
    if not recall.strip().isdigit() or not 0 <= int(recall) <= MAX_RECALL:
        raise InvalidArgument(f"recall must be a number of memories from 0 to {MAX_RECALL}, got {recall[:20]!r}")
    return int(recall)


async def _embed_or_none(state: AppState, caller: Caller, text: str) -> list[float] | None:
    try:
        return (await state.embedders.get(state.embedders.model_for(caller.tenant_id)).embed([text]))[0]
    except EmbeddingError:
        return None  # keyword matches still come back


async def _persona_memories(
    ctx: Context[AppState], tx: TenantTx, slug: str, task: str | None, count: int, vector: list[float] | None
) -> list[Memory]:
    state = ctx.request_context.lifespan_context
    filters = Filters(persona=slug)  # the prompt has read the persona: it is there
    if not task:
        return await memories.recent(tx.conn, tenant_id=tx.tenant_id, filters=filters, limit=count)
    spec = state.embedders.observe(tx.tenant_id, tx.settings)
    if spec != state.embedders.model_for(tx.tenant_id):
        vector = None
    result = await recall(
        tx.conn,
        tenant_id=tx.tenant_id,
        terms=fulltext.parse(task, truncate=True),
        k=count,
        filters=filters,
        mode="hybrid",
        spec=spec,
        vector=vector,
        sizes=state.sizes,
        min_similarity=state.settings.memory_min_similarity,
    )
    return list(result.memories)


def register(server: MCPServer[AppState]) -> None:
    server.add_tool(get_persona, title="Get persona", annotations=READ)
    server.add_tool(list_personas, title="List personas", annotations=READ)
    server.resource("persona://{slug}", name="persona", title="Persona", mime_type="application/json")(persona_resource)
    server.prompt(name="persona", title="Act as a persona")(persona_prompt)
