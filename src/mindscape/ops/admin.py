"""Operator actions behind the CLI.

Tenant administration uses the owner connection. Persona import and listing go through the
same tenant-scoped transaction as the tools, so row-level security checks them too.
"""

from __future__ import annotations

import getpass
from collections import Counter
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

from pydantic import ValidationError

from mindscape.app.identity import Caller, resolve_caller
from mindscape.config.settings import Settings
from mindscape.database.checks import check_database
from mindscape.database.pool import Pool, connect, create_pool
from mindscape.database.urls import Targets
from mindscape.errors import InvalidArgument, NotFound
from mindscape.models.persona import PersonaIn, PersonaSummary
from mindscape.models.tenant import Tenant
from mindscape.queries import audit, personas, tenants
from mindscape.quotas.limits import QUOTA_KEYS, Limits, TenantQuotas, effective, tenant_quotas
from mindscape.tenancy.transaction import tenant_transaction


async def create_tenant(targets: Targets, *, slug: str, name: str) -> Tenant:
    conn = await connect(targets.owner)
    try:
        created = await tenants.create(conn, slug=slug, name=name)
    finally:
        await conn.close()
    if created is None:
        raise InvalidArgument(f"tenant {slug!r} already exists; `mindscape tenant list` shows the tenants")
    return created


async def list_tenants(targets: Targets) -> list[Tenant]:
    conn = await connect(targets.owner)
    try:
        return await tenants.list_all(conn)
    finally:
        await conn.close()


async def tenant_overrides(targets: Targets) -> dict[str, TenantQuotas]:
    """Each tenant's own limits (unset fields use the defaults), by slug."""
    conn = await connect(targets.owner)
    try:
        return {slug: tenant_quotas(found) for slug, found in (await tenants.all_settings(conn)).items()}
    finally:
        await conn.close()


async def set_tenant_status(targets: Targets, *, slug: str, status: str) -> Tenant:
    conn = await connect(targets.owner)
    try:
        updated = await tenants.set_status(conn, slug=slug, status=status)
    finally:
        await conn.close()
    if updated is None:
        raise NotFound(f"tenant {slug!r} does not exist; `mindscape tenant list` shows the tenants")
    return updated


async def tenant_quota(
    settings: Settings, targets: Targets, *, slug: str, changes: dict[str, int], reset: bool
) -> Limits:
    """Remove the tenant's own limits (`reset`), then set `changes`; returns the limits now in effect."""
    try:
        TenantQuotas.model_validate(changes)
    except ValidationError as exc:
        problems = "; ".join(
            f"--{'-'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
        raise InvalidArgument(f"{problems} (0 means unlimited for calls and memories)") from exc
    conn = await connect(targets.owner)
    try:
        if changes or reset:
            found = await tenants.update_settings(
                conn, slug=slug, merge=dict(changes), remove=list(QUOTA_KEYS) if reset else []
            )
        else:
            found = await tenants.get_settings_text(conn, slug=slug)
    finally:
        await conn.close()
    if found is None:
        raise NotFound(f"tenant {slug!r} does not exist; `mindscape tenant list` shows the tenants")
    return effective(found, settings)


@asynccontextmanager
async def operator_session(
    settings: Settings, targets: Targets, tenant_slug: str
) -> AsyncGenerator[tuple[Pool, Caller]]:
    """A small runtime pool and the tenant it acts for, after the same checks `serve` makes."""
    pool = await create_pool(targets.runtime, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            await check_database(conn)
            caller = await resolve_caller(conn, tenant_slug=tenant_slug, principal=f"cli:{getpass.getuser()}")
        yield pool, caller
    finally:
        await pool.close()


async def import_personas(
    settings: Settings, targets: Targets, *, tenant_slug: str, items: list[PersonaIn]
) -> Counter[str]:
    """Upsert every persona in one transaction: all of them land, or none."""
    outcomes: Counter[str] = Counter(created=0, updated=0, unchanged=0)
    async with (
        operator_session(settings, targets, tenant_slug) as (pool, caller),
        tenant_transaction(pool, caller, read_only=False, statement_timeout_ms=settings.statement_timeout_ms) as tx,
    ):
        changed: list[str] = []
        for item in items:
            outcome = await personas.upsert(tx.conn, tenant_id=tx.tenant_id, persona=item)
            outcomes[outcome] += 1
            if outcome != "unchanged":
                changed.append(item.slug)
        await audit.record(
            tx.conn,
            tenant_id=tx.tenant_id,
            tool="persona_import",
            target_ids=changed,
            outcome="imported",
            detail=dict(outcomes),
        )
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
