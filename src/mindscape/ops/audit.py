"""Reading and verifying one tenant's audit trail behind `mindscape audit tail` and `audit verify`.

Both read through the same tenant transaction as the tools (as the runtime role, under
row-level security), so an operator command can show only the named tenant's events.
"""

from __future__ import annotations

from datetime import datetime

from mindscape.config.settings import Settings
from mindscape.database.targets import Targets
from mindscape.models.audit import AuditEvent, BrokenLink, ChainReport
from mindscape.queries import audit
from mindscape.tenancy.operator import operator_session
from mindscape.tenancy.transaction import tenant_transaction

EVERYTHING = 2**63 - 1  # the largest seq


async def read_tail(
    settings: Settings, targets: Targets, *, tenant_slug: str, since: datetime | None, limit: int
) -> list[AuditEvent]:
    """The newest `limit` events at or after `since`, oldest first."""
    async with (
        operator_session(settings, targets, tenant_slug) as (pool, caller),
        tenant_transaction(pool, caller, read_only=True, statement_timeout_ms=settings.statement_timeout_ms) as tx,
    ):
        return await audit.tail(tx.conn, tenant_id=tx.tenant_id, since=since, limit=limit)


async def verify_chain(settings: Settings, targets: Targets, *, tenant_slug: str) -> ChainReport:
    """Recompute the tenant's hash chain up to its head; report the first broken link, if any.

    The head is read first: events appended while this runs come after it and are left for the
    next run. A removed event shows as a gap in `seq` and as a mismatch at the next event; the
    removal of the newest events shows against the head.
    """
    async with (
        operator_session(settings, targets, tenant_slug) as (pool, caller),
        tenant_transaction(pool, caller, read_only=True, statement_timeout_ms=settings.statement_timeout_ms) as tx,
    ):
        head = await audit.head(tx.conn, tenant_id=tx.tenant_id)
        # No head: the tenant never had an event, unless the head row itself was removed.
        through = head.seq if head else EVERYTHING
        checked, last = 0, None
        async for link in audit.chain(tx.conn, tenant_id=tx.tenant_id, through=through):
            broken = _check(link, checked + 1)
            if broken is not None:
                return ChainReport(events=checked, head=_hex(head), broken=broken)
            checked, last = link.seq, link
    if head is None:
        reason = None if last is None else "the chain has no head: its head row was removed"
    elif checked < head.seq:
        reason = f"the head records {head.seq} events but the chain ends at {checked}: the newest were removed"
    elif last is not None and last.hash != head.hash:
        reason = "the newest event's hash differs from the head's: it was altered"
    else:
        reason = None
    if reason is None:
        return ChainReport(events=checked, head=_hex(head), broken=None)
    where = BrokenLink(
        id=last.id if last else None, seq=checked, created_at=last.created_at if last else None, reason=reason
    )
    return ChainReport(events=checked, head=_hex(head), broken=where)


def _check(link: audit.ChainLink, expected_seq: int) -> BrokenLink | None:
    if link.seq != expected_seq:
        if link.seq == expected_seq + 1:
            reason = f"event {expected_seq} before it was removed"
        else:
            reason = f"events {expected_seq}-{link.seq - 1} before it were removed"
    elif link.hash != link.expected:
        reason = "its hash does not match its content and the previous event's hash: it (or the one before) was altered"
    else:
        return None
    return BrokenLink(id=link.id, seq=link.seq, created_at=link.created_at, reason=reason)


def _hex(head: audit.ChainHead | None) -> str:
    return head.hash.hex() if head else ""
