"""Operator output: `--json` on every command that lists or shows, full ids in every table at 80 columns.

Each `--json` result is parsed as JSON and checked against what the database holds, so a
command that printed a table, a truncated id or extra text on stdout would fail here.
"""

from __future__ import annotations

import json
import re
from typing import Any

import anyio
import pytest

from mindscape.database.targets import Targets
from mindscape.tenancy.caller import Caller
from tests.support.cli import mindscape, owner_fetch
from tests.support.openai_stub import Stub
from tests.support.results import data
from tests.support.tenants import ClientFactory

pytestmark = pytest.mark.office("ada", "basil", prefix="out")
NARROW = {"COLUMNS": "80"}  # a default terminal, where rich used to cut ids


def json_of(targets: Targets, *args: str, **env: str) -> Any:
    result = mindscape(targets, *args, "--json", **env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def create_key(targets: Targets, tenant: str, name: str = "bot") -> str:
    created = mindscape(targets, "key", "create", "--tenant", tenant, "--scope", "read", "--name", name)
    assert created.exit_code == 0, created.output
    return created.stdout.strip()


def test_tenant_list_and_show_print_full_ids(targets: Targets, office: Caller) -> None:
    listed = json_of(targets, "tenant", "list")
    (mine,) = [t for t in listed if t["slug"] == office.tenant_slug]
    assert mine["id"] == str(office.tenant_id)
    assert mine["status"] == "active"
    assert mine["own_limits"] == {}

    shown = json_of(targets, "tenant", "show", office.tenant_slug)
    assert shown["id"] == str(office.tenant_id)
    assert shown["name"] == f"Tenant {office.tenant_slug}"
    assert shown["limits"]["calls_per_minute"] == {"value": 600, "unlimited": False, "source": "default"}

    table = mindscape(targets, "tenant", "show", office.tenant_slug, **NARROW)
    assert table.exit_code == 0, table.output
    assert f"id       {office.tenant_id}" in table.stdout
    assert "calls_per_minute" in table.stdout
    narrow = mindscape(targets, "tenant", "list", **NARROW)
    assert str(office.tenant_id) in narrow.stdout
    assert office.tenant_slug in narrow.stdout

    missing = mindscape(targets, "tenant", "show", "no-such-tenant", "--json")
    assert missing.exit_code == 1
    assert missing.stdout == ""
    assert "does not exist" in missing.stderr


def test_tenant_quota_shows_and_sets_as_json(targets: Targets, office: Caller) -> None:
    shown = json_of(targets, "tenant", "quota", office.tenant_slug)
    assert shown == {
        "tenant": office.tenant_slug,
        "updated": False,
        "limits": {
            "calls_per_minute": {"value": 600, "unlimited": False, "source": "default"},
            "max_memories": {"value": 10_000, "unlimited": False, "source": "default"},
            "max_content_bytes": {"value": 16 * 1024, "unlimited": False, "source": "default"},
            "max_sessions": {"value": 100, "unlimited": False, "source": "default"},
            "max_concurrent_calls": {"value": 5, "unlimited": False, "source": "default"},
            "db_ms_per_second": {"value": 250, "unlimited": False, "source": "default"},
        },
    }
    updated = json_of(targets, "tenant", "quota", office.tenant_slug, "--max-memories", "0")
    assert updated["updated"] is True
    assert updated["limits"]["max_memories"] == {"value": 0, "unlimited": True, "source": "tenant"}


def test_persona_list_and_show(targets: Targets, office: Caller) -> None:
    listed = json_of(targets, "persona", "list", "--tenant", office.tenant_slug)
    assert [p["slug"] for p in listed] == ["ada", "basil"]

    shown = json_of(targets, "persona", "show", "ada", "--tenant", office.tenant_slug)
    assert shown["slug"] == "ada"
    assert shown["name"] == "Ada"
    assert shown["version"] == 1
    assert {"traits", "instructions", "tags", "created_at", "updated_at"} <= shown.keys()

    as_yaml = mindscape(targets, "persona", "show", "ada", "--tenant", office.tenant_slug)
    assert as_yaml.exit_code == 0, as_yaml.output
    assert "slug: ada" in as_yaml.stdout

    missing = mindscape(targets, "persona", "show", "zed", "--tenant", office.tenant_slug)
    assert missing.exit_code == 1
    assert f"`mindscape persona list --tenant {office.tenant_slug}`" in missing.stderr


def test_key_list_prints_full_ids_as_json_and_in_a_narrow_table(targets: Targets, office: Caller) -> None:
    token = create_key(targets, office.tenant_slug, name="a fairly long name for a support bot")
    listed = json_of(targets, "key", "list", "--tenant", office.tenant_slug)
    (key,) = listed
    assert re.fullmatch(r"[0-9a-f-]{36}", key["id"])
    assert token.startswith(f"msk_{key['prefix']}_")
    assert key["status"] == "active"
    assert key["scope"] == "read"
    assert token not in json.dumps(listed)  # never the secret

    table = mindscape(targets, "key", "list", "--tenant", office.tenant_slug, **NARROW)
    assert table.exit_code == 0, table.output
    assert key["id"] in table.stdout
    assert office.tenant_slug in table.stdout
    for cell in ("read", "active", key["prefix"], "support"):  # no column was squeezed out to fit
        assert cell in table.stdout
    assert "…" not in table.stdout


def test_key_rotate_and_revoke_accept_what_the_list_shows(targets: Targets, office: Caller) -> None:
    create_key(targets, office.tenant_slug)
    (first,) = json_of(targets, "key", "list", "--tenant", office.tenant_slug)

    rotated = mindscape(targets, "key", "rotate", first["id"][:8])  # the start of the id
    assert rotated.exit_code == 0, rotated.output
    assert f"revoked {first['id']}" in rotated.stderr

    active = [k for k in json_of(targets, "key", "list", "--tenant", office.tenant_slug) if k["status"] == "active"]
    (second,) = active
    revoked = mindscape(targets, "key", "revoke", f"msk_{second['prefix']}")  # the public prefix, as logs name it
    assert revoked.exit_code == 0, revoked.output
    assert second["id"] in revoked.stdout
    statuses = {k["id"]: k["status"] for k in json_of(targets, "key", "list", "--tenant", office.tenant_slug)}
    assert statuses == {first["id"]: "revoked", second["id"]: "revoked"}

    unknown = mindscape(targets, "key", "revoke", "ffffffff-ffff")
    assert unknown.exit_code == 1
    assert "no API key whose id starts with" in unknown.stderr
    too_short = mindscape(targets, "key", "revoke", "ab")
    assert too_short.exit_code == 2


def test_audit_tail_prints_full_target_ids(targets: Targets, office: Caller, client_for: ClientFactory) -> None:
    async def create_campaign() -> str:
        async with client_for(office.tenant_slug) as client:
            return data(await client.call_tool("create_campaign", {"name": "Launch", "personas": ["ada"]}))["id"]

    campaign = anyio.run(create_campaign)
    events = json_of(targets, "audit", "tail", "--tenant", office.tenant_slug)
    # The campaign's own event; its persona assignment is a second event of the same call.
    (event,) = [e for e in events if e["tool"] == "create_campaign" and e["outcome"] == "created"]
    assert event["target_ids"] == [campaign]
    stored = owner_fetch(targets, "SELECT id FROM mindscape.audit_events WHERE tenant_id = $1", office.tenant_id)
    assert event["id"] in {str(r["id"]) for r in stored}

    table = mindscape(targets, "audit", "tail", "--tenant", office.tenant_slug, **NARROW)
    assert table.exit_code == 0, table.output
    assert campaign in table.stdout
    for cell in ("create_campaign", event["outcome"], event["principal"]):
        assert cell in table.stdout
    assert "…" not in table.stdout


def test_memory_index_status_as_json(targets: Targets, office: Caller) -> None:
    report: list[dict[str, Any]] = json_of(targets, "memory", "index", "--check", "--tenant", office.tenant_slug)
    assert isinstance(report, list)
    for entry in report:
        assert {"tenant", "model", "embeddings", "state", "above_threshold", "threshold"} <= entry.keys()


def test_doctor_as_json(targets: Targets) -> None:
    result = mindscape(targets, "doctor", "--json", MINDSCAPE_EMBEDDING_PROVIDER="hashing")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["configuration"]["embedding_provider"] == "hashing"
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["database"]["status"] == "ok"
    assert checks["embeddings"]["status"] == "warn"  # hashing is lexical
    assert checks["embeddings"]["fix"]

    bad = mindscape(targets, "doctor", "--json", MINDSCAPE_POOL_MAX_SIZE="0")
    assert bad.exit_code == 1
    assert json.loads(bad.stdout)["checks"][0]["name"] == "settings"


def test_doctor_probes_an_openai_compatible_provider(targets: Targets, stub: Stub) -> None:
    """Nothing listening there is a FAIL with the fix; the stub answering is ok."""
    openai = {"MINDSCAPE_EMBEDDING_PROVIDER": "openai", "MINDSCAPE_EMBEDDING_MODEL": "stub-embed"}
    dead = mindscape(targets, "doctor", "--json", **openai, MINDSCAPE_EMBEDDING_BASE_URL="http://127.0.0.1:1/v1")
    assert dead.exit_code == 1, dead.output
    check = {c["name"]: c for c in json.loads(dead.stdout)["checks"]}["embeddings"]
    assert check["status"] == "FAIL"
    assert "a one-text embed failed" in check["detail"]
    assert "MINDSCAPE_EMBEDDING_BASE_URL" in check["fix"]

    alive = mindscape(targets, "doctor", "--json", **openai, MINDSCAPE_EMBEDDING_BASE_URL=stub.url)
    check = {c["name"]: c for c in json.loads(alive.stdout)["checks"]}["embeddings"]
    assert check["status"] == "ok", check
    assert "embedded a test text" in check["detail"]
    assert len(stub.seen) == 1
