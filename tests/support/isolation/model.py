"""The model: what every tenant wrote, as the server should hold it, and what each call should do.

Callers are `Actor`s, (tenant, principal) pairs. Today every principal of a tenant sees all of
the tenant's rows; `TenantState.visible_memories` is the one place that decides what an actor
may see, so per-principal visibility can refine it without touching the machine.

Every text a tenant writes carries its marker (`tm` + 10 hex digits, see `new_marker`), except
the shared phrases and idempotency keys, which every tenant uses on purpose: look-alike data
must not collide across tenants.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from mindscape.models.campaign import CAMPAIGN_TRANSITIONS
from mindscape.models.task import TASK_TRANSITIONS

CAMPAIGN_STATUSES = tuple(CAMPAIGN_TRANSITIONS)
TASK_STATUSES = tuple(TASK_TRANSITIONS)
OPEN_CAMPAIGN = ("draft", "active", "paused")  # tasks may be added to these
KINDS = ("fact", "event", "preference", "instruction", "note")
WORDS = ("launch", "budget", "invoice", "roadmap", "garden", "weather", "coffee", "report", "hiring", "travel")
# Texts every tenant writes too, without a marker: the same content must never meet across tenants.
SHARED_PHRASES = (
    "the quarterly report is due on friday",
    "the coffee machine on floor two is broken",
    "remember to water the office garden",
)
SHARED_KEYS = ("key-1", "key-2", "key-3")  # idempotency keys every tenant uses
UNIQUE_PERSONAS = ("zed", "yara", "xavi", "wren", "vera", "umar")


def new_marker() -> str:
    """A tenant's marker: in everything it writes, in no other tenant's data."""
    return "tm" + secrets.token_hex(5)


@dataclass(frozen=True)
class Actor:
    """Who makes a call: a tenant (index into World.tenants) and a principal inside it."""

    tenant: int
    principal: str

    @property
    def label(self) -> str:
        return f"t{self.tenant}/{self.principal}"


@dataclass(frozen=True)
class PersonaState:
    slug: str
    name: str
    tags: tuple[str, ...]
    tone: str


@dataclass
class MemoryState:
    id: UUID
    content: str
    persona: str | None
    kind: str
    metadata: dict[str, Any]
    written_by: str  # the principal; per-principal visibility will read it
    version: int = 1  # update_memory's expected_version


@dataclass
class CampaignState:
    id: UUID
    name: str
    objective: str
    status: str
    personas: list[str]
    metadata: dict[str, Any]
    seq: int  # creation order within the tenant
    version: int = 1


@dataclass
class TaskState:
    id: UUID
    title: str
    status: str
    priority: int
    campaign_id: UUID | None
    persona: str | None
    parent_id: UUID | None
    idempotency_key: str | None
    seq: int
    version: int = 1
    attempts: int = 0
    claimed_by: str | None = None
    result: dict[str, Any] | None = None


@dataclass(frozen=True)
class PageCursor:
    """A next_cursor some answer handed out, with what its next page should hold."""

    tool: str  # list_personas, list_campaigns or list_tasks
    value: str
    filters: dict[str, Any]
    after: tuple[Any, ...]  # the sort key of the last row of its page


@dataclass
class TenantState:
    index: int
    tenant_id: UUID
    slug: str
    marker: str
    principals: list[str]
    personas: dict[str, PersonaState]
    # In creation (and forgetting) order, never by id: ids are random, and a choice must mean the same
    # memory every time Hypothesis replays a sequence.
    memories: dict[UUID, MemoryState] = field(default_factory=dict[UUID, MemoryState])
    forgotten: list[UUID] = field(default_factory=list[UUID])
    campaigns: dict[UUID, CampaignState] = field(default_factory=dict[UUID, CampaignState])
    tasks: dict[UUID, TaskState] = field(default_factory=dict[UUID, TaskState])
    cursors: list[PageCursor] = field(default_factory=list[PageCursor])
    seq: int = 0

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def known_ids(self) -> set[str]:
        """Every id of this tenant an answer to it may carry (forgotten memories included)."""
        ids = {self.tenant_id, *self.memories, *self.forgotten, *self.campaigns, *self.tasks}
        return {str(i) for i in ids}

    def unique_slugs(self) -> list[str]:
        return [s for s in self.personas if self.marker in s]

    def visible_memories(self, actor: Actor) -> list[MemoryState]:
        """What `actor` may recall or read: today every principal of the tenant sees all its memories."""
        assert actor.tenant == self.index
        return list(self.memories.values())

    def memory_with(self, persona: str | None, content: str) -> MemoryState | None:
        """The live memory deduplicated with (persona, content), if any."""
        return next((m for m in self.memories.values() if m.persona == persona and m.content == content), None)

    def task_by_key(self, key: str) -> TaskState | None:
        return next((t for t in self.tasks.values() if t.idempotency_key == key), None)

    def tasks_in_order(self) -> list[TaskState]:
        """list_tasks order: priority, then oldest."""
        return sorted(self.tasks.values(), key=lambda t: (t.priority, t.seq))

    def campaigns_in_order(self) -> list[CampaignState]:
        """list_campaigns order: newest first."""
        return sorted(self.campaigns.values(), key=lambda c: -c.seq)

    def task_counts(self, campaign_id: UUID) -> dict[str, int]:
        counts = dict.fromkeys(TASK_STATUSES, 0)
        for task in self.tasks.values():
            if task.campaign_id == campaign_id:
                counts[task.status] += 1
        return counts

    def claimable(self, campaign_id: UUID | None, persona: str | None) -> TaskState | None:
        """What claim_next_task hands out: pending (no lease ever expires in a run), outside a campaign or
        in an active one, priority 0 first, then oldest."""
        for task in self.tasks_in_order():
            if task.status != "pending":
                continue
            if campaign_id is not None and task.campaign_id != campaign_id:
                continue
            if persona is not None and task.persona != persona:
                continue
            if task.campaign_id is not None and self.campaigns[task.campaign_id].status != "active":
                continue
            return task
        return None


@dataclass
class World:
    """The tenants of one run of the machine and the actors calling as them."""

    tenants: list[TenantState]
    actors: list[Actor]

    def tenant_of(self, actor: Actor) -> TenantState:
        return self.tenants[actor.tenant]

    def others(self, tenant: TenantState) -> list[TenantState]:
        return [t for t in self.tenants if t.index != tenant.index]

    def owner_of(self, value: str) -> TenantState | None:
        """The tenant one of whose ids or marker `value` is."""
        return next((t for t in self.tenants if value in t.known_ids() or value == t.marker), None)

    def all_ids(self) -> set[str]:
        return {i for t in self.tenants for i in t.known_ids()}


def task_update_refusal(
    task: TaskState, expected_version: int, status: str | None, lease: int | None, principal: str
) -> str | None:
    """Why update_task refuses these changes (None: it applies them). Mirrors queries.tasks.update."""
    if task.version != expected_version:
        return "version conflict"
    # The claimant rule: the machine's leases (5 minutes or more) never run out during a run.
    if task.status == "in_progress" and task.claimed_by not in (None, principal):
        return "only its claimant may update it"
    target = status or task.status
    if target != task.status and target not in TASK_TRANSITIONS[task.status]:
        return "cannot move task"
    if lease is not None and target != "in_progress":
        return "lease_seconds applies only"
    return None


def campaign_update_refusal(campaign: CampaignState, expected_version: int, status: str | None) -> str | None:
    if campaign.version != expected_version:
        return "version conflict"
    target = status or campaign.status
    if target != campaign.status and target not in CAMPAIGN_TRANSITIONS[campaign.status]:
        return "cannot move campaign"
    return None
