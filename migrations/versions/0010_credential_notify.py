"""Credential change notifications: the servers' credential caches hear of every change at once.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07

Servers over HTTP cache verified API keys and JWT tenant lookups for a few seconds
(tenancy/credential_cache.py). So that revoking, rotating, expiring or deleting a key, and
disabling, re-enabling, renaming or deleting a tenant still take effect at once, every change to
those rows sends a notification on the channel `mindscape_credentials`, which each server process
LISTENs on (tenancy/credential_listener.py). A notification is sent when the changing transaction
commits, and never if it rolls back.

- The payload is a fingerprint: `key:` and the hex SHA-256 of the key's stored hash, or `tenant:`
  and the hex SHA-256 of the tenant's id (as text). Any role may LISTEN, so the payload must tell a
  listener nothing it could use: with a prefix or a tenant id, someone running SQL as the runtime
  role could learn the ids of tenants it cannot list (docs/isolation.md). A fingerprint names an
  entry to the servers, which computed it when they cached the entry; it reveals no secret, no
  stored hash, no prefix and no id.
- Stamping a key's last use (touch_api_keys, every flush) changes nothing a cache holds, so it
  sends nothing: the key trigger fires only when some other column changes.
- The trigger functions run with the rights of whoever changes the row (the owner, or a
  SECURITY DEFINER function of the owner): no new SECURITY DEFINER function, nothing the runtime
  or tenant role can call. pg_notify itself is open to every role; a role that sends a notification
  of its own can only make servers drop cached entries (a cache miss), never keep or add one.

api_key_lookup also returns `expires_in_s`, the seconds until the key expires by the database's
clock (NULL: never), so a cached key still expires on time, measured by the server's own monotonic
clock from the moment it was looked up (no clock skew between hosts).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFINER = "SECURITY DEFINER SET search_path = pg_catalog, pg_temp"
CHANNEL = "mindscape_credentials"

NOTIFY_KEY = f"""
CREATE FUNCTION mindscape.notify_api_key_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    PERFORM pg_notify('{CHANNEL}', 'key:' || encode(sha256(OLD.key_hash), 'hex'));
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    PERFORM pg_notify('{CHANNEL}', 'key:' || encode(sha256(NEW.key_hash), 'hex'));  -- sent once if the same
  END IF;
  RETURN NULL;
END
$$
"""

NOTIFY_TENANT = f"""
CREATE FUNCTION mindscape.notify_tenant_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    PERFORM pg_notify('{CHANNEL}', 'tenant:' || encode(sha256(convert_to(OLD.id::text, 'UTF8')), 'hex'));
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    PERFORM pg_notify('{CHANNEL}', 'tenant:' || encode(sha256(convert_to(NEW.id::text, 'UTF8')), 'hex'));
  END IF;
  RETURN NULL;
END
$$
"""

TRIGGERS = [
    "CREATE TRIGGER api_keys_notify_write AFTER INSERT OR DELETE ON mindscape.api_keys"
    " FOR EACH ROW EXECUTE FUNCTION mindscape.notify_api_key_change()",
    # A stamp of last use alone is no change to a credential.
    "CREATE TRIGGER api_keys_notify_change AFTER UPDATE ON mindscape.api_keys FOR EACH ROW"
    " WHEN ((to_jsonb(OLD) - 'last_used_at') IS DISTINCT FROM (to_jsonb(NEW) - 'last_used_at'))"
    " EXECUTE FUNCTION mindscape.notify_api_key_change()",
    "CREATE TRIGGER tenants_notify_write AFTER INSERT OR DELETE ON mindscape.tenants"
    " FOR EACH ROW EXECUTE FUNCTION mindscape.notify_tenant_change()",
    "CREATE TRIGGER tenants_notify_change AFTER UPDATE ON mindscape.tenants FOR EACH ROW"
    " WHEN (OLD IS DISTINCT FROM NEW) EXECUTE FUNCTION mindscape.notify_tenant_change()",
]

API_KEY_LOOKUP = f"""
CREATE FUNCTION mindscape.api_key_lookup(key_prefix text) RETURNS TABLE (
    id uuid, tenant_id uuid, tenant_slug text, tenant_active boolean, scope text, key_hash bytea,
    expired boolean, revoked boolean, persona text, expires_in_s double precision
)
LANGUAGE sql STABLE {DEFINER}
AS $$
  SELECT k.id, k.tenant_id, t.slug, t.status = 'active', k.scope, k.key_hash,
         coalesce(k.expires_at <= now(), false), k.revoked_at IS NOT NULL, k.persona,
         extract(epoch FROM k.expires_at - now())::double precision
  FROM mindscape.api_keys k JOIN mindscape.tenants t ON t.id = k.tenant_id
  WHERE k.prefix = key_prefix
$$
"""
OLD_API_KEY_LOOKUP = f"""
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
FUNCTIONS = ["mindscape.notify_api_key_change()", "mindscape.notify_tenant_change()"]


def _lookup(definition: str) -> None:
    op.execute("DROP FUNCTION mindscape.api_key_lookup(text)")
    op.execute(definition)
    op.execute("REVOKE EXECUTE ON FUNCTION mindscape.api_key_lookup(text) FROM PUBLIC")
    op.execute("GRANT EXECUTE ON FUNCTION mindscape.api_key_lookup(text) TO mindscape_app")


def upgrade() -> None:
    op.execute("SET LOCAL ROLE mindscape_owner")
    op.execute(NOTIFY_KEY)
    op.execute(NOTIFY_TENANT)
    for function in FUNCTIONS:  # trigger functions: nobody needs to call them
        op.execute(f"REVOKE EXECUTE ON FUNCTION {function} FROM PUBLIC")
    for trigger in TRIGGERS:
        op.execute(trigger)
    _lookup(API_KEY_LOOKUP)
    op.execute("RESET ROLE")


def downgrade() -> None:
    op.execute("SET LOCAL ROLE mindscape_owner")
    _lookup(OLD_API_KEY_LOOKUP)
    for table, trigger in (
        ("api_keys", "api_keys_notify_write"),
        ("api_keys", "api_keys_notify_change"),
        ("tenants", "tenants_notify_write"),
        ("tenants", "tenants_notify_change"),
    ):
        op.execute(f"DROP TRIGGER {trigger} ON mindscape.{table}")
    for function in FUNCTIONS:
        op.execute(f"DROP FUNCTION {function}")
    op.execute("RESET ROLE")
