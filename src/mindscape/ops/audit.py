"""Reading one tenant's audit trail behind `mindscape audit tail`.

Read through the same tenant transaction as the tools (as the runtime role, under row-level
security), so an operator command can show only the named tenant's events.
"""

from __future__ import annotations

from datetime import datetime

from mindscape.config.settings import Settings
from mindscape.database.targets import Targets
from mindscape.models.audit import AuditEvent
from mindscape.queries import audit
from mindscape.tenancy.operator import operator_session
from mindscape.tenancy.transaction import tenant_transaction


async def read_tail(
    settings: Settings, targets: Targets, *, tenant_slug: str, since: datetime | None, limit: int
) -> list[AuditEvent]:
    """The newest `limit` events at or after `since`, oldest first."""
    async with (
        operator_session(settings, targets, tenant_slug) as (pool, caller),
        tenant_transaction(pool, caller, read_only=True, statement_timeout_ms=settings.statement_timeout_ms) as tx,
    ):
        return await audit.tail(tx.conn, tenant_id=tx.tenant_id, since=since, limit=limit)
