"""The audit trail: one event per data-changing call, written in that call's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from mindscape.database.pool import Connection
from mindscape.models.audit import AuditEvent

# The principal comes from the transaction's context, never from the caller of this function.
RECORD = """
INSERT INTO mindscape.audit_events (tenant_id, principal, tool, target_ids, outcome, detail)
VALUES ($1, current_setting('app.principal'), $2, $3, $4, $5)
"""


async def record(
    conn: Connection,
    *,
    tenant_id: UUID,
    tool: str,
    target_ids: Sequence[UUID | str],
    outcome: str,
    detail: dict[str, Any] | None = None,
) -> None:
    await conn.execute(RECORD, tenant_id, tool, [str(t) for t in target_ids], outcome, detail or {})


# The newest `limit` events, returned oldest first like a log.
TAIL = """
SELECT id, principal, tool, target_ids, outcome, detail, created_at FROM (
  SELECT * FROM mindscape.audit_events
  WHERE tenant_id = $1 AND ($2::timestamptz IS NULL OR created_at >= $2)
  ORDER BY created_at DESC, id DESC
  LIMIT $3
) newest
ORDER BY created_at, id
"""


async def tail(conn: Connection, *, tenant_id: UUID, since: datetime | None, limit: int) -> list[AuditEvent]:
    rows = await conn.fetch(TAIL, tenant_id, since, limit)
    return [AuditEvent.model_validate(dict(r)) for r in rows]
