"""JWT bearer tokens from the configured issuer (OAuth 2.1 resource-server mode).

A token is accepted when its signature verifies (a JWKS key, or the shared secret in development),
`iss` and `aud` match the settings, `exp` has not passed and `nbf`/`iat` are not in the future
(within `oauth_leeway_s`), it carries `sub`, a recognised scope and a tenant slug in the configured
claim, and that tenant exists and is active. The tenant is looked up in the database, or found in
the credential cache (tenancy/credential_cache.py), whose change notifications make disabling it
take effect at once. Tokens are never logged: only issuer, subject and the reason.

Scopes (`scope`, space-separated, or `scp`, a list): `mindscape:write` may call every tool,
`mindscape:read` only read tools. A token with neither gets 403 insufficient_scope.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any, cast

import jwt
from mcp.server.auth.provider import AccessToken
from pydantic import SecretStr

from mindscape.app.identity import PERSONA, PRINCIPAL, TENANT_ID, TENANT_SLUG
from mindscape.config.oauth import algorithms
from mindscape.config.settings import Settings, is_slug
from mindscape.database.pool import FAILURES, Pool, pooled
from mindscape.errors import Unavailable
from mindscape.queries import tenants
from mindscape.tenancy.credential_cache import CredentialCache
from mindscape.transports.http.auth.jwks import JwksCache, JwksUnavailable
from mindscape.transports.http.refusals import Refused, forbidden, not_checked, unauthorized, unavailable

log = logging.getLogger(__name__)

READ_SCOPE = "mindscape:read"
WRITE_SCOPE = "mindscape:write"
SCOPES = [READ_SCOPE, WRITE_SCOPE]
MAX_PRINCIPAL = 200  # audit_events.principal's limit
CHECK_TIMEOUT_S = 5.0  # waiting for a credential-pool connection, at most (as for API keys)


@dataclass(frozen=True)
class JwtConfig:
    issuer: str
    audience: str
    tenant_claim: str
    algorithms: list[str]
    leeway_s: int
    jwks_url: str | None
    shared_secret: SecretStr | None
    persona_claim: str = "mindscape_persona"

    @classmethod
    def from_settings(cls, settings: Settings) -> JwtConfig | None:
        """None in API-key-only mode. Settings validation has already checked the combination."""
        if settings.oauth_issuer is None or settings.oauth_audience is None:
            return None
        return cls(
            issuer=settings.oauth_issuer,
            audience=settings.oauth_audience,
            tenant_claim=settings.oauth_tenant_claim,
            algorithms=algorithms(settings),
            leeway_s=settings.oauth_leeway_s,
            jwks_url=settings.oauth_jwks_url,
            shared_secret=settings.oauth_shared_secret,
            persona_claim=settings.oauth_persona_claim,
        )


class JwtVerifier:
    """`pool`: the credential pool (app.state.AppState.admission_pool), apart from the tool pool."""

    def __init__(
        self, config: JwtConfig, pool: Pool, jwks: JwksCache | None = None, *, cache: CredentialCache | None = None
    ) -> None:
        self.config = config
        self._pool = pool
        self._cache = cache
        self._jwks = jwks or (JwksCache(config.jwks_url) if config.jwks_url else None)

    async def verify(self, token: str) -> AccessToken:
        """The verified principal, or `Refused` (401, 403 or 503) with a reason the client can act on."""
        try:
            return await self._verify(token)
        except Refused as exc:
            log.info("refused a JWT: %s", exc.description)  # the reason only, never the token
            raise

    async def _verify(self, token: str) -> AccessToken:
        claims = await self._verified_claims(token)
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise unauthorized("the token has no 'sub' claim")
        for name in ("sub", "azp", "client_id"):
            _check_printable(name, claims.get(name))
        slug = claim_at(claims, self.config.tenant_claim)
        if slug is None:
            raise unauthorized(
                f"the token has no '{self.config.tenant_claim}' claim naming the tenant; "
                "configure the authorization server to add it"
            )
        if not isinstance(slug, str) or not is_slug(slug):
            raise unauthorized(f"the token's '{self.config.tenant_claim}' claim is not a tenant slug")
        scopes = granted_scopes(claims)
        if not scopes:
            raise forbidden(
                f"the token grants neither {READ_SCOPE} nor {WRITE_SCOPE}; request one of them",
                error="insufficient_scope",
            )
        persona = claim_at(claims, self.config.persona_claim)
        if persona is not None and (not isinstance(persona, str) or not is_slug(persona)):
            raise unauthorized(f"the token's '{self.config.persona_claim}' claim is not a persona slug")
        tenant_id = await self._active_tenant(slug)
        principal = jwt_principal(self.config.issuer, subject)
        client = claims.get("azp") or claims.get("client_id") or principal
        return AccessToken(
            # A fingerprint, not the token: the bearer secret stays out of memory dumps and logs.
            token="jwt:" + hashlib.sha256(token.encode()).hexdigest()[:16],
            client_id=str(client),
            subject=subject,
            scopes=scopes,
            claims={
                TENANT_ID: str(tenant_id),
                TENANT_SLUG: slug,
                PRINCIPAL: principal,
                PERSONA: persona,
                "iss": self.config.issuer,
            },
        )

    async def _verified_claims(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise unauthorized("the bearer token is neither an API key (msk_...) nor a well-formed JWT") from None
        alg = header.get("alg")
        if alg not in self.config.algorithms:
            accepted = ", ".join(self.config.algorithms)
            raise unauthorized(f"tokens signed with {_short(alg)} are not accepted; use {accepted}")
        key = await self._key(header.get("kid"))
        try:
            return jwt.decode(
                token,
                key,
                algorithms=self.config.algorithms,
                audience=self.config.audience,
                issuer=self.config.issuer,
                leeway=self.config.leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.InvalidTokenError as exc:
            raise self._refusal(exc) from None

    async def _key(self, kid: Any) -> Any:
        if self.config.shared_secret is not None:
            return self.config.shared_secret.get_secret_value()
        assert self._jwks is not None
        if kid is not None and not isinstance(kid, str):
            raise unauthorized("the token's 'kid' header is not a string")
        try:
            key = await self._jwks.key(kid)
        except JwksUnavailable:  # the cache has logged why, once per attempt
            raise unavailable("the issuer's signing keys could not be fetched; try again shortly") from None
        if key is None:
            raise unauthorized(f"no signing key with kid {_short(kid)} at the issuer's JWKS; get a new token")
        return key

    def _refusal(self, exc: jwt.InvalidTokenError) -> Refused:
        config = self.config
        match exc:
            case jwt.ExpiredSignatureError():
                reason = f"the token has expired; get a new one from {config.issuer}"
            case jwt.ImmatureSignatureError():
                reason = "the token is not valid yet (nbf or iat lies in the future); check the clocks"
            case jwt.InvalidAudienceError():
                reason = f"the token is not for this server: its audience (aud) must be {config.audience!r}"
            case jwt.InvalidIssuerError():
                reason = f"the token's issuer (iss) is not {config.issuer!r}"
            case jwt.MissingRequiredClaimError():
                reason = f"the token has no '{exc.claim}' claim"
            case jwt.InvalidSignatureError():
                reason = "the token's signature does not verify"
            case _:
                reason = f"the token is invalid ({type(exc).__name__})"
        return unauthorized(reason)

    async def _active_tenant(self, slug: str) -> Any:
        cached = self._cache.tenant(slug) if self._cache is not None else None
        if cached is not None:  # only active tenants are cached
            return cached.id
        epoch = self._cache.epoch if self._cache is not None else 0
        try:
            async with pooled(self._pool, wait_s=CHECK_TIMEOUT_S) as conn:
                tenant = await tenants.resolve(conn, slug=slug)
        except (*FAILURES, Unavailable) as exc:  # ServerBusy: no credential-pool connection in time
            raise not_checked(f"tenant {slug!r}", exc) from None
        if tenant is not None and tenant.status == "active" and self._cache is not None:
            self._cache.store_tenant(tenant, epoch=epoch)
        if tenant is None:
            raise unauthorized(f"tenant {slug!r} named by the token does not exist")
        if tenant.status != "active":
            raise forbidden(
                f"tenant {slug!r} is disabled; an operator can re-enable it: `mindscape tenant enable {slug}`"
            )
        return tenant.id


def claim_at(claims: dict[str, Any], path: str) -> Any:
    """The value at a dotted claim path ("app.tenant" reads claims["app"]["tenant"]), or None."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = cast("dict[str, Any]", value).get(part)
    return value


def granted_scopes(claims: dict[str, Any]) -> list[str]:
    """Mindscape's own scopes ("read", "write") from `scope` (RFC 9068) or `scp`; write includes read."""
    raw: Any = claims.get("scope", claims.get("scp", ""))
    if isinstance(raw, str):
        names = raw.split()
    elif isinstance(raw, list):
        names = [s for s in cast("list[Any]", raw) if isinstance(s, str)]
    else:
        names = []
    if WRITE_SCOPE in names:
        return ["read", "write"]
    return ["read"] if READ_SCOPE in names else []


def jwt_principal(issuer: str, subject: str) -> str:
    """`jwt:<iss>#<sub>`, unique across issuers; hashed when too long for the audit trail."""
    principal = f"jwt:{issuer}#{subject}"
    if len(principal) > MAX_PRINCIPAL:
        return "jwt:sha256:" + hashlib.sha256(principal.encode()).hexdigest()
    return principal


def _check_printable(name: str, value: Any) -> None:
    """A claim that becomes the principal (or client id) must be printable text.

    A NUL in `sub` would be accepted here and then fail every call, since PostgreSQL cannot store
    it as the transaction's principal; control characters and lone surrogates have no place in an
    identifier either (nor in the audit trail and the logs).
    """
    if isinstance(value, str) and not value.isprintable():
        raise unauthorized(
            f"the token's '{name}' claim contains a control character, NUL or invalid Unicode; "
            "the authorization server must issue printable identifiers"
        )


def _short(value: Any) -> str:
    """An unverified header value for a message: quoted and cut short, so an attacker cannot flood the log."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
