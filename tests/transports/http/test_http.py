"""Streamable HTTP with API keys, against a real `mindscape serve --transport http` process.

The server runs as a subprocess on a loopback port chosen here, with the runtime role's URL,
exactly as an operator starts it; MCP clients connect over real HTTP in both protocol eras.
Status codes are checked with plain HTTP requests.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import anyio
import httpx2
import pytest

from mindscape.database import migrate
from mindscape.database.pool import Pool, connect
from mindscape.database.targets import Targets
from mindscape.ops import tenants as tenant_ops
from mindscape.tenancy import keys
from mindscape.transports.http.app import not_ready
from tests.support.cli import mindscape
from tests.support.http import MODES, Keys, mcp_client, new_key, post_mcp, seed_keys
from tests.support.results import data as structured
from tests.support.results import text_of
from tests.support.serving import running_server, server_process
from tests.support.tenants import PERSONAS_A, TenantFactory


@pytest.fixture(scope="module")
def server_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("http") / "server.log"


@pytest.fixture(scope="module")
def base_url(targets: Targets, server_log: Path) -> Iterator[str]:
    with running_server(targets, "http", server_log) as url:
        yield url


@pytest.fixture(scope="module")
def tenant_keys(targets: Targets) -> Keys:
    return anyio.run(seed_keys, targets, "h")


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_each_key_sees_only_its_own_tenant(base_url: str, tenant_keys: Keys, mode: str) -> None:
    async with mcp_client(base_url, tenant_keys.a_write, mode) as a:
        names = {t.name for t in (await a.list_tools()).tools}
        assert {"get_persona", "remember", "recall"} <= names
        assert structured(await a.call_tool("get_persona", {"slug": "ada"}))["name"] == "Ada Analyst"
        missing = await a.call_tool("get_persona", {"slug": "zed"})  # B's persona
        assert missing.is_error
        assert "no persona with slug 'zed'" in text_of(missing)
    async with mcp_client(base_url, tenant_keys.b_write, mode) as b:
        assert structured(await b.call_tool("get_persona", {"slug": "ada"}))["name"] == "Ada of B"
        assert structured(await b.call_tool("get_persona", {"slug": "zed"}))["name"] == "Zed"


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_a_read_key_is_refused_write_tools_but_reads(base_url: str, tenant_keys: Keys, mode: str) -> None:
    async with mcp_client(base_url, tenant_keys.a_write, mode) as writer:
        stored = await writer.call_tool("remember", {"content": f"http note {mode}"})
        assert not stored.is_error, text_of(stored)
    async with mcp_client(base_url, tenant_keys.a_read, mode) as reader:
        listed = {tool.name for tool in (await reader.list_tools()).tools}
        assert {"recall", "list_personas", "get_task"} <= listed
        assert not listed & {"remember", "forget", "create_task", "update_task", "claim_next_task"}
        refused = await reader.call_tool("remember", {"content": "should not be stored"})
        assert refused.is_error
        assert "remember changes data, and this API key has only the 'read' scope" in text_of(refused)
        found = structured(await reader.call_tool("recall", {"query": f"http note {mode}", "mode": "keyword"}))
        contents = [m["content"] for m in found["memories"]]
        assert f"http note {mode}" in contents
        assert "should not be stored" not in contents
        assert not (await reader.call_tool("list_personas", {})).is_error


@pytest.mark.parametrize(
    "authorization",
    [None, "Basic dXNlcjpwYXNz", "Bearer", "Bearer not-a-key", "Bearer msk_0123456789ab_" + "x" * 43],
    ids=["missing", "not-bearer", "empty", "malformed", "unknown"],
)
def test_bad_credentials_get_401(base_url: str, authorization: str | None) -> None:
    response = post_mcp(base_url, authorization)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer ")
    assert response.json()["error"] == "invalid_token"


def test_a_good_key_with_a_wrong_secret_gets_401(base_url: str, tenant_keys: Keys) -> None:
    prefix, _ = keys.parse(tenant_keys.a_write) or ("", "")
    assert post_mcp(base_url, f"Bearer msk_{prefix}_{'A' * 43}").status_code == 401
    assert post_mcp(base_url, f"Bearer {tenant_keys.a_write}").status_code == 200


def test_expired_and_revoked_get_401_and_a_disabled_tenant_403(
    base_url: str, targets: Targets, tenant_factory: TenantFactory
) -> None:
    async def seed() -> tuple[str, str, str]:
        live = await tenant_factory([], "hx")
        disabled = await tenant_factory([], "hd")
        expired = await new_key(targets, live.tenant_slug, "write", timedelta(days=1))
        revoked = await new_key(targets, live.tenant_slug, "write")
        of_disabled = await new_key(targets, disabled.tenant_slug, "write")
        for key in (expired, revoked, of_disabled):
            assert post_mcp(base_url, f"Bearer {key}").status_code == 200
        conn = await connect(targets.owner)
        try:
            await conn.execute(
                "UPDATE mindscape.api_keys SET created_at = now() - interval '2 days', "
                "expires_at = now() - interval '1 second' WHERE prefix = $1",
                (keys.parse(expired) or ("", ""))[0],
            )
            await conn.execute(
                "UPDATE mindscape.api_keys SET revoked_at = now() WHERE prefix = $1",
                (keys.parse(revoked) or ("", ""))[0],
            )
        finally:
            await conn.close()
        await tenant_ops.set_tenant_status(targets, slug=disabled.tenant_slug, status="disabled")
        return expired, revoked, of_disabled

    expired, revoked, of_disabled = anyio.run(seed)
    prefixes = {key: (keys.parse(key) or ("", ""))[0] for key in (expired, revoked)}
    for key, reason in ((expired, "has expired"), (revoked, "was revoked")):
        response = post_mcp(base_url, f"Bearer {key}")
        assert response.status_code == 401, key[:16]
        assert response.json()["error_description"].startswith(f"API key {prefixes[key]} {reason}")
    disabled = post_mcp(base_url, f"Bearer {of_disabled}")
    assert disabled.status_code == 403
    assert "is disabled; an operator can re-enable it" in disabled.json()["error_description"]


def test_dns_rebinding_protection_is_on(base_url: str, tenant_keys: Keys) -> None:
    key = f"Bearer {tenant_keys.a_write}"
    assert post_mcp(base_url, key, Host="evil.example").status_code == 421
    assert post_mcp(base_url, key, Origin="http://evil.example").status_code == 403


def test_health_and_readiness(base_url: str) -> None:
    healthz = httpx2.get(f"{base_url}/healthz")
    assert (healthz.status_code, healthz.text) == (200, "ok")
    readyz = httpx2.get(f"{base_url}/readyz")
    assert (readyz.status_code, readyz.text) == (200, "ready")


@pytest.mark.anyio
async def test_not_ready_names_the_reason(pool: Pool) -> None:
    head = migrate.head_revision()
    assert await not_ready(pool, head) is None
    outdated = await not_ready(pool, "9999")
    assert outdated == f"schema is at revision {head}, this Mindscape needs 9999: run `mindscape db upgrade`"
    await pool.close()
    assert await not_ready(pool, head) == "database unreachable (InterfaceError)"


KEY_RE = re.compile(r"^msk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$")


def test_key_cli_create_list_revoke_rotate(base_url: str, targets: Targets, tenant_factory: TenantFactory) -> None:
    slug = anyio.run(tenant_factory, PERSONAS_A, "hk").tenant_slug

    created = mindscape(
        targets, "key", "create", "--tenant", slug, "--scope", "read", "--name", "bot", "--expires", "90d"
    )
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    assert KEY_RE.match(key), created.stdout
    assert "read key" in created.stderr
    assert f"for tenant {slug}, expires" in created.stderr
    assert "shown only once" in created.stderr
    assert post_mcp(base_url, f"Bearer {key}").status_code == 200

    listed = mindscape(targets, "key", "list", "--tenant", slug)
    assert listed.exit_code == 0, listed.output
    prefix, secret = keys.parse(key) or ("", "")
    assert prefix in listed.stdout
    assert "bot" in listed.stdout
    assert "active" in listed.stdout
    assert secret not in listed.stdout
    assert key not in listed.stdout
    key_id = re.search(r"key ([0-9a-f-]{36})", created.stderr)
    assert key_id is not None

    rotated = mindscape(targets, "key", "rotate", key_id.group(1))
    assert rotated.exit_code == 0, rotated.output
    replacement = rotated.stdout.strip()
    assert KEY_RE.match(replacement)
    assert replacement != key
    assert post_mcp(base_url, f"Bearer {key}").status_code == 401
    assert post_mcp(base_url, f"Bearer {replacement}").status_code == 200
    again = mindscape(targets, "key", "rotate", key_id.group(1))
    assert again.exit_code == 1
    assert "no active API key" in again.stderr

    new_id = re.search(r"key ([0-9a-f-]{36})", rotated.stderr.split("created", 1)[1])
    assert new_id is not None
    revoked = mindscape(targets, "key", "revoke", new_id.group(1))
    assert revoked.exit_code == 0, revoked.output
    assert post_mcp(base_url, f"Bearer {replacement}").status_code == 401
    statuses = mindscape(targets, "key", "list", "--tenant", slug).stdout
    assert statuses.count("revoked") == 2
    assert "active" not in statuses


def test_key_cli_refuses_bad_input_in_one_line(targets: Targets) -> None:
    unknown = mindscape(targets, "key", "create", "--tenant", "no-such-tenant", "--scope", "write")
    assert unknown.exit_code == 1
    assert "tenant 'no-such-tenant' does not exist" in unknown.stderr
    assert unknown.stdout == ""
    lifetime = mindscape(targets, "key", "create", "--tenant", "x", "--scope", "write", "--expires", "soon")
    assert lifetime.exit_code == 2
    assert "is not a lifetime" in lifetime.stderr
    scope = mindscape(targets, "key", "create", "--tenant", "x", "--scope", "admin")
    assert scope.exit_code == 2
    bad_id = mindscape(targets, "key", "revoke", "nope")
    assert bad_id.exit_code == 2
    assert "is not a key id" in bad_id.stderr


def test_the_log_names_keys_by_prefix_only(base_url: str, tenant_keys: Keys, server_log: Path) -> None:
    assert post_mcp(base_url, f"Bearer {tenant_keys.a_read}x").status_code == 401  # malformed: too long
    prefix, secret = keys.parse(tenant_keys.a_read) or ("", "")
    assert post_mcp(base_url, f"Bearer msk_{prefix}_{secret[::-1]}").status_code == 401  # wrong secret
    log = server_log.read_text()
    assert f"refused API key {prefix}: unknown key or wrong secret" in log
    for key in (tenant_keys.a_write, tenant_keys.a_read, tenant_keys.b_write):
        assert (keys.parse(key) or ("", "-"))[1] not in log


@pytest.mark.anyio
async def test_a_key_is_stamped_off_the_request_path_and_at_shutdown(
    targets: Targets, tenant_factory: TenantFactory, tmp_path: Path
) -> None:
    tenant = await tenant_factory(PERSONAS_A, "used")
    key = await new_key(targets, tenant.tenant_slug, "read")
    parsed = keys.parse(key)
    assert parsed is not None
    prefix = parsed[0]

    async def stamped() -> tuple[datetime | None, datetime]:
        conn = await connect(targets.owner)
        try:
            row = await conn.fetchrow(
                "SELECT last_used_at, now() AS now FROM mindscape.api_keys WHERE prefix = $1", prefix
            )
        finally:
            await conn.close()
        assert row is not None
        return row["last_used_at"], row["now"]

    flush_rarely = {"MINDSCAPE_API_KEY_USAGE_FLUSH_S": "3600"}
    with server_process(targets, tmp_path / "server.log", "--transport", "http", env=flush_rarely) as (proc, url):
        _, before = await stamped()
        async with mcp_client(url, key, "auto") as client:
            assert not (await client.call_tool("get_persona", {"slug": "ada"})).is_error
        assert (await stamped())[0] is None  # verifying the key wrote nothing
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    used, after = await stamped()
    assert used is not None
    assert before <= used <= after  # the time of use, written when the server stopped
