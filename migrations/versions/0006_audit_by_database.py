"""Audit by the database: a hash chain per tenant written by triggers; tenants and keys by handle only.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08

Audit events (docs/tools.md#audit-trail, docs/decisions.md):
- Statement-level AFTER triggers on personas, memories, campaigns, campaign_personas and tasks
  stage one change per changed row, with the transaction's principal, call name (`app.call`)
  and an operator's source (`app.source`) as they are at that statement; the tenant comes from
  the changed row, which row-level security has already tied to the transaction's tenant. Their
  functions are SECURITY DEFINER, owned by mindscape_owner, with a pinned search_path and
  EXECUTE revoked from PUBLIC: nobody else can call them or attach them to a table of their own,
  and a trigger function cannot be called directly anyway.
- At commit, a deferred constraint trigger turns the staged changes into events and chains them:
  `seq` counts each tenant's events from 1, and `hash` is sha256(previous hash || the event's
  content) (mindscape.audit_hash). The head of each chain (last seq and hash) lives in
  audit_heads; the flush locks that row, so the chain stays linear, and only for the commit
  itself, so writers of one tenant do not queue behind each other's open transactions. Events
  from before this migration are chained here, in (created_at, id) order.
- mindscape_tenant loses INSERT on audit_events: application code can neither skip an event
  nor write one that no change caused.

Tenants and API keys: mindscape_app can no longer list either table. It resolves a tenant by
slug (resolve_tenant), reads one tenant's settings by id (tenant_settings) and verifies or
touches a key by its prefix or id (api_key_lookup, touch_api_key): SECURITY DEFINER functions
that only it may execute. A tenant transaction reads its own tenants row through
tenant_context(), called with the set_config() calls as its arguments so that it runs after the
role switch (arguments are evaluated before the call) and under the tenant's own-row policy.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TENANT = "(SELECT mindscape.app_tenant_id())"
DEFINER = "SECURITY DEFINER SET search_path = pg_catalog, pg_temp"

# The canonical form of an event: jsonb's text is deterministic (sorted keys, fixed spacing), and
# the time is written in UTC so the session's TimeZone cannot change it.
AUDIT_HASH = """
CREATE FUNCTION mindscape.audit_hash(
    previous bytea, tenant_id uuid, seq bigint, id uuid, principal text, tool text,
    target_ids text[], outcome text, detail jsonb, created_at timestamptz
) RETURNS bytea
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  SELECT pg_catalog.sha256(previous || pg_catalog.convert_to(pg_catalog.jsonb_build_array(
      tenant_id, seq, id, principal, tool, target_ids, outcome, detail, created_at AT TIME ZONE 'UTC'
  )::text, 'UTF8'))
$$
"""

AUDIT_HEADS = """
CREATE TABLE mindscape.audit_heads (
    tenant_id uuid NOT NULL,
    seq bigint NOT NULL DEFAULT 0,
    hash bytea NOT NULL DEFAULT ''::bytea,
    CONSTRAINT audit_heads_pkey PRIMARY KEY (tenant_id),
    CONSTRAINT audit_heads_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES mindscape.tenants (id),
    CONSTRAINT audit_heads_seq CHECK (seq >= 0)
)
"""

# Existing events, chained per tenant in the order `audit tail` showed them.
CHAIN_EXISTING = """
DO $$
DECLARE
  r record;
  cur uuid;
  n bigint;
  h bytea;
BEGIN
  FOR r IN SELECT * FROM mindscape.audit_events ORDER BY tenant_id, created_at, id LOOP
    IF cur IS DISTINCT FROM r.tenant_id THEN
      IF cur IS NOT NULL THEN
        INSERT INTO mindscape.audit_heads (tenant_id, seq, hash) VALUES (cur, n, h);
      END IF;
      cur := r.tenant_id;
      n := 0;
      h := ''::bytea;
    END IF;
    n := n + 1;
    h := mindscape.audit_hash(h, r.tenant_id, n, r.id, r.principal, r.tool, r.target_ids, r.outcome, r.detail,
                              r.created_at);
    UPDATE mindscape.audit_events SET seq = n, hash = h WHERE tenant_id = r.tenant_id AND id = r.id;
  END LOOP;
  IF cur IS NOT NULL THEN
    INSERT INTO mindscape.audit_heads (tenant_id, seq, hash) VALUES (cur, n, h);
  END IF;
END
$$
"""

CHANGE_TYPE = "CREATE TYPE mindscape.audit_change AS (tenant_id uuid, target_ids text[], outcome text, detail jsonb)"

# Changes wait here, one row per audited statement, until their transaction commits. UNLOGGED:
# a row lives only inside its own transaction (the flush deletes it), so a crash loses nothing.
AUDIT_PENDING = """
CREATE UNLOGGED TABLE mindscape.audit_pending (
    xid xid8 NOT NULL,
    ord bigint GENERATED ALWAYS AS IDENTITY,
    principal text NOT NULL,
    tool text NOT NULL,
    changes mindscape.audit_change[] NOT NULL,
    CONSTRAINT audit_pending_pkey PRIMARY KEY (xid, ord)
)
"""

# Stages one statement's changes with the transaction's context as it is now. SECURITY INVOKER
# and executable by its owner only: it runs solely inside the owner's trigger functions below.
AUDIT_STAGE = """
CREATE FUNCTION mindscape.audit_stage(changes mindscape.audit_change[]) RETURNS void
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_call text := current_setting('app.call', true);
  v_principal text := nullif(current_setting('app.principal', true), '');
  v_source text := nullif(current_setting('app.source', true), '');
BEGIN
  IF v_call IS NULL OR v_call !~ '^[a-z_]{1,64}$' THEN
    v_call := 'sql';  -- a change made outside any named call
  END IF;
  -- Outside a tenant transaction (an owner's or superuser's maintenance) the database login answers.
  v_principal := left(coalesce(v_principal, 'db:' || session_user), 200);
  IF v_source IS NOT NULL THEN
    changes := ARRAY(
      SELECT ROW(c.tenant_id, c.target_ids, c.outcome,
                 c.detail || jsonb_build_object('source', left(v_source, 500)))::mindscape.audit_change
      FROM unnest(changes) WITH ORDINALITY AS c(tenant_id, target_ids, outcome, detail, n)
      ORDER BY c.n
    );
  END IF;
  INSERT INTO mindscape.audit_pending (xid, principal, tool, changes)
  VALUES (pg_current_xact_id(), v_principal, v_call, changes);
END
$$
"""

# At commit (a deferred constraint trigger on audit_pending), the transaction's staged changes
# join their tenants' chains. The head row's lock keeps each chain linear and is held only from
# here to the end of the commit, so concurrent writers of one tenant queue for that moment alone.
# It fires once per staged row; the first firing flushes them all, the others find nothing.
AUDIT_FLUSH = f"""
CREATE FUNCTION mindscape.audit_flush() RETURNS trigger
LANGUAGE plpgsql {DEFINER}
AS $$
DECLARE
  v_xid xid8 := pg_current_xact_id();
  c record;
  v_tenant uuid;
  v_seq bigint;
  v_hash bytea;
  v_id uuid;
  v_at timestamptz;
BEGIN
  IF TG_RELID <> 'mindscape.audit_pending'::regclass THEN
    RAISE EXCEPTION 'mindscape.audit_flush() flushes mindscape.audit_pending only';
  END IF;
  FOR c IN
    SELECT u.tenant_id, u.target_ids, u.outcome, u.detail, p.principal, p.tool
    FROM mindscape.audit_pending p,
         unnest(p.changes) WITH ORDINALITY AS u(tenant_id, target_ids, outcome, detail, n)
    WHERE p.xid = v_xid
    ORDER BY u.tenant_id, p.ord, u.n
  LOOP
    IF v_tenant IS DISTINCT FROM c.tenant_id THEN
      IF v_tenant IS NOT NULL THEN
        UPDATE mindscape.audit_heads SET seq = v_seq, hash = v_hash WHERE tenant_id = v_tenant;
      END IF;
      v_tenant := c.tenant_id;
      SELECT h.seq, h.hash INTO v_seq, v_hash FROM mindscape.audit_heads h WHERE h.tenant_id = v_tenant FOR UPDATE;
      IF NOT FOUND THEN
        INSERT INTO mindscape.audit_heads (tenant_id) VALUES (v_tenant) ON CONFLICT DO NOTHING;
        SELECT h.seq, h.hash INTO STRICT v_seq, v_hash
        FROM mindscape.audit_heads h WHERE h.tenant_id = v_tenant FOR UPDATE;
      END IF;
    END IF;
    v_seq := v_seq + 1;
    v_id := gen_random_uuid();
    v_at := clock_timestamp();
    v_hash := mindscape.audit_hash(v_hash, v_tenant, v_seq, v_id, c.principal, c.tool, c.target_ids, c.outcome,
                                   c.detail, v_at);
    INSERT INTO mindscape.audit_events
        (tenant_id, id, seq, principal, tool, target_ids, outcome, detail, created_at, hash)
    VALUES (v_tenant, v_id, v_seq, c.principal, c.tool, c.target_ids, c.outcome, c.detail, v_at, v_hash);
  END LOOP;
  IF v_tenant IS NOT NULL THEN
    UPDATE mindscape.audit_heads SET seq = v_seq, hash = v_hash WHERE tenant_id = v_tenant;
  END IF;
  DELETE FROM mindscape.audit_pending WHERE xid = v_xid;
  RETURN NULL;
END
$$
"""


def _fields(*pairs: tuple[str, str]) -> str:
    """to_jsonb of the names whose column changed between o (old) and n (new), in the given order."""
    cases = ", ".join(f"CASE WHEN n.{column} IS DISTINCT FROM o.{column} THEN '{name}' END" for name, column in pairs)
    return f"to_jsonb(array_remove(ARRAY[{cases}]::text[], NULL))"


def _trigger_function(table: str, insert: str, update: str, delete: str) -> str:
    """A SECURITY DEFINER trigger function for `table`: each branch selects one audit_change per changed row."""
    return f"""
CREATE FUNCTION mindscape.audit_{table}() RETURNS trigger
LANGUAGE plpgsql {DEFINER}
AS $$
DECLARE
  v_call text := current_setting('app.call', true);
  v_changes mindscape.audit_change[];
BEGIN
  IF TG_RELID <> 'mindscape.{table}'::regclass OR TG_LEVEL <> 'STATEMENT' THEN
    RAISE EXCEPTION 'mindscape.audit_{table}() audits statements on mindscape.{table} only';
  END IF;
  IF TG_OP = 'INSERT' THEN
    v_changes := ARRAY({insert});
  ELSIF TG_OP = 'UPDATE' THEN
    v_changes := ARRAY({update});
  ELSE
    v_changes := ARRAY({delete});
  END IF;
  IF cardinality(v_changes) > 0 THEN
    PERFORM mindscape.audit_stage(v_changes);
  END IF;
  RETURN NULL;
END
$$
"""


def _change(tenant: str, targets: str, outcome: str, detail: str) -> str:
    return f"ROW({tenant}, {targets}, {outcome}, {detail})::mindscape.audit_change"


def _rows(alias: str, targets: str, outcome: str, detail: str = "'{}'::jsonb") -> str:
    table = "new_rows" if alias == "n" else "old_rows"
    return f"SELECT {_change(f'{alias}.tenant_id', targets, outcome, detail)} FROM {table} {alias}"


def _updates(targets: str, outcome: str, detail: str) -> str:
    # LEFT JOIN: a row whose key changed (only an owner could do that) is still recorded.
    return (
        f"SELECT {_change('n.tenant_id', targets, outcome, detail)} "
        "FROM new_rows n LEFT JOIN old_rows o ON o.tenant_id = n.tenant_id AND o.id = n.id"
    )


ID = "ARRAY[{0}.id::text]"
CAMPAIGN_FIELDS = _fields(
    ("name", "name"),
    ("objective", "objective"),
    ("status", "status"),
    ("starts_at", "starts_at"),
    ("ends_at", "ends_at"),
    ("metadata", "metadata"),
)
# In the order update_task takes them; the lease counts as renewed only when a new one is set.
TASK_FIELDS = (
    "to_jsonb(array_remove(ARRAY["
    "CASE WHEN n.status IS DISTINCT FROM o.status THEN 'status' END, "
    "CASE WHEN n.result IS DISTINCT FROM o.result THEN 'result' END, "
    "CASE WHEN n.title IS DISTINCT FROM o.title THEN 'title' END, "
    "CASE WHEN n.description IS DISTINCT FROM o.description THEN 'description' END, "
    "CASE WHEN n.priority IS DISTINCT FROM o.priority THEN 'priority' END, "
    "CASE WHEN n.due_at IS DISTINCT FROM o.due_at THEN 'due_at' END, "
    "CASE WHEN n.persona_id IS DISTINCT FROM o.persona_id THEN 'persona' END, "
    "CASE WHEN n.lease_expires_at IS NOT NULL AND n.lease_expires_at IS DISTINCT FROM o.lease_expires_at "
    "THEN 'lease_seconds' END]::text[], NULL))"
)
MEMORY_FIELDS = _fields(
    ("persona", "persona_id"),
    ("kind", "kind"),
    ("content", "content"),
    ("metadata", "metadata"),
    ("importance", "importance"),
    ("expires_at", "expires_at"),
)
PERSONA_FIELDS = _fields(
    ("name", "name"),
    ("summary", "summary"),
    ("traits", "traits"),
    ("instructions", "instructions"),
    ("tags", "tags"),
    ("deleted_at", "deleted_at"),
)
STATUS_CHANGE = "'from', o.status, 'to', n.status, 'version', n.version"

TRIGGER_FUNCTIONS = {
    "campaigns": _trigger_function(
        "campaigns",
        insert=_rows("n", ID.format("n"), "'created'"),
        update=_updates(
            ID.format("n"), "'updated'", f"jsonb_build_object('fields', {CAMPAIGN_FIELDS}, {STATUS_CHANGE})"
        ),
        delete=_rows("o", ID.format("o"), "'deleted'"),
    ),
    "campaign_personas": _trigger_function(
        "campaign_personas",
        insert=_rows("n", "ARRAY[n.campaign_id::text, n.persona_id::text]", "'assigned'"),
        update=_rows("n", "ARRAY[n.campaign_id::text, n.persona_id::text]", "'updated'"),
        delete=_rows("o", "ARRAY[o.campaign_id::text, o.persona_id::text]", "'unassigned'"),
    ),
    # claim_next_task and update_task both update a task; the call name tells them apart.
    "tasks": _trigger_function(
        "tasks",
        insert=_rows("n", ID.format("n"), "'created'"),
        update=_updates(
            ID.format("n"),
            "CASE WHEN v_call = 'claim_next_task' THEN 'claimed' ELSE 'updated' END",
            "CASE WHEN v_call = 'claim_next_task' THEN jsonb_build_object("
            "'attempts', n.attempts, 'reclaimed', o.status = 'in_progress', "
            "'lease_seconds', extract(epoch FROM n.lease_expires_at - now())::int) "
            f"ELSE jsonb_build_object('fields', {TASK_FIELDS}, {STATUS_CHANGE}) END",
        ),
        delete=_rows("o", ID.format("o"), "'deleted'"),
    ),
    # remember's duplicate path is an ON CONFLICT DO UPDATE (it renews the expiry).
    "memories": _trigger_function(
        "memories",
        insert=_rows("n", ID.format("n"), "'created'", "jsonb_build_object('kind', n.kind)"),
        update=_updates(
            ID.format("n"),
            "CASE WHEN v_call = 'remember' THEN 'duplicate' ELSE 'updated' END",
            f"jsonb_build_object('fields', {MEMORY_FIELDS})",
        ),
        delete=_rows("o", ID.format("o"), "'deleted'"),
    ),
    "personas": _trigger_function(
        "personas",
        insert=_rows("n", ID.format("n"), "'created'", "jsonb_build_object('slug', n.slug, 'version', n.version)"),
        update=_updates(
            ID.format("n"),
            "'updated'",
            f"jsonb_build_object('slug', n.slug, 'version', n.version, 'fields', {PERSONA_FIELDS})",
        ),
        delete=_rows("o", ID.format("o"), "'deleted'", "jsonb_build_object('slug', o.slug)"),
    ),
}
REFERENCING = {
    "INSERT": "REFERENCING NEW TABLE AS new_rows",
    "UPDATE": "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
    "DELETE": "REFERENCING OLD TABLE AS old_rows",
}


def _triggers(table: str) -> list[str]:
    return [
        f"CREATE TRIGGER audit_{operation.lower()} AFTER {operation} ON mindscape.{table} {referencing}"
        f" FOR EACH STATEMENT EXECUTE FUNCTION mindscape.audit_{table}()"
        for operation, referencing in REFERENCING.items()
    ]


# tenant_context() is INVOKER: called (by mindscape_app) with the set_config() calls as its
# arguments, it runs as mindscape_tenant and sees only the context tenant's row.
RUNTIME_FUNCTIONS = [
    """
CREATE FUNCTION mindscape.tenant_context(VARIADIC applied text[]) RETURNS TABLE (status text, settings jsonb)
LANGUAGE sql STABLE
AS $$ SELECT t.status, t.settings FROM mindscape.tenants t WHERE t.id = (SELECT mindscape.app_tenant_id()) $$
""",
    f"""
CREATE FUNCTION mindscape.resolve_tenant(tenant_slug text) RETURNS TABLE (id uuid, slug text, status text)
LANGUAGE sql STABLE {DEFINER}
AS $$ SELECT t.id, t.slug, t.status FROM mindscape.tenants t WHERE t.slug = tenant_slug $$
""",
    f"""
CREATE FUNCTION mindscape.tenant_settings(tenant uuid) RETURNS jsonb
LANGUAGE sql STABLE {DEFINER}
AS $$ SELECT t.settings FROM mindscape.tenants t WHERE t.id = tenant $$
""",
    f"""
CREATE FUNCTION mindscape.api_key_lookup(key_prefix text) RETURNS TABLE (
    id uuid, tenant_id uuid, tenant_slug text, tenant_active boolean, scope text, key_hash bytea,
    expired boolean, revoked boolean
)
LANGUAGE sql STABLE {DEFINER}
AS $$
  SELECT k.id, k.tenant_id, t.slug, t.status = 'active', k.scope, k.key_hash,
         coalesce(k.expires_at <= now(), false), k.revoked_at IS NOT NULL
  FROM mindscape.api_keys k JOIN mindscape.tenants t ON t.id = k.tenant_id
  WHERE k.prefix = key_prefix
$$
""",
    # At most one write per key per minute: a busy agent must not turn every request into an UPDATE.
    f"""
CREATE FUNCTION mindscape.touch_api_key(key_id uuid) RETURNS void
LANGUAGE sql VOLATILE {DEFINER}
AS $$
  UPDATE mindscape.api_keys SET last_used_at = now()
  WHERE id = key_id AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
$$
""",
]
RUNTIME_SIGNATURES = [
    "mindscape.tenant_context(VARIADIC text[])",
    "mindscape.resolve_tenant(text)",
    "mindscape.tenant_settings(uuid)",
    "mindscape.api_key_lookup(text)",
    "mindscape.touch_api_key(uuid)",
]


def upgrade() -> None:
    op.execute("SET LOCAL ROLE mindscape_owner")

    # The chain: columns, head table, existing events chained.
    op.execute(AUDIT_HASH)
    op.execute(AUDIT_HEADS)
    op.execute("ALTER TABLE mindscape.audit_events ADD COLUMN seq bigint, ADD COLUMN hash bytea")
    # Row-level security binds the owner too (FORCE), and events refuse UPDATE: both are lifted
    # inside this transaction only (ALTER TABLE holds an exclusive lock until commit).
    op.execute("ALTER TABLE mindscape.audit_events NO FORCE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE mindscape.audit_events DISABLE TRIGGER audit_events_append_only")
    op.execute(CHAIN_EXISTING)
    op.execute("ALTER TABLE mindscape.audit_events ENABLE TRIGGER audit_events_append_only")
    op.execute("ALTER TABLE mindscape.audit_events FORCE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE mindscape.audit_events ALTER COLUMN seq SET NOT NULL, ALTER COLUMN hash SET NOT NULL")
    op.execute(
        "ALTER TABLE mindscape.audit_events ADD CONSTRAINT audit_events_seq UNIQUE (tenant_id, seq),"
        " ADD CONSTRAINT audit_events_seq_positive CHECK (seq >= 1),"
        " ADD CONSTRAINT audit_events_hash CHECK (length(hash) = 32)"
    )

    # Only the owner's trigger functions write events and heads; tenants read their own.
    op.execute("DROP POLICY audit_events_append ON mindscape.audit_events")
    op.execute("REVOKE INSERT ON mindscape.audit_events FROM mindscape_tenant")
    op.execute(
        "CREATE POLICY audit_events_chain ON mindscape.audit_events FOR INSERT TO mindscape_owner WITH CHECK (true)"
    )
    op.execute("ALTER TABLE mindscape.audit_heads ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE mindscape.audit_heads FORCE ROW LEVEL SECURITY")
    op.execute(
        "CREATE POLICY audit_heads_chain ON mindscape.audit_heads TO mindscape_owner USING (true) WITH CHECK (true)"
    )
    op.execute(
        "CREATE POLICY audit_heads_read ON mindscape.audit_heads FOR SELECT TO mindscape_tenant"
        f" USING (tenant_id = {TENANT})"
    )
    op.execute("GRANT SELECT ON mindscape.audit_heads TO mindscape_tenant")

    op.execute(CHANGE_TYPE)
    op.execute(AUDIT_PENDING)
    op.execute("ALTER TABLE mindscape.audit_pending ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE mindscape.audit_pending FORCE ROW LEVEL SECURITY")
    op.execute(
        "CREATE POLICY audit_pending_chain ON mindscape.audit_pending TO mindscape_owner USING (true) WITH CHECK (true)"
    )
    op.execute(AUDIT_STAGE)
    op.execute("REVOKE EXECUTE ON FUNCTION mindscape.audit_stage(mindscape.audit_change[]) FROM PUBLIC")
    op.execute(AUDIT_FLUSH)
    op.execute("REVOKE EXECUTE ON FUNCTION mindscape.audit_flush() FROM PUBLIC")
    op.execute(
        "CREATE CONSTRAINT TRIGGER audit_flush AFTER INSERT ON mindscape.audit_pending"
        " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION mindscape.audit_flush()"
    )
    for table, function in TRIGGER_FUNCTIONS.items():
        op.execute(function)
        # Without EXECUTE nobody can attach it to a table of their own (a temporary one, say).
        op.execute(f"REVOKE EXECUTE ON FUNCTION mindscape.audit_{table}() FROM PUBLIC")
        for statement in _triggers(table):
            op.execute(statement)

    # Tenants and keys: no listing for the runtime role, lookups by handle only.
    op.execute("DROP POLICY tenants_runtime_read ON mindscape.tenants")
    op.execute("REVOKE SELECT ON mindscape.tenants FROM mindscape_app")
    op.execute("DROP POLICY api_keys_runtime_read ON mindscape.api_keys")
    op.execute("DROP POLICY api_keys_runtime_touch ON mindscape.api_keys")
    op.execute("REVOKE ALL ON mindscape.api_keys FROM mindscape_app")
    for function in RUNTIME_FUNCTIONS:
        op.execute(function)
    for signature in RUNTIME_SIGNATURES:
        op.execute(f"REVOKE EXECUTE ON FUNCTION {signature} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO mindscape_app")
    op.execute("RESET ROLE")


def downgrade() -> None:
    # Events written since the upgrade stay, without their chain columns; the older code writes
    # events itself again.
    op.execute("SET LOCAL ROLE mindscape_owner")
    for signature in RUNTIME_SIGNATURES:
        op.execute(f"DROP FUNCTION {signature}")
    op.execute(
        "GRANT SELECT (id, tenant_id, scope, prefix, key_hash, expires_at, revoked_at, last_used_at)"
        " ON mindscape.api_keys TO mindscape_app"
    )
    op.execute("GRANT UPDATE (last_used_at) ON mindscape.api_keys TO mindscape_app")
    op.execute("CREATE POLICY api_keys_runtime_read ON mindscape.api_keys FOR SELECT TO mindscape_app USING (true)")
    op.execute(
        "CREATE POLICY api_keys_runtime_touch ON mindscape.api_keys FOR UPDATE TO mindscape_app"
        " USING (true) WITH CHECK (true)"
    )
    op.execute("GRANT SELECT ON mindscape.tenants TO mindscape_app")
    op.execute("CREATE POLICY tenants_runtime_read ON mindscape.tenants FOR SELECT TO mindscape_app USING (true)")

    for table in TRIGGER_FUNCTIONS:
        for operation in REFERENCING:
            op.execute(f"DROP TRIGGER audit_{operation.lower()} ON mindscape.{table}")
        op.execute(f"DROP FUNCTION mindscape.audit_{table}()")
    op.execute("DROP TABLE mindscape.audit_pending")
    op.execute("DROP FUNCTION mindscape.audit_flush()")
    op.execute("DROP FUNCTION mindscape.audit_stage(mindscape.audit_change[])")
    op.execute("DROP TYPE mindscape.audit_change")

    op.execute("DROP POLICY audit_events_chain ON mindscape.audit_events")
    op.execute("GRANT INSERT ON mindscape.audit_events TO mindscape_tenant")
    op.execute(
        f"CREATE POLICY audit_events_append ON mindscape.audit_events FOR INSERT TO mindscape_tenant"
        f" WITH CHECK (tenant_id = {TENANT} AND principal = current_setting('app.principal', true))"
    )
    op.execute(
        "ALTER TABLE mindscape.audit_events DROP CONSTRAINT audit_events_seq,"
        " DROP CONSTRAINT audit_events_seq_positive, DROP CONSTRAINT audit_events_hash,"
        " DROP COLUMN seq, DROP COLUMN hash"
    )
    op.execute("DROP TABLE mindscape.audit_heads")
    op.execute(
        "DROP FUNCTION mindscape.audit_hash(bytea, uuid, bigint, uuid, text, text, text[], text, jsonb, timestamptz)"
    )
    op.execute("RESET ROLE")
