"""Persona lookup: get_persona, list_personas, the persona:// resource and the `persona` prompt."""

# No `from __future__ import annotations`: the SDK reads these annotations at registration.
import json
from typing import Annotated

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from mindscape.models.persona import Persona, PersonaPage, Tag, TraitFilter
from mindscape.queries import personas
from mindscape.rendering import system_prompt
from mindscape.server.calls import agent_error, tenant_call
from mindscape.server.state import AppState
from mindscape.settings import SLUG_PATTERN, is_slug

Slug = Annotated[str, Field(pattern=SLUG_PATTERN, max_length=64, description="Persona slug, e.g. 'ada'.")]
MAX_TASK = 4000
READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)


def _not_found(slug: str) -> str:
    return f"no persona with slug {slug!r} in this workspace; call list_personas to see the slugs"


async def get_persona(slug: Slug, ctx: Context[AppState]) -> Persona:
    """Get one persona by slug: name, summary, traits, instructions (a system prompt) and tags."""
    async with tenant_call(ctx, read_only=True) as tx:
        found = await personas.get(tx.conn, tenant_id=tx.tenant_id, slug=slug)
    if found is None:
        raise ToolError(_not_found(slug))
    return found


async def list_personas(
    ctx: Context[AppState],
    query: Annotated[
        str | None, Field(min_length=1, max_length=200, description="Words to rank by, matched on name and summary.")
    ] = None,
    tags: Annotated[list[Tag] | None, Field(max_length=16, description="Only personas having all these tags.")] = None,
    trait: Annotated[
        TraitFilter | None, Field(description="Only personas whose trait at path equals the value.")
    ] = None,
    limit: Annotated[int, Field(ge=1, le=100, description="Page size.")] = 20,
    cursor: Annotated[str | None, Field(max_length=512, description="next_cursor from the previous page.")] = None,
) -> PersonaPage:
    """List personas (slug, name, short summary, tags), best text match first when `query` is given."""
    async with tenant_call(ctx, read_only=True) as tx:
        return await personas.list_page(
            tx.conn, tenant_id=tx.tenant_id, query=query, tags=tags, trait=trait, limit=limit, after=cursor
        )


async def persona_resource(slug: str, ctx: Context[AppState]) -> str:
    """A persona as JSON."""
    if not is_slug(slug):
        raise ResourceNotFoundError(_not_found(slug))
    async with tenant_call(ctx, read_only=True, kind="resource") as tx:
        found = await personas.get(tx.conn, tenant_id=tx.tenant_id, slug=slug)
    if found is None:
        raise ResourceNotFoundError(_not_found(slug))
    return json.dumps(found.model_dump(mode="json"), ensure_ascii=False)


async def persona_prompt(ctx: Context[AppState], slug: str, task: str | None = None) -> str:
    """Act as a persona: its instructions and traits as a system prompt, optionally with a task."""
    if not is_slug(slug):
        raise agent_error("prompt", f"slug {slug[:80]!r} is not a persona slug (lowercase letters, digits, '-')")
    if task is not None and len(task) > MAX_TASK:
        raise agent_error("prompt", f"task is longer than {MAX_TASK} characters; shorten it")
    async with tenant_call(ctx, read_only=True, kind="prompt") as tx:
        found = await personas.get(tx.conn, tenant_id=tx.tenant_id, slug=slug)
    if found is None:
        raise agent_error("prompt", _not_found(slug))
    return system_prompt(found, task)


def register(server: MCPServer[AppState]) -> None:
    server.add_tool(get_persona, title="Get persona", annotations=READ)
    server.add_tool(list_personas, title="List personas", annotations=READ)
    server.resource("persona://{slug}", name="persona", mime_type="application/json")(persona_resource)
    server.prompt(name="persona", title="Act as a persona")(persona_prompt)
