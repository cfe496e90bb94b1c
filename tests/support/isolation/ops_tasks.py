"""A tenant's own tasks: create/get/list/update task, claim_next_task and task://.

The predictions mirror the documented rules (docs/tools.md): status transitions, optimistic
versions, idempotency keys (shared across tenants on purpose), subtasks in their parent's
campaign, and claims in queue order from active campaigns only.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from tests.support.isolation.model import (
    OPEN_CAMPAIGN,
    SHARED_KEYS,
    TASK_STATUSES,
    WORDS,
    Actor,
    CampaignState,
    PageCursor,
    TaskState,
    TenantState,
    World,
    task_update_refusal,
)
from tests.support.isolation.ops_campaigns import own_campaign
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


def task_view(t: TaskState) -> dict[str, Any]:
    return {
        "title": t.title,
        "status": t.status,
        "priority": t.priority,
        "campaign_id": None if t.campaign_id is None else str(t.campaign_id),
        "persona": t.persona,
        "parent_id": None if t.parent_id is None else str(t.parent_id),
        "version": t.version,
        "attempts": t.attempts,
        "claimed_by": t.claimed_by,
    }


def full_task_view(t: TaskState) -> dict[str, Any]:
    return {**task_view(t), "idempotency_key": t.idempotency_key, "result": t.result}


def own_task(me: TenantState, pick: Picker) -> TaskState | None:
    return pick.choice(me.tasks_in_order()) if me.tasks and pick.chance(90) else None


def create_task(world: World, actor: Actor, pick: Picker) -> Step:
    me = world.tenant_of(actor)
    return creating_task(
        world,
        actor,
        title=f"{pick.choice(WORDS)} task {me.marker}",
        priority=pick.integer(0, 4),
        campaign=own_campaign(me, pick) if pick.chance(40) else None,
        parent=own_task(me, pick) if pick.chance(25) else None,
        persona=pick.choice(sorted(me.personas)) if pick.chance(30) else None,
        key=pick.choice([None, None, None, *SHARED_KEYS, f"key-{me.marker}"]),
    )


def creating_task(
    world: World,
    actor: Actor,
    *,
    title: str,
    priority: int,
    campaign: CampaignState | None,
    parent: TaskState | None,
    persona: str | None,
    key: str | None,
) -> Step:
    me = world.tenant_of(actor)
    existing = me.task_by_key(key) if key else None
    effective = campaign.id if campaign else None
    refusal = None
    if existing is None and parent is not None:
        if campaign is None:
            effective = parent.campaign_id
        elif parent.campaign_id != campaign.id:
            refusal = "a subtask belongs to its parent's campaign"
    closed = effective is not None and me.campaigns[effective].status not in OPEN_CAMPAIGN
    if existing is None and refusal is None and closed:
        refusal = "tasks can be added only to draft, active or paused campaigns"

    def expect(answer: Answer) -> bool:
        if refusal is not None:
            return refused("create_task", answer, refusal)
        found = data_of("create_task", answer)
        same("create_task", "duplicate", found["duplicate"], existing is not None)
        if existing is not None:
            same("create_task", "id of the original", found["id"], str(existing.id))
            check_view("create_task", "original task", found, full_task_view(existing))
            return True  # the retry is audited
        if found["id"] in world.all_ids():
            raise Violation("answer", f"create_task: the new task has the known id {found['id']}")
        t = TaskState(
            UUID(found["id"]),
            title,
            "pending",
            priority,
            effective,
            persona,
            parent.id if parent else None,
            key,
            me.next_seq(),
        )
        me.tasks[t.id] = t
        check_view("create_task", "task", found, full_task_view(t))
        return True

    request = tool(
        "create_task",
        title=title,
        priority=priority,
        campaign=str(campaign.id) if campaign else None,
        parent=str(parent.id) if parent else None,
        persona=persona,
        idempotency_key=key,
    )
    return Step("create_task", actor, request, expect)


def get_task(world: World, actor: Actor, pick: Picker) -> Step:
    me = world.tenant_of(actor)
    t = own_task(me, pick)
    if t is None:
        step = tool("get_task", id=fresh_id())
        return Step("get_task", actor, step, lambda a: refused("get_task", a, "no task with id"))

    def expect(answer: Answer) -> bool:
        check_view("get_task", "task", data_of("get_task", answer), full_task_view(t))
        return False

    return Step("get_task", actor, tool("get_task", id=str(t.id)), expect)


def read_task(world: World, actor: Actor, pick: Picker) -> Step:
    me = world.tenant_of(actor)
    t = own_task(me, pick)
    if t is None:
        step = resource("task://{id}", fresh_id())
        return Step("task://", actor, step, lambda a: refused("task://", a, "no task with id"))

    def expect(answer: Answer) -> bool:
        check_view("task://", "task", data_of("task://", answer), full_task_view(t))
        return False

    return Step("task://", actor, resource("task://{id}", str(t.id)), expect)


def expect_task_page(op: str, answer: Answer, expected: list[TaskState]) -> list[Any]:
    page: list[dict[str, Any]] = data_of(op, answer)["tasks"]
    same(op, "task ids", [p["id"] for p in page], [str(t.id) for t in expected])
    for item, t in zip(page, expected, strict=True):
        check_view(op, f"task {t.id}", item, task_view(t))
    return page


def list_tasks(world: World, actor: Actor, pick: Picker) -> Step:
    me = world.tenant_of(actor)
    limit = pick.choice([100, 100, 1, 2])
    which = pick.choice(["none", "status", "campaign", "persona", "parent"])
    if which == "status":
        return listing_tasks(world, actor, limit, status=pick.choice(TASK_STATUSES))
    if limit < 100 or which == "none":  # pages are followed with the status filter only
        return listing_tasks(world, actor, limit)
    if which == "campaign" and me.campaigns:
        return listing_tasks(world, actor, limit, campaign=pick.choice(me.campaigns_in_order()))
    if which == "parent" and me.tasks:
        return listing_tasks(world, actor, limit, parent=pick.choice(me.tasks_in_order()))
    return listing_tasks(world, actor, limit, persona=pick.choice(sorted(me.personas)))


def listing_tasks(
    world: World,
    actor: Actor,
    limit: int,
    *,
    status: str | None = None,
    campaign: CampaignState | None = None,
    parent: TaskState | None = None,
    persona: str | None = None,
) -> Step:
    me = world.tenant_of(actor)
    wanted = [
        t
        for t in me.tasks_in_order()
        if status in (None, t.status)
        and (campaign is None or t.campaign_id == campaign.id)
        and (parent is None or t.parent_id == parent.id)
        and persona in (None, t.persona)
    ]

    def expect(answer: Answer) -> bool:
        page = expect_task_page("list_tasks", answer, wanted[:limit])
        cursor = answer.data["next_cursor"]
        same("list_tasks", "has next_cursor", cursor is not None, len(wanted) > limit)
        if cursor is not None and campaign is None and parent is None and persona is None:
            last = me.tasks[UUID(page[-1]["id"])]
            me.cursors.append(
                PageCursor("list_tasks", cursor, {"limit": limit, "status": status}, (last.priority, last.seq))
            )
        return False

    request = tool(
        "list_tasks",
        limit=limit,
        status=status,
        campaign=str(campaign.id) if campaign else None,
        parent=str(parent.id) if parent else None,
        persona=persona,
    )
    return Step("list_tasks", actor, request, expect)


def update_task(world: World, actor: Actor, pick: Picker) -> Step:
    me = world.tenant_of(actor)
    t = own_task(me, pick)
    if t is None:
        step = tool("update_task", id=fresh_id(), expected_version=1, title="renamed")
        return Step("update_task", actor, step, lambda a: refused("update_task", a, "no task with id"))
    version = t.version if pick.chance(80) else pick.choice([v for v in (t.version - 1, t.version + 1) if v >= 1])
    status = pick.choice(TASK_STATUSES) if pick.chance(60) else None
    title = f"{pick.choice(WORDS)} retitled {me.marker}" if pick.chance(20) else None
    result = {"note": f"{pick.choice(WORDS)} {me.marker}"} if pick.chance(25) else None
    priority = pick.integer(0, 4) if pick.chance(20) else None
    lease = pick.choice([600, 3600]) if pick.chance(15) else None
    persona = pick.choice(sorted(me.personas)) if pick.chance(10) else None
    if all(v is None for v in (status, title, result, priority, lease, persona)):
        title = f"plain retitled {me.marker}"
    refusal = task_update_refusal(t, version, status, lease, actor.principal)

    def expect(answer: Answer) -> bool:
        if refusal is not None:
            return refused("update_task", answer, refusal)
        found = data_of("update_task", answer)
        target = status or t.status
        if target == "in_progress" and t.status != "in_progress":
            t.claimed_by = actor.principal
            t.attempts += 1 if t.status == "pending" else 0
        t.status, t.version = target, t.version + 1
        t.title = title or t.title
        t.result = result if result is not None else t.result
        t.priority = priority if priority is not None else t.priority
        t.persona = persona or t.persona
        check_view("update_task", "task", found, full_task_view(t))
        return True

    request = tool(
        "update_task",
        id=str(t.id),
        expected_version=version,
        status=status,
        title=title,
        result=result,
        priority=priority,
        lease_seconds=lease,
        persona=persona,
    )
    return Step("update_task", actor, request, expect)


def claim_next_task(world: World, actor: Actor, pick: Picker) -> Step:
    me = world.tenant_of(actor)
    campaign = own_campaign(me, pick) if pick.chance(40) else None
    persona = pick.choice(sorted(me.personas)) if pick.chance(30) else None
    lease = pick.choice([300, 3600])
    request = tool(
        "claim_next_task", campaign=str(campaign.id) if campaign else None, persona=persona, lease_seconds=lease
    )
    if campaign is not None and campaign.status != "active":
        return Step(
            "claim_next_task",
            actor,
            request,
            lambda a: refused("claim_next_task", a, f"is {campaign.status}; its tasks are handed out only while"),
        )
    next_task = me.claimable(campaign.id if campaign else None, persona)

    def expect(answer: Answer) -> bool:
        found = data_of("claim_next_task", answer)["task"]
        if next_task is None:
            same("claim_next_task", "claimed task", found, None)
            return False
        if found is None:
            raise Violation("answer", f"claim_next_task: nothing claimed, the model expects {next_task.id}")
        same("claim_next_task", "claimed id", found["id"], str(next_task.id))
        next_task.status, next_task.claimed_by = "in_progress", actor.principal
        next_task.attempts, next_task.version = next_task.attempts + 1, next_task.version + 1
        check_view("claim_next_task", "claimed task", found, full_task_view(next_task))
        return True

    return Step("claim_next_task", actor, request, expect)
