"""Campaign SQL, and the checks that task SQL shares with it (versions, transitions, cursors).

Updates (of tasks too) carry every rule in the UPDATE's WHERE, so a change committed in between
makes the UPDATE match nothing instead of slipping through; only then is the row read, and the
same rules checked in Python against it, to say which one refused the change (`changed_meanwhile`
when none does any more).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from asyncpg import Record

from mindscape.database.pool import Connection, Reader
from mindscape.errors import InvalidArgument, NotFound
from mindscape.models.campaign import (
    CAMPAIGN_TRANSITIONS,
    Campaign,
    CampaignPage,
    CampaignSummary,
    TaskCounts,
)
from mindscape.queries import cursor, lookups

BAD_CURSOR = "cursor is not valid; repeat the call without `cursor` to start from the first page"


def cursor_time(key: list[Any], index: int) -> datetime:
    try:
        return datetime.fromisoformat(cursor.key_str(key, index))
    except ValueError as exc:
        raise InvalidArgument(BAD_CURSOR) from exc


def cursor_uuid(key: list[Any], index: int) -> UUID:
    try:
        return UUID(cursor.key_str(key, index))
    except ValueError as exc:
        raise InvalidArgument(BAD_CURSOR) from exc


def campaign_not_found(campaign_id: UUID | str) -> NotFound:
    return NotFound(f"no campaign with id {campaign_id} in this workspace; list_campaigns shows the ids")


def conflict(kind: str, item_id: UUID, *, current_version: int, status: str, expected: int) -> InvalidArgument:
    """A stale expected_version: the message says what the row is now, in words and as JSON."""
    facts = {"conflict": {"id": str(item_id), "current_version": current_version, "status": status}}
    return InvalidArgument(
        f"version conflict: {kind} {item_id} is at version {current_version} (status {status}), "
        f"not {expected}: it changed since you read it. Re-read it with get_{kind}, then retry with "
        f"expected_version={current_version}. {json.dumps(facts)}"
    )


def changed_meanwhile(kind: str, item_id: UUID) -> InvalidArgument:
    """An update refused by a rule that no longer refuses it when the row is read again: the row
    changed between the two statements (a lease ran out, a persona appeared)."""
    return InvalidArgument(f"{kind} {item_id} changed while it was being updated; read it with get_{kind} and retry")


def check_transition(kind: str, transitions: Mapping[str, Sequence[str]], current: str, target: str) -> None:
    allowed = transitions[current]
    if target in allowed:
        return
    if not allowed:
        raise InvalidArgument(f"cannot move {kind} from {current} to {target}: {current} is final")
    raise InvalidArgument(
        f"cannot move {kind} from {current} to {target}; from {current} it can move to: {', '.join(allowed)}"
    )


def sources(transitions: Mapping[str, Sequence[str]], target: str) -> list[str]:
    """The statuses a row may have for an update to `target` (the UPDATE's WHERE)."""
    return [status for status, targets in transitions.items() if target in targets]


# A campaign as get() reads it, from `c` (the table, or the row an update returned).
_SELECT = """
SELECT c.id, c.name, c.objective, c.status, c.starts_at, c.ends_at, c.metadata, c.version,
       c.created_at, c.updated_at,
       ARRAY(SELECT p.slug FROM mindscape.campaign_personas cp
             JOIN mindscape.personas p ON p.tenant_id = cp.tenant_id AND p.id = cp.persona_id
             WHERE cp.tenant_id = c.tenant_id AND cp.campaign_id = c.id AND p.deleted_at IS NULL
             ORDER BY p.slug) AS personas,
       (SELECT coalesce(jsonb_object_agg(n.status, n.count), '{}'::jsonb)
        FROM (SELECT t.status, count(*) AS count FROM mindscape.tasks t
              WHERE t.tenant_id = c.tenant_id AND t.campaign_id = c.id GROUP BY t.status) n) AS task_counts"""
GET = _SELECT + "\nFROM mindscape.campaigns c\nWHERE c.tenant_id = $1 AND c.id = $2\n"


async def get(conn: Reader, *, tenant_id: UUID, campaign_id: UUID) -> Campaign | None:
    row = await conn.fetchrow(GET, tenant_id, campaign_id)
    return _campaign(row) if row is not None else None


def _campaign(row: Record) -> Campaign:
    fields = dict(row)
    fields["task_counts"] = TaskCounts.model_validate(row["task_counts"])
    return Campaign.model_validate(fields)


STATUS = "SELECT status FROM mindscape.campaigns WHERE tenant_id = $1 AND id = $2"


async def status_of(conn: Reader, *, tenant_id: UUID, campaign_id: UUID) -> str:
    """The campaign's status; an unknown id (or another tenant's) is a NotFound."""
    row = await conn.fetchrow(STATUS, tenant_id, campaign_id)
    if row is None:
        raise campaign_not_found(campaign_id)
    return row["status"]


# A new campaign with its personas ($8: slugs), read back as GET reads it, in one statement (a
# data-modifying WITH runs whether or not the query reads it). A slug that names no live persona
# is missing from `personas`: `create` then refuses the campaign, and its transaction rolls back.
INSERT = """
WITH c AS (
  INSERT INTO mindscape.campaigns (tenant_id, name, objective, status, starts_at, ends_at, metadata)
  VALUES ($1, $2, $3, $4, $5, $6, $7)
  RETURNING *
), p AS (
  SELECT p.id, p.slug FROM mindscape.personas p
  WHERE p.tenant_id = $1 AND p.slug = ANY($8::text[]) AND p.deleted_at IS NULL
), assigned AS (
  INSERT INTO mindscape.campaign_personas (tenant_id, campaign_id, persona_id)
  SELECT $1, c.id, p.id FROM c, p
)
SELECT c.id, c.name, c.objective, c.status, c.starts_at, c.ends_at, c.metadata, c.version,
       c.created_at, c.updated_at, ARRAY(SELECT p.slug FROM p ORDER BY p.slug) AS personas,
       '{}'::jsonb AS task_counts
FROM c
"""

ASSIGN = """
INSERT INTO mindscape.campaign_personas (tenant_id, campaign_id, persona_id)
SELECT $1, $2, unnest($3::uuid[])
ON CONFLICT DO NOTHING
"""
# Replacing the assignments touches only those that change: each change is an audit event.
UNASSIGN_OTHERS = """
DELETE FROM mindscape.campaign_personas
WHERE tenant_id = $1 AND campaign_id = $2 AND persona_id <> ALL($3::uuid[])
"""


@dataclass(frozen=True)
class NewCampaign:
    name: str
    objective: str
    status: str
    starts_at: datetime | None
    ends_at: datetime | None
    personas: Sequence[str]
    metadata: dict[str, Any]


def _check_period(starts_at: datetime | None, ends_at: datetime | None) -> None:
    if starts_at is not None and ends_at is not None and ends_at <= starts_at:
        raise InvalidArgument(f"ends_at ({ends_at.isoformat()}) must be later than starts_at ({starts_at.isoformat()})")


async def create(conn: Connection, *, tenant_id: UUID, new: NewCampaign) -> Campaign:
    """The campaign, created with its personas; NotFound (the caller's transaction must then roll
    back: the campaign was written) when a slug names no live persona."""
    _check_period(new.starts_at, new.ends_at)
    row = await conn.fetchrow(
        INSERT,
        tenant_id,
        new.name,
        new.objective,
        new.status,
        new.starts_at,
        new.ends_at,
        new.metadata,
        list(new.personas),
    )
    assert row is not None  # an INSERT ... VALUES returns its row
    for slug in new.personas:
        if slug not in row["personas"]:
            raise lookups.persona_not_found(slug)
    return _campaign(row)


LIST = """
SELECT id, name, left(objective, 200) AS objective, status, starts_at, ends_at, version, created_at, updated_at
FROM mindscape.campaigns
WHERE tenant_id = $1
  AND ($2::text IS NULL OR status = $2)
  AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4::uuid))
ORDER BY created_at DESC, id DESC
LIMIT $5
"""


async def list_page(
    conn: Reader, *, tenant_id: UUID, status: str | None, limit: int, after: str | None
) -> CampaignPage:
    """Newest first; `after` is the cursor of the previous page."""
    filters = {"tenant": str(tenant_id), "campaigns": True, "status": status}
    key = cursor.decode(after, filters) if after else None
    last_time = cursor_time(key, 0) if key else None
    last_id = cursor_uuid(key, 1) if key else None
    rows = await conn.fetch(LIST, tenant_id, status, last_time, last_id, limit + 1)
    page = [CampaignSummary.model_validate(dict(r)) for r in rows[:limit]]
    more = len(rows) > limit
    return CampaignPage(campaigns=page, next_cursor=cursor.encode(_key(rows[limit - 1]), filters) if more else None)


def _key(row: Record) -> list[Any]:
    return [row["created_at"].isoformat(), str(row["id"])]


# update_campaign's change in one statement, every rule in its WHERE, read back as GET reads it:
# the campaign at the expected version ($3); a new status ($6, NULL: unchanged) reachable from its
# status ($12: the statuses it may be reached from); the period it ends with either open or
# ending after it starts. No row: `update` reads the campaign to say which rule refused it.
UPDATE = (
    """
WITH c AS (
  UPDATE mindscape.campaigns c
  SET name = coalesce($4, c.name), objective = coalesce($5, c.objective), status = coalesce($6, c.status),
      starts_at = CASE WHEN $8 THEN NULL ELSE coalesce($7, c.starts_at) END,
      ends_at = CASE WHEN $10 THEN NULL ELSE coalesce($9, c.ends_at) END,
      metadata = coalesce($11, c.metadata), version = c.version + 1, updated_at = now()
  WHERE c.tenant_id = $1 AND c.id = $2 AND c.version = $3
    AND ($6::text IS NULL OR $6 = c.status OR c.status = ANY($12::text[]))
    AND ((CASE WHEN $10 THEN NULL ELSE coalesce($9, c.ends_at) END)
         > (CASE WHEN $8 THEN NULL ELSE coalesce($7, c.starts_at) END)) IS NOT FALSE
  RETURNING c.*
)"""
    + _SELECT
    + "\nFROM c\n"
)


@dataclass(frozen=True)
class CampaignChanges:
    """Fields to change; None leaves a field as it is, `clear` sets starts_at / ends_at to null."""

    name: str | None = None
    objective: str | None = None
    status: str | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    personas: Sequence[str] | None = None
    metadata: dict[str, Any] | None = None
    clear: frozenset[str] = frozenset()


async def update(
    conn: Connection, *, tenant_id: UUID, campaign_id: UUID, expected_version: int, changes: CampaignChanges
) -> Campaign:
    """Apply `changes` if the campaign is still at `expected_version` and every rule allows them; the
    campaign as changed. One statement, unless its personas change; a refusal reads it to say why."""
    c = changes
    row = await conn.fetchrow(
        UPDATE,
        tenant_id,
        campaign_id,
        expected_version,
        c.name,
        c.objective,
        c.status,
        c.starts_at,
        "starts_at" in c.clear,
        c.ends_at,
        "ends_at" in c.clear,
        c.metadata,
        sources(CAMPAIGN_TRANSITIONS, c.status) if c.status is not None else [],
    )
    if row is None:
        raise await _refusal(
            conn, tenant_id=tenant_id, campaign_id=campaign_id, expected_version=expected_version, changes=c
        )
    updated = _campaign(row)
    if c.personas is None:
        return updated
    # Unknown slugs: NotFound, and the caller's transaction rolls the update back.
    persona_list = await lookups.persona_ids(conn, tenant_id=tenant_id, slugs=c.personas)
    await conn.execute(UNASSIGN_OTHERS, tenant_id, campaign_id, persona_list)
    await conn.execute(ASSIGN, tenant_id, campaign_id, persona_list)
    after = await get(conn, tenant_id=tenant_id, campaign_id=campaign_id)  # its personas as GET orders them
    assert after is not None
    return after


async def _refusal(
    conn: Connection, *, tenant_id: UUID, campaign_id: UUID, expected_version: int, changes: CampaignChanges
) -> Exception:
    """Why UPDATE changed nothing, read from the campaign as it is now, in the order the rules apply."""
    before = await get(conn, tenant_id=tenant_id, campaign_id=campaign_id)
    if before is None:
        return campaign_not_found(campaign_id)
    if before.version != expected_version:
        return conflict(
            "campaign", campaign_id, current_version=before.version, status=before.status, expected=expected_version
        )
    status = changes.status or before.status
    if status != before.status:
        check_transition("campaign", CAMPAIGN_TRANSITIONS, before.status, status)
    starts_at = None if "starts_at" in changes.clear else changes.starts_at or before.starts_at
    ends_at = None if "ends_at" in changes.clear else changes.ends_at or before.ends_at
    _check_period(starts_at, ends_at)
    return changed_meanwhile("campaign", campaign_id)
