"""A stand-in OAuth issuer for tests: RSA keys made with `cryptography`, a real JWKS over local HTTP, and token minting.

The JWKS is served by a stdlib HTTP server on a loopback port in a thread, so the server under
test fetches it exactly as it would fetch an IdP's. `hits` counts the fetches.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Generator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

ISSUER = "https://issuer.test/realms/mindscape"
AUDIENCE = "mindscape-test"


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}


@dataclass
class Jwks:
    """The key set being served; tests may change `keys` while the server runs."""

    keys: list[dict[str, Any]]
    url: str = ""
    hits: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def jwks_server(jwks: Jwks) -> Generator[Jwks]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with jwks.lock:
                jwks.hits += 1
                body = json.dumps({"keys": jwks.keys}).encode()
            self.send_response(200 if self.path == "/jwks.json" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    jwks.url = f"http://127.0.0.1:{httpd.server_address[1]}/jwks.json"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield jwks
    finally:
        httpd.shutdown()
        httpd.server_close()


def claims(tenant_claim: str, tenant: str | None, **overrides: Any) -> dict[str, Any]:
    """Good claims for `tenant` at the (possibly dotted) claim path; overrides replace or, as None, remove."""
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "iat": now,
        "exp": now + 300,
        "scope": "openid mindscape:write",
        "azp": "test-client",
    }
    if tenant is not None:
        *parents, last = tenant_claim.split(".")
        node = base
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = tenant
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign_rs256(key: rsa.RSAPrivateKey, kid: str | None, payload: dict[str, Any]) -> str:
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(payload, key, algorithm="RS256", headers=headers)


def unsigned(payload: dict[str, Any]) -> str:
    """An `alg: none` token: header and payload, empty signature."""
    return jwt.encode(payload, "", algorithm="none")
