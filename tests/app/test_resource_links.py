"""Tool results link the resources they mention (resource_link content), next to the structured result."""

from __future__ import annotations

import json

import pytest
from mcp.types import CallToolResult, ResourceLink, TextResourceContents

from mindscape.app.links import supported
from tests.support.http import MODES
from tests.support.results import data
from tests.support.tenants import ClientFactory, TenantFactory, persona

pytestmark = pytest.mark.anyio


def linked(result: CallToolResult) -> list[str]:
    return [str(block.uri) for block in result.content if isinstance(block, ResourceLink)]


@pytest.mark.parametrize("mode", MODES)
async def test_results_link_memories_campaigns_tasks_and_personas(
    tenant_factory: TenantFactory, client_for: ClientFactory, mode: str
) -> None:
    tenant = await tenant_factory([persona("ada", "Ada")], "links")
    async with client_for(tenant.tenant_slug, mode=mode) as client:
        stored = await client.call_tool("remember", {"content": "the tide turns at noon"})
        memory_id = data(stored)["id"]
        recalled = await client.call_tool("recall", {"query": "tide", "mode": "keyword"})
        campaign = await client.call_tool("create_campaign", {"name": "Tides", "personas": ["ada"]})
        campaign_id = data(campaign)["id"]
        parent_result = await client.call_tool("create_task", {"title": "Chart the tides", "campaign": campaign_id})
        parent = data(parent_result)
        task = await client.call_tool(
            "create_task", {"title": "Measure", "campaign": campaign_id, "persona": "ada", "parent": parent["id"]}
        )
        alone = await client.call_tool("create_task", {"title": "No links"})
        listed = await client.call_tool("list_personas", {})
        read = await client.read_resource(linked(task)[0])
    assert linked(stored) == [f"memory://{memory_id}"]
    assert linked(recalled) == [f"memory://{memory_id}"]
    assert linked(campaign) == ["persona://ada"]
    assert linked(task) == [f"campaign://{campaign_id}", f"task://{parent['id']}", "persona://ada"]
    assert linked(alone) == []
    assert linked(listed) == []
    assert linked(parent_result) == [f"campaign://{campaign_id}"]
    assert data(task)["campaign_id"] == campaign_id  # the structured result is unchanged
    contents = read.contents[0]
    assert isinstance(contents, TextResourceContents)
    assert json.loads(contents.text)["name"] == "Tides"


def test_links_only_for_clients_that_know_them() -> None:
    assert not supported("2024-11-05")
    assert not supported("2025-03-26")
    assert supported("2025-06-18")
    assert supported("2026-07-28")
    assert not supported(None)
