"""Every way recall runs gives the same answer: one statement (the tool's path for a tenant ranked
exactly), a transaction ranking exactly, and a transaction given approximate candidates (a
larger tenant's path). Their SQL shares one fusion (queries/memories.py RECALL_*)."""

from __future__ import annotations

from typing import Any

import pytest
from mcp import Client

from mindscape.database.targets import Targets
from tests.support.memory import client_with, remember
from tests.support.results import data
from tests.support.tenants import TenantFactory

pytestmark = pytest.mark.anyio

TOPICS = ["laptop", "badge", "parking", "lunch", "printer", "holiday", "payroll", "garden"]
CASES: list[dict[str, Any]] = [
    {"query": "laptop printer"},
    {"query": "laptop printer", "mode": "semantic"},
    {"query": "laptop printer", "mode": "keyword"},
    {"query": "parking lunch -garden", "k": 5},
    {"query": "holiday payroll", "min_similarity": -1, "k": 20},
    {"query": "badge", "kinds": ["fact"]},
]


def answer(found: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(m["id"], m["score"], m["similarity"], m["semantic_rank"], m["keyword_rank"]) for m in found["memories"]]


async def ask(client: Client, case: dict[str, Any]) -> list[tuple[Any, ...]]:
    return answer(data(await client.call_tool("recall", case)))


async def test_every_path_ranks_alike(targets: Targets, tenant_factory: TenantFactory) -> None:
    tenant = await tenant_factory([], "paths")
    async with client_with(targets, tenant.tenant_slug) as client:
        for n in range(40):  # more than a recall's 30 candidates per signal: the approximate path is used
            a, b = TOPICS[n % 8], TOPICS[(n * 3 + 1) % 8]
            kind = "fact" if n % 3 == 0 else "note"
            await remember(client, f"note {n}: the {a} and the {b} plan, week {n % 5}", kind=kind)
        first = await ask(client, CASES[0])  # a server's first recall: a transaction, ranked exactly
        one_statement = [await ask(client, case) for case in CASES]
    # Past memory_exact_max_rows the tenant is searched through the shared index: each recall is a
    # transaction, given the approximate candidates (all of them, on a graph this small).
    async with client_with(targets, tenant.tenant_slug, memory_exact_max_rows=5) as client:
        given = [await ask(client, case) for case in CASES]
    assert all(one_statement), one_statement
    assert first == one_statement[0]
    assert given == one_statement
    # What the fusion means, independently of how it runs: semantic mode ranks by similarity alone
    # (score = similarity, ranks 1..n in order), keyword mode by words alone (no similarity).
    semantic, keyword = one_statement[1], one_statement[2]
    assert [(score, rank) for _, score, similarity, rank, _ in semantic if score == similarity] == [
        (m[1], n) for n, m in enumerate(semantic, start=1)
    ]
    assert all(similarity is None and semantic_rank is None for _, _, similarity, semantic_rank, _ in keyword)
    assert [m[4] for m in keyword] == list(range(1, len(keyword) + 1))
    assert [m[1] for m in keyword] == sorted((m[1] for m in keyword), reverse=True)
