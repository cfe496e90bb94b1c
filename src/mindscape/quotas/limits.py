"""The limits a tenant runs under: its own overrides in `tenants.settings`, else the configured defaults.

A tenant's overrides are keys of its `settings` JSONB object, written only by operators
(`mindscape tenant quota`). 0 means unlimited for every limit but max_content_bytes, like the defaults.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mindscape.config.settings import Settings

log = logging.getLogger(__name__)

Source = Literal["tenant", "default"]
# The largest content a memory can have at all (the memories_content_length CHECK).
MAX_CONTENT_BYTES_CEILING = 1024 * 1024


class TenantQuotas(BaseModel):
    """A tenant's own limits; an unset field falls back to the configured default."""

    model_config = ConfigDict(extra="ignore", frozen=True)  # settings also hold other keys (embedding_model)

    calls_per_minute: int | None = Field(default=None, ge=0, le=1_000_000)
    max_memories: int | None = Field(default=None, ge=0, le=1_000_000_000)
    max_content_bytes: int | None = Field(default=None, ge=1, le=MAX_CONTENT_BYTES_CEILING)
    max_sessions: int | None = Field(default=None, ge=0, le=1_000_000)
    max_concurrent_calls: int | None = Field(default=None, ge=0, le=1000)
    db_ms_per_second: int | None = Field(default=None, ge=0, le=1_000_000)


QUOTA_KEYS = tuple(TenantQuotas.model_fields)


@dataclass(frozen=True)
class Limit:
    name: str
    value: int
    source: Source

    @property
    def unlimited(self) -> bool:
        return self.value == 0


@dataclass(frozen=True)
class Limits:
    calls_per_minute: Limit
    max_memories: Limit
    max_content_bytes: Limit
    max_sessions: Limit
    max_concurrent_calls: Limit
    db_ms_per_second: Limit

    def all(self) -> tuple[Limit, ...]:
        return (
            self.calls_per_minute,
            self.max_memories,
            self.max_content_bytes,
            self.max_sessions,
            self.max_concurrent_calls,
            self.db_ms_per_second,
        )


def tenant_quotas(tenant_settings: dict[str, Any]) -> TenantQuotas:
    """The overrides in a tenant's settings; a malformed one is ignored (and logged), never fatal to a call."""
    try:
        return TenantQuotas.model_validate(tenant_settings)
    except ValidationError as exc:
        # Only operators write these keys and the CLI validates them; this guards hand-edited rows.
        log.warning("ignoring invalid tenant quota settings: %s", exc.errors(include_url=False, include_input=False))
        return TenantQuotas()


def effective(tenant_settings: dict[str, Any], settings: Settings) -> Limits:
    return effective_own(tenant_quotas(tenant_settings), settings)


def effective_own(own: TenantQuotas, settings: Settings) -> Limits:
    defaults = {
        "calls_per_minute": settings.quota_calls_per_minute,
        "max_memories": settings.quota_max_memories,
        "max_content_bytes": settings.memory_max_content_bytes,
        "max_sessions": settings.quota_max_sessions,
        "max_concurrent_calls": settings.default_concurrent_calls,
        "db_ms_per_second": settings.quota_db_ms_per_second,
    }

    def pick(name: str) -> Limit:
        value = getattr(own, name)
        return Limit(name, defaults[name], "default") if value is None else Limit(name, value, "tenant")

    return Limits(*(pick(name) for name in QUOTA_KEYS))
