"""The `mindscape` command against the shared test cluster, seen as an external database.

Operator commands run in-process through Typer's runner; `serve` runs as a real process,
because its stdout is the MCP wire and must stay empty when it refuses to start.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from mindscape.cli import app
from mindscape.config.settings import Settings
from mindscape.database import migrate
from mindscape.database.pool import connect
from mindscape.database.targets import Targets
from mindscape.ops import personas as persona_ops
from mindscape.ops import tenants as tenant_ops
from tests.support.cli import cli_env, mindscape, one_line, row_of, runner, unique_slug


def tenant_statuses(targets: Targets) -> dict[str, str]:
    return {t.slug: t.status for t in anyio.run(tenant_ops.list_tenants, targets)}


def persona_versions(targets: Targets, tenant_slug: str) -> dict[str, int]:
    """Slug -> version, read as the owner (outside row-level security) to see every write."""

    async def read() -> dict[str, int]:
        conn = await connect(targets.owner)
        try:
            rows = await conn.fetch(
                "SELECT p.slug, p.version FROM mindscape.personas p "
                "JOIN mindscape.tenants t ON t.id = p.tenant_id WHERE t.slug = $1",
                tenant_slug,
            )
        finally:
            await conn.close()
        return {r["slug"]: r["version"] for r in rows}

    return anyio.run(read)


@pytest.fixture
def tenant(targets: Targets) -> str:
    slug = unique_slug()
    anyio.run(lambda: tenant_ops.create_tenant(targets, slug=slug, name=f"CLI {slug}"))
    return slug


# --- tenants -----------------------------------------------------------------------------


def test_tenant_create_then_list_shows_it_active(targets: Targets) -> None:
    slug = unique_slug()

    created = mindscape(targets, "tenant", "create", slug, "--name", "Acme Corp")
    assert created.exit_code == 0, created.output
    assert f"created tenant {slug}" in created.stdout

    listed = mindscape(targets, "tenant", "list")
    assert listed.exit_code == 0, listed.output
    row = row_of(listed.stdout, slug)
    assert "Acme Corp" in row
    assert "active" in row
    assert tenant_statuses(targets)[slug] == "active"


def test_tenant_create_twice_fails_with_one_line(targets: Targets) -> None:
    slug = unique_slug()
    assert mindscape(targets, "tenant", "create", slug, "--name", "First").exit_code == 0

    again = mindscape(targets, "tenant", "create", slug, "--name", "Second")

    assert again.exit_code == 1
    assert f"tenant {slug!r} already exists" in one_line(again.stderr)
    listed = mindscape(targets, "tenant", "list").stdout
    assert "First" in row_of(listed, slug)


@pytest.mark.parametrize("slug", ["Not_A_Slug", "trailing-dash-", "a" * 65])
def test_tenant_create_rejects_invalid_slug_as_usage_error(targets: Targets, slug: str) -> None:
    result = mindscape(targets, "tenant", "create", slug, "--name", "Bad")

    assert result.exit_code == 2
    assert "slug is lowercase letters, digits and '-'" in result.stderr
    assert slug not in tenant_statuses(targets)


def test_tenant_create_rejects_blank_name_as_usage_error(targets: Targets) -> None:
    slug = unique_slug()

    result = mindscape(targets, "tenant", "create", slug, "--name", "   ")

    assert result.exit_code == 2
    assert "a name is 1 to 200 characters" in result.stderr
    assert slug not in tenant_statuses(targets)


def test_tenant_disable_then_enable_changes_status(targets: Targets, tenant: str) -> None:
    disabled = mindscape(targets, "tenant", "disable", tenant)
    assert disabled.exit_code == 0, disabled.output
    assert f"tenant {tenant} is disabled" in disabled.stdout
    assert tenant_statuses(targets)[tenant] == "disabled"
    assert "disabled" in row_of(mindscape(targets, "tenant", "list").stdout, tenant)

    enabled = mindscape(targets, "tenant", "enable", tenant)
    assert enabled.exit_code == 0, enabled.output
    assert f"tenant {tenant} is active" in enabled.stdout
    assert tenant_statuses(targets)[tenant] == "active"


@pytest.mark.parametrize("command", ["disable", "enable"])
def test_changing_status_of_unknown_tenant_fails_with_one_line(targets: Targets, command: str) -> None:
    slug = unique_slug("missing")

    result = mindscape(targets, "tenant", command, slug)

    assert result.exit_code == 1
    assert f"tenant {slug!r} does not exist" in one_line(result.stderr)
    assert slug not in tenant_statuses(targets)


def test_tenant_list_prints_names_verbatim_not_as_markup(targets: Targets) -> None:
    slug = unique_slug()
    name = "Acme [bold]Labs[/] :smile:"
    assert mindscape(targets, "tenant", "create", slug, "--name", name).exit_code == 0

    listed = mindscape(targets, "tenant", "list")

    assert listed.exit_code == 0, listed.output
    assert name in row_of(listed.stdout, slug)


# --- personas ----------------------------------------------------------------------------

PERSONAS: list[dict[str, Any]] = [
    {
        "slug": "ada",
        "name": "Ada Analyst",
        "summary": "Careful data analyst who writes SQL",
        "traits": {"communication": {"tone": "precise"}, "level": 3},
        "instructions": "Cite your queries.",
        "tags": ["analytics", "research"],
    },
    {"slug": "basil", "name": "Basil Support", "summary": "Warm billing support", "tags": ["support"]},
    {"slug": "cora", "name": "Cora Coach", "traits": {"focus": "structure"}},
]


def write_personas(path: Path, personas: list[dict[str, Any]]) -> Path:
    """JSON as a bare list; YAML (written by hand, as an operator would) under `personas:`."""
    if path.suffix == ".json":
        path.write_text(json.dumps(personas, indent=2), encoding="utf-8")
        return path
    lines = ["# personas for the CLI tests", "personas:"]
    for p in personas:
        lines.append(f"  - slug: {p['slug']}")
        lines.append(f"    name: {p['name']}")
        if "summary" in p:
            lines.append(f"    summary: {p['summary']}")
        if "traits" in p:
            lines.append(f"    traits: {json.dumps(p['traits'])}")
        if "instructions" in p:
            lines.append(f"    instructions: |-\n      {p['instructions']}")
        if "tags" in p:
            lines.append("    tags:")
            lines.extend(f"      - {tag}" for tag in p["tags"])
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_persona_import_reports_created_then_unchanged_then_updated(
    targets: Targets, tenant: str, tmp_path: Path, suffix: str
) -> None:
    file = write_personas(tmp_path / f"personas{suffix}", PERSONAS)

    first = mindscape(targets, "persona", "import", file, "--tenant", tenant)
    assert first.exit_code == 0, first.output
    assert f"imported 3 persona(s) into {tenant}: 3 created, 0 updated, 0 unchanged" in first.stdout
    assert persona_versions(targets, tenant) == {"ada": 1, "basil": 1, "cora": 1}

    second = mindscape(targets, "persona", "import", file, "--tenant", tenant)
    assert second.exit_code == 0, second.output
    assert "0 created, 0 updated, 3 unchanged" in second.stdout
    assert persona_versions(targets, tenant) == {"ada": 1, "basil": 1, "cora": 1}

    changed = [dict(p, name="Basil Billing") if p["slug"] == "basil" else p for p in PERSONAS]
    write_personas(file, changed)
    third = mindscape(targets, "persona", "import", file, "--tenant", tenant)
    assert third.exit_code == 0, third.output
    assert "0 created, 1 updated, 2 unchanged" in third.stdout
    assert persona_versions(targets, tenant) == {"ada": 1, "basil": 2, "cora": 1}
    assert "Basil Billing" in row_of(mindscape(targets, "persona", "list", "--tenant", tenant).stdout, "basil")


def test_yaml_and_json_files_store_the_same_personas(targets: Targets, tmp_path: Path) -> None:
    from_yaml, from_json = unique_slug("yaml"), unique_slug("json")
    for slug, suffix in [(from_yaml, ".yaml"), (from_json, ".json")]:
        assert mindscape(targets, "tenant", "create", slug, "--name", slug).exit_code == 0
        file = write_personas(tmp_path / f"personas{suffix}", PERSONAS)
        assert mindscape(targets, "persona", "import", file, "--tenant", slug).exit_code == 0

    settings = Settings(database_url=None)
    yaml_side = anyio.run(lambda: persona_ops.list_personas(settings, targets, tenant_slug=from_yaml))
    json_side = anyio.run(lambda: persona_ops.list_personas(settings, targets, tenant_slug=from_json))
    assert [p.slug for p in yaml_side] == ["ada", "basil", "cora"]
    assert yaml_side == json_side


def test_persona_list_shows_the_tenants_personas(targets: Targets, tenant: str, tmp_path: Path) -> None:
    file = write_personas(tmp_path / "personas.yaml", PERSONAS)
    assert mindscape(targets, "persona", "import", file, "--tenant", tenant).exit_code == 0

    listed = mindscape(targets, "persona", "list", "--tenant", tenant)

    assert listed.exit_code == 0, listed.output
    ada = row_of(listed.stdout, "ada")
    assert "Ada Analyst" in ada
    assert "analytics, research" in ada
    assert "Careful data analyst who writes SQL" in ada
    assert "Basil Support" in row_of(listed.stdout, "basil")
    assert "Cora Coach" in row_of(listed.stdout, "cora")


def test_persona_list_shows_only_that_tenants_personas(targets: Targets, tenant: str, tmp_path: Path) -> None:
    other = unique_slug("other")
    assert mindscape(targets, "tenant", "create", other, "--name", "Other").exit_code == 0
    other_file = write_personas(tmp_path / "other.json", [{"slug": "zed", "name": "Zed Only Other"}])
    assert mindscape(targets, "persona", "import", other_file, "--tenant", other).exit_code == 0
    own_file = write_personas(tmp_path / "own.json", PERSONAS)
    assert mindscape(targets, "persona", "import", own_file, "--tenant", tenant).exit_code == 0

    listed = mindscape(targets, "persona", "list", "--tenant", tenant)

    assert listed.exit_code == 0, listed.output
    assert "Zed Only Other" not in listed.stdout
    assert "Ada Analyst" in listed.stdout


@pytest.mark.parametrize("command", ["import", "list"])
def test_persona_commands_refuse_unknown_tenant_with_one_line(targets: Targets, tmp_path: Path, command: str) -> None:
    slug = unique_slug("missing")
    args = ["persona", command, "--tenant", slug]
    if command == "import":
        args.insert(2, str(write_personas(tmp_path / "p.yaml", PERSONAS)))

    result = mindscape(targets, *args)

    assert result.exit_code == 1
    assert f"tenant {slug!r} does not exist" in one_line(result.stderr)


def test_persona_commands_refuse_disabled_tenant(targets: Targets, tenant: str, tmp_path: Path) -> None:
    assert mindscape(targets, "tenant", "disable", tenant).exit_code == 0

    result = mindscape(targets, "persona", "import", write_personas(tmp_path / "p.json", PERSONAS), "--tenant", tenant)

    assert result.exit_code == 1
    assert f"tenant {tenant!r} is disabled" in one_line(result.stderr)
    assert persona_versions(targets, tenant) == {}


# --- database ----------------------------------------------------------------------------


def test_db_current_reports_up_to_date(targets: Targets) -> None:
    result = mindscape(targets, "db", "current")

    assert result.exit_code == 0, result.output
    head = migrate.head_revision()
    assert one_line(result.stdout) == f"current: {head}  head: {head}  (up to date)"


def test_config_file_supplies_the_database(targets: Targets, tmp_path: Path) -> None:
    config = tmp_path / "mindscape.toml"
    config.write_text(f"database_url = {targets.runtime!r}\nowner_database_url = {targets.owner!r}\n", encoding="utf-8")

    result = runner.invoke(app, ["db", "current", "--config", str(config)], env={"MINDSCAPE_DATABASE_URL": None})

    assert result.exit_code == 0, result.output
    assert "(up to date)" in result.stdout


def test_unknown_key_in_config_file_fails_with_one_line(targets: Targets, tmp_path: Path) -> None:
    config = tmp_path / "mindscape.toml"
    config.write_text('colour = "blue"\n', encoding="utf-8")

    result = runner.invoke(app, ["tenant", "list", "--config", str(config)], env=cli_env(targets))

    assert result.exit_code == 1
    assert one_line(result.stderr) == "error: invalid settings: colour: unknown setting"


# --- serve -------------------------------------------------------------------------------


def serve(tenant: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`mindscape serve` as a real process with no client on stdin."""
    return subprocess.run(
        [sys.executable, "-m", "mindscape", "serve", "--tenant", tenant],
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,  # a hang guard, not an assertion
        check=False,
    )


def serve_against(targets: Targets, tenant: str, **env: str) -> subprocess.CompletedProcess[str]:
    return serve(tenant, MINDSCAPE_DATABASE_URL=targets.runtime, MINDSCAPE_OWNER_DATABASE_URL=targets.owner, **env)


def test_serve_refuses_unknown_tenant_with_one_line_on_stderr(targets: Targets) -> None:
    slug = unique_slug("missing")

    proc = serve_against(targets, slug)

    assert proc.returncode != 0
    assert proc.stdout == ""
    line = one_line(proc.stderr)
    assert f"tenant {slug!r} does not exist" in line


def test_serve_refuses_disabled_tenant_with_one_line_on_stderr(targets: Targets, tenant: str) -> None:
    anyio.run(lambda: tenant_ops.set_tenant_status(targets, slug=tenant, status="disabled"))

    proc = serve_against(targets, tenant)

    assert proc.returncode != 0
    assert proc.stdout == ""
    assert f"tenant {tenant!r} is disabled" in one_line(proc.stderr)


def test_serve_without_database_says_so_and_hides_the_password() -> None:
    url = "postgresql://mindscape_app:s3cret@127.0.0.1:1/x"

    proc = serve("acme", MINDSCAPE_DATABASE_URL=url)

    assert proc.returncode != 0
    assert proc.stdout == ""
    line = one_line(proc.stderr)
    assert "cannot connect to PostgreSQL at postgresql://mindscape_app:***@127.0.0.1:1/x" in line
    assert "start PostgreSQL there, or correct database_url" in line  # the fix, in the same line
    assert "s3cret" not in proc.stderr


def test_serve_refuses_superuser_because_it_bypasses_row_level_security(targets: Targets, tenant: str) -> None:
    proc = serve(tenant, MINDSCAPE_DATABASE_URL=targets.owner)

    assert proc.returncode != 0
    assert proc.stdout == ""
    line = one_line(proc.stderr)
    assert "bypasses row-level security" in line
    assert "mindscape_app" in line


def test_serve_refuses_invalid_tenant_slug_with_one_line(targets: Targets) -> None:
    result = runner.invoke(app, ["serve", "--tenant", "Not A Slug"], env=cli_env(targets))

    assert result.exit_code == 1
    assert result.stdout == ""
    assert "tenant must be a slug" in one_line(result.stderr)
