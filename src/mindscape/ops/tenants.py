"""Tenant administration behind `mindscape tenant ...`, over the owner connection."""

from __future__ import annotations

from pydantic import ValidationError

from mindscape.config.settings import Settings
from mindscape.database.pool import owner_connection
from mindscape.database.targets import Targets
from mindscape.errors import InvalidArgument
from mindscape.models.tenant import Tenant
from mindscape.queries import lookups, tenants
from mindscape.quotas.limits import QUOTA_KEYS, Limits, TenantQuotas, effective, tenant_quotas


async def create_tenant(targets: Targets, *, slug: str, name: str) -> Tenant:
    async with owner_connection(targets.owner) as conn:
        created = await tenants.create(conn, slug=slug, name=name)
    if created is None:
        raise InvalidArgument(f"tenant {slug!r} already exists; `mindscape tenant list` shows the tenants")
    return created


async def list_tenants(targets: Targets) -> list[Tenant]:
    async with owner_connection(targets.owner) as conn:
        return await tenants.list_all(conn)


async def get_tenant(settings: Settings, targets: Targets, *, slug: str) -> tuple[Tenant, Limits]:
    """One tenant, and the limits in effect for it (its own or the defaults)."""
    async with owner_connection(targets.owner) as conn:
        found = await tenants.get_by_slug(conn, slug=slug)
        own = await tenants.get_settings_text(conn, slug=slug)
    if found is None or own is None:
        raise lookups.tenant_not_found(slug)
    return found, effective(own, settings)


async def tenant_overrides(targets: Targets) -> dict[str, TenantQuotas]:
    """Each tenant's own limits (unset fields use the defaults), by slug."""
    async with owner_connection(targets.owner) as conn:
        return {slug: tenant_quotas(found) for slug, found in (await tenants.all_settings(conn)).items()}


async def set_tenant_status(targets: Targets, *, slug: str, status: str) -> Tenant:
    async with owner_connection(targets.owner) as conn:
        updated = await tenants.set_status(conn, slug=slug, status=status)
    if updated is None:
        raise lookups.tenant_not_found(slug)
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
        raise InvalidArgument(f"{problems} (0 means unlimited, except for max_content_bytes)") from exc
    async with owner_connection(targets.owner) as conn:
        if changes or reset:
            found = await tenants.update_settings(
                conn, slug=slug, merge=dict(changes), remove=list(QUOTA_KEYS) if reset else []
            )
        else:
            found = await tenants.get_settings_text(conn, slug=slug)
    if found is None:
        raise lookups.tenant_not_found(slug)
    return effective(found, settings)
