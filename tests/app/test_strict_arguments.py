"""Strict arguments: unknown names, unstorable values and malformed ids are refused before a tool runs,
with messages that say what to send instead; prompts and resources get the same checks."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS

from mindscape.app.server import build_server
from mindscape.app.state import AppState, open_state
from mindscape.database.targets import Targets
from mindscape.tenancy.caller import Caller
from tests.support.results import data, error_text
from tests.support.tenant_snapshot import snapshot
from tests.support.tenants import ClientFactory, settings_for

pytestmark = [pytest.mark.anyio, pytest.mark.office("ada", prefix="strict")]
PYDANTIC_WORDS = ("dict[", "list[", "union[", "JsonValue", "function-after", "Extra inputs", "Input should")


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"a": 1}
    for _ in range(depth):
        value = {"a": value}
    return value


def no_pydantic_words(text: str) -> None:
    for word in PYDANTIC_WORDS:
        assert word not in text, (word, text)


async def test_every_published_schema_forbids_unknown_properties(office: Caller, client_for: ClientFactory) -> None:
    async with client_for(office.tenant_slug) as client:
        tools = (await client.list_tools()).tools
    assert {"create_task", "claim_next_task", "recall", "list_personas"} <= {t.name for t in tools}
    for tool in tools:
        assert tool.input_schema["additionalProperties"] is False, tool.name
        for name, definition in tool.input_schema.get("$defs", {}).items():
            assert definition.get("additionalProperties") is False, (tool.name, name)


async def test_a_tool_added_later_is_strict_too(office: Caller, targets: Targets) -> None:
    """Strictness is the server's, not each tool's: a tool registered any way gets it."""
    server = build_server(lambda: open_state(settings_for(targets, office.tenant_slug), targets.runtime))

    @server.tool()
    async def echo_later(text: str, ctx: Context[AppState], times: int = 1) -> str:
        return text * times

    async def shout(text: str) -> str:
        return text.upper()

    server.add_tool(shout)
    async with Client(server) as client:
        schemas = {t.name: t.input_schema for t in (await client.list_tools()).tools}
        refused = error_text(await client.call_tool("echo_later", {"text": "a", "time": 2}))
        shouted = await client.call_tool("shout", {"text": "a"})
        unknown = error_text(await client.call_tool("shout", {"text": "a", "loud": True}))
    assert schemas["echo_later"]["additionalProperties"] is False
    assert schemas["shout"]["additionalProperties"] is False
    assert refused == "unknown argument `time`; did you mean `times`? echo_later accepts: text, times"
    assert not shouted.is_error
    assert unknown == "unknown argument `loud`; shout accepts: text"


async def test_a_misspelled_campaign_creates_nothing(
    office: Caller, client_for: ClientFactory, targets: Targets
) -> None:
    """Before: create_task(title=..., campaign_id=<id>) created a task outside the campaign."""
    async with client_for(office.tenant_slug) as client:
        campaign = data(await client.call_tool("create_campaign", {"name": "Launch", "status": "active"}))
        before = await snapshot(targets, office.tenant_id)
        text = error_text(await client.call_tool("create_task", {"title": "Write copy", "campaign_id": campaign["id"]}))
        assert await snapshot(targets, office.tenant_id) == before
    assert text == (
        "unknown argument `campaign_id`; did you mean `campaign`? create_task accepts: title, description, "
        "campaign, persona, parent, priority, due_at, input, idempotency_key"
    )


async def test_misspelled_filters_never_widen_what_an_agent_acts_on(
    office: Caller, client_for: ClientFactory, targets: Targets
) -> None:
    async with client_for(office.tenant_slug) as client:
        data(await client.call_tool("create_task", {"title": "outside any campaign"}))
        data(await client.call_tool("remember", {"content": "a fact about ada", "persona": "ada"}))
        before = await snapshot(targets, office.tenant_id)
        claim = error_text(await client.call_tool("claim_next_task", {"campagin": "x", "persona_slug": "ada"}))
        recall = error_text(await client.call_tool("recall", {"query": "fact", "kind": ["fact"]}))
        assert await snapshot(targets, office.tenant_id) == before  # nothing claimed
    assert claim.splitlines() == [
        "unknown argument `campagin`; did you mean `campaign`?",
        "unknown argument `persona_slug`; did you mean `persona`?",
        "claim_next_task accepts: campaign, persona, lease_seconds",
    ]
    assert recall.startswith("unknown argument `kind`; did you mean `kinds`? recall accepts: query, k, persona, kinds")


async def test_unknown_nested_keys_and_other_problems_in_one_message(office: Caller, client_for: ClientFactory) -> None:
    async with client_for(office.tenant_slug) as client:
        text = error_text(
            await client.call_tool(
                "list_personas", {"trait": {"path": "level", "equal": 3}, "limit": "many", "tag": ["x"]}
            )
        )
    assert text.splitlines() == [
        "unknown key `trait.equal`; did you mean `equals`?",
        "unknown argument `tag`; did you mean `tags`?",
        "trait accepts: path, equals",
        "list_personas accepts: query, tags, trait, limit, cursor",
        "invalid arguments for list_personas:",
        "- trait.equals: required; pass it",
        "- limit: expected a whole number (got 'many')",
        "Fix them and call again; the input schema lists every limit.",
    ]


@pytest.mark.parametrize(
    ("tool", "args", "expected"),
    [
        ("create_task", {"title": "a\x00b"}, "- title: contains a NUL character (\\x00), which cannot be stored"),
        ("create_task", {"title": "t", "input": {"k\x00": 1}}, "- input.k\\x00: this key contains a NUL character"),
        ("create_task", {"title": "t", "input": {"a": [{"b": "\x00"}]}}, "- input.a.0.b: contains a NUL character"),
        (
            "update_task",
            {"id": "0" * 32, "expected_version": 1, "result": {"r": "\ud800"}},
            "- result.r: contains a lone surrogate (\\ud800)",
        ),
        (
            "create_campaign",
            {"name": "n", "metadata": {"deep": "x\udfff"}},
            "- metadata.deep: contains a lone surrogate",
        ),
        ("remember", {"content": "note\x00"}, "- content: contains a NUL character"),
        ("remember", {"content": "note", "metadata": {"topic": "a\x00"}}, "- metadata.topic: contains a NUL"),
        ("recall", {"query": "x", "metadata": {"topic": "\x00"}}, "- metadata.topic: contains a NUL character"),
        ("recall", {"query": "\x00"}, "- query: contains a NUL character"),
        ("list_personas", {"trait": {"path": "level", "equals": "\x00"}}, "- trait.equals: contains a NUL"),
        ("list_personas", {"query": "ada\ud800"}, "- query: contains a lone surrogate"),
        ("get_persona", {"slug": "ada\x00"}, "- slug: contains a NUL character"),
        ("create_task", {"title": "t", "input": nested(40)}, "- input.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a"),
        ("update_campaign", {"id": "0" * 32, "expected_version": 1, "metadata": nested(40)}, "nests deeper than 32"),
    ],
)
async def test_unstorable_values_are_refused_by_field(
    office: Caller, client_for: ClientFactory, targets: Targets, tool: str, args: dict[str, Any], expected: str
) -> None:
    before = await snapshot(targets, office.tenant_id)
    async with client_for(office.tenant_slug) as client:
        text = error_text(await client.call_tool(tool, args))
    assert await snapshot(targets, office.tenant_id) == before
    assert text.startswith(f"invalid arguments for {tool}:")
    assert expected in text
    assert "internal error" not in text
    assert "\x00" not in text  # echoed values are escaped
    no_pydantic_words(text)


@pytest.mark.parametrize(
    ("tool", "args", "expected"),
    [
        ("get_task", {"id": "abc"}, "- id: expected a task id such as the `id` returned by create_task or list_tasks"),
        ("get_task", {"id": 42}, "- id: expected a task id such as the `id` returned by create_task or list_tasks"),
        ("update_task", {"id": "x" * 36, "expected_version": 1, "title": "t"}, "- id: expected a task id such as"),
        ("create_task", {"title": "t", "parent": "parent-1"}, "- parent: expected a task id such as"),
        (
            "create_task",
            {"title": "t", "campaign": "launch"},
            "- campaign: expected a campaign id such as the `id` returned by create_campaign or list_campaigns",
        ),
        ("list_tasks", {"campaign": ""}, "- campaign: expected a campaign id such as"),
        ("claim_next_task", {"campaign": "short"}, "- campaign: expected a campaign id such as"),
        ("get_campaign", {"id": "1234"}, "- id: expected a campaign id such as"),
        ("forget", {"id": "mem-1"}, "- id: expected a memory id such as the `id` returned by remember or recall"),
    ],
)
async def test_ids_that_are_not_uuids_say_where_ids_come_from(
    office: Caller, client_for: ClientFactory, tool: str, args: dict[str, Any], expected: str
) -> None:
    async with client_for(office.tenant_slug) as client:
        text = error_text(await client.call_tool(tool, args))
    assert expected in text
    assert "characters" not in text  # no min/max length rule


async def test_nested_metadata_errors_read_like_the_rest(office: Caller, client_for: ClientFactory) -> None:
    async with client_for(office.tenant_slug) as client:
        nested = error_text(await client.call_tool("remember", {"content": "c", "metadata": {"a": {"b": 1}}}))
        in_list = error_text(await client.call_tool("recall", {"query": "q", "metadata": {"a": [{"b": 1}]}}))
        not_object = error_text(await client.call_tool("create_campaign", {"name": "n", "metadata": "text"}))
        trait = error_text(await client.call_tool("list_personas", {"trait": {"path": "a", "equals": {"x": 1}}}))
    assert "- metadata.a: expected text, a number, true/false or a list (got {'b': 1})" in nested
    assert "- metadata.a.0: expected text, a number or true/false (got {'b': 1})" in in_list
    assert "- metadata: expected a JSON object (got 'text')" in not_object
    assert "- trait.equals: expected text, a number or true/false (got {'x': 1})" in trait
    for text in (nested, in_list, not_object, trait):
        no_pydantic_words(text)


async def test_prompt_arguments_are_checked_like_tool_arguments(office: Caller, client_for: ClientFactory) -> None:
    async with client_for(office.tenant_slug) as client:
        with pytest.raises(MCPError) as unknown:
            await client.get_prompt("persona", {"slug": "ada", "recal": "3"})
        with pytest.raises(MCPError) as missing:
            await client.get_prompt("persona", {"task": "plan"})
        with pytest.raises(MCPError) as nul:
            await client.get_prompt("persona", {"slug": "ada", "task": "plan\x00"})
        with pytest.raises(MCPError) as surrogate:
            await client.get_prompt("persona", {"slug": "ada\ud800"})
        fine = await client.get_prompt("persona", {"slug": "ada", "task": "plan"})
    assert unknown.value.error.code == INVALID_PARAMS
    assert unknown.value.error.message == (
        "unknown argument `recal`; did you mean `recall`? prompt persona accepts: slug, task, recall"
    )
    assert missing.value.error.message == "prompt persona needs slug; it accepts: slug, task, recall"
    assert "- task: contains a NUL character" in nul.value.error.message
    assert "- slug: contains a lone surrogate" in surrogate.value.error.message
    assert {e.value.error.code for e in (missing, nul, surrogate)} == {INVALID_PARAMS}
    assert fine.messages


@pytest.mark.parametrize("uri", ["persona://ada\x00", "memory://\x00", "task://a\x00b", "campaign://\x00"])
async def test_resource_uris_with_nul_are_invalid_params(office: Caller, client_for: ClientFactory, uri: str) -> None:
    async with client_for(office.tenant_slug) as client:
        with pytest.raises(MCPError) as refused:
            await client.read_resource(uri)
    assert refused.value.error.code == INVALID_PARAMS
    assert "the resource URI contains a NUL character" in refused.value.error.message


async def test_the_server_keeps_serving_after_bad_input(office: Caller, client_for: ClientFactory) -> None:
    async with client_for(office.tenant_slug) as client:
        for _ in range(3):
            assert (await client.call_tool("create_task", {"title": "\x00", "input": {"\x00": "\ud800"}})).is_error
        with anyio.fail_after(10):
            assert data(await client.call_tool("get_persona", {"slug": "ada"}))["slug"] == "ada"


async def test_limits_read_as_rules(office: Caller, client_for: ClientFactory) -> None:
    async with client_for(office.tenant_slug) as client:
        limit = error_text(await client.call_tool("list_personas", {"limit": 500}))
        lease = error_text(await client.call_tool("claim_next_task", {"lease_seconds": 5}))
    assert "- limit: must be at most 100 (got 500)" in limit
    assert "- lease_seconds: must be at least 10 (got 5)" in lease
    no_pydantic_words(limit + lease)
