"""HTTP-level refusals, before a call runs: why a bearer credential was refused (401, 403, 503),
and the 503 for a database that cannot answer, from whichever step found out.

The SDK's TokenVerifier can only accept a token or return None, and None always becomes a bare
401 "Authentication required". Our verifiers raise `Refused` instead, a Starlette
AuthenticationError, and `refusing` gives the SDK's AuthenticationMiddleware an `on_error`
that turns it into the right status with an RFC 6750 `WWW-Authenticate` header. Requests with no
bearer token at all still reach the SDK's own 401.

Every 503 (`unavailable_response`) carries Retry-After and a JSON-RPC error body with the same
code, words and `data` a call that fails the same way gets (app.errors): MCP clients read the
body, HTTP clients and proxies the status and header. `answer_crash` is the last resort for an
exception nothing else answered: a JSON-RPC error instead of Starlette's bare text 500.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from mcp.types import INTERNAL_ERROR
from starlette.authentication import AuthCredentials, AuthenticationBackend, AuthenticationError, BaseUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response

from mindscape.app.errors import INTERNAL, UNAVAILABLE, Temporary, temporary
from mindscape.errors import ServerBusy

log = logging.getLogger(__name__)
JWKS_RETRY_AFTER_S = 5

_UNSAFE = re.compile(r'[^\x20-\x7e]|["\\]')  # header values: printable ASCII, no quote or backslash


class Refused(AuthenticationError):
    """A refused credential: the status, the RFC 6750 error code and a description a person can act on."""

    def __init__(self, status: int, error: str, description: str, temporary: Temporary | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.temporary = temporary  # 503 only: when to retry, and why


def unauthorized(description: str) -> Refused:
    """401: no usable credential (malformed, unknown, expired, revoked, badly signed...)."""
    return Refused(401, "invalid_token", description)


def forbidden(description: str, error: str = "access_denied") -> Refused:
    """403: a valid credential that may not be used (a disabled tenant, no usable scope)."""
    return Refused(403, error, description)


def unavailable(description: str) -> Refused:
    """503: the credential could not be checked right now (the issuer's keys could not be fetched)."""
    found = Temporary("the token issuer's signing keys could not be fetched", "issuer_unavailable", JWKS_RETRY_AFTER_S)
    return Refused(503, "temporarily_unavailable", description, found)


def not_checked(subject: str, exc: BaseException) -> Refused:
    """503: the database could not answer a credential check (`subject`: "the API key", "the tenant").

    Fail closed, and say it is temporary. A failure no retry fixes (a missing grant, say) is the
    operator's to see: logged with its traceback, still answered 503 (the client can do nothing else).
    """
    found = temporary(exc)
    if isinstance(exc, ServerBusy):  # waiting for a credential-pool connection
        found = Temporary(f"every credential-check connection stayed busy for {exc.waited_s:g} s", "server_busy", 1)
    if found is None:
        log.error("checking %s failed", subject, exc_info=exc)
        found = Temporary("the database failed", "database_unavailable", 5)
    else:
        log.warning("could not check %s: %s (%s)", subject, found.what, type(exc).__name__)
    description = (
        f"temporarily unavailable: {found.what}; {subject} could not be checked. Retry in {found.retry_after} s"
    )
    return Refused(503, "temporarily_unavailable", description, found)


def jsonrpc_error(request_id: Any, code: int, message: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def unavailable_response(
    found: Temporary, message: str, request_id: Any = None, headers: dict[str, str] | None = None
) -> Response:
    """503 + Retry-After + a JSON-RPC error (code app.errors.UNAVAILABLE) saying what happened and when to retry."""
    return JSONResponse(
        jsonrpc_error(request_id, UNAVAILABLE, message, found.data),
        status_code=503,
        headers={**(headers or {}), "Retry-After": str(found.retry_after)},
    )


def refusal_response(refused: Refused, resource_metadata_url: str | None) -> Response:
    description = _UNSAFE.sub("'", refused.description)
    parts = [f'error="{refused.error}"', f'error_description="{description}"']
    if resource_metadata_url is not None:
        parts.append(f'resource_metadata="{resource_metadata_url}"')
    headers = {"WWW-Authenticate": "Bearer " + ", ".join(parts)}
    if refused.status == 503:
        found = refused.temporary or Temporary("the credential could not be checked", "database_unavailable", 5)
        return unavailable_response(found, refused.description, headers=headers)
    body = json.dumps({"error": refused.error, "error_description": refused.description})
    return Response(body, status_code=refused.status, media_type="application/json", headers=headers)


async def answer_crash(_request: Request, exc: Exception) -> Response:
    """Starlette's last resort (ServerErrorMiddleware's handler): a JSON-RPC error, never bare text.

    Only what no other step answered gets here; Starlette logs the traceback (for the operator) and
    none of it reaches the client.
    """
    found = temporary(exc)
    if found is not None:
        return unavailable_response(found, f"temporarily unavailable: {found.what}. Retry in {found.retry_after} s")
    return JSONResponse(jsonrpc_error(None, INTERNAL_ERROR, INTERNAL), status_code=500)


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
