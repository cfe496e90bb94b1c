"""OAuth settings that do not fit together, the JWKS cache against a real local JWKS, 503s, and `mindscape doctor`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from mindscape.config.settings import load_settings
from mindscape.database.pool import Pool
from mindscape.database.targets import Targets
from mindscape.errors import StartupError
from mindscape.transports.http.auth.api_keys import ApiKeyVerifier
from mindscape.transports.http.auth.jwks import JwksCache, JwksUnavailable
from mindscape.transports.http.auth.jwt import JwtConfig, JwtVerifier, claim_at, granted_scopes, jwt_principal
from mindscape.transports.http.refusals import Refused
from tests.support.cli import doctor, line_of
from tests.support.issuer import Jwks, claims, jwks_server, public_jwk, rsa_key, sign_rs256
from tests.support.serving import free_port
from tests.support.tenants import TenantFactory

ISSUER = "https://idp.example.com/realms/acme"
JWKS = "https://idp.example.com/realms/acme/certs"
SECRET = "s" * 32
KEY = rsa_key()
OTHER = rsa_key()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    for key in [k for k in os.environ if k.startswith("MINDSCAPE_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"oauth_issuer": ISSUER, "oauth_audience": "a"}, "JWT mode needs a key source: set oauth_jwks_url"),
        (
            {"oauth_issuer": ISSUER, "oauth_audience": "a", "oauth_jwks_url": JWKS, "oauth_shared_secret": SECRET},
            "set either oauth_jwks_url or oauth_shared_secret, not both",
        ),
        ({"oauth_issuer": ISSUER, "oauth_jwks_url": JWKS}, "oauth_audience is required in JWT mode"),
        (
            {"oauth_issuer": ISSUER, "oauth_audience": "a", "oauth_shared_secret": "short"},
            "oauth_shared_secret must be at least 32 bytes: generate one with `openssl rand -hex 32`",
        ),
        (
            {"oauth_issuer": ISSUER, "oauth_audience": "a", "oauth_jwks_url": "http://idp.example.com/certs"},
            "oauth_jwks_url must use https (plain http is accepted for loopback addresses only)",
        ),
        (
            {"oauth_issuer": ISSUER, "oauth_audience": "a", "oauth_jwks_url": JWKS, "oauth_algorithms": ["HS256"]},
            "oauth_algorithms ['HS256'] cannot be used with oauth_jwks_url",
        ),
        (
            {
                "oauth_issuer": ISSUER,
                "oauth_audience": "a",
                "oauth_shared_secret": SECRET,
                "oauth_algorithms": ["none"],
            },
            "oauth_algorithms ['none'] cannot be used with oauth_shared_secret; choose from HS256, HS384, HS512",
        ),
        ({"oauth_jwks_url": JWKS, "oauth_audience": "a"}, "oauth_jwks_url, oauth_audience set without oauth_issuer"),
        ({"oauth_issuer": "idp.example.com", "oauth_audience": "a", "oauth_jwks_url": JWKS}, "oauth_issuer must be"),
        ({"public_url": "https://mcp.example.com/?x=1"}, "public_url must be an http(s) URL without query"),
        ({"oauth_tenant_claim": "a..b"}, "oauth_tenant_claim: String should match pattern"),
    ],
    ids=[
        "no key source",
        "two key sources",
        "no audience",
        "short secret",
        "plain http jwks",
        "hs with jwks",
        "alg none",
        "stray without issuer",
        "issuer not a url",
        "public url with query",
        "bad claim path",
    ],
)
def test_invalid_combinations_are_startup_errors_with_a_fix(flags: dict[str, Any], message: str) -> None:
    with pytest.raises(StartupError) as caught:
        load_settings(**flags)
    assert message in str(caught.value)
    assert SECRET not in str(caught.value)


@pytest.mark.usefixtures("clean_env")
def test_valid_modes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().oauth_issuer is None  # API keys only by default
    monkeypatch.setenv("MINDSCAPE_OAUTH_ISSUER", ISSUER)
    monkeypatch.setenv("MINDSCAPE_OAUTH_AUDIENCE", "mindscape")
    monkeypatch.setenv("MINDSCAPE_OAUTH_JWKS_URL", JWKS)
    monkeypatch.setenv("MINDSCAPE_OAUTH_TENANT_CLAIM", "app_metadata.tenant")
    settings = load_settings()
    assert (settings.oauth_jwks_url, settings.oauth_tenant_claim) == (JWKS, "app_metadata.tenant")
    monkeypatch.delenv("MINDSCAPE_OAUTH_JWKS_URL")
    monkeypatch.setenv("MINDSCAPE_OAUTH_SHARED_SECRET", SECRET)
    assert load_settings().oauth_shared_secret is not None


def test_claim_paths_scopes_and_principals() -> None:
    claims: dict[str, object] = {"t": "acme", "app": {"tenant": "beta", "n": 1}}
    assert claim_at(claims, "t") == "acme"
    assert claim_at(claims, "app.tenant") == "beta"
    assert claim_at(claims, "app.n.deeper") is None
    assert claim_at(claims, "missing.x") is None
    assert granted_scopes({"scope": "openid mindscape:write"}) == ["read", "write"]
    assert granted_scopes({"scp": ["mindscape:read"]}) == ["read"]
    assert granted_scopes({"scope": "read write mindscape"}) == []
    assert granted_scopes({"scope": 7}) == []
    assert jwt_principal("https://idp", "u1") == "jwt:https://idp#u1"
    long = jwt_principal("https://idp", "u" * 300)
    assert long.startswith("jwt:sha256:")
    assert len(long) <= 200


@pytest.fixture
def jwks() -> Iterator[Jwks]:
    with jwks_server(Jwks(keys=[public_jwk(KEY, "k1")])) as served:
        yield served


@pytest.mark.anyio
async def test_a_rotated_key_is_fetched_on_its_first_token(jwks: Jwks) -> None:
    cache = JwksCache(jwks.url, min_refetch_s=0)
    assert await cache.key("k1") is not None
    assert await cache.key("k1") is not None
    assert jwks.hits == 1  # cached
    jwks.keys = [public_jwk(KEY, "k1"), public_jwk(OTHER, "k2")]
    found = await cache.key("k2")
    assert found is not None
    assert found.key_id == "k2"
    assert jwks.hits == 2


@pytest.mark.anyio
async def test_unknown_kids_do_not_refetch_within_the_interval(jwks: Jwks) -> None:
    cache = JwksCache(jwks.url, min_refetch_s=3600)
    assert await cache.key("k1") is not None
    for kid in ("k2", "k3", "k4"):
        assert await cache.key(kid) is None
    assert jwks.hits == 1
    assert await cache.key(None) is not None  # one key in the set: a token without kid may use it


@pytest.mark.anyio
async def test_encryption_keys_never_verify_and_an_unreachable_jwks_is_unavailable(jwks: Jwks) -> None:
    jwks.keys = [{**public_jwk(KEY, "k1"), "use": "enc"}]
    with pytest.raises(JwksUnavailable, match="could not fetch the JWKS"):
        await JwksCache(jwks.url).key("k1")
    gone = f"http://127.0.0.1:{free_port()}/jwks.json"
    with pytest.raises(JwksUnavailable, match=f"could not fetch the JWKS at {gone}"):
        await JwksCache(gone).key("k1")


def test_doctor_shows_oauth_masks_the_secret_and_warns_about_it(targets: Targets) -> None:
    result = doctor(
        targets,
        MINDSCAPE_OAUTH_ISSUER=ISSUER,
        MINDSCAPE_OAUTH_AUDIENCE="mindscape",
        MINDSCAPE_OAUTH_SHARED_SECRET="very-secret-" + SECRET,
    )
    assert result.exit_code == 0, result.output
    assert "very-secret-" not in result.output
    assert "oauth_shared_secret = ***" in result.stdout
    assert f"oauth_issuer = {ISSUER}" in result.stdout
    assert "HS256 shared secret" in line_of(result.stdout, "warn  oauth:")
    assert "development only" in result.stdout


def test_doctor_fetches_the_jwks(targets: Targets, jwks: Jwks) -> None:
    env = {"MINDSCAPE_OAUTH_ISSUER": ISSUER, "MINDSCAPE_OAUTH_AUDIENCE": "m", "MINDSCAPE_OAUTH_JWKS_URL": jwks.url}
    good = doctor(targets, **env)
    assert good.exit_code == 0, good.output
    assert f"1 signing key(s) at {jwks.url}" in line_of(good.stdout, "ok    oauth:")
    gone = f"http://127.0.0.1:{free_port()}/jwks.json"
    bad = doctor(targets, **{**env, "MINDSCAPE_OAUTH_JWKS_URL": gone})
    assert bad.exit_code == 1
    assert f"could not fetch the JWKS at {gone}" in line_of(bad.stdout, "FAIL  oauth:")
    assert "fix: check oauth_jwks_url" in bad.stdout


def test_doctor_reports_an_invalid_combination(targets: Targets) -> None:
    result = doctor(targets, MINDSCAPE_OAUTH_ISSUER=ISSUER, MINDSCAPE_OAUTH_JWKS_URL=JWKS)
    assert result.exit_code == 1
    assert "oauth_audience is required in JWT mode" in line_of(result.stdout, "FAIL  settings:")


@pytest.mark.anyio
async def test_unreachable_jwks_or_database_answer_503_not_401(pool: Pool, tenant_factory: TenantFactory) -> None:
    """Fail closed, but say it is temporary: the client should retry, not throw its credential away."""
    tenant = (await tenant_factory([], "o5")).tenant_slug
    gone = f"http://127.0.0.1:{free_port()}/jwks.json"
    config = JwtConfig(ISSUER, "aud", "mindscape_tenant", ["RS256"], 30, gone, None)
    token = sign_rs256(KEY, "k1", claims("mindscape_tenant", tenant, iss=ISSUER, aud="aud"))
    with pytest.raises(Refused) as caught:
        await JwtVerifier(config, pool).verify(token)
    assert (caught.value.status, caught.value.error) == (503, "temporarily_unavailable")

    with jwks_server(Jwks(keys=[public_jwk(KEY, "k1")])) as served:
        verifier = JwtVerifier(replace(config, jwks_url=served.url), pool)
        accepted = await verifier.verify(token)
        assert accepted.claims is not None
        assert accepted.claims["mindscape_tenant_slug"] == tenant
        await pool.close()
        with pytest.raises(Refused) as caught:
            await verifier.verify(token)
        assert caught.value.status == 503
        with pytest.raises(Refused) as caught:
            await ApiKeyVerifier(pool).verify_token("msk_0123456789ab_" + "x" * 43)
        assert caught.value.status == 503
