"""API key administration behind `mindscape key ...`, over the owner connection.

A new key's secret is returned to be shown once and never stored: the table keeps only its SHA-256.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from mindscape.config.settings import Settings
from mindscape.database.pool import owner_connection
from mindscape.database.targets import Targets
from mindscape.errors import InvalidArgument, NotFound
from mindscape.models.api_key import ApiKey, Scope
from mindscape.queries import api_keys, lookups
from mindscape.tenancy import keys
from mindscape.tenancy.operator import operator_session
from mindscape.tenancy.transaction import tenant_transaction


async def create_key(
    targets: Targets,
    *,
    tenant_slug: str,
    name: str,
    scope: Scope,
    lifetime: timedelta | None,
    persona: str | None = None,
) -> tuple[ApiKey, str]:
    """A new key for one tenant and scope (acting as `persona`, if given), and its token."""
    if persona is not None:
        await _check_persona(targets, tenant_slug, persona)
    new = keys.generate()
    async with owner_connection(targets.owner) as conn:
        created = await api_keys.create(
            conn,
            tenant_slug=tenant_slug,
            name=name,
            scope=scope,
            prefix=new.prefix,
            key_hash=new.key_hash,
            lifetime=lifetime,
            persona=persona,
        )
    if created is None:
        raise lookups.tenant_not_found(tenant_slug)
    return created, new.token


async def list_keys(targets: Targets, *, tenant_slug: str | None) -> list[ApiKey]:
    async with owner_connection(targets.owner) as conn:
        return await api_keys.list_keys(conn, tenant_slug=tenant_slug)


async def resolve_key_id(targets: Targets, given: str) -> UUID:
    """The key `given` names: its full id, a unique start of its id, or its public prefix (msk_<prefix>).

    Operators copy what `mindscape key list` and the server log show; both work here.
    """
    text = given.strip().lower()
    try:
        return UUID(text)
    except ValueError:
        pass
    public = text.removeprefix(keys.PREFIX).split("_", 1)[0]  # msk_<prefix>_… as `key create` describes it
    found = await list_keys(targets, tenant_slug=None)
    matching = [k for k in found if str(k.id).startswith(text) or k.prefix == public]
    if not matching:
        raise NotFound(f"no API key whose id starts with or whose prefix is {given!r}; `mindscape key list` shows them")
    if len(matching) > 1:
        ids = ", ".join(f"{k.id} ({k.tenant_slug})" for k in matching[:5])
        raise InvalidArgument(f"{given!r} names {len(matching)} keys: {ids}; give more of the id")
    return matching[0].id


async def revoke_key(targets: Targets, *, key_id: UUID) -> ApiKey:
    async with owner_connection(targets.owner) as conn:
        revoked = await api_keys.revoke(conn, key_id=key_id)
    if revoked is None:
        raise NotFound(f"no API key {key_id}; `mindscape key list` shows them")
    return revoked


async def rotate_key(targets: Targets, *, key_id: UUID, lifetime: timedelta | None) -> tuple[ApiKey, str]:
    """Revoke an active key and create its replacement (same tenant, scope and name); the new key and its token."""
    new = keys.generate()
    async with owner_connection(targets.owner) as conn:
        rotated = await api_keys.rotate(
            conn, key_id=key_id, prefix=new.prefix, key_hash=new.key_hash, lifetime=lifetime
        )
    if rotated is None:
        raise NotFound(f"no active API key {key_id}; `mindscape key list` shows the keys and their status")
    return rotated, new.token


async def _check_persona(targets: Targets, tenant_slug: str, persona: str) -> None:
    """The persona a key acts as must be one of its tenant's (read through the tenant's own policy)."""
    async with (
        operator_session(Settings(database_url=None), targets, tenant_slug) as (pool, caller),
        tenant_transaction(pool, caller, read_only=True, statement_timeout_ms=5000) as tx,
    ):
        try:
            await lookups.persona_id(tx.conn, tenant_id=tx.tenant_id, slug=persona)
        except NotFound:
            raise NotFound(
                f"tenant {tenant_slug!r} has no persona {persona!r}; import it first (`mindscape persona import`)"
            ) from None
