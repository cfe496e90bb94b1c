"""Tenants for tests: persona builders, the two shared persona sets, and a fresh seeded tenant.

Tenants are created through the same operator path as `mindscape tenant create` and
`mindscape persona import`, so a test's data is exactly what an operator's would be.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

from mcp import Client

from mindscape.config.settings import Settings
from mindscape.database.targets import Targets
from mindscape.models.persona import PersonaIn
from mindscape.ops import personas as persona_ops
from mindscape.ops import tenants as tenant_ops
from mindscape.tenancy.caller import Caller


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
    tenant = await tenant_ops.create_tenant(targets, slug=slug, name=f"Tenant {slug}")
    if personas:
        await persona_ops.import_personas(Settings(database_url=None), targets, tenant_slug=slug, items=personas)
    return Caller(tenant_id=tenant.id, tenant_slug=slug, principal="test")


# `await tenant_factory(personas, prefix)`: make_tenant bound to the session's cluster (the fixture).
TenantFactory = Callable[[list[PersonaIn], str], Awaitable[Caller]]


def settings_for(targets: Targets, tenant_slug: str, **extra: object) -> Settings:
    given = {"database_url": targets.runtime, "database_pooler": pooler(targets), "tenant": tenant_slug}
    return Settings.model_validate(given | extra)


def pooler(targets: Targets) -> str:
    """The database_pooler setting for `targets` (transaction when the tests run through PgBouncer)."""
    return "transaction" if targets.pooled else "none"


def pooler_env(targets: Targets) -> dict[str, str]:
    """The same for a process started with MINDSCAPE_* variables."""
    return {"MINDSCAPE_DATABASE_POOLER": pooler(targets)}


# `async with client_for(slug, mode="legacy") as c:` (the fixture): an in-memory MCP client bound to a tenant.
ClientFactory = Callable[..., AbstractAsyncContextManager[Client]]


# The local embedding model (the default provider): the shared copy beside the repository
# (in CI a copy of shared/ lies beside the clone), or, for a checkout elsewhere, the directory
# MINDSCAPE_EMBEDDING_MODEL_PATH names; tests/conftest.py points every server at it.
_BESIDE = Path(__file__).resolve().parents[2].parent / "shared" / "models" / "all-MiniLM-L6-v2"
_GIVEN = os.environ.get("MINDSCAPE_EMBEDDING_MODEL_PATH")
SHARED_MODEL = Path(_GIVEN) if not _BESIDE.is_dir() and _GIVEN and Path(_GIVEN).is_dir() else _BESIDE


async def set_quota(targets: Targets, slug: str, **changes: int) -> None:
    """Per-tenant limit overrides, as `mindscape tenant quota SLUG --max-...` sets them."""
    await tenant_ops.tenant_quota(Settings(), targets, slug=slug, changes=changes, reset=False)
