"""Campaigns: a goal over a period, worked on by personas through tasks."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, Field

from mindscape.models.json_limits import json_depth

CampaignStatus = Literal["draft", "active", "paused", "completed", "archived"]

# draft -> active <-> paused -> completed, and anything -> archived. `completed` is reachable from
# `active` as well: a campaign that reached its goal need not be paused first.
CAMPAIGN_TRANSITIONS: dict[str, tuple[str, ...]] = {
    "draft": ("active", "archived"),
    "active": ("paused", "completed", "archived"),
    "paused": ("active", "completed", "archived"),
    "completed": ("archived",),
    "archived": (),
}

MAX_JSON_BYTES = 16 * 1024
MAX_JSON_DEPTH = 16


def _json_fits(value: dict[str, Any]) -> dict[str, Any]:
    try:
        size = len(json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode())
    except ValueError as exc:
        raise ValueError("must be plain JSON (no NaN or Infinity)") from exc
    if size > MAX_JSON_BYTES:
        raise ValueError(f"{size} bytes of JSON, over the {MAX_JSON_BYTES}-byte limit; store less or a reference")
    if json_depth(value) > MAX_JSON_DEPTH:
        raise ValueError(f"nests deeper than {MAX_JSON_DEPTH} levels")
    return value


# A JSON object of at most 16 KiB, shared by campaign metadata and task input and result.
JsonObject = Annotated[dict[str, Any], Field(max_length=256), AfterValidator(_json_fits)]


class TaskCounts(BaseModel):
    pending: int = 0
    in_progress: int = 0
    blocked: int = 0
    done: int = 0
    failed: int = 0
    cancelled: int = 0


class Campaign(BaseModel):
    id: UUID
    name: str
    objective: str
    status: CampaignStatus
    starts_at: datetime | None
    ends_at: datetime | None
    personas: list[str] = Field(description="Slugs of the personas assigned to it.")
    metadata: dict[str, Any]
    version: int = Field(description="Pass as expected_version to update_campaign.")
    task_counts: TaskCounts = Field(description="How many of its tasks are in each status.")
    created_at: datetime
    updated_at: datetime


class CampaignSummary(BaseModel):
    id: UUID
    name: str
    objective: str = Field(description="First 200 characters of the objective.")
    status: CampaignStatus
    starts_at: datetime | None
    ends_at: datetime | None
    version: int
    created_at: datetime
    updated_at: datetime


class CampaignPage(BaseModel):
    campaigns: list[CampaignSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")
