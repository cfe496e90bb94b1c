"""Audit events: who changed what, when (append-only)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel


class AuditEvent(BaseModel):
    id: UUID
    principal: str
    tool: str
    target_ids: list[str]
    outcome: str
    detail: dict[str, Any]
    created_at: datetime
