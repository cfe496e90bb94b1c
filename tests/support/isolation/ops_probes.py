"""Probes: a caller of one tenant sends another tenant's identifiers to every tool, resource and prompt.

Each probe is sent twice: once with the other tenant's value (a persona slug, a memory, campaign
or task id, a marker, a cursor) and once, as its twin, with a value of the same shape that exists
nowhere. Once those values are masked the two answers must be identical: another tenant's object
reads exactly like no object. Neither call may change any row (the machine checks every tenant's
digests after the step).
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable
from typing import Any

from mindscape.models.campaign import CAMPAIGN_TRANSITIONS
from mindscape.models.task import TASK_TRANSITIONS
from tests.support.isolation.model import WORDS, Actor, TenantState, World, new_marker
from tests.support.isolation.scan import Answer, Request
from tests.support.isolation.steps import Picker, Step, Violation, fresh_id, prompt, resource, tool, unknown_slug

Build = Callable[[str], Request]


def _probe(op: str, actor: Actor, foreign: str, twin: str, build: Build, expect: Callable[[Answer], bool]) -> Step:
    return Step(f"probe {op}", actor, build(foreign), expect, build(twin), (foreign,), (twin,))


def fails(op: str) -> Callable[[Answer], bool]:
    def expect(answer: Answer) -> bool:
        if not answer.error:
            raise Violation("answer", f"probe {op}: another tenant's identifier was accepted: {answer.text[:500]}")
        return False

    return expect


def empty(op: str, key: str) -> Callable[[Answer], bool]:
    def expect(answer: Answer) -> bool:
        if answer.error or answer.data[key]:
            raise Violation("answer", f"probe {op}: expected no {key} at all, got: {answer.text[:500]}")
        return False

    return expect


def unchanged(answer: Answer) -> bool:
    return False  # only the twin comparison and the digests judge it


def victim(world: World, actor: Actor, pick: Picker) -> TenantState:
    return pick.choice(world.others(world.tenant_of(actor)))


def slug_of(v: TenantState, pick: Picker) -> tuple[str, str]:
    slug = pick.choice(v.unique_slugs())
    return slug, unknown_slug(slug, v.marker)


def memory_of(v: TenantState, pick: Picker) -> str:
    """Any memory id the victim ever had: a forgotten one must read like no memory too."""
    return pick.choice([str(m) for m in [*v.memories, *v.forgotten]])


def forged_cursor(cursor: str) -> str:
    """The same cursor made for filters no call ever had: refused like the victim's must be."""
    raw: dict[str, Any] = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    raw["f"] = secrets.token_hex(8)
    return base64.urlsafe_b64encode(json.dumps(raw, separators=(",", ":")).encode()).decode().rstrip("=")


# --- personas -------------------------------------------------------------------------------------


def probe_get_persona(world: World, actor: Actor, pick: Picker) -> Step:
    slug, twin = slug_of(victim(world, actor, pick), pick)
    return _probe("get_persona", actor, slug, twin, lambda s: tool("get_persona", slug=s), fails("get_persona"))


def probe_read_persona(world: World, actor: Actor, pick: Picker) -> Step:
    slug, twin = slug_of(victim(world, actor, pick), pick)
    return _probe("persona://", actor, slug, twin, lambda s: resource("persona://{slug}", s), fails("persona://"))


def probe_persona_prompt(world: World, actor: Actor, pick: Picker) -> Step:
    slug, twin = slug_of(victim(world, actor, pick), pick)
    task = pick.choice([None, f"plan the {pick.choice(WORDS)}"])
    count = pick.choice([None, "5"])
    build: Build = lambda s: prompt("persona", slug=s, task=task, recall=count)  # noqa: E731
    return _probe("persona prompt", actor, slug, twin, build, fails("persona prompt"))


def probe_list_personas(world: World, actor: Actor, pick: Picker) -> Step:
    v = victim(world, actor, pick)
    variant = pick.choice(["tag", "trait", "query", "cursor"])
    if variant == "cursor":
        cursor = pick.choice([c for c in v.cursors if c.tool == "list_personas"])
        build: Build = lambda c: tool("list_personas", limit=cursor.filters["limit"], cursor=c)  # noqa: E731
        return _probe("list_personas cursor", actor, cursor.value, forged_cursor(cursor.value), build, fails("cursor"))
    twin = new_marker()
    if variant == "tag":
        build = lambda m: tool("list_personas", tags=[m])  # noqa: E731
        return _probe("list_personas tag", actor, v.marker, twin, build, empty("list_personas", "personas"))
    if variant == "trait":
        build = lambda m: tool("list_personas", trait={"path": "communication.tone", "equals": f"tone-{m}"})  # noqa: E731
        return _probe("list_personas trait", actor, v.marker, twin, build, empty("list_personas", "personas"))
    build = lambda m: tool("list_personas", query=m)  # noqa: E731
    return _probe("list_personas query", actor, v.marker, twin, build, unchanged)


# --- memory ---------------------------------------------------------------------------------------


def probe_remember(world: World, actor: Actor, pick: Picker) -> Step:
    me = world.tenant_of(actor)
    slug, twin = slug_of(victim(world, actor, pick), pick)
    content = f"{pick.choice(WORDS)} for a stranger {me.marker}"
    build: Build = lambda s: tool("remember", content=content, persona=s)  # noqa: E731
    return _probe("remember persona", actor, slug, twin, build, fails("remember"))


def probe_recall(world: World, actor: Actor, pick: Picker) -> Step:
    v = victim(world, actor, pick)
    variant = pick.choice(["persona", "marker", "metadata"])
    mode = pick.choice(["hybrid", "semantic", "keyword"])
    if variant == "persona":
        slug, twin = slug_of(v, pick)
        words = " ".join(pick.subset(WORDS, 2)) or "launch"
        build: Build = lambda s: tool("recall", query=words, persona=s, mode=mode)  # noqa: E731
        return _probe("recall persona", actor, slug, twin, build, fails("recall"))
    twin = new_marker()
    if variant == "marker":
        build = lambda m: tool("recall", query=m, mode="keyword", k=100)  # noqa: E731
        return _probe("recall marker", actor, v.marker, twin, build, empty("recall", "memories"))
    query = pick.choice(WORDS)
    build = lambda m: tool("recall", query=query, metadata={"owner": m}, mode=mode, k=100)  # noqa: E731
    return _probe("recall metadata", actor, v.marker, twin, build, empty("recall", "memories"))


def probe_forget(world: World, actor: Actor, pick: Picker) -> Step:
    target = memory_of(victim(world, actor, pick), pick)
    return _probe("forget", actor, target, fresh_id(), lambda i: tool("forget", id=i), fails("forget"))


def probe_update_memory(world: World, actor: Actor, pick: Picker) -> Step:
    target = memory_of(victim(world, actor, pick), pick)
    build: Build = lambda i: tool("update_memory", id=i, expected_version=1, importance=0.5)  # noqa: E731
    return _probe("update_memory", actor, target, fresh_id(), build, fails("update_memory"))


def probe_list_memories(world: World, actor: Actor, pick: Picker) -> Step:
    v = victim(world, actor, pick)
    if pick.chance(50):
        slug, twin = slug_of(v, pick)
        build: Build = lambda s: tool("list_memories", persona=s)  # noqa: E731
        return _probe("list_memories persona", actor, slug, twin, build, fails("list_memories"))
    build = lambda m: tool("list_memories", metadata={"owner": m})  # noqa: E731
    return _probe("list_memories metadata", actor, v.marker, new_marker(), build, empty("list_memories", "memories"))


def probe_read_memory(world: World, actor: Actor, pick: Picker) -> Step:
    target = memory_of(victim(world, actor, pick), pick)
    build: Build = lambda i: resource("memory://{id}", i)  # noqa: E731
    return _probe("memory://", actor, target, fresh_id(), build, fails("memory://"))


# --- campaigns ------------------------------------------------------------------------------------


def probe_create_campaign(world: World, actor: Actor, pick: Picker) -> Step:
    me = world.tenant_of(actor)
    slug, twin = slug_of(victim(world, actor, pick), pick)
    name = f"{pick.choice(WORDS)} campaign {me.marker}"
    build: Build = lambda s: tool("create_campaign", name=name, personas=[s])  # noqa: E731
    return _probe("create_campaign persona", actor, slug, twin, build, fails("create_campaign"))


def probe_get_campaign(world: World, actor: Actor, pick: Picker) -> Step:
    v = victim(world, actor, pick)
    target = str(pick.choice(v.campaigns_in_order()).id)
    return _probe(
        "get_campaign", actor, target, fresh_id(), lambda i: tool("get_campaign", id=i), fails("get_campaign")
    )


def probe_read_campaign(world: World, actor: Actor, pick: Picker) -> Step:
    v = victim(world, actor, pick)
    target = str(pick.choice(v.campaigns_in_order()).id)
    build: Build = lambda i: resource("campaign://{id}", i)  # noqa: E731
    return _probe("campaign://", actor, target, fresh_id(), build, fails("campaign://"))


def probe_update_campaign(world: World, actor: Actor, pick: Picker) -> Step:
    """With the victim's current version and a move it allows: only isolation stands in the way."""
    c = pick.choice(victim(world, actor, pick).campaigns_in_order())
    allowed = list(CAMPAIGN_TRANSITIONS[c.status])
    changes: dict[str, Any] = {"status": pick.choice(allowed)} if allowed else {"name": "taken over"}
    build: Build = lambda i: tool("update_campaign", id=i, expected_version=c.version, **changes)  # noqa: E731
    return _probe("update_campaign", actor, str(c.id), fresh_id(), build, fails("update_campaign"))


def probe_list_campaigns(world: World, actor: Actor, pick: Picker) -> Step:
    cursor = pick.choice([c for c in victim(world, actor, pick).cursors if c.tool == "list_campaigns"])
    f = cursor.filters
    build: Build = lambda c: tool("list_campaigns", limit=f["limit"], status=f.get("status"), cursor=c)  # noqa: E731
    return _probe("list_campaigns cursor", actor, cursor.value, forged_cursor(cursor.value), build, fails("cursor"))


# --- tasks ----------------------------------------------------------------------------------------


def probe_create_task(world: World, actor: Actor, pick: Picker) -> Step:
    me, v = world.tenant_of(actor), victim(world, actor, pick)
    title = f"{pick.choice(WORDS)} task {me.marker}"
    variant = pick.choice(["campaign", "parent", "persona"])
    if variant == "persona":
        slug, twin = slug_of(v, pick)
        build: Build = lambda s: tool("create_task", title=title, persona=s)  # noqa: E731
        return _probe("create_task persona", actor, slug, twin, build, fails("create_task"))
    if variant == "campaign":
        target = str(pick.choice(v.campaigns_in_order()).id)
        build = lambda i: tool("create_task", title=title, campaign=i)  # noqa: E731
    else:
        target = str(pick.choice(v.tasks_in_order()).id)
        build = lambda i: tool("create_task", title=title, parent=i)  # noqa: E731
    return _probe(f"create_task {variant}", actor, target, fresh_id(), build, fails("create_task"))


def probe_get_task(world: World, actor: Actor, pick: Picker) -> Step:
    target = str(pick.choice(victim(world, actor, pick).tasks_in_order()).id)
    return _probe("get_task", actor, target, fresh_id(), lambda i: tool("get_task", id=i), fails("get_task"))


def probe_read_task(world: World, actor: Actor, pick: Picker) -> Step:
    target = str(pick.choice(victim(world, actor, pick).tasks_in_order()).id)
    build: Build = lambda i: resource("task://{id}", i)  # noqa: E731
    return _probe("task://", actor, target, fresh_id(), build, fails("task://"))


def probe_update_task(world: World, actor: Actor, pick: Picker) -> Step:
    """With the victim's current version and a move it allows: only isolation stands in the way."""
    t = pick.choice(victim(world, actor, pick).tasks_in_order())
    allowed = list(TASK_TRANSITIONS[t.status])
    changes: dict[str, Any] = {"status": pick.choice(allowed)} if allowed else {"title": "taken over"}
    if pick.chance(30):
        changes["result"] = {"note": "taken over"}
    build: Build = lambda i: tool("update_task", id=i, expected_version=t.version, **changes)  # noqa: E731
    return _probe("update_task", actor, str(t.id), fresh_id(), build, fails("update_task"))


def probe_list_tasks(world: World, actor: Actor, pick: Picker) -> Step:
    v = victim(world, actor, pick)
    variant = pick.choice(["campaign", "parent", "persona", "cursor"])
    if variant == "cursor":
        cursor = pick.choice([c for c in v.cursors if c.tool == "list_tasks"])
        f = cursor.filters
        build: Build = lambda c: tool("list_tasks", limit=f["limit"], status=f.get("status"), cursor=c)  # noqa: E731
        return _probe("list_tasks cursor", actor, cursor.value, forged_cursor(cursor.value), build, fails("cursor"))
    if variant == "persona":
        slug, twin = slug_of(v, pick)
        return _probe("list_tasks persona", actor, slug, twin, lambda s: tool("list_tasks", persona=s), fails("list"))
    if variant == "campaign":
        target = str(pick.choice(v.campaigns_in_order()).id)
        return _probe(
            "list_tasks campaign", actor, target, fresh_id(), lambda i: tool("list_tasks", campaign=i), fails("list")
        )
    target = str(pick.choice(v.tasks_in_order()).id)
    build = lambda i: tool("list_tasks", parent=i)  # noqa: E731
    return _probe("list_tasks parent", actor, target, fresh_id(), build, empty("list_tasks", "tasks"))


def probe_claim_next_task(world: World, actor: Actor, pick: Picker) -> Step:
    v = victim(world, actor, pick)
    if pick.chance(50):
        slug, twin = slug_of(v, pick)
        build: Build = lambda s: tool("claim_next_task", persona=s)  # noqa: E731
        return _probe("claim_next_task persona", actor, slug, twin, build, fails("claim_next_task"))
    active = [c for c in v.campaigns_in_order() if c.status == "active"] or v.campaigns_in_order()
    target = str(pick.choice(active).id)
    build = lambda i: tool("claim_next_task", campaign=i)  # noqa: E731
    return _probe("claim_next_task campaign", actor, target, fresh_id(), build, fails("claim_next_task"))
