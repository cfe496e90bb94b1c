"""Audit events: who changed what, when (append-only)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel


class AuditEvent(BaseModel):
    id: UUID
    seq: int  # its place in the tenant's hash chain, from 1
    principal: str
    tool: str
    target_ids: list[str]
    outcome: str
    detail: dict[str, Any]
    created_at: datetime


class BrokenLink(BaseModel):
    """The first place where a tenant's chain does not verify."""

    id: UUID | None  # the event at which it breaks (None: the chain has no events at all)
    seq: int
    created_at: datetime | None
    reason: str


class ChainReport(BaseModel):
    """`mindscape audit verify`: the chain recomputed from its first event to the head."""

    events: int  # events checked
    head: str  # the head's hash (hex), for recording outside the database
    broken: BrokenLink | None

    @property
    def ok(self) -> bool:
        return self.broken is None
