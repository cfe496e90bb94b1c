"""Each tenant's rows, read through the owner connection, and how they differ from the model.

The owner bypasses row-level security on purpose: these reads see what is really stored, so a
row written into the wrong tenant, or a row of one tenant changed by another's call, shows up.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import asyncpg

from tests.support.isolation.model import TenantState

# Every tenant-scoped table (api_keys is left out: using a key stamps its last_used_at).
TABLES = ("personas", "memories", "memory_embeddings", "campaigns", "campaign_personas", "tasks", "audit_events")
# The table names are the constants above, never input.
DIGESTS = " UNION ALL ".join(
    [
        f"SELECT '{table}' AS tab, tenant_id, md5(string_agg(x::text, '|' ORDER BY x::text)) AS digest "
        f"FROM mindscape.{table} x WHERE tenant_id = ANY($1::uuid[]) GROUP BY tenant_id"
        for table in TABLES
    ]
    + ["SELECT 'tenants', id, md5(x::text) FROM mindscape.tenants x WHERE id = ANY($1::uuid[])"]
)
PERSONAS = "SELECT tenant_id, id, slug, name, tags FROM mindscape.personas WHERE tenant_id = ANY($1::uuid[])"
MEMORIES = """
SELECT m.tenant_id, m.id, m.content, m.kind, p.slug AS persona, m.metadata::text AS metadata,
       (SELECT count(*) FROM mindscape.memory_embeddings e
        WHERE e.tenant_id = m.tenant_id AND e.memory_id = m.id) AS embeddings
FROM mindscape.memories m
LEFT JOIN mindscape.personas p ON p.tenant_id = m.tenant_id AND p.id = m.persona_id
WHERE m.tenant_id = ANY($1::uuid[])
"""
CAMPAIGNS = """
SELECT c.tenant_id, c.id, c.name, c.objective, c.status, c.version, c.metadata::text AS metadata,
       ARRAY(SELECT p.slug FROM mindscape.campaign_personas cp
             JOIN mindscape.personas p ON p.tenant_id = cp.tenant_id AND p.id = cp.persona_id
             WHERE cp.tenant_id = c.tenant_id AND cp.campaign_id = c.id ORDER BY p.slug) AS personas
FROM mindscape.campaigns c
WHERE c.tenant_id = ANY($1::uuid[])
"""
TASKS = """
SELECT t.tenant_id, t.id, t.title, t.status, t.priority, t.campaign_id, p.slug AS persona, t.parent_id,
       t.idempotency_key, t.version, t.attempts, t.claimed_by, t.result::text AS result
FROM mindscape.tasks t
LEFT JOIN mindscape.personas p ON p.tenant_id = t.tenant_id AND p.id = t.persona_id
WHERE t.tenant_id = ANY($1::uuid[])
"""
AUDIT = "SELECT tenant_id, principal, target_ids FROM mindscape.audit_events WHERE tenant_id = ANY($1::uuid[])"

Digests = dict[UUID, dict[str, str]]


@dataclass
class TenantRows:
    personas: dict[str, tuple[str, list[str]]] = field(default_factory=dict[str, tuple[str, list[str]]])
    memories: dict[UUID, tuple[Any, ...]] = field(default_factory=dict[UUID, tuple[Any, ...]])
    campaigns: dict[UUID, tuple[Any, ...]] = field(default_factory=dict[UUID, tuple[Any, ...]])
    tasks: dict[UUID, tuple[Any, ...]] = field(default_factory=dict[UUID, tuple[Any, ...]])
    audit: list[tuple[str, list[str]]] = field(default_factory=list[tuple[str, list[str]]])
    persona_ids: set[str] = field(default_factory=set[str])


async def digests(conn: asyncpg.Connection[asyncpg.Record], tenant_ids: list[UUID]) -> Digests:
    """Per tenant, per table: an md5 over the full text of its rows (absent: no rows)."""
    found: Digests = defaultdict(dict)
    for row in await conn.fetch(DIGESTS, tenant_ids):
        found[row["tenant_id"]][row["tab"]] = row["digest"]
    return {t: dict(found[t]) for t in tenant_ids}


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


async def read_rows(conn: asyncpg.Connection[asyncpg.Record], tenant_ids: list[UUID]) -> dict[UUID, TenantRows]:
    rows = {t: TenantRows() for t in tenant_ids}
    for r in await conn.fetch(PERSONAS, tenant_ids):
        rows[r["tenant_id"]].personas[r["slug"]] = (r["name"], list(r["tags"]))
        rows[r["tenant_id"]].persona_ids.add(str(r["id"]))
    for r in await conn.fetch(MEMORIES, tenant_ids):
        memory = (r["content"], r["persona"], r["kind"], _json(r["metadata"]), r["embeddings"])
        rows[r["tenant_id"]].memories[r["id"]] = memory
    for r in await conn.fetch(CAMPAIGNS, tenant_ids):
        campaign = (r["name"], r["objective"], r["status"], r["version"], list(r["personas"]), _json(r["metadata"]))
        rows[r["tenant_id"]].campaigns[r["id"]] = campaign
    for r in await conn.fetch(TASKS, tenant_ids):
        rows[r["tenant_id"]].tasks[r["id"]] = (
            r["title"],
            r["status"],
            r["priority"],
            r["campaign_id"],
            r["persona"],
            r["parent_id"],
            r["idempotency_key"],
            r["version"],
            r["attempts"],
            r["claimed_by"],
            _json(r["result"]),
        )
    for r in await conn.fetch(AUDIT, tenant_ids):
        rows[r["tenant_id"]].audit.append((r["principal"], list(r["target_ids"])))
    return rows


def differences(tenant: TenantState, rows: TenantRows, operator_principals: set[str]) -> list[str]:
    """How the tenant's stored rows differ from what it wrote (empty: they match)."""
    found: list[str] = []
    personas = {p.slug: (p.name, list(p.tags)) for p in tenant.personas.values()}
    if rows.personas != personas:
        found.append(f"personas: stored {rows.personas}, expected {personas}")
    memories = {
        m.id: (m.content, m.persona, m.kind, m.metadata, 1) for m in tenant.memories.values()
    }  # one embedding each, with the tenant's model
    found += _dict_diff("memory", rows.memories, memories)
    campaigns = {
        c.id: (c.name, c.objective, c.status, c.version, sorted(c.personas), c.metadata)
        for c in tenant.campaigns.values()
    }
    found += _dict_diff("campaign", rows.campaigns, campaigns)
    tasks = {
        t.id: (
            t.title,
            t.status,
            t.priority,
            t.campaign_id,
            t.persona,
            t.parent_id,
            t.idempotency_key,
            t.version,
            t.attempts,
            t.claimed_by,
            t.result,
        )
        for t in tenant.tasks.values()
    }
    found += _dict_diff("task", rows.tasks, tasks)
    # The audit trail: written by this tenant's principals (or the operator's import), about its own rows.
    # The operator's persona import is audited by persona id (0006): the ids of the personas stored
    # for this tenant, whose slugs and names were just compared with the model.
    own = tenant.known_ids() | set(tenant.personas) | rows.persona_ids
    principals = set(tenant.principals) | operator_principals
    for principal, targets in rows.audit:
        if principal not in principals or not set(targets) <= own:
            found.append(f"audit event by {principal} about {targets}: not this tenant's")
    return found


def _dict_diff(noun: str, stored: dict[UUID, tuple[Any, ...]], expected: dict[UUID, tuple[Any, ...]]) -> list[str]:
    found = [f"{noun} {i} stored, never written (or forgotten): {stored[i]}" for i in stored.keys() - expected.keys()]
    found += [f"{noun} {i} missing: {expected[i]}" for i in expected.keys() - stored.keys()]
    found += [
        f"{noun} {i}: stored {stored[i]}, expected {expected[i]}"
        for i in stored.keys() & expected.keys()
        if stored[i] != expected[i]
    ]
    return found
