"""API keys: the credentials that bind an HTTP client to one tenant and one scope.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21

An operator table like `tenants`, not tenant data: agents never see it. Least privilege:
- mindscape_owner administers it (create, list, revoke, rotate through the owner connection).
- mindscape_app (the server's login role) verifies keys before any tenant is known, so it may
  SELECT only the columns verification needs (not the display name, not created_at), and
  UPDATE only last_used_at. It cannot insert keys, un-revoke them, extend their expiry or
  change their tenant or scope, so a compromised server process cannot mint access.
- mindscape_tenant gets nothing: inside a tool call no key or key hash is visible.
Only a SHA-256 of the secret is stored; the secret itself is shown once by `mindscape key create`.

Like every table with a tenant_id, its keys lead with tenant_id. The public prefix (48 random
bits) is therefore indexed but not declared unique: verification reads every row with the
presented prefix and accepts only the one whose hash matches the presented secret.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

API_KEYS = """
CREATE TABLE mindscape.api_keys (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL,
    name text NOT NULL DEFAULT '',
    scope text NOT NULL,
    prefix text NOT NULL,
    key_hash bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    revoked_at timestamptz,
    last_used_at timestamptz,
    CONSTRAINT api_keys_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT api_keys_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES mindscape.tenants (id),
    CONSTRAINT api_keys_scope CHECK (scope IN ('read', 'write')),
    CONSTRAINT api_keys_prefix_format CHECK (prefix ~ '^[0-9a-f]{12}$'),
    CONSTRAINT api_keys_hash_length CHECK (length(key_hash) = 32),
    CONSTRAINT api_keys_name_length CHECK (length(name) <= 200),
    CONSTRAINT api_keys_expiry CHECK (expires_at > created_at)
)
"""

STATEMENTS = [
    "CREATE INDEX api_keys_prefix ON mindscape.api_keys (prefix)",
    "CREATE INDEX api_keys_id ON mindscape.api_keys (id)",  # revoke and rotate name a key by id alone
    "ALTER TABLE mindscape.api_keys ENABLE ROW LEVEL SECURITY",
    "ALTER TABLE mindscape.api_keys FORCE ROW LEVEL SECURITY",
    "CREATE POLICY api_keys_admin ON mindscape.api_keys TO mindscape_owner USING (true) WITH CHECK (true)",
    "CREATE POLICY api_keys_runtime_read ON mindscape.api_keys FOR SELECT TO mindscape_app USING (true)",
    # Column privileges below limit the update to last_used_at; the policy only admits the row.
    "CREATE POLICY api_keys_runtime_touch ON mindscape.api_keys FOR UPDATE TO mindscape_app"
    " USING (true) WITH CHECK (true)",
    "GRANT SELECT (id, tenant_id, scope, prefix, key_hash, expires_at, revoked_at, last_used_at)"
    " ON mindscape.api_keys TO mindscape_app",
    "GRANT UPDATE (last_used_at) ON mindscape.api_keys TO mindscape_app",
]


def upgrade() -> None:
    op.execute("SET LOCAL ROLE mindscape_owner")
    op.execute(API_KEYS)
    for statement in STATEMENTS:
        op.execute(statement)
    op.execute("RESET ROLE")


def downgrade() -> None:
    op.execute("SET LOCAL ROLE mindscape_owner")
    op.execute("DROP TABLE mindscape.api_keys")
    op.execute("RESET ROLE")
