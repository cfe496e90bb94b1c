"""`mindscape tenant quota` and the quotas `mindscape memory import` obeys, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from mindscape.database.targets import Targets
from mindscape.tenancy.caller import Caller
from tests.support.cli import mindscape, one_line, owner_fetch, row_of, stored_memories, unique_slug, write_jsonl
from tests.support.tenants import TenantFactory, persona


@pytest.fixture
def tenant(tenant_factory: TenantFactory) -> Caller:
    return anyio.run(tenant_factory, [persona("basil", "Basil")], "qcli")


def limits_shown(stdout: str) -> dict[str, tuple[str, str]]:
    """limit -> (value, source) from the table `tenant quota` prints."""
    names = (
        "calls_per_minute",
        "max_memories",
        "max_content_bytes",
        "max_sessions",
        "max_concurrent_calls",
        "db_ms_per_second",
    )
    shown: dict[str, tuple[str, str]] = {}
    for name in names:
        cells = [cell.strip() for cell in row_of(stdout, name).strip().strip("│").split("│")]
        shown[name] = (cells[1], cells[2])
    return shown


def stored_settings(targets: Targets, slug: str) -> dict[str, Any]:
    found = owner_fetch(targets, "SELECT settings::text AS s FROM mindscape.tenants WHERE slug = $1", slug)
    return json.loads(found[0]["s"])


def test_quota_shows_the_defaults_then_sets_and_resets_the_tenants_own(targets: Targets, tenant: Caller) -> None:
    slug = tenant.tenant_slug
    shown = mindscape(targets, "tenant", "quota", slug)
    assert shown.exit_code == 0, shown.output
    assert limits_shown(shown.stdout) == {
        "calls_per_minute": ("600", "default"),
        "max_memories": ("10000", "default"),
        "max_content_bytes": ("16384", "default"),
        "max_sessions": ("100", "default"),
        "max_concurrent_calls": ("5", "default"),  # half the default pool of 10
        "db_ms_per_second": ("250", "default"),
    }
    assert "│ - " in row_of(mindscape(targets, "tenant", "list").stdout, slug)  # no limits of its own
    env_default = mindscape(targets, "tenant", "quota", slug, MINDSCAPE_QUOTA_CALLS_PER_MINUTE="0")
    assert limits_shown(env_default.stdout)["calls_per_minute"] == ("unlimited", "default")

    model = "hashing:mindscape-hash-v1:384"  # another tenant setting, which quotas must leave alone
    owner_fetch(
        targets,
        "UPDATE mindscape.tenants SET settings = jsonb_build_object('embedding_model', $2::text) "
        "WHERE slug = $1 RETURNING slug",
        slug,
        model,
    )
    changed = mindscape(targets, "tenant", "quota", slug, "--calls-per-minute", "30", "--max-memories", "0")
    assert changed.exit_code == 0, changed.output
    assert limits_shown(changed.stdout) == {
        "calls_per_minute": ("30", "tenant"),
        "max_memories": ("unlimited", "tenant"),
        "max_content_bytes": ("16384", "default"),
        "max_sessions": ("100", "default"),
        "max_concurrent_calls": ("5", "default"),
        "db_ms_per_second": ("250", "default"),
    }
    # Setting one limit keeps the others and any other tenant setting.
    mindscape(targets, "tenant", "quota", slug, "--max-content-bytes", "2048")
    assert stored_settings(targets, slug) == {
        "embedding_model": model,
        "calls_per_minute": 30,
        "max_memories": 0,
        "max_content_bytes": 2048,
    }

    listed = row_of(mindscape(targets, "tenant", "list").stdout, slug)
    assert "calls_per_minute=30 max_memories=0 max_content_bytes=2048" in listed

    reset = mindscape(targets, "tenant", "quota", slug, "--reset", "--max-memories", "10")
    assert reset.exit_code == 0, reset.output
    assert limits_shown(reset.stdout) == {
        "calls_per_minute": ("600", "default"),
        "max_memories": ("10", "tenant"),
        "max_content_bytes": ("16384", "default"),
        "max_sessions": ("100", "default"),
        "max_concurrent_calls": ("5", "default"),
        "db_ms_per_second": ("250", "default"),
    }
    assert stored_settings(targets, slug) == {"embedding_model": model, "max_memories": 10}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--calls-per-minute", "-1"], "--calls-per-minute: Input should be greater than or equal to 0"),
        (["--max-memories", "-5"], "--max-memories: Input should be greater than or equal to 0"),
        (["--max-content-bytes", "0"], "--max-content-bytes: Input should be greater than or equal to 1"),
        (["--max-content-bytes", "2000000"], "--max-content-bytes: Input should be less than or equal to 1048576"),
        (["--max-sessions", "-1"], "--max-sessions: Input should be greater than or equal to 0"),
        (["--max-concurrent-calls", "1001"], "--max-concurrent-calls: Input should be less than or equal to 1000"),
        (["--db-ms-per-second", "-1"], "--db-ms-per-second: Input should be greater than or equal to 0"),
    ],
)
def test_quota_refuses_bad_numbers_in_one_line_and_changes_nothing(
    targets: Targets, tenant: Caller, args: list[str], message: str
) -> None:
    refused = mindscape(targets, "tenant", "quota", tenant.tenant_slug, *args)
    assert refused.exit_code == 1
    assert message in one_line(refused.stderr)
    assert stored_settings(targets, tenant.tenant_slug) == {}


def test_quota_sets_a_tenants_own_session_and_concurrency_limits(targets: Targets, tenant: Caller) -> None:
    slug = tenant.tenant_slug
    changed = mindscape(
        targets,
        "tenant",
        "quota",
        slug,
        "--max-sessions",
        "3",
        "--max-concurrent-calls",
        "0",
        "--db-ms-per-second",
        "50",
    )
    assert changed.exit_code == 0, changed.output
    shown = limits_shown(changed.stdout)
    assert shown["max_sessions"] == ("3", "tenant")
    assert shown["max_concurrent_calls"] == ("unlimited", "tenant")
    assert shown["db_ms_per_second"] == ("50", "tenant")
    assert stored_settings(targets, slug) == {"max_sessions": 3, "max_concurrent_calls": 0, "db_ms_per_second": 50}
    assert "max_sessions=3 max_concurrent_calls=0" in row_of(mindscape(targets, "tenant", "list").stdout, slug)
    # The default concurrency follows the pool (half of it) unless configured.
    defaults = mindscape(targets, "tenant", "quota", slug, "--reset", MINDSCAPE_POOL_MAX_SIZE="4")
    assert limits_shown(defaults.stdout)["max_concurrent_calls"] == ("2", "default")
    configured = mindscape(
        targets, "tenant", "quota", slug, MINDSCAPE_QUOTA_MAX_CONCURRENT_CALLS="7", MINDSCAPE_QUOTA_DB_MS_PER_SECOND="0"
    )
    assert limits_shown(configured.stdout)["max_concurrent_calls"] == ("7", "default")
    assert limits_shown(configured.stdout)["db_ms_per_second"] == ("unlimited", "default")


def test_quota_of_an_unknown_tenant_fails_in_one_line(targets: Targets) -> None:
    slug = unique_slug("nobody")
    for args in ([], ["--max-memories", "3"]):
        refused = mindscape(targets, "tenant", "quota", slug, *args)
        assert refused.exit_code == 1
        assert (
            one_line(refused.stderr)
            == f"error: tenant {slug!r} does not exist; `mindscape tenant list` shows the tenants"
        )


def test_import_past_max_memories_is_refused_and_writes_nothing(
    targets: Targets, tenant: Caller, tmp_path: Path
) -> None:
    mindscape(targets, "tenant", "quota", tenant.tenant_slug, "--max-memories", "3")
    first = write_jsonl(tmp_path / "one.jsonl", [{"content": "already here"}])
    assert mindscape(targets, "memory", "import", first, "--tenant", tenant.tenant_slug).exit_code == 0
    lines: list[dict[str, Any] | str] = [{"content": f"imported {i}"} for i in range(3)]
    lines.append({"content": "already here"})
    refused = mindscape(
        targets, "memory", "import", write_jsonl(tmp_path / "four.jsonl", lines), "--tenant", tenant.tenant_slug
    )
    assert refused.exit_code == 1
    assert f"tenant {tenant.tenant_slug} holds 1 memories, limit 3 (this import adds 3)" in refused.stderr
    assert "raise max_memories" in refused.stderr
    assert set(stored_memories(targets, tenant)) == {"None:already here"}

    fits = write_jsonl(
        tmp_path / "two.jsonl", [{"content": "imported 0"}, {"content": "imported 1"}, {"content": "already here"}]
    )
    assert mindscape(targets, "memory", "import", fits, "--tenant", tenant.tenant_slug).exit_code == 0
    assert len(stored_memories(targets, tenant)) == 3


def test_import_obeys_the_tenants_max_content_bytes(targets: Targets, tenant: Caller, tmp_path: Path) -> None:
    mindscape(targets, "tenant", "quota", tenant.tenant_slug, "--max-content-bytes", "300")
    path = write_jsonl(tmp_path / "big.jsonl", [{"content": "short"}, {"content": "x" * 301}])
    refused = mindscape(targets, "memory", "import", path, "--tenant", tenant.tenant_slug)
    assert refused.exit_code == 1
    assert "line 2: content: is 301 bytes, over the 300-byte limit (the tenant's max_content_bytes)" in refused.stderr
    assert stored_memories(targets, tenant) == {}
