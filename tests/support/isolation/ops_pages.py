"""Following a next_cursor the tenant was handed earlier: the next page holds exactly what comes after."""

from __future__ import annotations

from tests.support.isolation.model import Actor, PageCursor, World
from tests.support.isolation.ops_campaigns import expect_campaign_page
from tests.support.isolation.ops_personas import check_personas
from tests.support.isolation.ops_tasks import expect_task_page, list_tasks
from tests.support.isolation.scan import Answer
from tests.support.isolation.steps import Picker, Step, same, tool

KEEP = 12  # the latest cursors are the ones followed (the seeded ones stay for probes)


def next_page(world: World, actor: Actor, pick: Picker) -> Step:
    me = world.tenant_of(actor)
    if not me.cursors:
        return list_tasks(world, actor, pick)
    cursor = pick.choice(me.cursors[-KEEP:])
    limit: int = cursor.filters["limit"]
    status: str | None = cursor.filters.get("status")
    op = f"{cursor.tool} next page"

    if cursor.tool == "list_personas":
        rest = [s for s in sorted(me.personas) if s > cursor.after[0]]

        def expect(answer: Answer) -> bool:
            page = check_personas(op, me, answer, rest[:limit])
            _follow(op, answer, me.cursors, cursor, len(rest) > limit, (page[-1]["slug"],) if page else ())
            return False

        return Step(op, actor, tool("list_personas", limit=limit, cursor=cursor.value), expect)

    if cursor.tool == "list_campaigns":
        later = [c for c in me.campaigns_in_order() if c.seq < cursor.after[0] and status in (None, c.status)]

        def expect_campaigns(answer: Answer) -> bool:
            expect_campaign_page(op, me, answer, later[:limit])
            _follow(
                op, answer, me.cursors, cursor, len(later) > limit, (later[limit - 1].seq,) if later[limit:] else ()
            )
            return False

        request = tool("list_campaigns", limit=limit, status=status, cursor=cursor.value)
        return Step(op, actor, request, expect_campaigns)

    behind = [t for t in me.tasks_in_order() if (t.priority, t.seq) > cursor.after and status in (None, t.status)]

    def expect_tasks(answer: Answer) -> bool:
        expect_task_page(op, answer, behind[:limit])
        last = behind[limit - 1] if behind[limit:] else None
        _follow(op, answer, me.cursors, cursor, last is not None, (last.priority, last.seq) if last else ())
        return False

    return Step(op, actor, tool("list_tasks", limit=limit, status=status, cursor=cursor.value), expect_tasks)


def _follow(
    op: str, answer: Answer, cursors: list[PageCursor], cursor: PageCursor, more: bool, after: tuple[object, ...]
) -> None:
    """The page's own next_cursor: present exactly when more rows follow; remembered for later."""
    following = answer.data["next_cursor"]
    same(op, "has next_cursor", following is not None, more)
    if following is not None:
        cursors.append(PageCursor(cursor.tool, following, cursor.filters, after))
