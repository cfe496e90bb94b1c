from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel

Scope = Literal["read", "write"]


class ApiKey(BaseModel):
    """A key as operators see it: never its secret or hash."""

    id: UUID
    tenant_slug: str
    name: str
    scope: Scope
    prefix: str
    persona: str | None = None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class KeyRecord(BaseModel):
    """What the server needs to verify a presented key (read as the runtime role)."""

    id: UUID
    tenant_id: UUID
    tenant_slug: str
    tenant_active: bool
    scope: Scope
    key_hash: bytes
    expired: bool
    revoked: bool
    persona: str | None = None
    expires_in_s: float | None = None  # by the database's clock when looked up; None: never expires
