"""Foundation: roles, schema, tenants and personas under forced row-level security.

Revision ID: 0001
Revises:
Create Date: 2026-11-21

Written by hand: roles, grants and policies are the point of this migration.
Roles are cluster-wide and may serve other databases, so downgrade leaves them in place.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLES = """
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mindscape_owner') THEN
    CREATE ROLE mindscape_owner NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mindscape_app') THEN
    -- The server's login role: no privileges of its own beyond reading the tenant registry;
    -- NOINHERIT so it touches tenant data only after switching to mindscape_tenant.
    CREATE ROLE mindscape_app LOGIN NOINHERIT NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mindscape_tenant') THEN
    CREATE ROLE mindscape_tenant NOLOGIN NOSUPERUSER NOBYPASSRLS;
  END IF;
  -- The runtime switches to mindscape_tenant inside each tool call's transaction.
  GRANT mindscape_tenant TO mindscape_app;
  IF NOT pg_has_role(current_user, 'mindscape_owner', 'MEMBER') THEN
    EXECUTE format('GRANT mindscape_owner TO %I', current_user);
  END IF;
END
$$;
"""

TENANT_FUNCTION = """
CREATE FUNCTION mindscape.app_tenant_id() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT nullif(current_setting('app.tenant_id', true), '')::uuid $$
"""

# Fail closed: with no tenant in the transaction, app_tenant_id() is NULL and matches nothing.
TENANT = "(SELECT mindscape.app_tenant_id())"

POLICIES = [
    "ALTER TABLE mindscape.tenants ENABLE ROW LEVEL SECURITY",
    "ALTER TABLE mindscape.tenants FORCE ROW LEVEL SECURITY",
    "CREATE POLICY tenants_admin ON mindscape.tenants TO mindscape_owner USING (true) WITH CHECK (true)",
    "CREATE POLICY tenants_runtime_read ON mindscape.tenants FOR SELECT TO mindscape_app USING (true)",
    f"CREATE POLICY tenants_own_row ON mindscape.tenants FOR SELECT TO mindscape_tenant USING (id = {TENANT})",
    "ALTER TABLE mindscape.personas ENABLE ROW LEVEL SECURITY",
    "ALTER TABLE mindscape.personas FORCE ROW LEVEL SECURITY",
    f"CREATE POLICY personas_tenant ON mindscape.personas TO mindscape_tenant"
    f" USING (tenant_id = {TENANT}) WITH CHECK (tenant_id = {TENANT})",
]

GRANTS = [
    "GRANT USAGE ON SCHEMA mindscape TO mindscape_app, mindscape_tenant",
    "GRANT SELECT ON mindscape.tenants TO mindscape_app, mindscape_tenant",
    "GRANT SELECT, INSERT, UPDATE ON mindscape.personas TO mindscape_tenant",
]


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.execute(ROLES)
    op.execute("CREATE SCHEMA mindscape AUTHORIZATION mindscape_owner")
    # Everything below is owned by mindscape_owner, never by the login role running the migration.
    op.execute("SET LOCAL ROLE mindscape_owner")
    op.execute(TENANT_FUNCTION)

    op.create_table(
        "tenants",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True, server_default=sa.text("gen_random_uuid()")),
        sa.Column("slug", sa.Text(), nullable=False, unique=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False, server_default="active"),
        sa.Column("settings", pg.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("status IN ('active', 'disabled')", name="tenants_status"),
        sa.CheckConstraint(r"slug ~ '^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$'", name="tenants_slug_format"),
        sa.CheckConstraint("length(name) BETWEEN 1 AND 200", name="tenants_name_length"),
        sa.CheckConstraint("jsonb_typeof(settings) = 'object'", name="tenants_settings_object"),
        schema="mindscape",
    )

    op.create_table(
        "personas",
        sa.Column("tenant_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("id", pg.UUID(as_uuid=True), nullable=False, server_default=sa.text("gen_random_uuid()")),
        sa.Column("slug", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False, server_default=""),
        sa.Column("traits", pg.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("instructions", sa.Text(), nullable=False, server_default=""),
        sa.Column("tags", pg.ARRAY(sa.Text()), nullable=False, server_default=sa.text("'{}'::text[]")),
        sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column(
            "search",
            pg.TSVECTOR(),
            sa.Computed(
                "setweight(to_tsvector('english'::regconfig, name), 'A')"
                " || setweight(to_tsvector('english'::regconfig, summary), 'B')",
                persisted=True,
            ),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name="personas_pkey"),
        sa.UniqueConstraint("tenant_id", "slug", name="personas_tenant_slug_key"),
        sa.ForeignKeyConstraint(["tenant_id"], ["mindscape.tenants.id"], name="personas_tenant_fkey"),
        sa.CheckConstraint(r"slug ~ '^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$'", name="personas_slug_format"),
        sa.CheckConstraint("length(name) BETWEEN 1 AND 200", name="personas_name_length"),
        sa.CheckConstraint("length(summary) <= 2000", name="personas_summary_length"),
        sa.CheckConstraint("length(instructions) <= 32000", name="personas_instructions_length"),
        sa.CheckConstraint("jsonb_typeof(traits) = 'object'", name="personas_traits_object"),
        sa.CheckConstraint("cardinality(tags) <= 32", name="personas_tags_count"),
        schema="mindscape",
    )
    op.execute("CREATE INDEX personas_traits_gin ON mindscape.personas USING gin (traits jsonb_path_ops)")
    op.execute("CREATE INDEX personas_tags_gin ON mindscape.personas USING gin (tags)")
    op.execute("CREATE INDEX personas_search_gin ON mindscape.personas USING gin (search)")

    for statement in POLICIES + GRANTS:
        op.execute(statement)
    op.execute("RESET ROLE")
    # The version table belongs to whoever runs migrations; the server reads it to refuse an
    # outdated schema.
    op.execute("GRANT SELECT ON alembic_version TO mindscape_app")


def downgrade() -> None:
    op.execute("REVOKE ALL ON alembic_version FROM mindscape_app")
    op.execute("SET LOCAL ROLE mindscape_owner")
    op.execute("DROP SCHEMA mindscape CASCADE")
    op.execute("RESET ROLE")
