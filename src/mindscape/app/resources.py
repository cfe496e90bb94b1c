"""Resources addressed by a record id (memory://, campaign://, task://): one way to read them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable

from mcp.server.mcpserver import Context
from pydantic import BaseModel

from mindscape.app.calls import tenant_call
from mindscape.app.state import AppState
from mindscape.database.pool import Connection
from mindscape.errors import NotFound

Fetch = Callable[[Connection, uuid.UUID, uuid.UUID], Awaitable[BaseModel | None]]


async def read_by_id(ctx: Context[AppState], raw_id: str, noun: str, fetch: Fetch) -> str:
    """The record as JSON; a malformed id reads exactly like an unknown one (or another tenant's)."""
    missing = f"no {noun} with id {raw_id[:64]!r} in this workspace"
    try:
        record_id = uuid.UUID(raw_id)
    except ValueError:
        raise NotFound(missing) from None
    async with tenant_call(ctx, read_only=True) as tx:
        found = await fetch(tx.conn, tx.tenant_id, record_id)
    if found is None:
        raise NotFound(missing)
    return json.dumps(found.model_dump(mode="json"), ensure_ascii=False)
