"""Migration 0004's least privilege: what the runtime and tenant roles may do with api_keys."""

from __future__ import annotations

import asyncpg
import pytest

from mindscape.database.pool import Pool
from mindscape.tenancy import keys
from mindscape.tenancy.transaction import tenant_transaction
from tests.support.tenants import World

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO mindscape.api_keys (tenant_id, scope, prefix, key_hash)"
        " SELECT id, 'write', '0123456789ab', sha256('x') FROM mindscape.tenants LIMIT 1",
        "UPDATE mindscape.api_keys SET revoked_at = NULL",
        "UPDATE mindscape.api_keys SET expires_at = NULL",
        "UPDATE mindscape.api_keys SET scope = 'write'",
        "DELETE FROM mindscape.api_keys",
        "SELECT name FROM mindscape.api_keys",
    ],
    ids=["insert", "unrevoke", "unexpire", "escalate", "delete", "read-name"],
)
async def test_the_runtime_role_can_only_verify_and_touch_keys(pool: Pool, statement: str) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement)
        # What verification needs still works.
        await conn.execute("SELECT id, scope, key_hash FROM mindscape.api_keys LIMIT 1")
        await conn.execute("UPDATE mindscape.api_keys SET last_used_at = last_used_at WHERE false")


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
