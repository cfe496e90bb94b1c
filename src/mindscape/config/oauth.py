"""Which OAuth settings go together, checked when the settings load (a StartupError naming the fix).

JWT mode is on when `oauth_issuer` is set. It needs exactly one key source (a JWKS URL, or a shared
secret for development) and an audience. Symmetric and asymmetric algorithms are never mixed: a
server that accepted HS256 next to a JWKS could be fooled into using a public key as an HMAC secret.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol
from urllib.parse import urlsplit

from pydantic import SecretStr

SYMMETRIC = ("HS256", "HS384", "HS512")
ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
DEFAULT_ASYMMETRIC = ("RS256", "ES256")
MIN_SECRET_BYTES = 32  # RFC 7518 3.2: an HS256 key at least as long as the hash output
# A claim name, or a dot path into nested objects (e.g. "app_metadata.tenant").
TENANT_CLAIM_PATTERN = r"^[A-Za-z0-9_:/-]{1,100}(?:\.[A-Za-z0-9_:/-]{1,100}){0,7}$"
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class OAuthFields(Protocol):
    """The settings these rules read (config.settings.Settings has them); a protocol keeps this module
    below settings.py, which calls it from a validator."""

    @property
    def oauth_issuer(self) -> str | None: ...
    @property
    def oauth_jwks_url(self) -> str | None: ...
    @property
    def oauth_shared_secret(self) -> SecretStr | None: ...
    @property
    def oauth_audience(self) -> str | None: ...
    @property
    def oauth_algorithms(self) -> Sequence[str] | None: ...
    @property
    def public_url(self) -> str | None: ...


def jwt_mode(settings: OAuthFields) -> bool:
    return settings.oauth_issuer is not None


def algorithms(settings: OAuthFields) -> list[str]:
    """The accepted `alg` values: the configured ones, else HS256 for a secret and RS256/ES256 for a JWKS."""
    if settings.oauth_algorithms:
        return list(settings.oauth_algorithms)
    return ["HS256"] if settings.oauth_shared_secret is not None else list(DEFAULT_ASYMMETRIC)


def oauth_problem(settings: OAuthFields) -> str | None:
    """The first inconsistency in the OAuth settings, with its fix; None when they fit together."""
    if not jwt_mode(settings):
        stray = [
            name
            for name in ("oauth_jwks_url", "oauth_shared_secret", "oauth_audience", "oauth_algorithms")
            if getattr(settings, name) is not None
        ]
        if stray:
            return f"{', '.join(stray)} set without oauth_issuer: set oauth_issuer to turn JWT mode on, or remove them"
        return _url_problem("public_url", settings.public_url, https_only=False)
    return (
        _url_problem("oauth_issuer", settings.oauth_issuer, https_only=False)
        or _key_source_problem(settings)
        or _algorithm_problem(settings)
        or _url_problem("public_url", settings.public_url, https_only=False)
        or (
            "oauth_audience is required in JWT mode: set it to the audience your authorization server puts "
            "in `aud` for this server (often the public URL of /mcp)"
            if not settings.oauth_audience
            else None
        )
    )


def _key_source_problem(settings: OAuthFields) -> str | None:
    secret = settings.oauth_shared_secret
    if settings.oauth_jwks_url is None and secret is None:
        return (
            "JWT mode needs a key source: set oauth_jwks_url (your IdP's JWKS) or, for development, oauth_shared_secret"
        )
    if settings.oauth_jwks_url is not None and secret is not None:
        return "set either oauth_jwks_url or oauth_shared_secret, not both"
    if secret is not None and len(secret.get_secret_value().encode()) < MIN_SECRET_BYTES:
        return (
            f"oauth_shared_secret must be at least {MIN_SECRET_BYTES} bytes: generate one with `openssl rand -hex 32`"
        )
    return _url_problem("oauth_jwks_url", settings.oauth_jwks_url, https_only=True)


def _algorithm_problem(settings: OAuthFields) -> str | None:
    chosen = algorithms(settings)
    allowed = SYMMETRIC if settings.oauth_shared_secret is not None else ASYMMETRIC
    wrong = [a for a in chosen if a not in allowed]
    if wrong:
        source = "oauth_shared_secret" if settings.oauth_shared_secret is not None else "oauth_jwks_url"
        return f"oauth_algorithms {wrong} cannot be used with {source}; choose from {', '.join(allowed)}"
    return None


def _url_problem(name: str, value: str | None, *, https_only: bool) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        return f"{name} must be an http(s) URL without query or fragment (got {value!r})"
    if https_only and parts.scheme != "https" and parts.hostname not in _LOOPBACK:
        return f"{name} must use https (plain http is accepted for loopback addresses only)"
    return None
