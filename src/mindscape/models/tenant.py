from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel


class Tenant(BaseModel):
    id: UUID
    slug: str
    name: str
    status: Literal["active", "disabled"]
    created_at: datetime


class TenantRef(BaseModel):
    """What the runtime role may learn of a tenant it names by slug: enough to resolve a caller."""

    id: UUID
    slug: str
    status: Literal["active", "disabled"]
