"""Persona tools, resource and prompt end to end through the in-memory MCP client, both eras."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, TextContent, TextResourceContents

from mindscape.app.calls import tenant_call
from mindscape.app.state import AppState
from mindscape.database.targets import Targets
from mindscape.tenancy.caller import Caller
from tests.support.results import data, error_text
from tests.support.tenants import ClientFactory, TenantFactory, make_tenant, persona

pytestmark = pytest.mark.anyio
MODES = ["legacy", "auto"]

CATALOGUE = [
    persona(
        f"p{i:02d}",
        f"Persona {i:02d}",
        summary="filler persona",
        tags=["bulk"] + (["even"] if i % 2 == 0 else []),
        traits={"communication": {"tone": "warm" if i % 3 == 0 else "dry"}, "level": i},
    )
    for i in range(25)
] + [
    persona(
        "sec",
        "Sam Security",
        summary="Security engineer for incident response and patching",
        instructions="Contain first.",
        traits={"communication": {"tone": "calm", "style": {"format": "bullets"}}, "on_call": True},
        tags=["ops", "security"],
    ),
    persona("inc", "Ivy Incident", summary="Writes incident postmortems; security background", tags=["ops"]),
]


@pytest.fixture(scope="module")
def shop(targets: Targets) -> Caller:
    return anyio.run(make_tenant, targets, CATALOGUE, "shop")


def slugs(result: CallToolResult) -> list[str]:
    return [p["slug"] for p in data(result)["personas"]]


@pytest.mark.parametrize("mode", MODES)
async def test_tool_list_has_schemas_and_annotations(shop: Caller, client_for: ClientFactory, mode: str) -> None:
    async with client_for(shop.tenant_slug, mode=mode) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert {"get_persona", "list_personas"} <= set(tools)
    for tool in (tools["get_persona"], tools["list_personas"]):
        assert tool.annotations is not None
        assert tool.annotations.read_only_hint is True
        assert tool.annotations.open_world_hint is False
        assert tool.output_schema is not None
        assert tool.description
    slug_schema = tools["get_persona"].input_schema["properties"]["slug"]
    assert slug_schema["maxLength"] == 64
    assert "pattern" in slug_schema
    limit = tools["list_personas"].input_schema["properties"]["limit"]
    assert (limit["minimum"], limit["maximum"], limit["default"]) == (1, 100, 20)


@pytest.mark.parametrize("mode", MODES)
async def test_get_persona_returns_everything(shop: Caller, client_for: ClientFactory, mode: str) -> None:
    async with client_for(shop.tenant_slug, mode=mode) as client:
        found = data(await client.call_tool("get_persona", {"slug": "sec"}))
    assert found["name"] == "Sam Security"
    assert found["traits"]["communication"]["style"] == {"format": "bullets"}
    assert found["instructions"] == "Contain first."
    assert found["tags"] == ["ops", "security"]
    assert found["version"] == 1


async def test_unknown_slug_says_what_to_do(shop: Caller, client_for: ClientFactory) -> None:
    async with client_for(shop.tenant_slug) as client:
        text = error_text(await client.call_tool("get_persona", {"slug": "nobody"}))
    assert "'nobody'" in text
    assert "list_personas" in text


async def test_default_listing_is_by_slug_and_pages_with_a_cursor(shop: Caller, client_for: ClientFactory) -> None:
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    async with client_for(shop.tenant_slug) as client:
        while True:
            args: dict[str, Any] = {"limit": 10} | ({"cursor": cursor} if cursor else {})
            page = data(await client.call_tool("list_personas", args))
            seen += [p["slug"] for p in page["personas"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert pages == 3
    assert seen == sorted(p.slug for p in CATALOGUE)


async def test_query_ranks_text_matches_first(shop: Caller, client_for: ClientFactory) -> None:
    async with client_for(shop.tenant_slug) as client:
        ranked = slugs(await client.call_tool("list_personas", {"query": "security incident"}))
        by_name = slugs(await client.call_tool("list_personas", {"query": "Ivy"}))
        partial = slugs(await client.call_tool("list_personas", {"query": "Secur"}))
        nothing = slugs(await client.call_tool("list_personas", {"query": "zebra"}))
    assert ranked[:2] == ["sec", "inc"] or ranked[:2] == ["inc", "sec"]
    assert "p01" not in ranked
    assert by_name == ["inc"]
    assert partial[0] == "sec"
    assert nothing == []


async def test_ranked_results_page_without_gaps(shop: Caller, client_for: ClientFactory) -> None:
    async with client_for(shop.tenant_slug) as client:
        whole = slugs(await client.call_tool("list_personas", {"query": "persona", "limit": 100}))
        first = data(await client.call_tool("list_personas", {"query": "persona", "limit": 7}))
        rest = data(
            await client.call_tool("list_personas", {"query": "persona", "limit": 100, "cursor": first["next_cursor"]})
        )
    assert len(whole) == 25
    assert [p["slug"] for p in first["personas"]] + [p["slug"] for p in rest["personas"]] == whole


async def test_tags_must_all_match(shop: Caller, client_for: ClientFactory) -> None:
    async with client_for(shop.tenant_slug) as client:
        ops = slugs(await client.call_tool("list_personas", {"tags": ["ops"]}))
        both = slugs(await client.call_tool("list_personas", {"tags": ["ops", "security"]}))
        even = slugs(await client.call_tool("list_personas", {"tags": ["bulk", "even"], "limit": 100}))
    assert ops == ["inc", "sec"]
    assert both == ["sec"]
    assert len(even) == 13


async def test_trait_filter_follows_the_path(shop: Caller, client_for: ClientFactory) -> None:
    async with client_for(shop.tenant_slug) as client:
        warm = slugs(
            await client.call_tool("list_personas", {"trait": {"path": "communication.tone", "equals": "warm"}})
        )
        nested = slugs(
            await client.call_tool(
                "list_personas", {"trait": {"path": "communication.style.format", "equals": "bullets"}}
            )
        )
        number = slugs(await client.call_tool("list_personas", {"trait": {"path": "level", "equals": 7}}))
        boolean = slugs(await client.call_tool("list_personas", {"trait": {"path": "on_call", "equals": True}}))
        combined = slugs(
            await client.call_tool(
                "list_personas",
                {"query": "persona", "tags": ["even"], "trait": {"path": "communication.tone", "equals": "warm"}},
            )
        )
    assert warm == [f"p{i:02d}" for i in range(0, 25, 3)]
    assert nested == ["sec"]
    assert number == ["p07"]
    assert boolean == ["sec"]
    assert sorted(combined) == [f"p{i:02d}" for i in range(0, 25, 6)]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"query": ""}, "query"),
        ({"query": "x" * 201}, "query"),
        ({"tags": ["a,b"]}, "tags.0"),
        ({"tags": [f"t{i}" for i in range(17)]}, "tags"),
        ({"trait": {"path": "a..b", "equals": "x"}}, "trait.path"),
        ({"trait": {"path": "a", "equals": ["list"]}}, "trait.equals"),
        ({"trait": {"path": "a"}}, "trait.equals"),
        ({"cursor": "x" * 513}, "cursor"),
    ],
)
async def test_bad_arguments_name_the_field(
    shop: Caller, client_for: ClientFactory, args: dict[str, Any], expected: str
) -> None:
    async with client_for(shop.tenant_slug) as client:
        text = error_text(await client.call_tool("list_personas", args))
    assert text.startswith("invalid arguments for list_personas")
    assert f"- {expected}" in text
    assert "errors.pydantic.dev" not in text
    assert "Traceback" not in text


@pytest.mark.parametrize("slug", ["Ada", "a b", "-ada", "x" * 65, "", "ada'; --"])
async def test_bad_slugs_are_refused_before_the_database(shop: Caller, client_for: ClientFactory, slug: str) -> None:
    async with client_for(shop.tenant_slug) as client:
        text = error_text(await client.call_tool("get_persona", {"slug": slug}))
    assert "- slug:" in text


@pytest.mark.parametrize("cursor", ["not-base64!!", "e30", "eyJrIjpbXX0", "eyJrIjoiYSIsImYiOiJ4In0"])
async def test_malformed_cursors_are_refused(shop: Caller, client_for: ClientFactory, cursor: str) -> None:
    async with client_for(shop.tenant_slug) as client:
        text = error_text(await client.call_tool("list_personas", {"cursor": cursor}))
    assert "without `cursor`" in text


async def test_cursor_from_other_filters_is_refused(shop: Caller, client_for: ClientFactory) -> None:
    async with client_for(shop.tenant_slug) as client:
        page = data(await client.call_tool("list_personas", {"limit": 2}))
        text = error_text(
            await client.call_tool("list_personas", {"limit": 2, "tags": ["ops"], "cursor": page["next_cursor"]})
        )
        after_error = data(await client.call_tool("get_persona", {"slug": "sec"}))
    assert "other filters" in text
    assert after_error["slug"] == "sec"  # the server keeps serving


@pytest.mark.parametrize("mode", MODES)
async def test_persona_resource(shop: Caller, client_for: ClientFactory, mode: str) -> None:
    async with client_for(shop.tenant_slug, mode=mode) as client:
        templates = (await client.list_resource_templates()).resource_templates
        read = await client.read_resource("persona://sec")
        with pytest.raises(MCPError) as missing:
            await client.read_resource("persona://nobody")
    assert "persona://{slug}" in [t.uri_template for t in templates]
    content = read.contents[0]
    assert isinstance(content, TextResourceContents)
    assert content.mime_type == "application/json"
    assert json.loads(content.text)["name"] == "Sam Security"
    assert "nobody" in str(missing.value)
    assert "list_personas" in str(missing.value)


@pytest.mark.parametrize("mode", MODES)
async def test_persona_prompt_renders_a_system_prompt(shop: Caller, client_for: ClientFactory, mode: str) -> None:
    async with client_for(shop.tenant_slug, mode=mode) as client:
        prompts = (await client.list_prompts()).prompts
        rendered = await client.get_prompt("persona", {"slug": "sec", "task": "Triage the alert."})
        plain = await client.get_prompt("persona", {"slug": "inc"})
        with pytest.raises(MCPError) as missing:
            await client.get_prompt("persona", {"slug": "nobody"})
    assert [p.name for p in prompts] == ["persona"]
    assert {a.name: a.required for a in prompts[0].arguments or []} == {"slug": True, "task": False, "recall": False}
    first = rendered.messages[0].content
    assert isinstance(first, TextContent)
    assert first.text.startswith("You are Sam Security.")
    assert "Contain first." in first.text
    assert "- communication.style.format: bullets" in first.text
    assert "- on_call: true" in first.text  # JSON, not Python's True
    assert first.text.endswith("Your task: Triage the alert.")
    plain_text = plain.messages[0].content
    assert isinstance(plain_text, TextContent)
    assert "Your task" not in plain_text.text
    assert "nobody" in str(missing.value)


async def test_soft_deleted_personas_are_invisible(
    targets: Targets, client_for: ClientFactory, tenant_factory: TenantFactory
) -> None:
    from mindscape.database.pool import create_pool
    from mindscape.tenancy.transaction import tenant_transaction

    caller = await tenant_factory([persona("gone", "Gone"), persona("kept", "Kept")], "del")
    pool = await create_pool(targets.runtime, min_size=1, max_size=1, pooled=targets.pooled)
    try:
        async with tenant_transaction(pool, caller, read_only=False, statement_timeout_ms=5000) as tx:
            await tx.conn.execute("UPDATE mindscape.personas SET deleted_at = now() WHERE slug = 'gone'")
    finally:
        await pool.close()
    async with client_for(caller.tenant_slug) as client:
        assert slugs(await client.call_tool("list_personas", {})) == ["kept"]
        assert (await client.call_tool("get_persona", {"slug": "gone"})).is_error


async def test_statement_timeout_is_reported_not_crashed(targets: Targets, tenant_factory: TenantFactory) -> None:
    """A slow query ends with a specific message; the server stays up."""
    from mindscape.app.server import build_server
    from mindscape.app.state import open_state
    from tests.support.tenants import settings_for

    caller = await tenant_factory([persona("one", "One")], "slow")
    settings = settings_for(targets, caller.tenant_slug, statement_timeout_ms=100)
    server = build_server(lambda: open_state(settings, targets.runtime))

    async def slow(ctx: Context[AppState]) -> str:
        async with tenant_call(ctx, read_only=True) as tx:
            await tx.conn.execute("SELECT pg_sleep(2)")
        return "never"

    server.add_tool(slow, name="slow_probe")
    async with Client(server) as client:
        text = error_text(await client.call_tool("slow_probe", {}))
        assert "statement timeout" in text
        assert data(await client.call_tool("get_persona", {"slug": "one"}))["name"] == "One"
