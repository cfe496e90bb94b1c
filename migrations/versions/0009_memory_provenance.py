"""Memory agents can trust: provenance, visibility by row-level security, and facts that change.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06

Provenance (written by the database from the transaction's context, never from tool arguments):
- `written_by` defaults to `app.principal` and an INSERT policy requires exactly that value;
  `client_name`/`client_version` default to `app.client_name`/`app.client_version`, which the
  context statement sets from the MCP session. `source` (tool, import, reembed, operator; legacy
  for rows older than this migration) and `task_id` (a task of the same tenant) are set by the
  server. The runtime role may not UPDATE any provenance column (column privileges).

Visibility (`tenant`, `persona`, `private`) is part of the memories policy: a private memory is
visible only when `app.principal` is its writer, a persona one only when the transaction is bound
to its persona (`app.persona`, from the credential or `serve --persona`), unless `app.all_memories`
is on (operator commands only: backfill and re-embedding must see every row). Embeddings follow
their memory's visibility through the same policy, over a copy of the memory's visibility,
writer and persona kept on each embedding (checked on write, followed by a trigger). The dedup
key now covers visibility (and the writer of a private memory) and current versions only, so an
invisible row can never collide with an insert (which would leak its existence through ON CONFLICT).

Facts that change: `valid_from`/`valid_to`, `superseded_by` (the next version; SET NULL when that
version is deleted, so no pointer dangles) and `version` (optimistic updates by update_memory).

API keys gain an optional persona binding (`mindscape key create --persona SLUG`), returned by
api_key_lookup. The memories audit trigger records provenance and the new fields.
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TENANT = "(SELECT mindscape.app_tenant_id())"
DEFINER = "SECURITY DEFINER SET search_path = pg_catalog, pg_temp"


def _audit_0006() -> ModuleType:
    """The audit migration's SQL builders (one source of truth for the trigger functions' shape)."""
    path = Path(__file__).with_name("0006_audit_by_database.py")
    spec = importlib.util.spec_from_file_location("mindscape_migration_0006", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CONTEXT_FUNCTIONS = [
    """
CREATE FUNCTION mindscape.app_principal() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT nullif(current_setting('app.principal', true), '') $$
""",
    # Invoker: reads personas as the tenant role, under the tenant policy.
    """
CREATE FUNCTION mindscape.app_persona_id() RETURNS uuid
LANGUAGE sql STABLE
AS $$
  SELECT p.id FROM mindscape.personas p
  WHERE p.tenant_id = mindscape.app_tenant_id() AND p.slug = nullif(current_setting('app.persona', true), '')
$$
""",
    """
CREATE FUNCTION mindscape.app_sees_all() RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT coalesce(current_setting('app.all_memories', true), '') = 'on' $$
""",
]

VISIBLE = (
    "(visibility = 'tenant'"
    " OR (visibility = 'private' AND written_by = (SELECT mindscape.app_principal()))"
    " OR (visibility = 'persona' AND persona_id = (SELECT mindscape.app_persona_id()))"
    " OR (SELECT mindscape.app_sees_all()))"
)
# Embeddings carry a copy of their memory's visibility, writer and persona, so that the same
# policy reads them without a join: an EXISTS in the read policy cost a scan of the tenant's
# memories on every approximate search (benchmarks/recall_predicates.py). The copy is checked on
# every insert and update (the EXISTS below) and follows visibility changes (a trigger).
EMBEDDING_CONSISTENT = (
    "EXISTS (SELECT 1 FROM mindscape.memories m"
    " WHERE m.tenant_id = memory_embeddings.tenant_id AND m.id = memory_embeddings.memory_id"
    " AND m.visibility = memory_embeddings.visibility AND m.written_by = memory_embeddings.written_by"
    " AND m.persona_id IS NOT DISTINCT FROM memory_embeddings.persona_id)"
)
FOLLOW = """
CREATE FUNCTION mindscape.memory_embeddings_follow() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  UPDATE mindscape.memory_embeddings e SET visibility = NEW.visibility
  WHERE e.tenant_id = NEW.tenant_id AND e.memory_id = NEW.id;
  RETURN NULL;
END
$$
"""
PRIVATE_OWNER = "(CASE WHEN visibility = 'private' THEN written_by ELSE '' END)"
DEDUP = (
    "CREATE UNIQUE INDEX memories_dedup ON mindscape.memories"
    f" (tenant_id, persona_id, content_sha256, visibility, {PRIVATE_OWNER}) NULLS NOT DISTINCT"
    " WHERE valid_to IS NULL"
)
# What the runtime role may change on a memory: never its provenance, content, persona or tenant.
UPDATABLE = (
    "kind, metadata, importance, expires_at, created_at, updated_at, visibility, valid_to, superseded_by, version"
)

COLUMNS = [
    # Rows written before provenance existed say so.
    "ADD COLUMN written_by text NOT NULL DEFAULT 'unknown'",
    "ADD COLUMN client_name text",
    "ADD COLUMN client_version text",
    "ADD COLUMN source text NOT NULL DEFAULT 'legacy'",
    "ADD COLUMN task_id uuid",
    "ADD COLUMN visibility text NOT NULL DEFAULT 'tenant'",
    "ADD COLUMN valid_from timestamptz",
    "ADD COLUMN valid_to timestamptz",
    "ADD COLUMN superseded_by uuid",
    "ADD COLUMN version integer NOT NULL DEFAULT 1",
]
CONSTRAINTS = [
    "ADD CONSTRAINT memories_written_by CHECK (length(written_by) BETWEEN 1 AND 200)",
    "ADD CONSTRAINT memories_client CHECK (length(client_name) <= 200 AND length(client_version) <= 100)",
    "ADD CONSTRAINT memories_source CHECK (source IN ('tool', 'import', 'reembed', 'operator', 'legacy'))",
    "ADD CONSTRAINT memories_visibility CHECK (visibility IN ('tenant', 'persona', 'private'))",
    "ADD CONSTRAINT memories_persona_visibility CHECK (visibility <> 'persona' OR persona_id IS NOT NULL)",
    "ADD CONSTRAINT memories_validity CHECK (valid_to IS NULL OR valid_to >= valid_from)",
    "ADD CONSTRAINT memories_not_own_successor CHECK (superseded_by <> id)",
    "ADD CONSTRAINT memories_version CHECK (version >= 1)",
    "ADD CONSTRAINT memories_task_fkey FOREIGN KEY (tenant_id, task_id)"
    " REFERENCES mindscape.tasks (tenant_id, id) ON DELETE SET NULL (task_id)",
    "ADD CONSTRAINT memories_superseded_by_fkey FOREIGN KEY (tenant_id, superseded_by)"
    " REFERENCES mindscape.memories (tenant_id, id) ON DELETE SET NULL (superseded_by)",
]

API_KEY_LOOKUP = f"""
CREATE FUNCTION mindscape.api_key_lookup(key_prefix text) RETURNS TABLE (
    id uuid, tenant_id uuid, tenant_slug text, tenant_active boolean, scope text, key_hash bytea,
    expired boolean, revoked boolean, persona text
)
LANGUAGE sql STABLE {DEFINER}
AS $$
  SELECT k.id, k.tenant_id, t.slug, t.status = 'active', k.scope, k.key_hash,
         coalesce(k.expires_at <= now(), false), k.revoked_at IS NOT NULL, k.persona
  FROM mindscape.api_keys k JOIN mindscape.tenants t ON t.id = k.tenant_id
  WHERE k.prefix = key_prefix
$$
"""
OLD_API_KEY_LOOKUP = f"""
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
"""

DOWNGRADE_CHECK = """
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM mindscape.memories GROUP BY tenant_id, persona_id, content_sha256 HAVING count(*) > 1) THEN
    RAISE EXCEPTION 'memories with the same content in several visibilities or versions exist;'
      ' forget the extra ones before downgrading below 0009';
  END IF;
END
$$
"""


def _memories_audit(audit: ModuleType) -> str:
    fields = audit._fields(  # pyright: ignore[reportPrivateUsage]
        ("persona", "persona_id"),
        ("kind", "kind"),
        ("content", "content"),
        ("metadata", "metadata"),
        ("importance", "importance"),
        ("expires_at", "expires_at"),
        ("visibility", "visibility"),
        ("valid_to", "valid_to"),
        ("superseded_by", "superseded_by"),
    )
    ident = audit.ID
    provenance = (
        "jsonb_strip_nulls(jsonb_build_object('kind', n.kind, 'visibility', n.visibility, 'written_via', n.source,"
        " 'client', n.client_name, 'client_version', n.client_version, 'task', n.task_id))"
    )
    superseded = "n.superseded_by IS NOT NULL AND n.superseded_by IS DISTINCT FROM o.superseded_by"
    return audit._trigger_function(  # pyright: ignore[reportPrivateUsage]
        "memories",
        insert=audit._rows("n", ident.format("n"), "'created'", provenance),  # pyright: ignore[reportPrivateUsage]
        update=audit._updates(  # pyright: ignore[reportPrivateUsage]
            ident.format("n"),
            f"CASE WHEN {superseded} THEN 'superseded' WHEN v_call = 'remember' THEN 'duplicate' ELSE 'updated' END",
            f"jsonb_strip_nulls(jsonb_build_object('fields', {fields}, 'version', n.version,"
            f" 'superseded_by', CASE WHEN {superseded} THEN n.superseded_by END))",
        ),
        delete=audit._rows("o", ident.format("o"), "'deleted'"),  # pyright: ignore[reportPrivateUsage]
    ).replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


def upgrade() -> None:
    audit = _audit_0006()
    op.execute("SET LOCAL ROLE mindscape_owner")
    for function in CONTEXT_FUNCTIONS:
        op.execute(function)

    op.execute("ALTER TABLE mindscape.memories " + ", ".join(COLUMNS))
    # A schema change, not a change of any memory: no audit event per row.
    op.execute("ALTER TABLE mindscape.memories DISABLE TRIGGER audit_update")
    op.execute("UPDATE mindscape.memories SET valid_from = created_at")
    op.execute("ALTER TABLE mindscape.memories ENABLE TRIGGER audit_update")
    op.execute(
        "ALTER TABLE mindscape.memories"
        " ALTER COLUMN valid_from SET NOT NULL, ALTER COLUMN valid_from SET DEFAULT now(),"
        " ALTER COLUMN written_by SET DEFAULT mindscape.app_principal(),"
        " ALTER COLUMN client_name SET DEFAULT nullif(current_setting('app.client_name', true), ''),"
        " ALTER COLUMN client_version SET DEFAULT nullif(current_setting('app.client_version', true), ''),"
        " ALTER COLUMN source SET DEFAULT 'tool'"
    )
    op.execute("ALTER TABLE mindscape.memories " + ", ".join(CONSTRAINTS))
    op.execute("ALTER TABLE mindscape.memories DROP CONSTRAINT memories_dedup")
    op.execute(DEDUP)
    op.execute("CREATE INDEX memories_superseded_by ON mindscape.memories (tenant_id, superseded_by)")
    op.execute("CREATE INDEX memories_task ON mindscape.memories (tenant_id, task_id) WHERE task_id IS NOT NULL")
    op.execute("CREATE INDEX memories_written_by ON mindscape.memories (tenant_id, written_by, created_at DESC)")

    op.execute("DROP POLICY memories_tenant ON mindscape.memories")
    op.execute(
        "CREATE POLICY memories_tenant ON mindscape.memories TO mindscape_tenant"
        f" USING (tenant_id = {TENANT} AND {VISIBLE}) WITH CHECK (tenant_id = {TENANT} AND {VISIBLE})"
    )
    op.execute(
        "CREATE POLICY memories_writer ON mindscape.memories AS RESTRICTIVE FOR INSERT TO mindscape_tenant"
        " WITH CHECK (written_by = (SELECT mindscape.app_principal()))"
    )
    op.execute("REVOKE UPDATE ON mindscape.memories FROM mindscape_tenant")
    op.execute(f"GRANT UPDATE ({UPDATABLE}) ON mindscape.memories TO mindscape_tenant")

    op.execute(
        "ALTER TABLE mindscape.memory_embeddings ADD COLUMN visibility text NOT NULL DEFAULT 'tenant',"
        " ADD COLUMN written_by text, ADD COLUMN persona_id uuid"
    )
    # Row-level security binds the owner too (FORCE): lifted for this copy inside the transaction.
    op.execute("ALTER TABLE mindscape.memory_embeddings NO FORCE ROW LEVEL SECURITY")
    op.execute(
        "UPDATE mindscape.memory_embeddings e SET written_by = m.written_by, persona_id = m.persona_id"
        " FROM mindscape.memories m WHERE m.tenant_id = e.tenant_id AND m.id = e.memory_id"
    )
    op.execute("ALTER TABLE mindscape.memory_embeddings FORCE ROW LEVEL SECURITY")
    op.execute("DROP POLICY memory_embeddings_tenant ON mindscape.memory_embeddings")
    op.execute(
        "CREATE POLICY memory_embeddings_tenant ON mindscape.memory_embeddings TO mindscape_tenant"
        f" USING (tenant_id = {TENANT} AND {VISIBLE})"
        f" WITH CHECK (tenant_id = {TENANT} AND {VISIBLE} AND {EMBEDDING_CONSISTENT})"
    )
    op.execute("GRANT UPDATE (visibility) ON mindscape.memory_embeddings TO mindscape_tenant")
    op.execute(FOLLOW)
    op.execute("REVOKE EXECUTE ON FUNCTION mindscape.memory_embeddings_follow() FROM PUBLIC")
    op.execute(
        "CREATE TRIGGER memories_visibility AFTER UPDATE OF visibility ON mindscape.memories FOR EACH ROW"
        " WHEN (OLD.visibility IS DISTINCT FROM NEW.visibility) EXECUTE FUNCTION mindscape.memory_embeddings_follow()"
    )

    op.execute(_memories_audit(audit))

    # No foreign key to personas: api_keys would be a Citus reference table, which cannot refer
    # to a distributed one (docs/decisions.md); `key create --persona` checks the slug instead.
    op.execute(
        "ALTER TABLE mindscape.api_keys ADD COLUMN persona text"
        " CONSTRAINT api_keys_persona_format CHECK (persona ~ '^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$')"
    )
    op.execute("DROP FUNCTION mindscape.api_key_lookup(text)")
    op.execute(API_KEY_LOOKUP)
    op.execute("REVOKE EXECUTE ON FUNCTION mindscape.api_key_lookup(text) FROM PUBLIC")
    op.execute("GRANT EXECUTE ON FUNCTION mindscape.api_key_lookup(text) TO mindscape_app")
    op.execute("RESET ROLE")


def downgrade() -> None:
    # Versions and visibility are dropped with their columns: every remaining memory becomes
    # tenant-visible, superseded versions included (they are still stored: nothing is lost).
    audit = _audit_0006()
    op.execute("SET LOCAL ROLE mindscape_owner")
    op.execute("DROP FUNCTION mindscape.api_key_lookup(text)")
    op.execute(OLD_API_KEY_LOOKUP)
    op.execute("REVOKE EXECUTE ON FUNCTION mindscape.api_key_lookup(text) FROM PUBLIC")
    op.execute("GRANT EXECUTE ON FUNCTION mindscape.api_key_lookup(text) TO mindscape_app")
    op.execute("ALTER TABLE mindscape.api_keys DROP COLUMN persona")

    op.execute(audit.TRIGGER_FUNCTIONS["memories"].replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
    op.execute("DROP TRIGGER memories_visibility ON mindscape.memories")
    op.execute("DROP FUNCTION mindscape.memory_embeddings_follow()")
    op.execute("REVOKE UPDATE (visibility) ON mindscape.memory_embeddings FROM mindscape_tenant")
    op.execute("DROP POLICY memory_embeddings_tenant ON mindscape.memory_embeddings")
    op.execute(
        "CREATE POLICY memory_embeddings_tenant ON mindscape.memory_embeddings TO mindscape_tenant"
        f" USING (tenant_id = {TENANT}) WITH CHECK (tenant_id = {TENANT})"
    )
    op.execute(
        "ALTER TABLE mindscape.memory_embeddings DROP COLUMN visibility, DROP COLUMN written_by, DROP COLUMN persona_id"
    )
    op.execute("DROP POLICY memories_writer ON mindscape.memories")
    op.execute("DROP POLICY memories_tenant ON mindscape.memories")
    op.execute(
        "CREATE POLICY memories_tenant ON mindscape.memories TO mindscape_tenant"
        f" USING (tenant_id = {TENANT}) WITH CHECK (tenant_id = {TENANT})"
    )
    op.execute("GRANT UPDATE ON mindscape.memories TO mindscape_tenant")
    op.execute("DROP INDEX mindscape.memories_dedup")
    # Nothing stored is lost: if two memories would collide under the old dedup key (the same
    # content in two visibilities or versions), the downgrade stops and says so.
    op.execute(DOWNGRADE_CHECK)
    op.execute(
        "ALTER TABLE mindscape.memories DROP COLUMN written_by, DROP COLUMN client_name,"
        " DROP COLUMN client_version, DROP COLUMN source, DROP COLUMN task_id, DROP COLUMN visibility,"
        " DROP COLUMN valid_from, DROP COLUMN valid_to, DROP COLUMN superseded_by, DROP COLUMN version"
    )
    op.execute(
        "ALTER TABLE mindscape.memories ADD CONSTRAINT memories_dedup"
        " UNIQUE NULLS NOT DISTINCT (tenant_id, persona_id, content_sha256)"
    )
    for function in ("app_sees_all()", "app_persona_id()", "app_principal()"):
        op.execute(f"DROP FUNCTION mindscape.{function}")
    op.execute("RESET ROLE")
