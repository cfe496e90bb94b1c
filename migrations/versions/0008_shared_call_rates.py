"""Shared call rates and batched key stamps: one calls-per-minute budget per tenant across replicas.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-20

call_rates holds one row per tenant: the "theoretical arrival time" (tat) of GCRA, the same
token bucket the in-process limiter keeps (quotas/rate.py), now in PostgreSQL so that every
server process and replica draws from one budget. A process takes calls in small batches
(quotas/shared_rate.py), so the table sees at most one write per batch, not one per call.

- UNLOGGED: the counter is written far more often than it matters after a crash. It writes no
  WAL, is not copied to standbys (the servers write it on the primary only) and starts empty
  after a crash or failover, as a restart used to forget the in-process counters.
- Only take_calls() writes it: a SECURITY DEFINER function, executable by mindscape_app alone,
  that can only move a tenant's tat forward (spend calls), never back. No runtime role has any
  privilege on the table itself, and row-level security is forced on it (owner only), so no
  runtime SQL can reset or read a tenant's counter. One statement, no session state and no
  advisory lock: it works through PgBouncer in transaction mode.

touch_api_keys() stamps the last use of many keys at once: the server collects the keys it has
verified and writes their stamps off the request path (tenancy/key_usage.py), so verifying a key
never writes and works on a hot standby. touch_api_key() stays for servers of the older code.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFINER = "SECURITY DEFINER SET search_path = pg_catalog, pg_temp"

CALL_RATES = """
CREATE UNLOGGED TABLE mindscape.call_rates (
    tenant_id uuid NOT NULL,
    tat timestamptz NOT NULL,
    CONSTRAINT call_rates_pkey PRIMARY KEY (tenant_id),
    CONSTRAINT call_rates_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES mindscape.tenants (id) ON DELETE CASCADE
)
"""

# GCRA for a batch: a call is allowed while tat - now <= 60 s - step (step = 60 s / per_minute),
# so from tat' = greatest(tat, now) the room is floor((now + 60 s - tat') / step) calls; up to
# `wanted` of them are granted and tat moves forward by one step each. Nothing granted: the
# seconds until one call will be, and no write. The row is locked while it is read and moved, so
# concurrent takes of one tenant (from any process) queue for that moment alone.
TAKE_CALLS = f"""
CREATE FUNCTION mindscape.take_calls(tenant uuid, per_minute integer, wanted integer)
RETURNS TABLE (granted integer, wait_s double precision)
LANGUAGE plpgsql VOLATILE {DEFINER}
AS $$
DECLARE
  v_now timestamptz;
  v_tat timestamptz;
  v_room numeric;
BEGIN
  IF per_minute IS NULL OR per_minute < 1 OR wanted IS NULL OR wanted < 1 THEN
    RAISE EXCEPTION 'take_calls needs per_minute >= 1 and wanted >= 1' USING ERRCODE = '22023';
  END IF;
  SELECT r.tat INTO v_tat FROM mindscape.call_rates r WHERE r.tenant_id = tenant FOR UPDATE;
  IF NOT FOUND THEN
    INSERT INTO mindscape.call_rates (tenant_id, tat) VALUES (tenant, clock_timestamp())
    ON CONFLICT (tenant_id) DO NOTHING;
    SELECT r.tat INTO STRICT v_tat FROM mindscape.call_rates r WHERE r.tenant_id = tenant FOR UPDATE;
  END IF;
  v_now := clock_timestamp();  -- after the lock: a take that waited counts from when it ran
  v_tat := greatest(v_tat, v_now);
  v_room := floor(extract(epoch FROM v_now + interval '60 seconds' - v_tat) * per_minute / 60);
  granted := greatest(0, least(wanted, v_room))::integer;
  IF granted > 0 THEN
    UPDATE mindscape.call_rates
    SET tat = v_tat + make_interval(secs => 60.0 * granted / per_minute)
    WHERE tenant_id = tenant;
    wait_s := 0;
  ELSE
    wait_s := extract(epoch FROM v_tat - v_now)::double precision + 60.0 / per_minute - 60.0;
  END IF;
  RETURN NEXT;
END
$$
"""

# `seconds_ago`: how long before this call each key was last used, measured by the server's
# monotonic clock, so the stamp is the time of use on the database clock (no clock skew between
# hosts); never in the future and never moved back.
TOUCH_API_KEYS = f"""
CREATE FUNCTION mindscape.touch_api_keys(key_ids uuid[], seconds_ago double precision[]) RETURNS integer
LANGUAGE sql VOLATILE {DEFINER}
AS $$
  WITH used AS (
    SELECT u.id, now() - make_interval(secs => greatest(coalesce(u.ago, 0), 0)) AS at
    FROM unnest(key_ids, seconds_ago) AS u(id, ago)
  ), touched AS (
    UPDATE mindscape.api_keys k SET last_used_at = used.at
    FROM used
    WHERE k.id = used.id AND (k.last_used_at IS NULL OR k.last_used_at < used.at)
    RETURNING 1
  )
  SELECT count(*)::integer FROM touched
$$
"""

SIGNATURES = [
    "mindscape.take_calls(uuid, integer, integer)",
    "mindscape.touch_api_keys(uuid[], double precision[])",
]


def upgrade() -> None:
    op.execute("SET LOCAL ROLE mindscape_owner")
    op.execute(CALL_RATES)
    op.execute("ALTER TABLE mindscape.call_rates ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE mindscape.call_rates FORCE ROW LEVEL SECURITY")
    op.execute(
        "CREATE POLICY call_rates_owner ON mindscape.call_rates TO mindscape_owner USING (true) WITH CHECK (true)"
    )
    op.execute(TAKE_CALLS)
    op.execute(TOUCH_API_KEYS)
    for signature in SIGNATURES:
        op.execute(f"REVOKE EXECUTE ON FUNCTION {signature} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO mindscape_app")
    op.execute("RESET ROLE")


def downgrade() -> None:
    op.execute("SET LOCAL ROLE mindscape_owner")
    for signature in SIGNATURES:
        op.execute(f"DROP FUNCTION {signature}")
    op.execute("DROP TABLE mindscape.call_rates")
    op.execute("RESET ROLE")
