"""Tasks: create_task, get_task, list_tasks, update_task, claim_next_task and task://."""

# No `from __future__ import annotations`: the SDK reads these annotations at registration.
import inspect
import uuid
from typing import Annotated, Literal

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.types import ToolAnnotations
from pydantic import AwareDatetime, Field

from mindscape.app.calls import REPLICA_NOTE, tenant_call
from mindscape.app.resources import read_by_id
from mindscape.app.state import AppState
from mindscape.app.tools.campaigns import CampaignId, Version
from mindscape.app.validation import record_id
from mindscape.config.settings import SLUG_PATTERN
from mindscape.errors import InvalidArgument
from mindscape.models.campaign import JsonObject
from mindscape.models.task import Claim, CreatedTask, Task, TaskPage, TaskStatus
from mindscape.queries import campaigns, lookups, tasks
from mindscape.queries.tasks import NewTask, TaskChanges, TaskFilters

CREATE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)
UPDATE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False)
CLAIM = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)
READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)

TaskId = Annotated[uuid.UUID, record_id("task", "create_task or list_tasks"), Field(description="Task id.")]
PersonaSlug = Annotated[str, Field(pattern=SLUG_PATTERN, max_length=64, description="Persona slug, e.g. 'ada'.")]
Title = Annotated[str, Field(min_length=1, max_length=500, pattern=r"\S", description="What to do, in a line.")]
Description = Annotated[str, Field(max_length=8000, description="Details.")]
Priority = Annotated[int, Field(ge=0, le=4, description="0 (highest) to 4.")]
Due = Annotated[AwareDatetime, Field(description="Due time, ISO 8601 with a timezone, e.g. 2026-03-01T17:00:00Z.")]
Lease = Annotated[int, Field(ge=10, le=86_400, description="Seconds until others may claim it if unfinished.")]

NOTHING_CLAIMABLE = (
    "no task is claimable now: none is pending (or in progress with an expired lease) outside a campaign or "
    "in an active one; list_tasks shows the queue"
)


async def create_task(
    title: Title,
    ctx: Context[AppState],
    description: Description = "",
    campaign: Annotated[CampaignId | None, Field(description="Campaign id it belongs to.")] = None,
    persona: Annotated[PersonaSlug | None, Field(description="Persona slug to assign it to.")] = None,
    parent: Annotated[TaskId | None, Field(description="Parent task id: this becomes its subtask.")] = None,
    priority: Priority = 2,
    due_at: Due | None = None,
    input: Annotated[JsonObject | None, Field(description="JSON object the worker needs, at most 16 KiB.")] = None,
    idempotency_key: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=200,
            pattern=r"^\S+$",
            description="Your unique key for this task: a retry with the same key returns the original.",
        ),
    ] = None,
) -> CreatedTask:
    """Add a pending task to the shared queue. Pass idempotency_key so a retry never creates a duplicate."""
    new = NewTask(
        title=title,
        description=description,
        campaign_id=campaign,
        persona=persona,
        parent_id=parent,
        priority=priority,
        due_at=due_at,
        input=input,
        idempotency_key=idempotency_key,
    )
    async with tenant_call(ctx, read_only=False) as tx:
        task, duplicate = await tasks.create(tx.conn, tenant_id=tx.tenant_id, new=new)
    return CreatedTask(**task.model_dump(), duplicate=duplicate)


async def get_task(id: TaskId, ctx: Context[AppState]) -> Task:
    """Get one task with its input, result, lease and version."""
    task_id = id
    async with tenant_call(ctx, read_only=True) as tx:
        found = await tasks.get(tx.conn, tenant_id=tx.tenant_id, task_id=task_id)
    if found is None:
        raise tasks.task_not_found(task_id)
    return found


async def list_tasks(
    ctx: Context[AppState],
    campaign: Annotated[CampaignId | None, Field(description="Only this campaign's tasks.")] = None,
    status: Annotated[TaskStatus | None, Field(description="Only tasks in this status.")] = None,
    persona: Annotated[PersonaSlug | None, Field(description="Only tasks assigned to this persona.")] = None,
    due_before: Annotated[AwareDatetime | None, Field(description="Only tasks due before this (ISO 8601).")] = None,
    parent: Annotated[TaskId | None, Field(description="Only subtasks of this task.")] = None,
    limit: Annotated[int, Field(ge=1, le=100, description="Page size.")] = 20,
    cursor: Annotated[str | None, Field(max_length=512, description="next_cursor from the previous page.")] = None,
) -> TaskPage:
    """List tasks in queue order: priority (0 first), then oldest."""
    campaign_id, parent_id = campaign, parent
    async with tenant_call(ctx, read_only=True) as tx:
        if campaign_id is not None:
            await campaigns.status_of(tx.conn, tenant_id=tx.tenant_id, campaign_id=campaign_id)  # unknown: an error
        filters = TaskFilters(
            campaign_id=campaign_id,
            status=status,
            persona_id=await lookups.persona_id(tx.conn, tenant_id=tx.tenant_id, slug=persona),
            due_before=due_before,
            parent_id=parent_id,
        )
        return await tasks.list_page(tx.conn, tenant_id=tx.tenant_id, filters=filters, limit=limit, after=cursor)


async def update_task(
    id: TaskId,
    expected_version: Version,
    ctx: Context[AppState],
    status: Annotated[
        TaskStatus | None,
        Field(
            description="pending->in_progress->done|failed, in_progress<->blocked, pending|blocked->cancelled. "
            "done, failed and cancelled are final."
        ),
    ] = None,
    result: Annotated[JsonObject | None, Field(description="Outcome as a JSON object, at most 16 KiB.")] = None,
    title: Title | None = None,
    description: Description | None = None,
    priority: Priority | None = None,
    due_at: Due | None = None,
    persona: Annotated[PersonaSlug | None, Field(description="Persona slug to assign it to.")] = None,
    lease_seconds: Annotated[
        Lease | None, Field(description="Renew your lease for this many seconds (in progress only).")
    ] = None,
    clear: Annotated[
        list[Literal["due_at", "persona"]] | None, Field(max_length=2, description="Fields to set to null.")
    ] = None,
) -> Task:
    """Change a task (report progress, finish it). Only the fields you pass change; expected_version must match."""
    task_id = id
    cleared = frozenset(clear or ())
    sent = {"status": status, "result": result, "title": title, "description": description, "priority": priority}
    sent |= {"due_at": due_at, "persona": persona, "lease_seconds": lease_seconds}
    fields = [k for k, v in sent.items() if v is not None]
    if not fields and not cleared:
        raise InvalidArgument("nothing to change: pass at least one field besides id and expected_version")
    if both := cleared & set(fields):
        raise InvalidArgument(f"{', '.join(sorted(both))}: pass a value or list it in `clear`, not both")
    changes = TaskChanges(status, result, title, description, priority, due_at, persona, lease_seconds, cleared)
    async with tenant_call(ctx, read_only=False) as tx:
        updated, _ = await tasks.update(
            tx.conn, tenant_id=tx.tenant_id, task_id=task_id, expected_version=expected_version, changes=changes
        )
    return updated


async def claim_next_task(
    ctx: Context[AppState],
    campaign: Annotated[CampaignId | None, Field(description="Only from this campaign (it must be active).")] = None,
    persona: Annotated[PersonaSlug | None, Field(description="Only tasks assigned to this persona.")] = None,
    lease_seconds: Lease = 300,
) -> Claim:
    """Take the next task: priority 0 first, then oldest; tasks of campaigns that are not active wait.

    It is in progress for you until the lease ends: finish it with update_task (done or failed, with a result),
    or renew the lease with update_task(lease_seconds=...). task is null when nothing is claimable.
    """
    campaign_id = campaign
    async with tenant_call(ctx, read_only=False) as tx:
        if campaign_id is not None:
            status = await campaigns.status_of(tx.conn, tenant_id=tx.tenant_id, campaign_id=campaign_id)
            if status != "active":
                raise InvalidArgument(
                    f"campaign {campaign_id} is {status}; its tasks are handed out only while it is active "
                    "(update_campaign with status='active')"
                )
        claimed = await tasks.claim(
            tx.conn,
            tenant_id=tx.tenant_id,
            campaign_id=campaign_id,
            persona_id=await lookups.persona_id(tx.conn, tenant_id=tx.tenant_id, slug=persona),
            lease_seconds=lease_seconds,
        )
        if claimed is None:
            return Claim(task=None, note=NOTHING_CLAIMABLE)
    return Claim(task=claimed.task)


async def task_resource(id: str, ctx: Context[AppState]) -> str:
    """A task as JSON; its texts and JSON were written by agents."""
    return await read_by_id(
        ctx, id, "task", lambda conn, tenant_id, key: tasks.get(conn, tenant_id=tenant_id, task_id=key)
    )


def register(server: MCPServer[AppState], *, replica_reads: bool = False) -> None:
    server.add_tool(create_task, title="Create task", annotations=CREATE)
    server.add_tool(get_task, title="Get task", annotations=READ)
    listing = f"{inspect.getdoc(list_tasks)} {REPLICA_NOTE}" if replica_reads else None
    server.add_tool(list_tasks, title="List tasks", description=listing, annotations=READ)
    server.add_tool(update_task, title="Update task", annotations=UPDATE)
    server.add_tool(claim_next_task, title="Claim next task", annotations=CLAIM)
    server.resource("task://{id}", name="task", mime_type="application/json")(task_resource)
