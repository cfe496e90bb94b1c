"""The audit trail, read back: written by the database itself (migration 0006), never by this code.

Triggers on the audited tables write one event per changed row in the changing transaction,
from its context (tenant, principal, call, source), and chain each tenant's events: every
event's `hash` is sha256 of the previous event's hash and its own content
(mindscape.audit_hash), and audit_heads holds each chain's last seq and hash.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from mindscape.database.pool import Connection
from mindscape.models.audit import AuditEvent

# The newest `limit` events, returned oldest first like a log.
TAIL = """
SELECT id, seq, principal, tool, target_ids, outcome, detail, created_at FROM (
  SELECT * FROM mindscape.audit_events
  WHERE tenant_id = $1 AND ($2::timestamptz IS NULL OR created_at >= $2)
  ORDER BY seq DESC
  LIMIT $3
) newest
ORDER BY seq
"""


async def tail(conn: Connection, *, tenant_id: UUID, since: datetime | None, limit: int) -> list[AuditEvent]:
    rows = await conn.fetch(TAIL, tenant_id, since, limit)
    return [AuditEvent.model_validate(dict(r)) for r in rows]


HEAD = "SELECT seq, hash FROM mindscape.audit_heads WHERE tenant_id = $1"

# Each event with the hash its content and its predecessor's stored hash give: equal to its own
# stored hash unless it, or the event before it, was altered or removed.
CHAIN = """
SELECT seq, id, created_at, hash,
       mindscape.audit_hash(coalesce(lag(hash) OVER (ORDER BY seq), ''::bytea), tenant_id, seq, id, principal,
                            tool, target_ids, outcome, detail, created_at) AS expected
FROM mindscape.audit_events
WHERE tenant_id = $1 AND seq <= $2
ORDER BY seq
"""


@dataclass(frozen=True)
class ChainHead:
    seq: int
    hash: bytes


@dataclass(frozen=True)
class ChainLink:
    seq: int
    id: UUID
    created_at: datetime
    hash: bytes
    expected: bytes


async def head(conn: Connection, *, tenant_id: UUID) -> ChainHead | None:
    row = await conn.fetchrow(HEAD, tenant_id)
    return ChainHead(row["seq"], row["hash"]) if row else None


async def chain(conn: Connection, *, tenant_id: UUID, through: int) -> AsyncIterator[ChainLink]:
    """The tenant's events up to seq `through`, in chain order, streamed (a cursor: needs a transaction)."""
    async for row in conn.cursor(CHAIN, tenant_id, through, prefetch=1000):
        yield ChainLink(row["seq"], row["id"], row["created_at"], row["hash"], row["expected"])
