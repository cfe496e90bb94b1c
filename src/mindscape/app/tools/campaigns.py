"""Campaigns: create_campaign, get_campaign, list_campaigns, update_campaign and campaign://."""

# No `from __future__ import annotations`: the SDK reads these annotations at registration.
from typing import Annotated, Literal

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.types import ToolAnnotations
from pydantic import AwareDatetime, Field

from mindscape.app.arguments import CampaignId, Cursor, Limit, Slug, Version
from mindscape.app.calls import tenant_call, tenant_read
from mindscape.app.resources import read_by_id
from mindscape.app.state import AppState
from mindscape.errors import InvalidArgument
from mindscape.models.campaign import Campaign, CampaignPage, CampaignStatus, JsonObject
from mindscape.queries import campaigns
from mindscape.queries.campaigns import CampaignChanges, NewCampaign

CREATE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)
UPDATE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False)
READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)

Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"\S")]
Objective = Annotated[str, Field(max_length=4000)]
Slugs = Annotated[list[Slug], Field(max_length=50)]
Metadata = Annotated[JsonObject, Field(description="At most 16 KiB.")]


async def create_campaign(
    name: Name,
    ctx: Context[AppState],
    objective: Objective = "",
    status: Literal["draft", "active"] = "draft",
    starts_at: AwareDatetime | None = None,
    ends_at: AwareDatetime | None = None,
    personas: Slugs | None = None,
    metadata: Metadata | None = None,
) -> Campaign:
    """Create a campaign: a goal worked on through its tasks (create_task with campaign=id)."""
    if personas is not None and len(set(personas)) != len(personas):
        raise InvalidArgument("personas lists a slug more than once; list each persona once")
    new = NewCampaign(name, objective, status, starts_at, ends_at, personas or [], metadata or {})
    async with tenant_call(ctx, read_only=False) as tx:
        created = await campaigns.create(tx.conn, tenant_id=tx.tenant_id, new=new)
    return created


async def get_campaign(id: CampaignId, ctx: Context[AppState]) -> Campaign:
    """A campaign with its personas and task counts by status."""
    campaign_id = id
    async with tenant_read(ctx) as tx:
        found = await campaigns.get(tx.conn, tenant_id=tx.tenant_id, campaign_id=campaign_id)
    if found is None:
        raise campaigns.campaign_not_found(campaign_id)
    return found


async def list_campaigns(
    ctx: Context[AppState],
    status: CampaignStatus | None = None,
    limit: Limit = 20,
    cursor: Cursor | None = None,
) -> CampaignPage:
    """List campaigns, newest first."""
    async with tenant_read(ctx) as tx:
        return await campaigns.list_page(tx.conn, tenant_id=tx.tenant_id, status=status, limit=limit, after=cursor)


async def update_campaign(
    id: CampaignId,
    expected_version: Version,
    ctx: Context[AppState],
    name: Name | None = None,
    objective: Objective | None = None,
    status: CampaignStatus | None = None,
    starts_at: AwareDatetime | None = None,
    ends_at: AwareDatetime | None = None,
    personas: Slugs | None = None,
    metadata: Metadata | None = None,
    clear: Annotated[list[Literal["starts_at", "ends_at"]] | None, Field(max_length=2)] = None,
) -> Campaign:
    """Change the fields you pass (a list replaces the old one); expected_version must be current."""
    campaign_id = id
    cleared = frozenset(clear or ())
    sent = {"name": name, "objective": objective, "status": status, "starts_at": starts_at, "ends_at": ends_at}
    sent |= {"personas": personas, "metadata": metadata}
    fields = [k for k, v in sent.items() if v is not None]
    if not fields and not cleared:
        raise InvalidArgument("nothing to change: pass at least one field besides id and expected_version")
    if both := cleared & set(fields):
        raise InvalidArgument(f"{', '.join(sorted(both))}: pass a value or list it in `clear`, not both")
    if personas is not None and len(set(personas)) != len(personas):
        raise InvalidArgument("personas lists a slug more than once; list each persona once")
    changes = CampaignChanges(name, objective, status, starts_at, ends_at, personas, metadata, cleared)
    async with tenant_call(ctx, read_only=False) as tx:
        updated = await campaigns.update(
            tx.conn, tenant_id=tx.tenant_id, campaign_id=campaign_id, expected_version=expected_version, changes=changes
        )
    return updated


async def campaign_resource(id: str, ctx: Context[AppState]) -> str:
    """A campaign as JSON."""
    return await read_by_id(
        ctx, id, "campaign", lambda conn, tenant_id, key: campaigns.get(conn, tenant_id=tenant_id, campaign_id=key)
    )


def register(server: MCPServer[AppState]) -> None:
    server.add_tool(create_campaign, title="Create campaign", annotations=CREATE)
    server.add_tool(get_campaign, title="Get campaign", annotations=READ)
    server.add_tool(list_campaigns, title="List campaigns", annotations=READ)
    server.add_tool(update_campaign, title="Update campaign", annotations=UPDATE)
    server.resource("campaign://{id}", name="campaign", title="Campaign", mime_type="application/json")(
        campaign_resource
    )
