"""Work queue: campaigns, their personas, tasks, and the append-only audit trail.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

Every key leads with tenant_id, and every reference is a composite foreign key on
(tenant_id, id): foreign key checks bypass row-level security, so only the tenant column in
the key stops a task from pointing at another tenant's campaign, persona or parent task.
Audit events are append-only twice over: the tenant role is granted only SELECT and INSERT,
and a trigger refuses UPDATE, DELETE and TRUNCATE for everyone (an operator who must prune old
events disables the trigger knowingly).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TENANT = "(SELECT mindscape.app_tenant_id())"
CAMPAIGN_STATUSES = "('draft', 'active', 'paused', 'completed', 'archived')"
TASK_STATUSES = "('pending', 'in_progress', 'blocked', 'done', 'failed', 'cancelled')"
# Python refuses JSON over 16 KiB (compact); these backstops measure jsonb's spaced text form.
JSON_BYTES = 65536

CAMPAIGNS = f"""
CREATE TABLE mindscape.campaigns (
    tenant_id uuid NOT NULL,
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    name text NOT NULL,
    objective text NOT NULL DEFAULT '',
    status text NOT NULL DEFAULT 'draft',
    starts_at timestamptz,
    ends_at timestamptz,
    metadata jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    version integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT campaigns_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT campaigns_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES mindscape.tenants (id),
    CONSTRAINT campaigns_status CHECK (status IN {CAMPAIGN_STATUSES}),
    CONSTRAINT campaigns_name_length CHECK (length(name) BETWEEN 1 AND 200),
    CONSTRAINT campaigns_objective_length CHECK (length(objective) <= 4000),
    CONSTRAINT campaigns_period CHECK (ends_at > starts_at),
    CONSTRAINT campaigns_metadata_object CHECK (jsonb_typeof(metadata) = 'object'),
    CONSTRAINT campaigns_metadata_size CHECK (octet_length(metadata::text) <= {JSON_BYTES})
)
"""

CAMPAIGN_PERSONAS = """
CREATE TABLE mindscape.campaign_personas (
    tenant_id uuid NOT NULL,
    campaign_id uuid NOT NULL,
    persona_id uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT campaign_personas_pkey PRIMARY KEY (tenant_id, campaign_id, persona_id),
    CONSTRAINT campaign_personas_campaign_fkey FOREIGN KEY (tenant_id, campaign_id)
        REFERENCES mindscape.campaigns (tenant_id, id),
    CONSTRAINT campaign_personas_persona_fkey FOREIGN KEY (tenant_id, persona_id)
        REFERENCES mindscape.personas (tenant_id, id)
)
"""

TASKS = f"""
CREATE TABLE mindscape.tasks (
    tenant_id uuid NOT NULL,
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    campaign_id uuid,
    persona_id uuid,
    parent_id uuid,
    title text NOT NULL,
    description text NOT NULL DEFAULT '',
    status text NOT NULL DEFAULT 'pending',
    priority smallint NOT NULL DEFAULT 2,
    due_at timestamptz,
    input jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    result jsonb,
    idempotency_key text,
    claimed_by text,
    lease_expires_at timestamptz,
    attempts integer NOT NULL DEFAULT 0,
    version integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tasks_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT tasks_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES mindscape.tenants (id),
    CONSTRAINT tasks_campaign_fkey FOREIGN KEY (tenant_id, campaign_id) REFERENCES mindscape.campaigns (tenant_id, id),
    CONSTRAINT tasks_persona_fkey FOREIGN KEY (tenant_id, persona_id) REFERENCES mindscape.personas (tenant_id, id),
    CONSTRAINT tasks_parent_fkey FOREIGN KEY (tenant_id, parent_id) REFERENCES mindscape.tasks (tenant_id, id),
    -- NULL keys never collide: only tasks created with a key are deduplicated.
    CONSTRAINT tasks_idempotency_key UNIQUE (tenant_id, idempotency_key),
    CONSTRAINT tasks_status CHECK (status IN {TASK_STATUSES}),
    CONSTRAINT tasks_priority CHECK (priority BETWEEN 0 AND 4),
    CONSTRAINT tasks_title_length CHECK (length(title) BETWEEN 1 AND 500),
    CONSTRAINT tasks_description_length CHECK (length(description) <= 8000),
    CONSTRAINT tasks_idempotency_key_length CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    CONSTRAINT tasks_not_own_parent CHECK (parent_id <> id),
    CONSTRAINT tasks_input_object CHECK (jsonb_typeof(input) = 'object'),
    CONSTRAINT tasks_result_object CHECK (jsonb_typeof(result) = 'object'),
    CONSTRAINT tasks_json_size CHECK (
        octet_length(input::text) <= {JSON_BYTES} AND coalesce(octet_length(result::text), 0) <= {JSON_BYTES}
    ),
    CONSTRAINT tasks_attempts CHECK (attempts >= 0),
    -- A lease means "someone is working on it": it exists only while in progress.
    CONSTRAINT tasks_lease CHECK (status = 'in_progress' OR lease_expires_at IS NULL)
)
"""

AUDIT_EVENTS = """
CREATE TABLE mindscape.audit_events (
    tenant_id uuid NOT NULL,
    -- Random, not a shared sequence: a sequence's gaps would show a tenant others' activity.
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    principal text NOT NULL,
    tool text NOT NULL,
    target_ids text[] NOT NULL DEFAULT '{}',
    outcome text NOT NULL,
    detail jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- clock_timestamp(): several events of one transaction keep their order.
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT audit_events_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT audit_events_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES mindscape.tenants (id),
    CONSTRAINT audit_events_principal CHECK (length(principal) BETWEEN 1 AND 200),
    CONSTRAINT audit_events_tool CHECK (tool ~ '^[a-z_]{1,64}$'),
    CONSTRAINT audit_events_outcome CHECK (outcome ~ '^[a-z_]{1,32}$'),
    CONSTRAINT audit_events_detail CHECK (jsonb_typeof(detail) = 'object' AND octet_length(detail::text) <= 4096)
)
"""

# SECURITY INVOKER with a pinned search_path: it only raises, and must never run with more rights.
APPEND_ONLY_FUNCTION = """
CREATE FUNCTION mindscape.audit_events_append_only() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog
AS $$
BEGIN
  RAISE EXCEPTION 'audit events are append-only: % is not allowed', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END
$$
"""

STATEMENTS = [
    "CREATE INDEX campaigns_tenant_created ON mindscape.campaigns (tenant_id, created_at DESC, id DESC)",
    "CREATE INDEX campaign_personas_persona ON mindscape.campaign_personas (tenant_id, persona_id)",
    "CREATE INDEX tasks_tenant_order ON mindscape.tasks (tenant_id, priority, created_at, id)",
    # The claim scans: pending tasks in queue order, and in-progress tasks by lease expiry.
    "CREATE INDEX tasks_pending ON mindscape.tasks (tenant_id, priority, created_at, id) WHERE status = 'pending'",
    "CREATE INDEX tasks_leases ON mindscape.tasks (tenant_id, lease_expires_at) WHERE status = 'in_progress'",
    "CREATE INDEX tasks_campaign ON mindscape.tasks (tenant_id, campaign_id, status)",
    "CREATE INDEX tasks_persona ON mindscape.tasks (tenant_id, persona_id)",
    "CREATE INDEX tasks_parent ON mindscape.tasks (tenant_id, parent_id)",
    "CREATE INDEX audit_events_tenant_created ON mindscape.audit_events (tenant_id, created_at DESC)",
    APPEND_ONLY_FUNCTION,
    "REVOKE EXECUTE ON FUNCTION mindscape.audit_events_append_only() FROM PUBLIC",
    "CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON mindscape.audit_events"
    " FOR EACH ROW EXECUTE FUNCTION mindscape.audit_events_append_only()",
    "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON mindscape.audit_events"
    " FOR EACH STATEMENT EXECUTE FUNCTION mindscape.audit_events_append_only()",
    "ALTER TABLE mindscape.campaigns ENABLE ROW LEVEL SECURITY",
    "ALTER TABLE mindscape.campaigns FORCE ROW LEVEL SECURITY",
    f"CREATE POLICY campaigns_tenant ON mindscape.campaigns TO mindscape_tenant"
    f" USING (tenant_id = {TENANT}) WITH CHECK (tenant_id = {TENANT})",
    "ALTER TABLE mindscape.campaign_personas ENABLE ROW LEVEL SECURITY",
    "ALTER TABLE mindscape.campaign_personas FORCE ROW LEVEL SECURITY",
    f"CREATE POLICY campaign_personas_tenant ON mindscape.campaign_personas TO mindscape_tenant"
    f" USING (tenant_id = {TENANT}) WITH CHECK (tenant_id = {TENANT})",
    "ALTER TABLE mindscape.tasks ENABLE ROW LEVEL SECURITY",
    "ALTER TABLE mindscape.tasks FORCE ROW LEVEL SECURITY",
    f"CREATE POLICY tasks_tenant ON mindscape.tasks TO mindscape_tenant"
    f" USING (tenant_id = {TENANT}) WITH CHECK (tenant_id = {TENANT})",
    "ALTER TABLE mindscape.audit_events ENABLE ROW LEVEL SECURITY",
    "ALTER TABLE mindscape.audit_events FORCE ROW LEVEL SECURITY",
    f"CREATE POLICY audit_events_read ON mindscape.audit_events FOR SELECT TO mindscape_tenant"
    f" USING (tenant_id = {TENANT})",
    # An event names the principal of the transaction that wrote it, never another.
    f"CREATE POLICY audit_events_append ON mindscape.audit_events FOR INSERT TO mindscape_tenant"
    f" WITH CHECK (tenant_id = {TENANT} AND principal = current_setting('app.principal', true))",
    "GRANT SELECT, INSERT, UPDATE ON mindscape.campaigns TO mindscape_tenant",
    # Assignments are replaced as a set, hence DELETE; campaigns and tasks are never deleted.
    "GRANT SELECT, INSERT, DELETE ON mindscape.campaign_personas TO mindscape_tenant",
    "GRANT SELECT, INSERT, UPDATE ON mindscape.tasks TO mindscape_tenant",
    "GRANT SELECT, INSERT ON mindscape.audit_events TO mindscape_tenant",
]


def upgrade() -> None:
    op.execute("SET LOCAL ROLE mindscape_owner")
    for table in (CAMPAIGNS, CAMPAIGN_PERSONAS, TASKS, AUDIT_EVENTS):
        op.execute(table)
    for statement in STATEMENTS:
        op.execute(statement)
    op.execute("RESET ROLE")


def downgrade() -> None:
    op.execute("SET LOCAL ROLE mindscape_owner")
    op.execute("DROP TABLE mindscape.audit_events")
    op.execute("DROP FUNCTION mindscape.audit_events_append_only()")
    op.execute("DROP TABLE mindscape.tasks")
    op.execute("DROP TABLE mindscape.campaign_personas")
    op.execute("DROP TABLE mindscape.campaigns")
    op.execute("RESET ROLE")
