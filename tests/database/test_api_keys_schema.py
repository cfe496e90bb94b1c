"""Least privilege on api_keys (migrations 0004, 0006): what the runtime and tenant roles may do."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from mindscape.database.pool import Connection, Pool, owner_connection
from mindscape.database.targets import Targets
from mindscape.queries import api_keys
from mindscape.tenancy import keys
from mindscape.tenancy.transaction import tenant_transaction
from tests.support.tenants import World

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO mindscape.api_keys (tenant_id, scope, prefix, key_hash)"
        " SELECT id, 'write', '0123456789ab', sha256('x') FROM mindscape.resolve_tenant('x')",
        "UPDATE mindscape.api_keys SET revoked_at = NULL",
        "UPDATE mindscape.api_keys SET expires_at = NULL",
        "UPDATE mindscape.api_keys SET scope = 'write'",
        "DELETE FROM mindscape.api_keys",
        "SELECT name FROM mindscape.api_keys",
        "SELECT prefix, tenant_id FROM mindscape.api_keys",
        "UPDATE mindscape.api_keys SET last_used_at = last_used_at WHERE false",
    ],
    ids=["insert", "unrevoke", "unexpire", "escalate", "delete", "read-name", "list", "direct-touch"],
)
async def test_the_runtime_role_can_only_look_up_and_touch_keys_by_handle(pool: Pool, statement: str) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement)
        # What verification needs still works: a key by its prefix, a touch by its id.
        assert await api_keys.lookup(conn, prefix="000000000000") == []
        assert await api_keys.touch_many(conn, key_ids=[uuid.uuid4()], seconds_ago=[0.0]) == 0


async def test_a_key_lookup_returns_only_that_key(targets: Targets, pool: Pool, world: World) -> None:
    async with owner_connection(targets.owner) as owner:
        made = [await _key(owner, world.a.tenant_slug), await _key(owner, world.b.tenant_slug)]
    async with pool.acquire() as conn:
        found = await api_keys.lookup(conn, prefix=made[0].prefix)
    assert [(r.tenant_id, r.tenant_slug, r.tenant_active, r.key_hash) for r in found] == [
        (world.a.tenant_id, world.a.tenant_slug, True, made[0].key_hash)
    ]


async def _key(conn: Connection, slug: str) -> keys.NewKey:
    new = keys.generate()
    created = await api_keys.create(
        conn, tenant_slug=slug, name="probe", scope="read", prefix=new.prefix, key_hash=new.key_hash, lifetime=None
    )
    assert created is not None
    return new


async def test_a_tenant_transaction_cannot_see_keys(pool: Pool, world: World) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with tenant_transaction(pool, world.a, read_only=True, statement_timeout_ms=5000) as tx:
            await tx.conn.fetch("SELECT prefix FROM mindscape.api_keys")


def test_key_format_round_trips_and_refuses_lookalikes() -> None:
    new = keys.generate()
    assert keys.parse(new.token) == (new.prefix, new.secret)
    assert keys.matches(new.secret, new.key_hash)
    assert not keys.matches(new.secret + "x", new.key_hash)
    assert new.secret not in repr(new)
    for bad in ("", "msk_", new.token + "x", new.token.replace("msk_", "msx_"), new.token.upper(), " " + new.token):
        assert keys.parse(bad) is None
