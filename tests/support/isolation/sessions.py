"""Tenants with marked personas, and MCP sessions for their callers: in-memory or over HTTP.

In memory, each tenant gets its own `Client(server)` bound to it by configuration, exactly as
`mindscape serve --tenant` would (one principal per tenant). Over HTTP, one `mindscape serve
--transport http` process with one shared pool serves every tenant, and each tenant has
several API keys, each a principal of its own.
"""

from __future__ import annotations

import getpass
from collections.abc import AsyncGenerator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Protocol

from mcp import Client

from mindscape.app.server import build_server
from mindscape.app.state import open_state
from mindscape.config.settings import Settings
from mindscape.database.targets import Targets
from mindscape.models.persona import PersonaIn
from mindscape.ops import personas as persona_ops
from mindscape.ops import tenants as tenant_ops
from mindscape.tenancy import keys
from tests.support.http import mcp_client, new_key
from tests.support.isolation.model import UNIQUE_PERSONAS, Actor, PersonaState, TenantState, World, new_marker
from tests.support.tenants import persona, settings_for

Sessions = dict[Actor, Client]


def personas_for(index: int, marker: str) -> list[PersonaIn]:
    """'ada' in every tenant (the same slug, marked texts), 'basil' in every other one (identical and
    unmarked: look-alike data), and one persona whose slug only this tenant has."""
    unique = UNIQUE_PERSONAS[index % len(UNIQUE_PERSONAS)]
    warm = {"communication": {"tone": "warm"}}
    found = [
        persona(
            "ada",
            f"Ada {marker}",
            summary=f"Careful analyst {marker}",
            instructions=f"Cite your sources {marker}",
            traits={"communication": {"tone": f"tone-{marker}"}},
            tags=["team", marker],
        ),
        persona(
            f"{unique}-{marker}",
            f"{unique.capitalize()} {marker}",
            summary=f"Only here {marker}",
            traits=warm,
            tags=[marker],
        ),
    ]
    if index % 2 == 0:
        found.append(persona("basil", "Basil Support", summary="Warm support for billing", traits=warm, tags=["team"]))
    return found


async def seed_tenants(targets: Targets, count: int) -> list[TenantState]:
    """`count` fresh tenants, created and given personas the way an operator does it."""
    tenants: list[TenantState] = []
    for index in range(count):
        marker = new_marker()
        slug = f"iso{index}-{marker}"
        created = await tenant_ops.create_tenant(targets, slug=slug, name=f"Isolation {marker}")
        items = personas_for(index, marker)
        await persona_ops.import_personas(Settings(database_url=None), targets, tenant_slug=slug, items=items)
        personas = {
            p.slug: PersonaState(p.slug, p.name, tuple(p.tags), p.traits["communication"]["tone"]) for p in items
        }
        tenants.append(TenantState(index, created.id, slug, marker, [], personas))
    return tenants


class Connector(Protocol):
    """Opens one MCP session per caller of the given tenants, filling in their principals."""

    def open(self, tenants: list[TenantState]) -> AbstractAsyncContextManager[tuple[World, Sessions]]: ...


class InMemory:
    """A `Client(server)` per tenant, its tenant set by configuration; calls-per-minute quota off."""

    def __init__(self, targets: Targets, mode: str = "auto") -> None:
        self.targets, self.mode = targets, mode

    @asynccontextmanager
    async def open(self, tenants: list[TenantState]) -> AsyncGenerator[tuple[World, Sessions]]:
        principal = f"stdio:{getpass.getuser()}"
        async with AsyncExitStack() as stack:
            sessions: Sessions = {}
            for tenant in tenants:
                settings = settings_for(self.targets, tenant.slug, quota_calls_per_minute=0)
                server = build_server(lambda settings=settings: open_state(settings, self.targets.runtime))
                client = Client(server, mode=self.mode, raise_exceptions=False)  # pyright: ignore[reportArgumentType]
                tenant.principals.append(principal)
                sessions[Actor(tenant.index, principal)] = await stack.enter_async_context(client)
            yield World(tenants, list(sessions)), sessions


class OverHttp:
    """One shared HTTP server; `principals` write keys per tenant, each its own caller."""

    def __init__(self, targets: Targets, base_url: str, principals: int = 2, mode: str = "legacy") -> None:
        self.targets, self.base_url, self.principals, self.mode = targets, base_url, principals, mode

    @asynccontextmanager
    async def open(self, tenants: list[TenantState]) -> AsyncGenerator[tuple[World, Sessions]]:
        async with AsyncExitStack() as stack:
            sessions: Sessions = {}
            for tenant in tenants:
                for _ in range(self.principals):
                    token = await new_key(self.targets, tenant.slug, "write")
                    parsed = keys.parse(token)
                    assert parsed is not None
                    principal = f"key:{parsed[0]}"
                    tenant.principals.append(principal)
                    client = await stack.enter_async_context(mcp_client(self.base_url, token, self.mode))
                    sessions[Actor(tenant.index, principal)] = client
            yield World(tenants, list(sessions)), sessions
