"""Cross-tenant probes over HTTP: tenant A's key, tenant B's identifiers, every tool, resource and prompt.

A and B hold look-alike data (the same persona slug, campaign names, task titles and idempotency
key); everything B wrote carries a marker string. A's key then calls every tool the server lists,
reads every resource template and gets every prompt with B's identifiers and realistic
arguments, in both protocol eras. No answer may carry B's marker, B's tenant or an id of B's that
the request did not itself send; an answer about B's object must read exactly like one about an
object that does not exist; and B's rows (audit trail included) must be unchanged. A tool,
template or prompt added later fails the test until it gets a probe here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import TextContent, TextResourceContents

from mindscape.database.targets import Targets
from mindscape.models.persona import PersonaIn
from mindscape.tenancy.caller import Caller
from tests.support.http import mcp_client, new_key
from tests.support.results import data as structured
from tests.support.results import text_of
from tests.support.serving import running_server
from tests.support.tenant_snapshot import snapshot
from tests.support.tenants import make_tenant, persona

MODES = ["legacy", "auto"]
MARK = f"bsecret{uuid.uuid4().hex[:8]}"  # in everything B writes, nowhere in A's data


def personas_of(mark: str) -> list[PersonaIn]:
    """The same slugs for both tenants; only B's texts carry the marker (an empty one for A)."""
    shared = persona(
        "ada",
        f"Ada Analyst {mark}".strip(),
        summary=f"Careful analyst {mark}".strip(),
        instructions=f"Cite your queries {mark}".strip(),
        traits={"communication": {"tone": mark or "precise"}},
        tags=["team", *([mark] if mark else [])],
    )
    if not mark:
        return [shared]
    return [shared, persona("zed", f"Zed {mark}", summary=f"Only B has Zed {mark}", tags=[mark])]


@dataclass(frozen=True)
class Ids:
    """The identifiers a probe sends: B's real ones, or ones that exist nowhere."""

    slug: str
    memory: str
    campaign: str
    task: str
    idempotency_key: str
    persona_cursor: str
    campaign_cursor: str
    task_cursor: str

    def values(self) -> list[str]:
        return [self.slug, self.memory, self.campaign, self.task]


@dataclass(frozen=True)
class World:
    a_key: str
    b_key: str
    b: Caller
    b_ids: Ids
    b_object_ids: frozenset[str]  # every id of B's, to find any that leaks
    unknown: Ids


async def seed_tenant(client: Client, mark: str) -> tuple[Ids, set[str]]:
    """Memories, campaigns and tasks through the tools, as an agent of the tenant would write them."""
    tag = f" {mark}" if mark else ""
    metadata = {"owner": mark or "a"}
    memory = structured(
        await client.call_tool(
            "remember", {"content": f"the launch code is ready{tag}", "persona": "ada", "metadata": metadata}
        )
    )
    await client.call_tool("remember", {"content": f"quarterly numbers look fine{tag}", "kind": "fact"})
    campaigns = [
        structured(
            await client.call_tool(
                "create_campaign",
                {
                    "name": name,
                    "objective": f"ship it{tag}",
                    "status": "active",
                    "personas": ["ada"],
                    "metadata": metadata,
                },
            )
        )
        for name in ("Spring launch", "Autumn launch")
    ]
    tasks = [
        structured(
            await client.call_tool(
                "create_task",
                {
                    "title": title,
                    "description": f"write it{tag}",
                    "campaign": campaigns[0]["id"],
                    "persona": "ada",
                    "input": metadata,
                    "idempotency_key": key,
                },
            )
        )
        for title, key in (("Write the launch note", "launch-note"), ("Review the launch note", f"review{mark}"))
    ]
    personas_page = structured(await client.call_tool("list_personas", {"limit": 1}))
    campaigns_page = structured(await client.call_tool("list_campaigns", {"limit": 1}))
    tasks_page = structured(await client.call_tool("list_tasks", {"limit": 1}))
    ids = Ids(
        slug="zed",
        memory=memory["id"],
        campaign=campaigns[0]["id"],
        task=tasks[0]["id"],
        idempotency_key=f"review{mark}",
        persona_cursor=personas_page["next_cursor"],
        campaign_cursor=campaigns_page["next_cursor"],
        task_cursor=tasks_page["next_cursor"],
    )
    found = {memory["id"], *(c["id"] for c in campaigns), *(t["id"] for t in tasks)}
    return ids, found


@pytest.fixture(scope="module")
def base_url(targets: Targets, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_server(targets, "http", tmp_path_factory.mktemp("cross") / "server.log") as url:
        yield url


@pytest.fixture(scope="module")
def tenants(targets: Targets, base_url: str) -> World:
    async def seed() -> World:
        a = await make_tenant(targets, personas_of(""), "xa")
        b = await make_tenant(targets, personas_of(MARK), "xb")
        a_key = await new_key(targets, a.tenant_slug, "write")
        b_key = await new_key(targets, b.tenant_slug, "write")
        async with mcp_client(base_url, a_key, "auto") as client:
            await seed_tenant(client, "")
        async with mcp_client(base_url, b_key, "auto") as client:
            b_ids, b_found = await seed_tenant(client, MARK)
            personas = structured(await client.call_tool("list_personas", {}))
        assert {p["slug"] for p in personas["personas"]} == {"ada", "zed"}
        fresh = lambda: str(uuid.uuid4())  # noqa: E731
        unknown = replace(b_ids, slug="nobody", memory=fresh(), campaign=fresh(), task=fresh(), idempotency_key="x")
        return World(a_key, b_key, b, b_ids, frozenset(b_found), unknown)

    return anyio.run(seed)


@dataclass(frozen=True)
class Probe:
    args: Callable[[Ids], dict[str, Any]]
    # An answer about B's object must read exactly like one about an object that does not exist.
    same_as_unknown: bool = True


def probes(*args: Callable[[Ids], dict[str, Any]], same_as_unknown: bool = True) -> list[Probe]:
    return [Probe(a, same_as_unknown) for a in args]


TOOL_PROBES: dict[str, list[Probe]] = {
    "get_persona": probes(lambda i: {"slug": i.slug}),
    "list_personas": probes(
        lambda i: {},
        lambda i: {"query": "Zed"},
        lambda i: {"query": MARK},
        lambda i: {"tags": [MARK]},
        lambda i: {"trait": {"path": "communication.tone", "equals": MARK}},
        lambda i: {"cursor": i.persona_cursor},
        same_as_unknown=False,
    ),
    "remember": probes(lambda i: {"content": "a note for a foreign persona", "persona": i.slug}),
    "recall": [
        *probes(lambda i: {"query": "launch code", "persona": i.slug}),
        *probes(
            lambda i: {"query": "the launch code is ready"},
            lambda i: {"query": MARK, "mode": "keyword"},
            lambda i: {"query": "launch", "metadata": {"owner": MARK}},
            lambda i: {"query": "quarterly numbers", "mode": "semantic", "k": 50},
            same_as_unknown=False,
        ),
    ],
    "forget": probes(lambda i: {"id": i.memory}),
    "update_memory": probes(lambda i: {"id": i.memory, "expected_version": 1, "importance": 0.1}),
    "list_memories": [
        *probes(lambda i: {"persona": i.slug}),
        *probes(lambda i: {}, lambda i: {"metadata": {"owner": MARK}}, same_as_unknown=False),
    ],
    "create_campaign": probes(lambda i: {"name": "Spring launch", "personas": [i.slug]}),
    "get_campaign": probes(lambda i: {"id": i.campaign}),
    "list_campaigns": probes(
        lambda i: {}, lambda i: {"status": "active"}, lambda i: {"cursor": i.campaign_cursor}, same_as_unknown=False
    ),
    "update_campaign": probes(
        lambda i: {"id": i.campaign, "expected_version": 1, "name": "hijacked"},
        lambda i: {"id": i.campaign, "expected_version": 1, "status": "archived"},
    ),
    "create_task": [
        *probes(
            lambda i: {"title": "Write the launch note", "campaign": i.campaign},
            lambda i: {"title": "Write the launch note", "parent": i.task},
            lambda i: {"title": "Write the launch note", "persona": i.slug},
        ),
        # B's idempotency key is no key of A's: A gets a new task of its own, never B's.
        *probes(
            lambda i: {"title": "Review the launch note", "idempotency_key": i.idempotency_key}, same_as_unknown=False
        ),
    ],
    "get_task": probes(lambda i: {"id": i.task}),
    "list_tasks": [
        *probes(lambda i: {"campaign": i.campaign}, lambda i: {"parent": i.task}, lambda i: {"persona": i.slug}),
        *probes(lambda i: {}, lambda i: {"cursor": i.task_cursor}, same_as_unknown=False),
    ],
    "update_task": probes(
        lambda i: {"id": i.task, "expected_version": 1, "status": "in_progress"},
        lambda i: {"id": i.task, "expected_version": 1, "status": "cancelled"},
        lambda i: {"id": i.task, "expected_version": 1, "result": {"done": True}, "title": "hijacked"},
    ),
    "claim_next_task": [
        *probes(lambda i: {"campaign": i.campaign}, lambda i: {"persona": i.slug}),
    ],
}
TEMPLATE_PROBES: dict[str, Callable[[Ids], str]] = {
    "persona://{slug}": lambda i: f"persona://{i.slug}",
    "memory://{id}": lambda i: f"memory://{i.memory}",
    "campaign://{id}": lambda i: f"campaign://{i.campaign}",
    "task://{id}": lambda i: f"task://{i.task}",
}
PROMPT_PROBES: dict[str, list[Probe]] = {
    "persona": [
        *probes(lambda i: {"slug": i.slug}, lambda i: {"slug": i.slug, "task": "the launch", "recall": "5"}),
        # A's own 'ada', recalling memories: only A's may come back.
        *probes(
            lambda i: {"slug": "ada", "task": "the launch code", "recall": "20"},
            lambda i: {"slug": "ada", "recall": "20"},
            same_as_unknown=False,
        ),
    ],
}


@dataclass(frozen=True)
class Answer:
    error: bool
    text: str


async def call_tool(client: Client, name: str, args: dict[str, Any]) -> Answer:
    result = await client.call_tool(name, args)
    return Answer(result.is_error, text_of(result) + json.dumps(result.structured_content))


async def read_resource(client: Client, uri: str) -> Answer:
    try:
        result = await client.read_resource(uri)
    except MCPError as exc:
        return Answer(True, f"{exc.error.code} {exc.error.message}")
    return Answer(False, " ".join(c.text for c in result.contents if isinstance(c, TextResourceContents)))


async def get_prompt(client: Client, name: str, args: dict[str, str]) -> Answer:
    try:
        result = await client.get_prompt(name, args)
    except MCPError as exc:
        return Answer(True, f"{exc.error.code} {exc.error.message}")
    return Answer(False, " ".join(m.content.text for m in result.messages if isinstance(m.content, TextContent)))


def masked(text: str, ids: Ids) -> str:
    for value in ids.values():
        text = text.replace(value, "<ID>")
    return text


def strings_in(sent: Any) -> list[str]:
    if isinstance(sent, str):
        return [sent]
    if isinstance(sent, dict):
        return [s for v in sent.values() for s in strings_in(v)]  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]
    if isinstance(sent, list):
        return [s for v in sent for s in strings_in(v)]  # pyright: ignore[reportUnknownVariableType]
    return []


def assert_nothing_of_b(world: World, what: str, sent: Any, answer: Answer) -> None:
    """Nothing of B's in the answer, beyond what the request itself said (an echoed query, an id)."""
    text = answer.text
    sent_ids = [i for i in world.b_object_ids if i in json.dumps(sent)]  # also inside a resource URI
    for echoed in sorted(strings_in(sent) + sent_ids, key=len, reverse=True):
        text = text.replace(echoed, "<SENT>")
    assert MARK not in text, f"{what}: B's data in the answer: {answer.text}"
    assert world.b.tenant_slug not in text, what
    assert str(world.b.tenant_id) not in text, what
    leaked = {i for i in world.b_object_ids if i in text}
    assert not leaked, f"{what}: B's ids {leaked} in the answer: {answer.text}"


async def probe(world: World, what: str, send: Callable[[Ids], Any], ask: Any, same_as_unknown: bool) -> None:
    sent = send(world.b_ids)
    foreign = await ask(sent)
    assert_nothing_of_b(world, what, sent, foreign)
    if same_as_unknown:
        unknown = await ask(send(world.unknown))
        assert (foreign.error, masked(foreign.text, world.b_ids)) == (
            unknown.error,
            masked(unknown.text, world.unknown),
        ), what


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_a_key_of_tenant_a_never_reaches_tenant_b(
    tenants: World, targets: Targets, base_url: str, mode: str
) -> None:
    world = tenants
    before = await snapshot(targets, world.b.tenant_id)
    async with mcp_client(base_url, world.a_key, mode) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert tools == set(TOOL_PROBES), f"tools without a cross-tenant probe: {tools - set(TOOL_PROBES)}"
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        assert templates == set(TEMPLATE_PROBES), f"templates without a probe: {templates - set(TEMPLATE_PROBES)}"
        assert (await client.list_resources()).resources == []  # no fixed resources to probe
        prompts = {p.name for p in (await client.list_prompts()).prompts}
        assert prompts == set(PROMPT_PROBES), f"prompts without a probe: {prompts - set(PROMPT_PROBES)}"

        for name, tool_probes in TOOL_PROBES.items():
            for n, p in enumerate(tool_probes):

                async def ask_tool(args: dict[str, Any], name: str = name) -> Answer:
                    return await call_tool(client, name, args)

                await probe(world, f"{name} #{n}", p.args, ask_tool, p.same_as_unknown)
        for template, uri_of in TEMPLATE_PROBES.items():

            async def ask_resource(uri: str) -> Answer:
                return await read_resource(client, uri)

            await probe(world, template, uri_of, ask_resource, same_as_unknown=True)
        for name, prompt_probes in PROMPT_PROBES.items():
            for n, p in enumerate(prompt_probes):

                async def ask_prompt(args: dict[str, str], name: str = name) -> Answer:
                    return await get_prompt(client, name, args)

                await probe(world, f"prompt {name} #{n}", p.args, ask_prompt, p.same_as_unknown)
    assert await snapshot(targets, world.b.tenant_id) == before


@pytest.mark.anyio
async def test_the_probes_would_see_b_data_if_it_were_reachable(tenants: World, base_url: str) -> None:
    """The control: with B's own key the same probes do find B's marker, so its absence above means something."""
    ids = tenants.b_ids
    async with mcp_client(base_url, tenants.b_key, "auto") as client:
        for name, args in [
            ("get_persona", {"slug": ids.slug}),
            ("get_task", {"id": ids.task}),
            ("get_campaign", {"id": ids.campaign}),
            ("recall", {"query": "the launch code is ready"}),
            ("list_tasks", {}),
        ]:
            assert shows_b(tenants, (await call_tool(client, name, args)).text), name
        assert shows_b(tenants, (await read_resource(client, f"memory://{ids.memory}")).text)
        assert shows_b(tenants, (await get_prompt(client, "persona", {"slug": "ada", "recall": "20"})).text)


def shows_b(world: World, text: str) -> bool:
    """B's marker or one of B's ids (summaries such as list_tasks carry titles, which look alike, and ids)."""
    return MARK in text or any(i in text for i in world.b_object_ids)
