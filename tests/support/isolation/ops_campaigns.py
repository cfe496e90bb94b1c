"""A tenant's own campaigns: create/get/list/update campaign and campaign://.

The predictions mirror the documented rules (docs/tools.md): status transitions and optimistic
versions; a campaign's view includes its task counts per status, from the model's tasks.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from tests.support.isolation.model import (
    CAMPAIGN_STATUSES,
    WORDS,
    Actor,
    CampaignState,
    PageCursor,
    TenantState,
    World,
    campaign_update_refusal,
)
from tests.support.isolation.scan import Answer
from tests.support.isolation.steps import (
    Picker,
    Step,
    Violation,
    check_view,
    data_of,
    fresh_id,
    refused,
    resource,
    same,
    tool,
)


def campaign_view(me: TenantState, c: CampaignState) -> dict[str, Any]:
    return {
        "name": c.name,
        "objective": c.objective,
        "status": c.status,
        "version": c.version,
        "personas": sorted(c.personas),
        "metadata": c.metadata,
        "task_counts": me.task_counts(c.id),
    }


def own_campaign(me: TenantState, pick: Picker) -> CampaignState | None:
    return pick.choice(me.campaigns_in_order()) if me.campaigns and pick.chance(90) else None


def create_campaign(world: World, actor: Actor, pick: Picker) -> Step:
    me = world.tenant_of(actor)
    name = f"{pick.choice(WORDS)} campaign {me.marker}"
    objective = pick.choice(["", f"ship the {pick.choice(WORDS)} {me.marker}"])
    status = pick.choice(["draft", "active"])
    personas = pick.subset(sorted(me.personas), 2)
    metadata = pick.choice([None, {"owner": me.marker}])
    return creating_campaign(world, actor, name, objective, status, personas, metadata)


def creating_campaign(
    world: World,
    actor: Actor,
    name: str,
    objective: str,
    status: str,
    personas: list[str],
    metadata: dict[str, Any] | None,
) -> Step:
    me = world.tenant_of(actor)

    def expect(answer: Answer) -> bool:
        found = data_of("create_campaign", answer)
        if found["id"] in world.all_ids():
            raise Violation("answer", f"create_campaign: the new campaign has the known id {found['id']}")
        c = CampaignState(UUID(found["id"]), name, objective, status, sorted(personas), metadata or {}, me.next_seq())
        me.campaigns[c.id] = c
        check_view("create_campaign", "campaign", found, campaign_view(me, c))
        return True

    request = tool(
        "create_campaign", name=name, objective=objective, status=status, personas=personas, metadata=metadata
    )
    return Step("create_campaign", actor, request, expect)


def get_campaign(world: World, actor: Actor, pick: Picker) -> Step:
    me = world.tenant_of(actor)
    c = own_campaign(me, pick)
    if c is None:
        unknown = fresh_id()
        step = tool("get_campaign", id=unknown)
        return Step("get_campaign", actor, step, lambda a: refused("get_campaign", a, "no campaign with id"))

    def expect(answer: Answer) -> bool:
        check_view("get_campaign", "campaign", data_of("get_campaign", answer), campaign_view(me, c))
        return False

    return Step("get_campaign", actor, tool("get_campaign", id=str(c.id)), expect)


def read_campaign(world: World, actor: Actor, pick: Picker) -> Step:
    me = world.tenant_of(actor)
    c = own_campaign(me, pick)
    if c is None:
        step = resource("campaign://{id}", fresh_id())
        return Step("campaign://", actor, step, lambda a: refused("campaign://", a, "no campaign with id"))

    def expect(answer: Answer) -> bool:
        check_view("campaign://", "campaign", data_of("campaign://", answer), campaign_view(me, c))
        return False

    return Step("campaign://", actor, resource("campaign://{id}", str(c.id)), expect)


def expect_campaign_page(op: str, me: TenantState, answer: Answer, expected: list[CampaignState]) -> list[Any]:
    page: list[dict[str, Any]] = data_of(op, answer)["campaigns"]
    same(op, "campaign ids", [p["id"] for p in page], [str(c.id) for c in expected])
    for item, c in zip(page, expected, strict=True):
        check_view(op, f"campaign {c.id}", item, {"name": c.name, "status": c.status, "version": c.version})
    return page


def list_campaigns(world: World, actor: Actor, pick: Picker) -> Step:
    return listing_campaigns(world, actor, pick.choice([None, None, *CAMPAIGN_STATUSES]), pick.choice([100, 100, 1, 2]))


def listing_campaigns(world: World, actor: Actor, status: str | None, limit: int) -> Step:
    me = world.tenant_of(actor)
    matching = [c for c in me.campaigns_in_order() if status is None or c.status == status]

    def expect(answer: Answer) -> bool:
        page = expect_campaign_page("list_campaigns", me, answer, matching[:limit])
        cursor = answer.data["next_cursor"]
        same("list_campaigns", "has next_cursor", cursor is not None, len(matching) > limit)
        if cursor is not None:
            after = (me.campaigns[UUID(page[-1]["id"])].seq,)
            me.cursors.append(PageCursor("list_campaigns", cursor, {"limit": limit, "status": status}, after))
        return False

    return Step("list_campaigns", actor, tool("list_campaigns", status=status, limit=limit), expect)


def update_campaign(world: World, actor: Actor, pick: Picker) -> Step:
    me = world.tenant_of(actor)
    c = own_campaign(me, pick)
    if c is None:
        step = tool("update_campaign", id=fresh_id(), expected_version=1, name="renamed")
        return Step("update_campaign", actor, step, lambda a: refused("update_campaign", a, "no campaign with id"))
    version = c.version if pick.chance(80) else pick.choice([v for v in (c.version - 1, c.version + 1) if v >= 1])
    status = pick.choice(CAMPAIGN_STATUSES) if pick.chance(60) else None
    name = f"{pick.choice(WORDS)} renamed {me.marker}" if pick.chance(30) else None
    personas = pick.subset(sorted(me.personas), 2) if pick.chance(20) else None
    metadata = {"owner": me.marker, "round": pick.integer(1, 9)} if pick.chance(15) else None
    if status is None and name is None and personas is None and metadata is None:
        name = f"plain renamed {me.marker}"
    refusal = campaign_update_refusal(c, version, status)

    def expect(answer: Answer) -> bool:
        if refusal is not None:
            return refused("update_campaign", answer, refusal)
        found = data_of("update_campaign", answer)
        c.version += 1
        c.status = status or c.status
        c.name = name or c.name
        c.personas = sorted(personas) if personas is not None else c.personas
        c.metadata = metadata if metadata is not None else c.metadata
        check_view("update_campaign", "campaign", found, campaign_view(me, c))
        return True

    request = tool(
        "update_campaign",
        id=str(c.id),
        expected_version=version,
        status=status,
        name=name,
        personas=personas,
        metadata=metadata,
    )
    return Step("update_campaign", actor, request, expect)
