"""Tasks: create_task, get_task, list_tasks, update_task, claim_next_task and task://."""

# No `from __future__ import annotations`: the SDK reads these annotations at registration.
import inspect
from typing import Annotated, Literal

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.types import ToolAnnotations
from pydantic import AwareDatetime, Field

from mindscape.app.arguments import CampaignId, Cursor, Limit, Slug, TaskId, Version
from mindscape.app.calls import REPLICA_NOTE, tenant_call, tenant_read
from mindscape.app.resources import read_by_id
from mindscape.app.state import AppState
from mindscape.app.tools.personas import persona_exists
from mindscape.errors import InvalidArgument
from mindscape.models.campaign import JsonObject
from mindscape.models.task import Claim, CreatedTask, Task, TaskPage, TaskStatus
from mindscape.queries import campaigns, lookups, tasks
from mindscape.queries.tasks import NewTask, TaskChanges, TaskFilters

CREATE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)
UPDATE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False)
CLAIM = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)
READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)

Title = Annotated[str, Field(min_length=1, max_length=500, pattern=r"\S")]
Description = Annotated[str, Field(max_length=8000)]
Priority = Annotated[int, Field(ge=0, le=4, description="0 (highest) to 4.")]
Lease = Annotated[int, Field(ge=10, le=86_400, description="Seconds before others may claim it.")]

NOTHING_CLAIMABLE = (
    "no task is claimable now: none is pending (or in progress with an expired lease) outside a campaign or "
    "in an active one; list_tasks shows the queue"
)


async def create_task(
    title: Title,
    ctx: Context[AppState],
    description: Description = "",
    campaign: CampaignId | None = None,
    persona: Slug | None = None,
    parent: TaskId | None = None,
    priority: Priority = 2,
    due_at: AwareDatetime | None = None,
    input: Annotated[JsonObject | None, Field(description="At most 16 KiB.")] = None,
    idempotency_key: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=200,
            pattern=r"^\S+$",
            description="A retry with the same key returns the original task.",
        ),
    ] = None,
) -> CreatedTask:
    """Add a pending task to the shared queue."""
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
    """One task with its input, result, lease and version."""
    task_id = id
    async with tenant_read(ctx) as tx:
        found = await tasks.get(tx.conn, tenant_id=tx.tenant_id, task_id=task_id)
    if found is None:
        raise tasks.task_not_found(task_id)
    return found


async def list_tasks(
    ctx: Context[AppState],
    campaign: CampaignId | None = None,
    status: TaskStatus | None = None,
    persona: Slug | None = None,
    due_before: AwareDatetime | None = None,
    parent: TaskId | None = None,
    limit: Limit = 20,
    cursor: Cursor | None = None,
) -> TaskPage:
    """List tasks in queue order: priority (0 first), then oldest."""
    # One query, one round trip (tenancy.one_statement), the persona's slug resolved in it. An
    # unknown campaign or persona is an error, and only an empty page needs the look that tells.
    filters = TaskFilters(campaign_id=campaign, status=status, persona=persona, due_before=due_before, parent_id=parent)
    async with tenant_read(ctx) as tx:
        page = await tasks.list_page(tx.conn, tenant_id=tx.tenant_id, filters=filters, limit=limit, after=cursor)
    if not page.tasks and campaign is not None:
        async with tenant_read(ctx) as tx:
            await campaigns.status_of(tx.conn, tenant_id=tx.tenant_id, campaign_id=campaign)
    if not page.tasks and persona is not None:
        await persona_exists(ctx, persona)
    return page


async def update_task(
    id: TaskId,
    expected_version: Version,
    ctx: Context[AppState],
    status: TaskStatus | None = None,
    result: Annotated[JsonObject | None, Field(description="At most 16 KiB.")] = None,
    title: Title | None = None,
    description: Description | None = None,
    priority: Priority | None = None,
    due_at: AwareDatetime | None = None,
    persona: Slug | None = None,
    lease_seconds: Annotated[Lease | None, Field(description="Renew your lease for this many seconds.")] = None,
    clear: Annotated[list[Literal["due_at", "persona"]] | None, Field(max_length=2)] = None,
) -> Task:
    """Report progress on a task or finish it: change the fields you pass; expected_version must be current."""
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
        updated = await tasks.update(
            tx.conn, tenant_id=tx.tenant_id, task_id=task_id, expected_version=expected_version, changes=changes
        )
    return updated


async def claim_next_task(
    ctx: Context[AppState],
    campaign: CampaignId | None = None,
    persona: Slug | None = None,
    lease_seconds: Lease = 300,
) -> Claim:
    """Take the next pending task (priority 0 first, then oldest; inactive campaigns' tasks wait) under a
    lease; finish it, or renew the lease, with update_task."""
    campaign_id = campaign
    async with tenant_call(ctx, read_only=False) as tx:
        claimed = await tasks.claim(
            tx.conn,
            tenant_id=tx.tenant_id,
            campaign_id=campaign_id,
            persona=persona,
            lease_seconds=lease_seconds,
        )
        if claimed is None:
            await lookups.persona_id(tx.conn, tenant_id=tx.tenant_id, slug=persona)  # unknown: NotFound
        if claimed is None and campaign_id is not None:
            # The claim only takes tasks of active campaigns: when it found none, say so if the
            # campaign is why (unknown, or not active). A claimed task needs no second look.
            status = await campaigns.status_of(tx.conn, tenant_id=tx.tenant_id, campaign_id=campaign_id)
            if status != "active":
                raise InvalidArgument(
                    f"campaign {campaign_id} is {status}; its tasks are handed out only while it is active "
                    "(update_campaign with status='active')"
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
    server.resource("task://{id}", name="task", title="Task", mime_type="application/json")(task_resource)
