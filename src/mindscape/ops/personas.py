"""Persona import, listing and showing behind `mindscape persona ...`.

They go through the same tenant-scoped transaction as the tools, so row-level security checks them too.
"""

from __future__ import annotations

from collections import Counter

from mindscape.config.settings import Settings
from mindscape.database.targets import Targets
from mindscape.errors import NotFound
from mindscape.models.persona import Persona, PersonaIn, PersonaSummary
from mindscape.queries import personas
from mindscape.tenancy.operator import operator_session
from mindscape.tenancy.transaction import tenant_transaction


async def import_personas(
    settings: Settings, targets: Targets, *, tenant_slug: str, items: list[PersonaIn], source: str = ""
) -> Counter[str]:
    """Upsert every persona in one transaction: all of them land, or none.

    The database audits each created or changed persona as `persona_import`, with `source` (the
    file it came from) in the event's detail.
    """
    outcomes: Counter[str] = Counter(created=0, updated=0, unchanged=0)
    async with (
        operator_session(settings, targets, tenant_slug) as (pool, caller),
        tenant_transaction(
            pool,
            caller,
            read_only=False,
            statement_timeout_ms=settings.statement_timeout_ms,
            call="persona_import",
            source=source,
        ) as tx,
    ):
        for item in items:
            outcome = await personas.upsert(tx.conn, tenant_id=tx.tenant_id, persona=item)
            outcomes[outcome] += 1
    return outcomes


async def list_personas(settings: Settings, targets: Targets, *, tenant_slug: str) -> list[PersonaSummary]:
    found: list[PersonaSummary] = []
    async with (
        operator_session(settings, targets, tenant_slug) as (pool, caller),
        tenant_transaction(pool, caller, read_only=True, statement_timeout_ms=settings.statement_timeout_ms) as tx,
    ):
        after: str | None = None
        while True:
            page = await personas.list_page(
                tx.conn, tenant_id=tx.tenant_id, query=None, tags=None, trait=None, limit=100, after=after
            )
            found.extend(page.personas)
            if page.next_cursor is None:
                return found
            after = page.next_cursor


async def get_persona(settings: Settings, targets: Targets, *, tenant_slug: str, slug: str) -> Persona:
    async with (
        operator_session(settings, targets, tenant_slug) as (pool, caller),
        tenant_transaction(pool, caller, read_only=True, statement_timeout_ms=settings.statement_timeout_ms) as tx,
    ):
        found = await personas.get(tx.conn, tenant_id=tx.tenant_id, slug=slug)
    if found is None:
        raise NotFound(
            f"tenant {tenant_slug} has no persona {slug!r}; `mindscape persona list --tenant {tenant_slug}` shows them"
        )
    return found
