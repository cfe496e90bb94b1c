"""OAuth protected-resource metadata (RFC 9728) for JWT mode, and the SDK auth settings that go with it.

The SDK serves this document itself, but with `scopes_supported` taken from `required_scopes`,
which it would also enforce on API keys (whose scopes are "read"/"write"). So Mindscape serves
its own document, with the `mindscape:*` scopes clients should request, ahead of the SDK's route:
at `/.well-known/oauth-protected-resource/mcp` (RFC 9728 3.1, what the 401's `resource_metadata`
points to) and at the bare `/.well-known/oauth-protected-resource` for clients that look there.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from mcp.server.auth.handlers.metadata import ProtectedResourceMetadataHandler
from mcp.server.auth.routes import build_resource_metadata_url, cors_middleware
from mcp.server.auth.settings import AuthSettings
from mcp.shared.auth import ProtectedResourceMetadata
from pydantic import AnyHttpUrl
from starlette.routing import Route

from mindscape.transports.http.auth.jwt import SCOPES

WELL_KNOWN = "/.well-known/oauth-protected-resource"


@dataclass(frozen=True)
class ProtectedResource:
    resource_url: str  # the MCP endpoint's public URL, e.g. https://mcp.example.com/mcp
    issuer: str

    @property
    def metadata_url(self) -> str:
        return str(build_resource_metadata_url(AnyHttpUrl(self.resource_url)))

    def auth_settings(self) -> AuthSettings:
        # validate_token_resource=False: auth.jwt checks `aud` against oauth_audience itself.
        return AuthSettings(
            issuer_url=AnyHttpUrl(self.issuer),
            resource_server_url=AnyHttpUrl(self.resource_url),
            validate_token_resource=False,
        )

    def routes(self) -> list[Route]:
        metadata = ProtectedResourceMetadata(
            resource=AnyHttpUrl(self.resource_url),
            authorization_servers=[AnyHttpUrl(self.issuer)],
            scopes_supported=SCOPES,
            resource_name="Mindscape",
        )
        endpoint = cors_middleware(ProtectedResourceMetadataHandler(metadata).handle, ["GET", "OPTIONS"])
        paths = dict.fromkeys([urlsplit(self.metadata_url).path, WELL_KNOWN])
        return [Route(path, endpoint=endpoint, methods=["GET", "OPTIONS"]) for path in paths]


def public_base_url(public_url: str | None, host: str, port: int) -> str:
    """The configured public URL, else the address the server listens on."""
    if public_url is not None:
        return public_url.rstrip("/")
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
