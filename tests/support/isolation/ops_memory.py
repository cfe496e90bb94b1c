"""A tenant's own memory operations: remember (new and again), recall in every mode, list_memories,
update_memory, forget, memory://."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from tests.support.isolation.model import KINDS, SHARED_PHRASES, WORDS, Actor, MemoryState, TenantState, World
from tests.support.isolation.scan import Answer
from tests.support.isolation.steps import (
    Picker,
    Step,
    Violation,
    data_of,
    fresh_id,
    refused,
    resource,
    same,
    tool,
)


def memory_fields(memory: MemoryState) -> tuple[Any, ...]:
    return (memory.content, memory.kind, memory.persona, memory.metadata)


def check_memory(op: str, me: TenantState, actor: Actor, item: dict[str, Any]) -> MemoryState:
    """`item` (from recall or memory://) is one of the memories `actor` may see, as the model holds it."""
    visible = {str(m.id): m for m in me.visible_memories(actor)}
    memory = visible.get(item["id"])
    if memory is None:
        raise Violation("answer", f"{op}: memory {item['id']} is not one the caller may see")
    same(
        op,
        f"memory {item['id']}",
        (item["content"], item["kind"], item["persona"], item["metadata"]),
        memory_fields(memory),
    )
    return memory


def remembering(
    world: World,
    actor: Actor,
    content: str,
    persona: str | None,
    kind: str = "note",
    metadata: dict[str, Any] | None = None,
) -> Step:
    me = world.tenant_of(actor)
    existing = me.memory_with(persona, content)

    def expect(answer: Answer) -> bool:
        found = data_of("remember", answer)
        same("remember", "duplicate", found["duplicate"], existing is not None)
        same("remember", "embedding", found["embedding"], "ready")
        if existing is not None:
            same("remember", "id of the duplicate", found["id"], str(existing.id))
            return True  # a duplicate renews the memory's expiry
        if found["id"] in world.all_ids():
            raise Violation("answer", f"remember: the new memory has the known id {found['id']}")
        memory_id = UUID(found["id"])
        me.memories[memory_id] = MemoryState(memory_id, content, persona, kind, metadata or {}, actor.principal)
        return True

    request = tool("remember", content=content, persona=persona, kind=kind, metadata=metadata)
    op = "remember again" if existing is not None else "remember"
    return Step(op, actor, request, expect)


def _remember(me: TenantState, world: World, actor: Actor, content: str, persona: str | None, pick: Picker) -> Step:
    kind = pick.choice(KINDS)
    metadata = pick.choice([None, {"topic": pick.choice(WORDS)}, {"owner": me.marker}])
    return remembering(world, actor, content, persona, kind, metadata)


def remember(world: World, actor: Actor, pick: Picker) -> Step:
    me = world.tenant_of(actor)
    if pick.chance(20):
        content = pick.choice(SHARED_PHRASES)  # also written by other tenants: it must not meet theirs
    else:
        content = f"{' '.join(pick.subset(WORDS, 3)) or 'plain'} note {me.marker}"
    persona = pick.choice([None, *sorted(me.personas)])
    return _remember(me, world, actor, content, persona, pick)


def remember_again(world: World, actor: Actor, pick: Picker) -> Step:
    me = world.tenant_of(actor)
    if not me.memories:
        return remember(world, actor, pick)
    again = pick.choice(list(me.memories.values()))
    return _remember(me, world, actor, again.content, again.persona, pick)


def recall(world: World, actor: Actor, pick: Picker) -> Step:
    """Every mode; in keyword mode the model knows exactly which memories match (any query word, as
    a whole word of the content), so the answer must hold min(k, that many) of them and no other."""
    me = world.tenant_of(actor)
    args: dict[str, Any] = {"persona": pick.choice([None, None, *sorted(me.personas)])}
    if pick.chance(30):
        args |= {"query": me.marker, "mode": "keyword", "k": 100}
        words = {me.marker}
    else:
        words = set(pick.subset(WORDS, 2))
        args["query"] = " ".join(sorted(words)) if words else pick.choice(SHARED_PHRASES)
        args |= {"mode": pick.choice(["hybrid", "semantic", "keyword"]), "k": pick.integer(1, 20)}
        if pick.chance(30):
            args["kinds"] = pick.subset(KINDS, 2) or ["note"]
        if pick.chance(20):
            args["metadata"] = {"owner": me.marker}
    allowed = {
        str(m.id): m
        for m in me.visible_memories(actor)
        if args["persona"] in (None, m.persona)
        and m.kind in args.get("kinds", KINDS)
        and ("metadata" not in args or m.metadata.get("owner") == me.marker)
    }
    matching = {i for i, m in allowed.items() if words & set(m.content.split())}

    def expect(answer: Answer) -> bool:
        found = data_of("recall", answer)
        same("recall", "mode", found["mode"], args["mode"])
        ids = [item["id"] for item in found["memories"]]
        for item in found["memories"]:
            check_memory("recall", me, actor, item)
        if not set(ids) <= set(allowed):
            raise Violation("answer", f"recall {args}: {set(ids) - set(allowed)} do not pass the filters")
        if args["mode"] == "keyword" and words:
            if not set(ids) <= matching:
                raise Violation("answer", f"recall {args}: {set(ids) - matching} contain none of the words")
            same("recall", f"how many of {len(matching)} matches for {args}", len(ids), min(args["k"], len(matching)))
        return False

    return Step(f"recall {args['mode']}", actor, tool("recall", **args), expect)


def forget(world: World, actor: Actor, pick: Picker) -> Step:
    me = world.tenant_of(actor)
    live = [str(m) for m in me.memories]
    gone = [str(m) for m in me.forgotten]
    target = pick.choice(live) if live and pick.chance(75) else pick.choice(gone or [fresh_id()])
    if target not in live:
        return Step("forget", actor, tool("forget", id=target), lambda a: refused("forget", a, "no memory with id"))

    def expect(answer: Answer) -> bool:
        same("forget", "answer", data_of("forget", answer), {"id": target, "forgotten": True, "versions": 1})
        del me.memories[UUID(target)]
        me.forgotten.append(UUID(target))
        return True

    return Step("forget", actor, tool("forget", id=target), expect)


def read_memory(world: World, actor: Actor, pick: Picker) -> Step:
    me = world.tenant_of(actor)
    live = [str(m) for m in me.memories]
    target = (
        pick.choice(live) if live and pick.chance(80) else pick.choice([str(m) for m in me.forgotten] or [fresh_id()])
    )
    if target not in live:
        step = resource("memory://{id}", target)
        return Step("memory://", actor, step, lambda a: refused("memory://", a, "no memory with id"))

    def expect(answer: Answer) -> bool:
        check_memory("memory://", me, actor, data_of("memory://", answer))
        return False

    return Step("memory://", actor, resource("memory://{id}", target), expect)


def _filters(me: TenantState, pick: Picker) -> dict[str, Any]:
    args: dict[str, Any] = {"persona": pick.choice([None, None, *sorted(me.personas)])}
    if pick.chance(30):
        args["kinds"] = pick.subset(KINDS, 2) or ["note"]
    if pick.chance(20):
        args["metadata"] = {"owner": me.marker}
    return args


def _allowed(me: TenantState, actor: Actor, args: dict[str, Any]) -> dict[str, MemoryState]:
    return {
        str(m.id): m
        for m in me.visible_memories(actor)
        if args.get("persona") in (None, m.persona)
        and m.kind in args.get("kinds", KINDS)
        and ("metadata" not in args or m.metadata.get("owner") == me.marker)
    }


def list_memories(world: World, actor: Actor, pick: Picker) -> Step:
    """Every memory the caller may see that passes the filters, and no other, with the exact total."""
    me = world.tenant_of(actor)
    args = _filters(me, pick) | {"limit": 100}
    allowed = _allowed(me, actor, args)

    def expect(answer: Answer) -> bool:
        found = data_of("list_memories", answer)
        for item in found["memories"]:
            check_memory("list_memories", me, actor, item)
        ids = {item["id"] for item in found["memories"]}
        if len(allowed) <= 100:
            same("list_memories", f"ids for {args}", ids, set(allowed))
        elif not ids <= set(allowed):
            raise Violation("answer", f"list_memories {args}: {ids - set(allowed)} do not pass the filters")
        same("list_memories", f"total for {args}", found["total"], min(len(allowed), 1000))
        return False

    return Step("list_memories", actor, tool("list_memories", **args), expect)


def update_memory(world: World, actor: Actor, pick: Picker) -> Step:
    """A change at the right version, a stale version, or a memory that is not (or no longer) there."""
    me = world.tenant_of(actor)
    live = list(me.memories.values())
    if not live or pick.chance(15):
        target = pick.choice([str(m) for m in me.forgotten] or [fresh_id()])
        request = tool("update_memory", id=target, expected_version=1, importance=0.5)
        return Step("update_memory", actor, request, lambda a: refused("update_memory", a, "no memory with id"))
    memory = pick.choice(live)
    if pick.chance(20):
        request = tool("update_memory", id=str(memory.id), expected_version=memory.version + 1, importance=0.5)
        return Step("update_memory", actor, request, lambda a: refused("update_memory", a, "version conflict"))
    metadata = pick.choice([None, {"owner": me.marker}, {"topic": pick.choice(WORDS)}])
    kind = pick.choice([None, *KINDS])
    if metadata is None and kind is None:
        kind = "fact"

    def expect(answer: Answer) -> bool:
        found = data_of("update_memory", answer)
        same("update_memory", "version", found["version"], memory.version + 1)
        memory.version += 1
        memory.metadata = metadata if metadata is not None else memory.metadata
        memory.kind = kind or memory.kind
        check_memory("update_memory", me, actor, found)
        return True

    request = tool("update_memory", id=str(memory.id), expected_version=memory.version, metadata=metadata, kind=kind)
    return Step("update_memory", actor, request, expect)
