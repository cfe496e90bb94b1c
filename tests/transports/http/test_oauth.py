"""OAuth resource-server mode: JWTs from a configured issuer, over real HTTP and SSE.

Each server is a real `mindscape serve` process. The issuer's JWKS is served by the test over local
HTTP (tests/support/issuer.py) and fetched by the server like an IdP's; tenants are real rows in the test
database. Every refusal is checked for its status and its reason.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

import anyio
import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from jwt.utils import base64url_encode
from mcp import Client
from mcp.client.sse import sse_client

from mindscape.database.pool import connect
from mindscape.database.targets import Targets
from mindscape.ops.tenants import set_tenant_status
from tests.support.http import MODES, mcp_client, new_key, post_mcp
from tests.support.issuer import AUDIENCE, ISSUER, Jwks, claims, jwks_server, public_jwk, rsa_key, sign_rs256, unsigned
from tests.support.results import data as structured
from tests.support.results import text_of
from tests.support.serving import running_server
from tests.support.tenants import PERSONAS_A, PERSONAS_B, make_tenant

CLAIM = "org.tenant"  # a nested claim, to exercise the dotted path
SECRET = "dev-secret-" + "x" * 32
KEY = rsa_key()
ROGUE = rsa_key()  # never published


@dataclass(frozen=True)
class Tenants:
    a: str
    b: str
    disabled: str
    a_key: str
    disabled_key: str


@pytest.fixture(scope="module")
def tenants(targets: Targets) -> Tenants:
    async def seed() -> Tenants:
        a = await make_tenant(targets, PERSONAS_A, "oa")
        b = await make_tenant(targets, PERSONAS_B, "ob")
        d = await make_tenant(targets, PERSONAS_A, "od")
        a_key = await new_key(targets, a.tenant_slug, "write")
        d_key = await new_key(targets, d.tenant_slug, "write")
        await set_tenant_status(targets, slug=d.tenant_slug, status="disabled")
        return Tenants(a.tenant_slug, b.tenant_slug, d.tenant_slug, a_key, d_key)

    return anyio.run(seed)


@pytest.fixture(scope="module")
def jwks() -> Iterator[Jwks]:
    with jwks_server(Jwks(keys=[public_jwk(KEY, "k1")])) as served:
        yield served


def oauth_env(jwks: Jwks) -> dict[str, str]:
    return {
        "MINDSCAPE_OAUTH_ISSUER": ISSUER,
        "MINDSCAPE_OAUTH_JWKS_URL": jwks.url,
        "MINDSCAPE_OAUTH_AUDIENCE": AUDIENCE,
        "MINDSCAPE_OAUTH_TENANT_CLAIM": CLAIM,
    }


@pytest.fixture(scope="module")
def server_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("oauth") / "server.log"


@pytest.fixture(scope="module")
def base_url(targets: Targets, jwks: Jwks, server_log: Path) -> Iterator[str]:
    with running_server(targets, "http", server_log, oauth_env(jwks)) as url:
        yield url


def token(tenant: str | None, *, kid: str | None = "k1", **overrides: object) -> str:
    return sign_rs256(KEY, kid, claims(CLAIM, tenant, **overrides))


def refusal(base_url: str, bearer: str) -> tuple[int, str, str]:
    response = post_mcp(base_url, f"Bearer {bearer}")
    body = response.json()
    return response.status_code, body["error"], body["error_description"]


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_tokens_of_two_tenants_see_only_their_own_data(base_url: str, tenants: Tenants, mode: str) -> None:
    async with mcp_client(base_url, token(tenants.a, sub="alice"), mode) as a:
        names = {t.name for t in (await a.list_tools()).tools}
        assert {"get_persona", "remember", "recall"} <= names
        assert structured(await a.call_tool("get_persona", {"slug": "ada"}))["name"] == "Ada Analyst"
        assert "no persona with slug 'zed'" in text_of(await a.call_tool("get_persona", {"slug": "zed"}))
        stored = await a.call_tool("remember", {"content": f"jwt secret plan {mode}"})
        assert not stored.is_error, text_of(stored)
        found = structured(await a.call_tool("recall", {"query": f"jwt secret plan {mode}", "mode": "keyword"}))
        assert f"jwt secret plan {mode}" in [m["content"] for m in found["memories"]]
    async with mcp_client(base_url, token(tenants.b, sub="bob"), mode) as b:
        assert structured(await b.call_tool("get_persona", {"slug": "ada"}))["name"] == "Ada of B"
        assert structured(await b.call_tool("get_persona", {"slug": "zed"}))["name"] == "Zed"
        found = structured(await b.call_tool("recall", {"query": f"jwt secret plan {mode}", "mode": "keyword"}))
        assert found["memories"] == []


def test_the_audit_trail_names_the_token_principal(base_url: str, tenants: Tenants, targets: Targets) -> None:
    async def remember_and_read() -> list[str]:
        async with mcp_client(base_url, token(tenants.a, sub="auditor"), "auto") as a:
            assert not (await a.call_tool("remember", {"content": "audited through a JWT"})).is_error
        conn = await connect(targets.owner)
        try:
            rows = await conn.fetch(
                "SELECT e.principal FROM mindscape.audit_events e JOIN mindscape.tenants t ON t.id = e.tenant_id "
                "WHERE t.slug = $1 AND e.tool = 'remember'",
                tenants.a,
            )
        finally:
            await conn.close()
        return [r["principal"] for r in rows]

    assert f"jwt:{ISSUER}#auditor" in anyio.run(remember_and_read)


@pytest.mark.anyio
async def test_api_keys_keep_working_next_to_jwts(base_url: str, tenants: Tenants) -> None:
    async with mcp_client(base_url, tenants.a_key, "auto") as a:
        assert structured(await a.call_tool("get_persona", {"slug": "ada"}))["name"] == "Ada Analyst"


@pytest.mark.anyio
async def test_a_read_token_reads_but_is_refused_write_tools(base_url: str, tenants: Tenants) -> None:
    async with mcp_client(base_url, token(tenants.a, scope="mindscape:read"), "auto") as reader:
        assert not (await reader.call_tool("list_personas", {})).is_error
        assert "remember" not in {tool.name for tool in (await reader.list_tools()).tools}
        refused = await reader.call_tool("remember", {"content": "a reader may not write"})
        assert refused.is_error
        assert "remember changes data, and this token has only the 'mindscape:read' scope" in text_of(refused)
    async with mcp_client(base_url, token(tenants.a, scope=None, scp=["mindscape:read"]), "auto") as reader:
        assert not (await reader.call_tool("list_personas", {})).is_error


def alg_confusion(payload: dict[str, object]) -> str:
    """HS256 signed with the public key's PEM: accepted by a verifier that lets the token pick the algorithm."""
    pem = KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "kid": "k1", "typ": "JWT"}
    segments = [base64url_encode(json.dumps(part).encode()) for part in (header, payload)]
    signing_input = b".".join(segments)
    signature = base64url_encode(hmac.new(pem, signing_input, sha256).digest())
    return (signing_input + b"." + signature).decode()


def test_bad_tokens_get_401_with_the_reason(base_url: str, tenants: Tenants) -> None:
    now = int(time.time())
    good = claims(CLAIM, tenants.a)
    cases = {
        "bad signature": (sign_rs256(ROGUE, "k1", good), "signature does not verify"),
        "wrong issuer": (token(tenants.a, iss="https://evil.test"), "issuer (iss) is not"),
        "wrong audience": (token(tenants.a, aud="someone-else"), f"audience (aud) must be '{AUDIENCE}'"),
        "expired": (token(tenants.a, iat=now - 4000, exp=now - 3600), "the token has expired"),
        "not yet valid": (token(tenants.a, nbf=now + 3600), "not valid yet"),
        "issued in the future": (token(tenants.a, iat=now + 3600), "not valid yet"),
        "no exp": (token(tenants.a, exp=None), "no 'exp' claim"),
        "no sub": (token(tenants.a, sub=None), "no 'sub' claim"),
        "NUL in sub": (token(tenants.a, sub="alice\x00admin"), "'sub' claim contains a control character, NUL"),
        "lone surrogate in sub": (token(tenants.a, sub="alice\ud800"), "'sub' claim contains a control character"),
        "control character in azp": (token(tenants.a, azp="app\n"), "'azp' claim contains a control character"),
        "no tenant claim": (token(None), f"no '{CLAIM}' claim naming the tenant"),
        "tenant not a slug": (token("Not A Slug!"), "is not a tenant slug"),
        "unknown tenant": (token("no-such-tenant"), "tenant 'no-such-tenant' named by the token does not exist"),
        "unknown kid": (sign_rs256(ROGUE, "k9", good), "no signing key with kid 'k9'"),
        "alg none": (unsigned(good), "tokens signed with 'none' are not accepted"),
        "alg confusion": (alg_confusion(good), "tokens signed with 'HS256' are not accepted"),
        "garbage": ("eyJhbGciOi.not-a-jwt", "neither an API key (msk_...) nor a well-formed JWT"),
    }
    for name, (bearer, reason) in cases.items():
        status, error, description = refusal(base_url, bearer)
        assert (status, error) == (401, "invalid_token"), name
        assert reason in description, (name, description)


def test_the_401_points_at_the_metadata_and_the_metadata_at_the_issuer(base_url: str) -> None:
    response = post_mcp(base_url, None)
    assert response.status_code == 401
    metadata_url = f"{base_url}/.well-known/oauth-protected-resource/mcp"
    assert f'resource_metadata="{metadata_url}"' in response.headers["www-authenticate"]
    assert f'resource_metadata="{metadata_url}"' in post_mcp(base_url, "Bearer x.y.z").headers["www-authenticate"]
    stale = {"Authorization": "Bearer x.y.z"}  # ignored outside /mcp: probes and discovery keep working
    assert httpx2.get(f"{base_url}/healthz", headers=stale).status_code == 200
    for url in (metadata_url, f"{base_url}/.well-known/oauth-protected-resource"):
        metadata = httpx2.get(url, headers=stale).json()
        assert metadata == {
            "resource": f"{base_url}/mcp",
            "authorization_servers": [ISSUER],
            "scopes_supported": ["mindscape:read", "mindscape:write"],
            "bearer_methods_supported": ["header"],
            "resource_name": "Mindscape",
        }


def test_a_token_without_a_mindscape_scope_gets_403(base_url: str, tenants: Tenants) -> None:
    status, error, description = refusal(base_url, token(tenants.a, scope="openid profile"))
    assert (status, error) == (403, "insufficient_scope")
    assert "neither mindscape:read nor mindscape:write" in description


def test_a_disabled_tenant_gets_403_for_jwts_and_api_keys(base_url: str, tenants: Tenants) -> None:
    for bearer in (token(tenants.disabled), tenants.disabled_key):
        response = post_mcp(base_url, f"Bearer {bearer}")
        assert response.status_code == 403
        body = response.json()
        assert body["error"] == "access_denied"
        assert f"tenant '{tenants.disabled}' is disabled" in body["error_description"]
        assert f"mindscape tenant enable {tenants.disabled}" in body["error_description"]
        assert 'error="access_denied"' in response.headers["www-authenticate"]


def test_unknown_kids_refetch_the_jwks_at_most_once_in_a_while(base_url: str, tenants: Tenants, jwks: Jwks) -> None:
    assert post_mcp(base_url, f"Bearer {token(tenants.a)}").status_code == 200  # keys fetched by now
    before = jwks.hits
    for i in range(5):
        assert refusal(base_url, sign_rs256(ROGUE, f"made-up-{i}", claims(CLAIM, tenants.a)))[0] == 401
    assert jwks.hits - before <= 1


def test_tokens_never_reach_the_log(base_url: str, tenants: Tenants, server_log: Path) -> None:
    bearers = [token(tenants.a, sub="log-check"), token("no-such-tenant"), token(tenants.a, aud="x")]
    for bearer in bearers:
        post_mcp(base_url, f"Bearer {bearer}")
    log = server_log.read_text()
    assert "refused a JWT" in log
    for bearer in bearers:
        assert bearer.split(".")[2] not in log
        assert bearer.split(".")[1] not in log


# --- a shared secret (HS256, development) --------------------------------------------------------


@pytest.fixture(scope="module")
def hs_url(targets: Targets, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {
        "MINDSCAPE_OAUTH_ISSUER": ISSUER,
        "MINDSCAPE_OAUTH_SHARED_SECRET": SECRET,
        "MINDSCAPE_OAUTH_AUDIENCE": AUDIENCE,
    }
    log = tmp_path_factory.mktemp("oauth-hs") / "server.log"
    with running_server(targets, "http", log, env) as url:
        assert "for development only" in log.read_text()
        yield url


def hs_token(tenant: str | None, secret: str = SECRET, **overrides: object) -> str:
    return jwt.encode(claims("mindscape_tenant", tenant, **overrides), secret, algorithm="HS256")


@pytest.mark.anyio
async def test_shared_secret_tokens_work_and_stay_in_their_tenant(hs_url: str, tenants: Tenants) -> None:
    async with mcp_client(hs_url, hs_token(tenants.b), "legacy") as b:
        assert structured(await b.call_tool("get_persona", {"slug": "zed"}))["name"] == "Zed"
    async with mcp_client(hs_url, hs_token(tenants.a), "auto") as a:
        assert "no persona with slug 'zed'" in text_of(await a.call_tool("get_persona", {"slug": "zed"}))


def test_shared_secret_mode_refuses_other_secrets_and_algorithms(hs_url: str, tenants: Tenants) -> None:
    assert refusal(hs_url, hs_token(tenants.a, secret="another-secret-" + "y" * 32))[2] == (
        "the token's signature does not verify"
    )
    rs = sign_rs256(KEY, "k1", claims("mindscape_tenant", tenants.a))
    assert "tokens signed with 'RS256' are not accepted; use HS256" in refusal(hs_url, rs)[2]
    assert refusal(hs_url, hs_token(tenants.disabled))[0] == 403


# --- legacy SSE ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sse_url(targets: Targets, jwks: Jwks, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("oauth-sse") / "server.log"
    with running_server(targets, "sse", log, oauth_env(jwks)) as url:
        yield url


@pytest.mark.anyio
async def test_sse_accepts_jwts_and_refuses_a_disabled_tenant(sse_url: str, tenants: Tenants) -> None:
    headers = {"Authorization": f"Bearer {token(tenants.b)}"}
    async with Client(sse_client(f"{sse_url}/sse", headers=headers), mode="legacy", cache=None) as b:  # pyright: ignore[reportArgumentType]
        assert structured(await b.call_tool("get_persona", {"slug": "ada"}))["name"] == "Ada of B"
    refused = httpx2.get(f"{sse_url}/sse", headers={"Authorization": f"Bearer {token(tenants.disabled)}"})
    assert refused.status_code == 403
    missing = httpx2.get(f"{sse_url}/sse")
    assert missing.status_code == 401
    assert "/.well-known/oauth-protected-resource/sse" in missing.headers["www-authenticate"]
    assert httpx2.get(f"{sse_url}/.well-known/oauth-protected-resource/sse").json()["resource"] == f"{sse_url}/sse"
