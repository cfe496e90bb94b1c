"""A read-only credential lists only the read tools, and is still refused a write tool called by name."""

from __future__ import annotations

import pytest

from mindscape.tenancy.caller import Caller
from tests.support.http import MODES
from tests.support.principals import client_as
from tests.support.results import text_of
from tests.support.tenants import ClientFactory

pytestmark = [pytest.mark.anyio, pytest.mark.office("ada", prefix="scopes")]

READ_TOOLS = {
    "get_persona",
    "list_personas",
    "recall",
    "list_memories",
    "get_campaign",
    "list_campaigns",
    "get_task",
    "list_tasks",
}


@pytest.mark.parametrize("mode", MODES)
async def test_a_read_key_lists_the_read_tools_only(office: Caller, client_for: ClientFactory, mode: str) -> None:
    async with client_as(client_for, office, "rd01", scope="read", mode=mode) as reader:
        listed = {tool.name for tool in await reader.list_tools()}
        refused = await reader.call_tool("remember", {"content": "a reader may not write"})
    assert listed == READ_TOOLS
    assert refused.is_error
    assert "remember changes data" in text_of(refused)  # the wording per credential: tests/transports/http


@pytest.mark.parametrize("mode", MODES)
async def test_a_write_key_and_stdio_list_every_tool(office: Caller, client_for: ClientFactory, mode: str) -> None:
    async with client_as(client_for, office, "wr01", mode=mode) as writer:
        by_key = {tool.name for tool in await writer.list_tools()}
    async with client_for(office.tenant_slug, mode=mode) as configured:
        by_stdio = {tool.name for tool in (await configured.list_tools()).tools}
    assert by_key == by_stdio
    assert by_key > READ_TOOLS
    assert {"remember", "forget", "update_memory", "create_task", "update_task", "claim_next_task"} <= by_key


async def test_listings_are_cached_privately_for_a_while_and_records_not(
    office: Caller, client_for: ClientFactory
) -> None:
    async with client_for(office.tenant_slug, mode="auto") as client:
        tools = await client.list_tools()
        templates = await client.list_resource_templates()
        persona = await client.read_resource("persona://ada")
    assert (tools.ttl_ms, tools.cache_scope) == (300_000, "private")  # the list depends on the credential
    assert (templates.ttl_ms, templates.cache_scope) == (300_000, "private")
    assert (persona.ttl_ms, persona.cache_scope) == (0, "private")
