"""Task SQL: idempotent creation, listing, versioned updates and the claim.

The claim locks the next claimable row with FOR UPDATE SKIP LOCKED, so concurrent claimers
each take a different task instead of queueing behind one another.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from asyncpg import Record

from mindscape.database.pool import Connection, Reader
from mindscape.errors import InvalidArgument, NotFound
from mindscape.models.task import TASK_TRANSITIONS, Task, TaskPage, TaskSummary
from mindscape.queries import campaigns, cursor, lookups
from mindscape.queries.campaigns import changed_meanwhile, check_transition, conflict, cursor_time, cursor_uuid, sources
from mindscape.queries.lookups import live_persona

DEFAULT_LEASE_SECONDS = 300
# Tasks are added while a campaign is being planned or worked on, not after it ended.
OPEN_CAMPAIGN = ("draft", "active", "paused")


def task_not_found(task_id: UUID | str, role: str = "task") -> NotFound:
    return NotFound(f"no {role} with id {task_id} in this workspace; list_tasks shows the ids")


# A task as the tools return it, from `t` (the table, or the rows a write returned) and its persona.
_SELECT = """
SELECT t.id, t.title, t.description, t.status, t.priority, t.campaign_id, p.slug AS persona, t.persona_id,
       t.parent_id, t.due_at, t.input, t.result, t.idempotency_key, t.claimed_by, t.lease_expires_at,
       t.attempts, t.version, t.created_at, t.updated_at"""
_PERSONA = "LEFT JOIN mindscape.personas p ON p.tenant_id = t.tenant_id AND p.id = t.persona_id"
_COLUMNS = f"{_SELECT}\nFROM mindscape.tasks t\n{_PERSONA}\n"
GET = _COLUMNS + "WHERE t.tenant_id = $1 AND t.id = $2"
BY_KEY = _COLUMNS + "WHERE t.tenant_id = $1 AND t.idempotency_key = $2"


async def _fetch(conn: Reader, statement: str, *args: Any) -> Task | None:
    row = await conn.fetchrow(statement, *args)
    return Task.model_validate(dict(row)) if row else None


async def get(conn: Reader, *, tenant_id: UUID, task_id: UUID) -> Task | None:
    return await _fetch(conn, GET, tenant_id, task_id)


# The new task as get() reads it, in the same statement, its persona found by slug ($3). No row:
# its campaign is not open (or unknown), its persona unknown, or a concurrent retry took the
# idempotency key first.
INSERT = f"""
WITH t AS (
  INSERT INTO mindscape.tasks
      (tenant_id, campaign_id, persona_id, parent_id, title, description, priority, due_at, input, idempotency_key)
  SELECT $1::uuid, $2::uuid, {live_persona("$1", "$3")}, $4::uuid, $5::text, $6::text, $7::smallint,
         $8::timestamptz, $9::jsonb, $10::text
  WHERE ($2::uuid IS NULL OR EXISTS (
    SELECT 1 FROM mindscape.campaigns c
    WHERE c.tenant_id = $1 AND c.id = $2 AND c.status = ANY($11::text[])))
    AND ($3::text IS NULL OR {live_persona("$1", "$3")} IS NOT NULL)
  ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
  RETURNING *
){_SELECT}
FROM t
{_PERSONA}
"""
PARENT_CAMPAIGN = "SELECT campaign_id FROM mindscape.tasks WHERE tenant_id = $1 AND id = $2"


@dataclass(frozen=True)
class NewTask:
    title: str
    description: str = ""
    campaign_id: UUID | None = None
    persona: str | None = None
    parent_id: UUID | None = None
    priority: int = 2
    due_at: datetime | None = None
    input: dict[str, Any] | None = None
    idempotency_key: str | None = None


async def create(conn: Connection, *, tenant_id: UUID, new: NewTask) -> tuple[Task, bool]:
    """(task, duplicate). A known idempotency key returns the task it created, unchanged."""
    if new.idempotency_key is not None:
        # Before any check: a retry gets the original even if, say, its campaign has ended since.
        existing = await _fetch(conn, BY_KEY, tenant_id, new.idempotency_key)
        if existing is not None:
            return existing, True
    campaign_id = new.campaign_id
    if new.parent_id is not None:
        parent = await conn.fetchrow(PARENT_CAMPAIGN, tenant_id, new.parent_id)
        if parent is None:
            raise task_not_found(new.parent_id, "parent task")
        if campaign_id is None:
            campaign_id = parent["campaign_id"]  # a subtask belongs to its parent's campaign
        elif parent["campaign_id"] != campaign_id:
            raise InvalidArgument(
                "a subtask belongs to its parent's campaign; omit `campaign` or pass the parent's campaign_id"
            )
    created = await _fetch(
        conn,
        INSERT,
        tenant_id,
        campaign_id,
        new.persona,
        new.parent_id,
        new.title,
        new.description,
        new.priority,
        new.due_at,
        new.input or {},
        new.idempotency_key,
        list(OPEN_CAMPAIGN),
    )
    if created is None:
        await lookups.persona_id(conn, tenant_id=tenant_id, slug=new.persona)  # unknown: NotFound
        if campaign_id is not None:
            # The insert checked the campaign is open: if that is why it added nothing, say so.
            status = await campaigns.status_of(conn, tenant_id=tenant_id, campaign_id=campaign_id)
            if status not in OPEN_CAMPAIGN:
                raise InvalidArgument(
                    f"campaign {campaign_id} is {status}; tasks can be added only to draft, active or paused campaigns"
                )
        # A concurrent retry inserted the same key first; the conflict waited for its commit.
        winner = await _fetch(conn, BY_KEY, tenant_id, new.idempotency_key) if new.idempotency_key else None
        if winner is None:  # the campaign opened, or the persona appeared, between the statements
            what = f"campaign {campaign_id} changed status" if campaign_id is not None else "its persona was added"
            raise InvalidArgument(f"{what} while the task was added; retry")
        return winner, True
    return created, False


LIST = f"""
SELECT t.id, t.title, t.status, t.priority, t.campaign_id, p.slug AS persona, t.parent_id, t.due_at,
       t.claimed_by, t.lease_expires_at, t.attempts, t.version, t.created_at, t.updated_at
FROM mindscape.tasks t
LEFT JOIN mindscape.personas p ON p.tenant_id = t.tenant_id AND p.id = t.persona_id
WHERE t.tenant_id = $1
  AND ($2::uuid IS NULL OR t.campaign_id = $2)
  AND ($3::text IS NULL OR t.status = $3)
  AND ($4::text IS NULL OR t.persona_id = {live_persona("$1", "$4")})
  AND ($5::timestamptz IS NULL OR t.due_at < $5)
  AND ($6::uuid IS NULL OR t.parent_id = $6)
  AND ($7::int IS NULL OR (t.priority, t.created_at, t.id) > ($7::smallint, $8::timestamptz, $9::uuid))
ORDER BY t.priority, t.created_at, t.id
LIMIT $10
"""


@dataclass(frozen=True)
class TaskFilters:
    campaign_id: UUID | None = None
    status: str | None = None
    persona: str | None = None  # a slug: no live persona of that slug, no tasks
    due_before: datetime | None = None
    parent_id: UUID | None = None

    def fingerprint(self, tenant_id: UUID) -> dict[str, Any]:
        # The tenant is part of it: a cursor never carries over to another tenant.
        return {"tenant": str(tenant_id), "tasks": True, **{k: str(v) for k, v in vars(self).items() if v is not None}}


async def list_page(conn: Reader, *, tenant_id: UUID, filters: TaskFilters, limit: int, after: str | None) -> TaskPage:
    """Queue order (priority, then oldest); `after` is the cursor of the previous page."""
    fingerprint = filters.fingerprint(tenant_id)
    key = cursor.decode(after, fingerprint) if after else None
    last = (int(cursor.key_float(key, 0)), cursor_time(key, 1), cursor_uuid(key, 2)) if key else (None, None, None)
    f = filters
    rows = await conn.fetch(
        LIST, tenant_id, f.campaign_id, f.status, f.persona, f.due_before, f.parent_id, *last, limit + 1
    )
    page = [TaskSummary.model_validate(dict(r)) for r in rows[:limit]]
    more = len(rows) > limit
    return TaskPage(tasks=page, next_cursor=cursor.encode(_key(rows[limit - 1]), fingerprint) if more else None)


def _key(row: Record) -> list[Any]:
    return [row["priority"], row["created_at"].isoformat(), str(row["id"])]


# Who holds an in-progress task, whether the lease has run out (by the database's clock, the one
# claims use), and who is asking.
CLAIM_STATE = """
SELECT claimed_by, lease_expires_at, lease_expires_at < now() AS expired, current_setting('app.principal') AS me
FROM mindscape.tasks WHERE tenant_id = $1 AND id = $2
"""

# update_task's change in one statement, every rule in its WHERE, so that a change that is allowed
# costs no read first: the task at the expected version ($3); a new status ($4, NULL: unchanged)
# reachable from its status ($5: the statuses it may be reached from); an in-progress task only by
# its claimant, or anyone once the lease expired; lease_seconds ($14) only for a task that is, or
# becomes, in progress; a persona ($11) only by the slug of a live one. No row: `update` reads the
# task to say which rule refused it.
# Moving to in_progress (re)claims the task for the transaction's principal with a fresh lease
# ($14, else the default $15), and so does a change to an in-progress task whose lease expired, by
# someone else (a takeover); leaving in_progress drops the lease; lease_seconds alone renews it
# while in progress. Claiming a pending task counts an attempt (resuming a blocked one does not).
UPDATE = f"""
WITH t AS (
  UPDATE mindscape.tasks t
  SET title = coalesce($6, t.title), description = coalesce($7, t.description),
      priority = coalesce($8::smallint, t.priority),
      due_at = CASE WHEN $10 THEN NULL ELSE coalesce($9, t.due_at) END,
      persona_id = CASE WHEN $12 THEN NULL ELSE coalesce({live_persona("$1", "$11")}, t.persona_id) END,
      result = coalesce($13, t.result),
      status = coalesce($4, t.status),
      claimed_by = CASE WHEN coalesce($4, t.status) = 'in_progress'
                             AND (t.status <> 'in_progress' OR t.claimed_by <> current_setting('app.principal'))
                        THEN current_setting('app.principal') ELSE t.claimed_by END,
      lease_expires_at = CASE WHEN coalesce($4, t.status) <> 'in_progress' THEN NULL
                              WHEN $14::int IS NOT NULL THEN now() + $14::int * interval '1 second'
                              WHEN t.status <> 'in_progress' THEN now() + $15::int * interval '1 second'
                              ELSE t.lease_expires_at END,
      attempts = t.attempts + CASE WHEN $4 = 'in_progress' AND t.status = 'pending' THEN 1 ELSE 0 END,
      version = t.version + 1, updated_at = now()
  WHERE t.tenant_id = $1 AND t.id = $2 AND t.version = $3
    AND ($4::text IS NULL OR $4 = t.status OR t.status = ANY($5::text[]))
    AND (t.status <> 'in_progress' OR t.claimed_by IS NULL OR t.claimed_by = current_setting('app.principal')
         OR t.lease_expires_at < now())
    AND ($14::int IS NULL OR coalesce($4, t.status) = 'in_progress')
    AND ($11::text IS NULL OR {live_persona("$1", "$11")} IS NOT NULL)
  RETURNING t.*
){_SELECT}
FROM t
{_PERSONA}
"""


@dataclass(frozen=True)
class TaskChanges:
    """Fields to change; None leaves a field as it is, `clear` sets due_at / persona to null."""

    status: str | None = None
    result: dict[str, Any] | None = None
    title: str | None = None
    description: str | None = None
    priority: int | None = None
    due_at: datetime | None = None
    persona: str | None = None
    lease_seconds: int | None = None
    clear: frozenset[str] = frozenset()


async def update(
    conn: Connection, *, tenant_id: UUID, task_id: UUID, expected_version: int, changes: TaskChanges
) -> Task:
    """Apply `changes` if the task is still at `expected_version` and every rule allows them; the
    task as changed. One statement when they are allowed; a refusal reads the task to say why."""
    c = changes
    updated = await _fetch(
        conn,
        UPDATE,
        tenant_id,
        task_id,
        expected_version,
        c.status,
        sources(TASK_TRANSITIONS, c.status) if c.status is not None else [],
        c.title,
        c.description,
        c.priority,
        c.due_at,
        "due_at" in c.clear,
        None if "persona" in c.clear else c.persona,
        "persona" in c.clear,
        c.result,
        c.lease_seconds,
        DEFAULT_LEASE_SECONDS,
    )
    if updated is not None:
        return updated
    raise await _refusal(conn, tenant_id=tenant_id, task_id=task_id, expected_version=expected_version, changes=c)


async def _refusal(
    conn: Connection, *, tenant_id: UUID, task_id: UUID, expected_version: int, changes: TaskChanges
) -> Exception:
    """Why UPDATE changed nothing, read from the task as it is now, in the order the rules apply."""
    before = await _fetch(conn, GET, tenant_id, task_id)
    if before is None:
        return task_not_found(task_id)
    if before.version != expected_version:
        return conflict(
            "task", task_id, current_version=before.version, status=before.status, expected=expected_version
        )
    if before.status == "in_progress":
        await _check_claimant(conn, tenant_id=tenant_id, task_id=task_id)
    status = changes.status or before.status
    if status != before.status:
        check_transition("task", TASK_TRANSITIONS, before.status, status)
    if changes.lease_seconds is not None and status != "in_progress":
        return InvalidArgument(f"lease_seconds applies only to a task in progress; this one would be {status}")
    if "persona" not in changes.clear:
        await lookups.persona_id(conn, tenant_id=tenant_id, slug=changes.persona)  # unknown: NotFound
    # Every rule allows it now: the task changed between the two statements (a lease ran out, a
    # persona appeared); the agent's retry decides on what it is now.
    return changed_meanwhile("task", task_id)


async def _check_claimant(conn: Connection, *, tenant_id: UUID, task_id: UUID) -> bool:
    """Refuse a change to an in-progress task by anyone but its claimant while the lease lasts.

    Returns True when the caller is not the claimant but the lease has expired: the change is
    allowed and, if the task stays in progress, hands the claim to the caller.
    """
    row = await conn.fetchrow(CLAIM_STATE, tenant_id, task_id)
    assert row is not None  # read just before, in this transaction; tasks are never deleted
    holder: str | None = row["claimed_by"]
    if holder is None or holder == row["me"]:
        return False
    if row["expired"]:
        return True
    until = row["lease_expires_at"].strftime("%Y-%m-%dT%H:%M:%SZ")
    raise InvalidArgument(
        f"task {task_id} is in progress, claimed by {holder} until {until}: while the lease lasts only its "
        "claimant may update it. Ask the claimant to update or release it, or wait until the lease expires "
        "(then update it, or claim_next_task hands it out again)."
    )


# The next claimable task, claimed, and read as get() reads it, in one statement.
CLAIM = f"""
WITH next AS (
  SELECT t.id, t.status AS previous_status
  FROM mindscape.tasks t
  WHERE t.tenant_id = $1
    AND (t.status = 'pending' OR (t.status = 'in_progress' AND t.lease_expires_at < now()))
    AND ($2::uuid IS NULL OR t.campaign_id = $2)
    AND ($3::text IS NULL OR t.persona_id = {live_persona("$1", "$3")})
    AND (t.campaign_id IS NULL OR EXISTS (
      SELECT 1 FROM mindscape.campaigns c
      WHERE c.tenant_id = t.tenant_id AND c.id = t.campaign_id AND c.status = 'active'))
  ORDER BY t.priority, t.created_at, t.id
  LIMIT 1
  FOR UPDATE OF t SKIP LOCKED
), t AS (
  UPDATE mindscape.tasks t
  SET status = 'in_progress', claimed_by = current_setting('app.principal'),
      lease_expires_at = now() + $4::int * interval '1 second',
      attempts = t.attempts + 1, version = t.version + 1, updated_at = now()
  FROM next
  WHERE t.tenant_id = $1 AND t.id = next.id
  RETURNING t.*, next.previous_status
){_SELECT}, t.previous_status
FROM t
{_PERSONA}
"""


@dataclass(frozen=True)
class Claimed:
    task: Task
    reclaimed: bool  # its previous holder's lease had expired


async def claim(
    conn: Connection, *, tenant_id: UUID, campaign_id: UUID | None, persona: str | None, lease_seconds: int
) -> Claimed | None:
    """Hand the next claimable task to the transaction's principal; None when there is none.

    Claimable: pending, or in progress with an expired lease, and outside any campaign or in an
    active one, and of the live persona of slug `persona` if one is given. Order: priority (0
    first), then oldest.
    """
    row = await conn.fetchrow(CLAIM, tenant_id, campaign_id, persona, lease_seconds)
    if row is None:
        return None
    fields = dict(row)
    reclaimed = fields.pop("previous_status") == "in_progress"
    return Claimed(task=Task.model_validate(fields), reclaimed=reclaimed)
