"""Why a bearer credential was refused, as the HTTP answer the client gets: 401, 403 or 503.

The SDK's TokenVerifier can only accept a token or return None, and None always becomes a bare
401 "Authentication required". Our verifiers raise `Refused` instead, a Starlette
AuthenticationError, and `refusing` gives the SDK's AuthenticationMiddleware an `on_error`
that turns it into the right status with an RFC 6750 `WWW-Authenticate` header. Requests with no
bearer token at all still reach the SDK's own 401.
"""

from __future__ import annotations

import json
import re

from starlette.authentication import AuthCredentials, AuthenticationBackend, AuthenticationError, BaseUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.responses import Response

_UNSAFE = re.compile(r'[^\x20-\x7e]|["\\]')  # header values: printable ASCII, no quote or backslash


class Refused(AuthenticationError):
    """A refused credential: the status, the RFC 6750 error code and a description a person can act on."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


def unauthorized(description: str) -> Refused:
    """401: no usable credential (malformed, unknown, expired, revoked, badly signed...)."""
    return Refused(401, "invalid_token", description)


def forbidden(description: str, error: str = "access_denied") -> Refused:
    """403: a valid credential that may not be used (a disabled tenant, no usable scope)."""
    return Refused(403, error, description)


def unavailable(description: str) -> Refused:
    """503: the credential could not be checked right now (database or JWKS unreachable)."""
    return Refused(503, "temporarily_unavailable", description)


def refusal_response(refused: Refused, resource_metadata_url: str | None) -> Response:
    description = _UNSAFE.sub("'", refused.description)
    parts = [f'error="{refused.error}"', f'error_description="{description}"']
    if resource_metadata_url is not None:
        parts.append(f'resource_metadata="{resource_metadata_url}"')
    body = json.dumps({"error": refused.error, "error_description": refused.description})
    headers = {"WWW-Authenticate": "Bearer " + ", ".join(parts)}
    if refused.status == 503:
        headers["Retry-After"] = "5"
    return Response(body, status_code=refused.status, media_type="application/json", headers=headers)


class _RefuseOnlyWhereRequired(AuthenticationBackend):
    """Refusals answer only on the MCP endpoints. Elsewhere (/healthz, /readyz, /metrics, the OAuth
    metadata) a stale bearer token is ignored as before, so probes and OAuth discovery keep working."""

    def __init__(self, inner: AuthenticationBackend, protected: tuple[str, ...]) -> None:
        self._inner = inner
        self._protected = protected

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        try:
            return await self._inner.authenticate(conn)
        except Refused:
            if conn.url.path.startswith(self._protected):
                raise
            return None


def refusing(sdk_auth: Middleware, resource_metadata_url: str | None, protected: tuple[str, ...]) -> Middleware:
    """The SDK's AuthenticationMiddleware entry, with an on_error that answers `Refused` properly.

    `protected` are the path prefixes that need a credential (e.g. "/mcp").
    """

    def on_error(_conn: HTTPConnection, exc: AuthenticationError) -> Response:
        refused = exc if isinstance(exc, Refused) else unauthorized(str(exc))
        return refusal_response(refused, resource_metadata_url)

    backend = sdk_auth.kwargs["backend"]
    assert isinstance(backend, AuthenticationBackend)
    return Middleware(AuthenticationMiddleware, backend=_RefuseOnlyWhereRequired(backend, protected), on_error=on_error)
