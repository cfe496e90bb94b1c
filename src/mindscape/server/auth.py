"""Bearer API keys for the HTTP transport: `Authorization: Bearer msk_<prefix>_<secret>`.

The SDK's bearer middleware calls `verify_token` on every request and answers 401 (with
`WWW-Authenticate`) whenever it returns None: for a malformed, unknown, wrong, expired or
revoked key, and for a key of a disabled tenant (the SDK's TokenVerifier cannot ask for a
403; the reason is logged for the operator instead). Keys are checked against the database on
every request, so revocation and disabling take effect on the very next request.

Only the public prefix is ever logged or kept in the AccessToken, never the secret.
"""

from __future__ import annotations

import logging

import asyncpg
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings

from mindscape import keys
from mindscape.database.pool import Pool
from mindscape.models.api_key import KeyRecord
from mindscape.queries import api_keys
from mindscape.server.identity import TENANT_ID, TENANT_SLUG

log = logging.getLogger(__name__)


class ApiKeyVerifier:
    """The SDK's TokenVerifier protocol, backed by mindscape.api_keys (read as the runtime role)."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def verify_token(self, token: str) -> AccessToken | None:
        parsed = keys.parse(token)
        if parsed is None:
            log.info("refused a malformed bearer token")
            return None
        prefix, secret = parsed
        try:
            async with self._pool.acquire() as conn:
                # keys.matches compares hashes in constant time (hmac.compare_digest).
                found = [r for r in await api_keys.lookup(conn, prefix=prefix) if keys.matches(secret, r.key_hash)]
                record = found[0] if len(found) == 1 else None
                refusal = _refusal(record)
                if refusal is not None or record is None:
                    log.info("refused API key %s: %s", prefix, refusal)
                    return None
                await api_keys.touch(conn, key_id=record.id)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            # Fail closed: without the database no key can be checked.
            log.exception("could not verify API key %s", prefix)
            return None
        principal = f"key:{prefix}"
        return AccessToken(
            token=f"{keys.PREFIX}{prefix}",  # the public part only: the secret stays out of memory dumps
            client_id=principal,
            subject=principal,
            scopes=[record.scope],
            claims={TENANT_ID: str(record.tenant_id), TENANT_SLUG: record.tenant_slug, "key_id": str(record.id)},
        )


def _refusal(record: KeyRecord | None) -> str | None:
    """Why the key (the one row whose hash matched) is refused, or None when it is good."""
    if record is None:
        return "unknown key or wrong secret"
    if record.revoked:
        return "revoked"
    if record.expired:
        return "expired"
    if not record.tenant_active:
        return f"tenant {record.tenant_slug} is disabled"
    return None


def key_auth_settings(base_url: str) -> AuthSettings:
    """Auth settings for API keys alone: no authorization server, so no OAuth metadata routes.

    The SDK requires an issuer URL; with `resource_server_url` unset it is never published.
    """
    return AuthSettings(issuer_url=base_url, resource_server_url=None)  # pyright: ignore[reportArgumentType]
