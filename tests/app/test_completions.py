"""completion/complete: persona slugs and record ids by prefix, only ever the caller's tenant's."""

from __future__ import annotations

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, PromptReference, ResourceTemplateReference

from tests.support.http import MODES
from tests.support.results import data
from tests.support.tenants import ClientFactory, TenantFactory, persona

pytestmark = pytest.mark.anyio

PROMPT = PromptReference(type="ref/prompt", name="persona")


def template(uri: str) -> ResourceTemplateReference:
    return ResourceTemplateReference(type="ref/resource", uri=uri)


async def values(client: Client, ref: PromptReference | ResourceTemplateReference, name: str, typed: str) -> list[str]:
    return (await client.complete(ref, {"name": name, "value": typed})).completion.values


async def records(client: Client) -> dict[str, str]:
    memory = data(await client.call_tool("remember", {"content": "the lighthouse keeper's notes"}))
    campaign = data(await client.call_tool("create_campaign", {"name": "Autumn"}))
    task = data(await client.call_tool("create_task", {"title": "Trim the wick", "campaign": campaign["id"]}))
    return {"memory": memory["id"], "campaign": campaign["id"], "task": task["id"]}


@pytest.mark.parametrize("mode", MODES)
async def test_completions_offer_the_callers_slugs_and_ids_only(
    tenant_factory: TenantFactory, client_for: ClientFactory, mode: str
) -> None:
    a = await tenant_factory([persona("ada", "Ada"), persona("adder", "Adder"), persona("bo", "Bo")], "compa")
    b = await tenant_factory([persona("adb-secret", "B's own")], "compb")
    async with client_for(a.tenant_slug, mode=mode) as ca, client_for(b.tenant_slug, mode=mode) as cb:
        ids = await records(ca)
        assert await values(ca, PROMPT, "slug", "ad") == ["ada", "adder"]
        assert await values(ca, template("persona://{slug}"), "slug", "") == ["ada", "adder", "bo"]
        assert await values(cb, PROMPT, "slug", "ad") == ["adb-secret"]
        assert await values(ca, PROMPT, "recall", "1") == [
            "1",
            "10",
            "11",
            "12",
            "13",
            "14",
            "15",
            "16",
            "17",
            "18",
            "19",
        ]
        for kind, record_id in ids.items():
            ref = template(f"{kind}://{{id}}")
            assert await values(ca, ref, "id", record_id[:4]) == [record_id], kind
            assert await values(ca, ref, "id", record_id.upper()) == [record_id], kind
            assert await values(cb, ref, "id", record_id[:4]) == [], kind  # B never sees A's ids
            assert await values(cb, ref, "id", "") == [], kind
        assert await values(ca, template("memory://{id}"), "id", "not-hex%") == []
        assert await values(ca, PROMPT, "task", "any") == []


async def test_a_value_that_cannot_be_stored_is_invalid_params(
    tenant_factory: TenantFactory, client_for: ClientFactory
) -> None:
    a = await tenant_factory([persona("ada", "Ada")], "compc")
    async with client_for(a.tenant_slug) as client:
        with pytest.raises(MCPError) as refused:
            await values(client, PROMPT, "slug", "a\x00")
    assert refused.value.error.code == INVALID_PARAMS
    assert "NUL" in refused.value.error.message


async def test_the_server_says_it_completes(tenant_factory: TenantFactory, client_for: ClientFactory) -> None:
    a = await tenant_factory([], "compd")
    async with client_for(a.tenant_slug, mode="legacy") as client:
        assert client.server_capabilities is not None
        assert client.server_capabilities.completions is not None
