"""The credential cache: hits need no database; changes (migration 0010's notifications) evict at once;
a notification lost with the listening connection never leaves a revoked key usable.

The cache and its listener run here in the test's event loop against the real database, as a
server process runs them; the verifiers are the HTTP server's own. The listener connects
directly (LISTEN does not pass through PgBouncer): through a pooler the cache is off.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import jwt
import pytest
from pydantic import SecretStr

from mindscape.app.identity import TENANT_SLUG
from mindscape.app.state import open_state
from mindscape.database.pool import Pool, connect, create_pool, owner_connection
from mindscape.database.targets import Targets
from mindscape.models.api_key import KeyRecord
from mindscape.ops import keys as key_ops
from mindscape.ops import tenants as tenant_ops
from mindscape.tenancy import keys
from mindscape.tenancy.credential_cache import CHANNEL, CredentialCache, key_fingerprint, tenant_fingerprint
from mindscape.tenancy.credential_listener import CredentialListener
from mindscape.transports.http.auth.api_keys import ApiKeyVerifier
from mindscape.transports.http.auth.jwt import JwtConfig, JwtVerifier
from mindscape.transports.http.refusals import Refused
from tests.support.http import new_key
from tests.support.tenants import PERSONAS_A, make_tenant, settings_for

pytestmark = pytest.mark.anyio

TTL_S = 60.0  # far longer than any test: only eviction, never age, can end an entry here
SECRET = SecretStr("a-shared-secret-for-tests-of-32-bytes!")
JWT = JwtConfig(
    issuer="https://issuer.test",
    audience="mindscape",
    tenant_claim="mindscape_tenant",
    algorithms=["HS256"],
    leeway_s=0,
    jwks_url=None,
    shared_secret=SECRET,
)


@dataclass
class Cached:
    cache: CredentialCache
    listener: CredentialListener
    pool: Pool
    keys: ApiKeyVerifier
    jwts: JwtVerifier


async def until(check: Callable[[], Awaitable[bool]], *, within_s: float) -> float:
    """Poll `check` until it holds; how long that took. Fails after `within_s`."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > within_s:
            raise AssertionError(f"not within {within_s} s")
        await anyio.sleep(0.01)
    return time.monotonic() - started


@asynccontextmanager
async def cached(targets: Targets) -> AsyncGenerator[Cached]:
    if targets.pooled:
        pytest.skip("LISTEN needs a direct connection; through a pooler the cache is off (test below)")
    pool = await create_pool(targets.runtime, min_size=1, max_size=2, pooled=False)
    cache = CredentialCache(ttl_s=TTL_S, max_entries=100)
    listener = CredentialListener(targets.runtime, cache, check_s=5.0)
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(listener.run)

            async def serving() -> bool:
                return cache.serving

            await until(serving, within_s=30)
            yield Cached(cache, listener, pool, ApiKeyVerifier(pool, cache=cache), JwtVerifier(JWT, pool, cache=cache))
            group.cancel_scope.cancel()
    finally:
        await pool.close()


async def key_id(targets: Targets, token: str) -> uuid.UUID:
    async with owner_connection(targets.owner) as conn:
        found = await conn.fetchval("SELECT id FROM mindscape.api_keys WHERE prefix = $1", prefix(token))
    assert isinstance(found, uuid.UUID)
    return found


def prefix(token: str) -> str:
    parsed = keys.parse(token)
    assert parsed is not None
    return parsed[0]


def jwt_for(slug: str) -> str:
    claims = {
        "iss": JWT.issuer,
        "aud": JWT.audience,
        "sub": "agent",
        "exp": int(time.time()) + 600,
        "scope": "mindscape:read",
        "mindscape_tenant": slug,
    }
    return jwt.encode(claims, SECRET.get_secret_value(), algorithm="HS256")


async def refused(verify: Callable[[str], Awaitable[object]], token: str) -> int | None:
    """The refusal's status, or None when the credential was accepted."""
    try:
        await verify(token)
    except Refused as exc:
        return exc.status
    return None


async def test_a_cached_key_is_verified_without_the_database(targets: Targets) -> None:
    tenant = await make_tenant(targets, PERSONAS_A, "cc")
    warm, cold = [await new_key(targets, tenant.tenant_slug, "read") for _ in range(2)]
    async with cached(targets) as c:
        await c.keys.verify_token(warm)
        assert (c.cache.stats.hits, c.cache.stats.misses) == (0, 1)
        await c.keys.verify_token(warm)
        assert c.cache.stats.hits == 1
        wrong = warm[:-4] + ("AAAA" if not warm.endswith("AAAA") else "BBBB")
        assert await refused(c.keys.verify_token, wrong) == 401  # a cached prefix is no pass for another secret
        await c.pool.close()  # from here on, any database lookup fails (503)
        token = await c.keys.verify_token(warm)
        assert token.claims is not None
        assert token.claims[TENANT_SLUG] == tenant.tenant_slug
        assert await refused(c.keys.verify_token, cold) == 503


async def test_revoking_a_cached_key_refuses_it_at_once(targets: Targets) -> None:
    tenant = await make_tenant(targets, PERSONAS_A, "cc")
    token = await new_key(targets, tenant.tenant_slug, "write")
    async with cached(targets) as c:
        await c.keys.verify_token(token)
        await c.keys.verify_token(token)
        assert c.cache.stats.hits == 1
        await key_ops.revoke_key(targets, key_id=await key_id(targets, token))

        async def is_refused() -> bool:
            return await refused(c.keys.verify_token, token) == 401

        await until(is_refused, within_s=1.0)


async def test_disabling_a_tenant_refuses_its_cached_keys_and_tokens_at_once(targets: Targets) -> None:
    tenant = await make_tenant(targets, PERSONAS_A, "cc")
    token = await new_key(targets, tenant.tenant_slug, "read")
    bearer = jwt_for(tenant.tenant_slug)
    async with cached(targets) as c:
        for _ in range(2):
            await c.keys.verify_token(token)
            await c.jwts.verify(bearer)
        assert c.cache.stats.hits == 2
        await tenant_ops.set_tenant_status(targets, slug=tenant.tenant_slug, status="disabled")

        async def both_refused() -> bool:
            return await refused(c.keys.verify_token, token) == 403 and await refused(c.jwts.verify, bearer) == 403

        await until(both_refused, within_s=1.0)
        await tenant_ops.set_tenant_status(targets, slug=tenant.tenant_slug, status="active")
        await c.keys.verify_token(token)  # refusals were never cached


async def test_a_notification_lost_with_the_connection_never_leaves_a_revoked_key_usable(targets: Targets) -> None:
    tenant = await make_tenant(targets, PERSONAS_A, "cc")
    token = await new_key(targets, tenant.tenant_slug, "write")
    async with cached(targets) as c:
        await c.keys.verify_token(token)
        listening = c.listener.backend_pid
        assert listening is not None
        async with owner_connection(targets.owner) as owner:
            assert await owner.fetchval("SELECT pg_terminate_backend($1)", listening)

            async def gone() -> bool:
                return not await owner.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", listening)

            await until(gone, within_s=5)
            # The listener is down (it retries after a second): this revocation's notification is lost.
            await key_ops.revoke_key(targets, key_id=await key_id(targets, token))
        assert await refused(c.keys.verify_token, token) == 401

        async def listening_again() -> bool:
            return c.listener.backend_pid not in (None, listening)

        await until(listening_again, within_s=10)
        assert c.cache.serving
        assert await refused(c.keys.verify_token, token) == 401
        assert c.cache.stats.drops >= 2  # lost, and listening again


async def test_notifications_name_changes_by_fingerprint_only(targets: Targets) -> None:
    """Any role may LISTEN: what it hears must not reveal a prefix, a tenant id or a stored hash.
    Stamping a key's last use is no change and sends nothing."""
    if targets.pooled:
        pytest.skip("LISTEN needs a direct connection")
    tenant = await make_tenant(targets, PERSONAS_A, "cc")
    token = await new_key(targets, tenant.tenant_slug, "read")
    heard: list[str] = []
    listener = await connect(targets.runtime)  # the runtime role, as an attacker with SQL would be
    try:

        def hear(_conn: object, _pid: int, _channel: str, payload: object) -> None:
            heard.append(str(payload))

        await listener.add_listener(CHANNEL, hear)
        async with owner_connection(targets.owner) as owner:
            key_hash = await owner.fetchval("SELECT key_hash FROM mindscape.api_keys WHERE prefix = $1", prefix(token))
            await owner.execute(
                "SELECT mindscape.touch_api_keys(ARRAY[$1::uuid], ARRAY[0.0])", await key_id(targets, token)
            )
            await owner.execute("SELECT pg_notify($1, 'sentinel')", CHANNEL)

            async def sentinel() -> bool:
                return "sentinel" in heard

            await until(sentinel, within_s=5)
            assert heard == ["sentinel"]  # the stamp sent nothing
            await key_ops.revoke_key(targets, key_id=await key_id(targets, token))
            await tenant_ops.set_tenant_status(targets, slug=tenant.tenant_slug, status="disabled")

            async def both() -> bool:
                return len(heard) >= 3

            await until(both, within_s=5)
    finally:
        await listener.close()
    assert heard[1:] == [f"key:{key_fingerprint(key_hash)}", f"tenant:{tenant_fingerprint(tenant.tenant_id)}"]
    for payload in heard:
        for secret in (prefix(token), str(tenant.tenant_id), key_hash.hex(), tenant.tenant_slug):
            assert secret not in payload


async def test_through_a_pooler_without_a_listen_url_the_cache_is_off(targets: Targets) -> None:
    tenant = await make_tenant(targets, PERSONAS_A, "cc")
    settings = settings_for(targets, tenant.tenant_slug, database_pooler="transaction", tenant=None)
    async with open_state(settings, targets.runtime, transport="http") as state:
        assert state.credentials is None
    if not targets.pooled:  # the same settings on a direct database_url: on
        direct = settings_for(targets, tenant.tenant_slug, tenant=None)
        async with open_state(direct, targets.runtime, transport="http") as state:
            assert state.credentials is not None


# --- the cache alone (no database needed for these rules) ----------------------------------------


def record(tenant_id: uuid.UUID | None = None) -> KeyRecord:
    return KeyRecord(
        id=uuid.uuid4(),
        tenant_id=tenant_id or uuid.uuid4(),
        tenant_slug="t",
        tenant_active=True,
        scope="read",
        key_hash=b"h",
        expired=False,
        revoked=False,
    )


def test_an_entry_looked_up_before_an_eviction_is_not_stored_after_it() -> None:
    cache = CredentialCache(ttl_s=60, max_entries=10)
    cache.start_serving()
    epoch = cache.epoch  # a lookup begins
    looked_up = record()
    cache.notified(f"key:{key_fingerprint(looked_up.key_hash)}")  # its key changes meanwhile
    cache.store_key("aaaaaaaaaaaa", looked_up, epoch=epoch, expires_in_s=None)
    assert cache.key("aaaaaaaaaaaa") is None
    cache.store_key("aaaaaaaaaaaa", record(), epoch=cache.epoch, expires_in_s=None)
    assert cache.key("aaaaaaaaaaaa") is not None


def test_entries_end_at_the_ttl_or_the_keys_expiry_and_the_size_is_bounded() -> None:
    now = [0.0]
    cache = CredentialCache(ttl_s=5, max_entries=2, clock=lambda: now[0])
    cache.start_serving()
    cache.store_key("expiring", record(), epoch=cache.epoch, expires_in_s=1.0)
    cache.store_key("lasting", record(), epoch=cache.epoch, expires_in_s=None)
    now[0] = 1.5
    assert cache.key("expiring") is None
    assert cache.key("lasting") is not None
    for name in ("b", "c"):
        cache.store_key(name, record(), epoch=cache.epoch, expires_in_s=None)
    assert cache.key("lasting") is None  # the least recently used went first
    now[0] = 10.0
    assert cache.key("c") is None


def test_a_cache_that_is_not_listening_serves_nothing() -> None:
    cache = CredentialCache(ttl_s=60, max_entries=10)
    cache.store_key("before", record(), epoch=cache.epoch, expires_in_s=None)
    assert cache.key("before") is None  # never stored: nobody listens yet
    cache.start_serving()
    tenant = uuid.uuid4()
    cache.store_key("k", record(tenant), epoch=cache.epoch, expires_in_s=None)
    cache.notified("tenant:" + "0" * 64)  # another tenant's change
    assert cache.key("k") is not None
    cache.notified(f"tenant:{tenant_fingerprint(tenant)}")
    assert cache.key("k") is None
    cache.store_key("k", record(tenant), epoch=cache.epoch, expires_in_s=None)
    cache.stop_serving()
    cache.start_serving()
    assert cache.key("k") is None
