"""A tenant's own persona operations: list_personas, get_persona, persona:// and the persona prompt.

Personas are written by the operator's import (sessions.seed_tenants), never by tools, so these
checks only read the model.
"""

from __future__ import annotations

import re
from typing import Any

from tests.support.isolation.model import WORDS, Actor, PageCursor, TenantState, World
from tests.support.isolation.scan import Answer
from tests.support.isolation.steps import Picker, Step, Violation, data_of, prompt, refused, resource, same, tool

MEMORY_ID = re.compile(r'<memory id="([0-9a-f-]{36})"')


def persona_rows(me: TenantState, slugs: list[str]) -> list[dict[str, Any]]:
    return [{"slug": s, "name": me.personas[s].name} for s in slugs]


def check_personas(op: str, me: TenantState, answer: Answer, expected: list[str] | None) -> list[dict[str, Any]]:
    """The page's personas are the tenant's own; `expected`: exactly these slugs, in this order."""
    page: list[dict[str, Any]] = data_of(op, answer)["personas"]
    for item in page:
        own = me.personas.get(item["slug"])
        if own is None or own.name != item["name"] or list(own.tags) != item["tags"]:
            raise Violation("answer", f"{op}: persona {item} is not one of the tenant's")
    if expected is not None:
        same(op, "slugs", [p["slug"] for p in page], expected)
    return page


def list_personas(world: World, actor: Actor, pick: Picker) -> Step:
    me = world.tenant_of(actor)
    slugs = sorted(me.personas)
    variant = pick.choice(["all", "tag", "trait", "query", "page"])
    if variant == "page":
        return persona_page(world, actor, pick.integer(1, 2))
    args: dict[str, Any] = {"limit": 100}
    expected: list[str] | None = slugs
    if variant == "tag":
        tag = pick.choice(["team", me.marker])
        args["tags"] = [tag]
        expected = [s for s in slugs if tag in me.personas[s].tags]
    elif variant == "trait":
        tone = pick.choice(["warm", f"tone-{me.marker}"])
        args["trait"] = {"path": "communication.tone", "equals": tone}
        expected = [s for s in slugs if me.personas[s].tone == tone]
    elif variant == "query":
        args["query"] = pick.choice([me.marker, "Ada", "Basil", *(me.personas[s].name.split()[0] for s in slugs)])
        expected = None  # ranked matches: only their ownership is checked

    def expect(answer: Answer) -> bool:
        page = check_personas("list_personas", me, answer, expected)
        if answer.data["next_cursor"] is not None:
            raise Violation("answer", f"list_personas: a next_cursor after all {len(page)} personas")
        return False

    return Step("list_personas", actor, tool("list_personas", **args), expect)


def persona_page(world: World, actor: Actor, limit: int) -> Step:
    """The first `limit` personas by slug, and a cursor for the rest."""
    me = world.tenant_of(actor)
    slugs = sorted(me.personas)

    def expect(answer: Answer) -> bool:
        page = check_personas("list_personas", me, answer, slugs[:limit])
        cursor = answer.data["next_cursor"]
        same("list_personas", "has next_cursor", cursor is not None, len(slugs) > limit)
        if cursor is not None:
            me.cursors.append(PageCursor("list_personas", cursor, {"limit": limit}, (page[-1]["slug"],)))
        return False

    return Step("list_personas", actor, tool("list_personas", limit=limit), expect)


def get_persona(world: World, actor: Actor, pick: Picker) -> Step:
    me = world.tenant_of(actor)
    if pick.chance(15):
        slug = f"nobody-{pick.choice(WORDS)}"
        return Step("get_persona", actor, tool("get_persona", slug=slug), lambda a: refused("get_persona", a, slug))
    slug = pick.choice(sorted(me.personas))

    def expect(answer: Answer) -> bool:
        found = data_of("get_persona", answer)
        same("get_persona", "persona", (found["slug"], found["name"]), (slug, me.personas[slug].name))
        same("get_persona", "tone", found["traits"]["communication"]["tone"], me.personas[slug].tone)
        return False

    return Step("get_persona", actor, tool("get_persona", slug=slug), expect)


def read_persona(world: World, actor: Actor, pick: Picker) -> Step:
    me = world.tenant_of(actor)
    slug = pick.choice(sorted(me.personas))

    def expect(answer: Answer) -> bool:
        found = data_of("persona://", answer)
        same("persona://", "persona", (found["slug"], found["name"]), (slug, me.personas[slug].name))
        return False

    return Step("persona://", actor, resource("persona://{slug}", slug), expect)


def persona_prompt(world: World, actor: Actor, pick: Picker) -> Step:
    me = world.tenant_of(actor)
    slug = pick.choice(sorted(me.personas))
    task = pick.choice([None, f"plan the {pick.choice(WORDS)}", me.marker])
    count = pick.choice([None, "0", "3", "20"])

    def expect(answer: Answer) -> bool:
        if answer.error:
            raise Violation("answer", f"persona prompt: {answer.text[:500]}")
        if me.personas[slug].name not in answer.text:
            raise Violation("answer", f"persona prompt for {slug} lacks the persona's name: {answer.text[:300]}")
        mine = {str(m.id) for m in me.visible_memories(actor) if m.persona == slug}
        shown = set(MEMORY_ID.findall(answer.text))
        if not shown <= mine:
            raise Violation("answer", f"persona prompt shows memories {shown - mine}, not {slug}'s")
        if task is None and count not in (None, "0"):  # the most recent ones: all of them, up to the count
            same("persona prompt", "memories shown", len(shown), min(len(mine), int(count)))
        return False

    return Step("persona prompt", actor, prompt("persona", slug=slug, task=task, recall=count), expect)
