"""Every operation the machine drives, and the steps that give each new tenant something to probe."""

from __future__ import annotations

from collections.abc import Callable

from tests.support.isolation import ops_campaigns as campaigns
from tests.support.isolation import ops_memory as memory
from tests.support.isolation import ops_personas as personas
from tests.support.isolation import ops_probes as probes
from tests.support.isolation import ops_tasks as tasks
from tests.support.isolation.model import SHARED_KEYS, Actor, World
from tests.support.isolation.ops_pages import next_page
from tests.support.isolation.scan import Kind
from tests.support.isolation.steps import Op, Step

OPS: list[Op] = [
    Op("list_personas", "personas", "tool", "list_personas", personas.list_personas),
    Op("get_persona", "personas", "tool", "get_persona", personas.get_persona),
    Op("persona://", "personas", "resource", "persona://{slug}", personas.read_persona),
    Op("persona prompt", "personas", "prompt", "persona", personas.persona_prompt),
    Op("remember", "memory", "tool", "remember", memory.remember),
    Op("remember again", "memory", "tool", "remember", memory.remember_again),
    Op("recall", "memory", "tool", "recall", memory.recall),
    Op("forget", "memory", "tool", "forget", memory.forget),
    Op("list_memories", "memory", "tool", "list_memories", memory.list_memories),
    Op("update_memory", "memory", "tool", "update_memory", memory.update_memory),
    Op("memory://", "memory", "resource", "memory://{id}", memory.read_memory),
    Op("create_campaign", "campaigns", "tool", "create_campaign", campaigns.create_campaign),
    Op("get_campaign", "campaigns", "tool", "get_campaign", campaigns.get_campaign),
    Op("list_campaigns", "campaigns", "tool", "list_campaigns", campaigns.list_campaigns),
    Op("update_campaign", "campaigns", "tool", "update_campaign", campaigns.update_campaign),
    Op("campaign://", "campaigns", "resource", "campaign://{id}", campaigns.read_campaign),
    Op("create_task", "tasks", "tool", "create_task", tasks.create_task),
    Op("get_task", "tasks", "tool", "get_task", tasks.get_task),
    Op("list_tasks", "tasks", "tool", "list_tasks", tasks.list_tasks),
    Op("update_task", "tasks", "tool", "update_task", tasks.update_task),
    Op("claim_next_task", "tasks", "tool", "claim_next_task", tasks.claim_next_task),
    Op("task://", "tasks", "resource", "task://{id}", tasks.read_task),
    Op("next page", "tasks", "tool", "list_tasks", next_page),
    Op("probe get_persona", "personas", "tool", "get_persona", probes.probe_get_persona, probe=True),
    Op("probe list_personas", "personas", "tool", "list_personas", probes.probe_list_personas, probe=True),
    Op("probe persona://", "personas", "resource", "persona://{slug}", probes.probe_read_persona, probe=True),
    Op("probe persona prompt", "personas", "prompt", "persona", probes.probe_persona_prompt, probe=True),
    Op("probe remember", "memory", "tool", "remember", probes.probe_remember, probe=True),
    Op("probe recall", "memory", "tool", "recall", probes.probe_recall, probe=True),
    Op("probe forget", "memory", "tool", "forget", probes.probe_forget, probe=True),
    Op("probe list_memories", "memory", "tool", "list_memories", probes.probe_list_memories, probe=True),
    Op("probe update_memory", "memory", "tool", "update_memory", probes.probe_update_memory, probe=True),
    Op("probe memory://", "memory", "resource", "memory://{id}", probes.probe_read_memory, probe=True),
    Op("probe create_campaign", "campaigns", "tool", "create_campaign", probes.probe_create_campaign, probe=True),
    Op("probe get_campaign", "campaigns", "tool", "get_campaign", probes.probe_get_campaign, probe=True),
    Op("probe list_campaigns", "campaigns", "tool", "list_campaigns", probes.probe_list_campaigns, probe=True),
    Op("probe update_campaign", "campaigns", "tool", "update_campaign", probes.probe_update_campaign, probe=True),
    Op("probe campaign://", "campaigns", "resource", "campaign://{id}", probes.probe_read_campaign, probe=True),
    Op("probe create_task", "tasks", "tool", "create_task", probes.probe_create_task, probe=True),
    Op("probe get_task", "tasks", "tool", "get_task", probes.probe_get_task, probe=True),
    Op("probe list_tasks", "tasks", "tool", "list_tasks", probes.probe_list_tasks, probe=True),
    Op("probe update_task", "tasks", "tool", "update_task", probes.probe_update_task, probe=True),
    Op("probe claim_next_task", "tasks", "tool", "claim_next_task", probes.probe_claim_next_task, probe=True),
    Op("probe task://", "tasks", "resource", "task://{id}", probes.probe_read_task, probe=True),
]


def ops_of(family: str, probe: bool) -> list[Op]:
    return [op for op in OPS if op.family == family and op.probe == probe]


def driven(probe: bool) -> dict[Kind, set[str]]:
    """What the machine sends its own identifiers to (probe=False) or another tenant's (probe=True)."""
    found: dict[Kind, set[str]] = {"tool": set(), "resource": set(), "prompt": set()}
    for op in OPS:
        if op.probe == probe:
            found[op.kind].add(op.target)
    return found


def seed_phases(world: World, actor: Actor) -> list[Callable[[], list[Step]]]:
    """A memory, two campaigns, two tasks and a cursor of each list, so that every probe has a target.

    Phases run one after the other: a task needs its campaign's id, a cursor needs two rows.
    """
    me = world.tenant_of(actor)
    m = me.marker

    def first() -> list[Step]:
        return [
            memory.remembering(world, actor, f"the first note {m}", "ada"),
            campaigns.creating_campaign(world, actor, f"first campaign {m}", f"objective {m}", "active", ["ada"], None),
            campaigns.creating_campaign(world, actor, f"second campaign {m}", "", "draft", [], {"owner": m}),
        ]

    def second() -> list[Step]:
        active = next(c for c in me.campaigns.values() if c.status == "active")
        return [
            tasks.creating_task(
                world, actor, title=f"first task {m}", priority=1, campaign=active, parent=None, persona="ada", key=None
            ),
            tasks.creating_task(
                world,
                actor,
                title=f"second task {m}",
                priority=2,
                campaign=None,
                parent=None,
                persona=None,
                key=SHARED_KEYS[0],
            ),
        ]

    def third() -> list[Step]:
        return [
            personas.persona_page(world, actor, 1),
            campaigns.listing_campaigns(world, actor, None, 1),
            tasks.listing_tasks(world, actor, 1),
        ]

    return [first, second, third]
