"""completion/complete: what a client offers while a user types a prompt's or a resource template's argument.

- prompt `persona`: `slug` (persona slugs) and `recall` (0 to 20);
- `persona://{slug}`: persona slugs; `memory://{id}`, `campaign://{id}`, `task://{id}`: record ids,
  newest first.

Matched by prefix, in the caller's tenant transaction (read-only, row-level security), like every
other read: no tenant ever sees another's slugs or ids. Anything else completes to nothing.
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import Context
from mcp.types import Completion, CompletionArgument, PromptReference, ResourceTemplateReference

from mindscape.app.calls import tenant_call
from mindscape.app.state import AppState
from mindscape.queries import completions
from mindscape.queries.completions import Record

MAX_VALUES = 100  # the spec's limit for one answer
MAX_RECALL = 20  # the persona prompt's `recall` (app.tools.personas)
SLUG_LENGTH, ID_LENGTH = 64, 36
RECORDS: dict[str, Record] = {"memory://{id}": "memory", "campaign://{id}": "campaign", "task://{id}": "task"}


async def complete(
    ctx: Context[AppState, Any], ref: PromptReference | ResourceTemplateReference, argument: CompletionArgument
) -> Completion:
    typed = argument.value.strip().lower()
    if isinstance(ref, PromptReference):
        if ref.name != "persona":
            return _values([])
        if argument.name == "slug":
            return await _slugs(ctx, typed)
        if argument.name == "recall":
            return _values([str(n) for n in range(MAX_RECALL + 1) if str(n).startswith(typed)])
        return _values([])
    if ref.uri == "persona://{slug}" and argument.name == "slug":
        return await _slugs(ctx, typed)
    record = RECORDS.get(ref.uri)
    if record is None or argument.name != "id" or len(typed) > ID_LENGTH:
        return _values([])
    async with tenant_call(ctx, read_only=True) as tx:
        found = await completions.record_ids(tx.conn, record, tenant_id=tx.tenant_id, prefix=typed, limit=MAX_VALUES)
    return _values(found)


async def _slugs(ctx: Context[AppState, Any], typed: str) -> Completion:
    if len(typed) > SLUG_LENGTH:
        return _values([])
    async with tenant_call(ctx, read_only=True) as tx:
        found = await completions.persona_slugs(tx.conn, tenant_id=tx.tenant_id, prefix=typed, limit=MAX_VALUES)
    return _values(found)


def _values(found: list[str]) -> Completion:
    """At most MAX_VALUES; the queries fetch one more, so that has_more is known without a count."""
    return Completion(values=found[:MAX_VALUES], has_more=len(found) > MAX_VALUES)
