"""Bearer credentials for the HTTP and SSE transports: API keys, and JWTs when OAuth is configured.

`Authorization: Bearer msk_<prefix>_<secret>` is an API key; any other bearer is a JWT when
`oauth_issuer` is set (auth.jwt), else a malformed key. Both kinds work side by side.

The SDK's bearer middleware calls `verify_token` on every request. Instead of returning None (which
the SDK can only turn into a bare 401), a refusal raises `transports.http.refusals.Refused`, answered as:
- 401 for a malformed, unknown, wrong, expired or revoked key (or a bad JWT), with the reason
  in `error_description`;
- 403 for a valid credential of a disabled tenant, naming the tenant and the fix;
- 503 when the database (or the JWKS) cannot be reached: fail closed, but say it is temporary.
A key that verified is kept for a few seconds in this process's credential cache
(tenancy/credential_cache.py, `credential_cache_ttl_s`), so a busy agent's requests need no
database round trip; revocation, rotation, expiry and disabling still take effect at once,
because every change is notified (migration 0010) and evicts the entry (credential_listener.py),
and nothing is served from the cache while its listener is not listening. A miss is checked in
the database. The checks use a small pool of their own (`auth_pool_size`,
app.state), never the pool that tool calls hold: a tenant running long calls on every tool-pool
connection cannot make another tenant's credential check wait. A check that cannot get a
connection within CHECK_TIMEOUT_S is answered 503 rather than left hanging.

Verifying a key never writes: its last use is noted in memory and stamped later, in batches
(tenancy.key_usage), so keys verify on a hot standby too. With `read_database_url` set, a key
the primary cannot check (unreachable) is checked on the replica instead, so read-only tools keep
working while the primary is down; a revocation reaches the replica with its replication delay.

Only the public prefix of a key is ever logged or kept in the AccessToken, never the secret.
"""

from __future__ import annotations

import logging

from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings

from mindscape.app.identity import PERSONA, PRINCIPAL, TENANT_ID, TENANT_SLUG
from mindscape.database.pool import FAILURES, Pool, pooled
from mindscape.errors import Unavailable
from mindscape.models.api_key import KeyRecord
from mindscape.queries import api_keys
from mindscape.tenancy import keys
from mindscape.tenancy.credential_cache import CredentialCache
from mindscape.tenancy.key_usage import KeyUsage
from mindscape.transports.http.auth.jwt import JwtVerifier
from mindscape.transports.http.refusals import Refused, forbidden, not_checked, unauthorized

log = logging.getLogger(__name__)
CHECK_TIMEOUT_S = 5.0  # waiting for a credential-pool connection, at most


class ApiKeyVerifier:
    """The SDK's TokenVerifier protocol, backed by mindscape.api_keys (read as the runtime role)."""

    def __init__(
        self,
        pool: Pool,
        *,
        usage: KeyUsage | None = None,
        standby: Pool | None = None,
        cache: CredentialCache | None = None,
    ) -> None:
        """`pool`: the credential pool (app.state.AppState.admission_pool); `usage`: where each use is
        noted; `standby`: the replica's pool, asked when the primary cannot be reached; `cache`:
        where keys that verified are kept (None: every request asks the database)."""
        self._pool = pool
        self._usage = usage
        self._standby = standby
        self._cache = cache

    async def verify_token(self, token: str) -> AccessToken:
        parsed = keys.parse(token)
        if parsed is None:
            log.info("refused a malformed bearer token")
            raise unauthorized("the bearer token is not an API key (msk_<prefix>_<secret>)")
        prefix, secret = parsed
        record = self._cache.key(prefix) if self._cache is not None else None
        # keys.matches compares hashes in constant time (hmac.compare_digest).
        if record is None or not keys.matches(secret, record.key_hash):
            record = await self._checked(prefix, secret)
        if self._usage is not None:
            self._usage.note(record.id)
        principal = f"key:{prefix}"
        return AccessToken(
            token=f"{keys.PREFIX}{prefix}",  # the public part only: the secret stays out of memory dumps
            client_id=principal,
            subject=principal,
            scopes=[record.scope],
            claims={
                TENANT_ID: str(record.tenant_id),
                TENANT_SLUG: record.tenant_slug,
                PRINCIPAL: principal,
                PERSONA: record.persona,
                "key_id": str(record.id),
            },
        )

    async def _checked(self, prefix: str, secret: str) -> KeyRecord:
        """The key's row from the database when it is good (and then cached), else `Refused`."""
        epoch = self._cache.epoch if self._cache is not None else 0
        primary = True
        try:
            found = await self._lookup(self._pool, prefix)
        except (*FAILURES, Unavailable) as exc:
            if self._standby is None:
                # Fail closed: without the database no key can be checked.
                raise not_checked(f"API key {prefix}", exc) from None
            log.warning("checking API key %s on the read replica: the primary did not answer", prefix)
            primary = False
            try:
                found = await self._lookup(self._standby, prefix)
            except (*FAILURES, Unavailable) as again:
                raise not_checked(f"API key {prefix}", again) from None
        matching = [r for r in found if keys.matches(secret, r.key_hash)]
        record = matching[0] if len(matching) == 1 else None
        refusal = _refusal(prefix, record)
        if refusal is not None or record is None:
            refused = refusal or unauthorized("unknown key or wrong secret")
            log.info("refused API key %s: %s", prefix, refused.description)
            raise refused
        # Not what a replica said: a revocation reaches it late, and no notification says when.
        if self._cache is not None and primary:
            self._cache.store_key(prefix, record, epoch=epoch, expires_in_s=record.expires_in_s)
        return record

    @staticmethod
    async def _lookup(pool: Pool, prefix: str) -> list[KeyRecord]:
        async with pooled(pool, wait_s=CHECK_TIMEOUT_S) as conn:  # ServerBusy when none comes in time
            return await api_keys.lookup(conn, prefix=prefix)


class BearerVerifier:
    """API keys always; JWTs too when a JwtVerifier is given (OAuth resource-server mode)."""

    def __init__(
        self,
        pool: Pool,
        jwt: JwtVerifier | None = None,
        *,
        usage: KeyUsage | None = None,
        standby: Pool | None = None,
        cache: CredentialCache | None = None,
    ) -> None:
        self._keys = ApiKeyVerifier(pool, usage=usage, standby=standby, cache=cache)
        self._jwt = jwt

    async def verify_token(self, token: str) -> AccessToken:
        if self._jwt is None or token.startswith(keys.PREFIX):
            return await self._keys.verify_token(token)
        return await self._jwt.verify(token)


def _refusal(prefix: str, record: KeyRecord | None) -> Refused | None:
    """Why the key (the one row whose hash matched) is refused, or None when it is good."""
    if record is None:
        return unauthorized("unknown key or wrong secret")
    if record.revoked:
        return unauthorized(f"API key {prefix} was revoked; use its replacement or `mindscape key create`")
    if record.expired:
        return unauthorized(f"API key {prefix} has expired; create a new one with `mindscape key create`")
    if not record.tenant_active:
        slug = record.tenant_slug
        return forbidden(f"tenant {slug!r} is disabled; an operator can re-enable it: `mindscape tenant enable {slug}`")
    return None


def key_auth_settings(base_url: str) -> AuthSettings:
    """Auth settings for API keys alone: no authorization server, so no OAuth metadata routes.

    The SDK requires an issuer URL; with `resource_server_url` unset it is never published.
    """
    return AuthSettings(issuer_url=base_url, resource_server_url=None)  # pyright: ignore[reportArgumentType]
