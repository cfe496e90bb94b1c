"""Citus's rules for distributed tables, read from the migrated database's catalog.

Citus cannot be installed here, so this keeps the schema distributable instead (docs/scaling.md:
Citus): `tenants` and `api_keys` are reference tables (a copy on every node: a key is looked up by
its prefix before its tenant is known); every other table with a `tenant_id` column is distributed
by it; `audit_pending` is the one table neither, a known exception. The rules Citus enforces (or
needs for a tenant's queries to stay on one node):

1. every table is distributed (has `tenant_id`), reference or a listed exception;
2. every primary key, unique constraint, unique index and exclusion constraint of a distributed
   table includes `tenant_id`, and (this project's rule) leads with it;
3. every foreign key between distributed tables pairs `tenant_id` with `tenant_id` (co-located
   rows), leading;
4. no foreign key from a reference (or local) table to a distributed one.
"""

from __future__ import annotations

import pytest

from mindscape.database.pool import Connection, connect
from mindscape.database.targets import Targets

pytestmark = pytest.mark.anyio

REFERENCE = {"tenants", "api_keys"}
# Staged changes of one transaction, keyed by its xid, turned into audit events at commit: it
# cannot move to Citus as is (docs/scaling.md: what cannot move as is).
EXCEPTIONS = {"audit_pending"}

TABLES = """
SELECT c.oid, c.relname,
       EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id'
               AND NOT a.attisdropped) AS distributed
FROM pg_class c WHERE c.relnamespace = $1::regnamespace AND c.relkind IN ('r', 'p')
"""
# Column names of a constraint's or index's key, in order (expressions appear as NULL).
UNIQUE_KEYS = """
SELECT conrelid AS rel, conname AS name, contype::text AS kind,
       array(SELECT a.attname::text FROM unnest(conkey) WITH ORDINALITY k(n, i)
             LEFT JOIN pg_attribute a ON a.attrelid = conrelid AND a.attnum = k.n ORDER BY k.i) AS cols
FROM pg_constraint WHERE connamespace = $1::regnamespace AND contype IN ('p', 'u', 'x')
UNION ALL
SELECT i.indrelid, ic.relname, 'i',
       array(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(n, o)
             LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n ORDER BY k.o)
FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
WHERE ic.relnamespace = $1::regnamespace AND i.indisunique
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
"""
FOREIGN_KEYS = """
SELECT conname AS name, conrelid AS rel, confrelid AS target,
       array(SELECT a.attname::text FROM unnest(conkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = conrelid AND a.attnum = k.n ORDER BY k.i) AS cols,
       array(SELECT a.attname::text FROM unnest(confkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = confrelid AND a.attnum = k.n ORDER BY k.i) AS target_cols
FROM pg_constraint WHERE connamespace = $1::regnamespace AND contype = 'f'
"""


async def citus_violations(conn: Connection, schema: str, *, reference: set[str], exceptions: set[str]) -> list[str]:
    """Every way `schema` breaks the rules above, one line each (empty: distributable)."""
    tables = {t["oid"]: t for t in await conn.fetch(TABLES, schema)}
    name = {oid: t["relname"] for oid, t in tables.items()}
    distributed = {oid for oid, t in tables.items() if t["distributed"] and t["relname"] not in reference}
    problems: list[str] = []
    for oid, table in tables.items():
        if oid in distributed and table["relname"] in exceptions:
            problems.append(f"{table['relname']}: has tenant_id but is listed as an exception")
        if not table["distributed"] and table["relname"] not in reference | exceptions:
            problems.append(f"{table['relname']}: no tenant_id, and not listed as a reference table or exception")
    for key in await conn.fetch(UNIQUE_KEYS, schema):
        if key["rel"] in distributed and (not key["cols"] or key["cols"][0] != "tenant_id"):
            problems.append(f"{name[key['rel']]}.{key['name']}: key {key['cols']} does not lead with tenant_id")
    for fk in await conn.fetch(FOREIGN_KEYS, schema):
        source, target = fk["rel"], fk["target"]
        where = f"{name.get(source, source)}.{fk['name']}"
        if source not in distributed and target in distributed:
            problems.append(f"{where}: a reference or local table refers to distributed {name[target]}")
        elif source in distributed and target in distributed:
            pairs = list(zip(fk["cols"], fk["target_cols"], strict=True))
            if not pairs or pairs[0] != ("tenant_id", "tenant_id"):
                problems.append(f"{where}: {pairs} does not lead with tenant_id -> tenant_id")
    return problems


async def test_the_schema_follows_citus_rules(targets: Targets) -> None:
    conn = await connect(targets.owner)
    try:
        problems = await citus_violations(conn, "mindscape", reference=REFERENCE, exceptions=EXCEPTIONS)
        relnames = {t["relname"] for t in await conn.fetch(TABLES, "mindscape")}
    finally:
        await conn.close()
    assert problems == []
    assert relnames >= REFERENCE | EXCEPTIONS  # the lists name real tables
    assert len(relnames - REFERENCE - EXCEPTIONS) >= 8  # and the distributed ones are all there


BROKEN = [
    "CREATE SCHEMA citus_probe",
    "CREATE TABLE citus_probe.registry (id uuid PRIMARY KEY, favourite uuid, fav_tenant uuid)",
    "CREATE TABLE citus_probe.loose (id int PRIMARY KEY)",
    "CREATE TABLE citus_probe.good (tenant_id uuid REFERENCES citus_probe.registry (id), id uuid,"
    " PRIMARY KEY (tenant_id, id))",
    "CREATE TABLE citus_probe.bad_pk (id uuid PRIMARY KEY, tenant_id uuid)",
    "CREATE TABLE citus_probe.bad_unique (tenant_id uuid, id uuid, slug text, PRIMARY KEY (tenant_id, id),"
    " UNIQUE (slug, tenant_id))",
    "CREATE UNIQUE INDEX bad_index ON citus_probe.bad_unique (lower(slug))",
    "CREATE TABLE citus_probe.bad_fk (tenant_id uuid, id uuid, good_id uuid, PRIMARY KEY (tenant_id, id))",
    "CREATE UNIQUE INDEX good_id_tenant ON citus_probe.good (id, tenant_id)",
    "ALTER TABLE citus_probe.bad_fk ADD CONSTRAINT crosses FOREIGN KEY (good_id, tenant_id)"
    " REFERENCES citus_probe.good (id, tenant_id)",
    "ALTER TABLE citus_probe.registry ADD CONSTRAINT points_in FOREIGN KEY (fav_tenant, favourite)"
    " REFERENCES citus_probe.good (tenant_id, id)",
]


async def test_the_check_finds_each_kind_of_violation(targets: Targets) -> None:
    """The rules catch what they should, on a throwaway schema rolled back at the end."""
    conn = await connect(targets.owner)
    try:
        tx = conn.transaction()
        await tx.start()
        try:
            for statement in BROKEN:
                await conn.execute(statement)
            problems = await citus_violations(conn, "citus_probe", reference={"registry"}, exceptions=set())
        finally:
            await tx.rollback()
    finally:
        await conn.close()
    text = "\n".join(problems)
    assert "loose: no tenant_id" in text
    assert "bad_pk.bad_pk_pkey" in text
    assert "bad_unique.bad_unique_slug_tenant_id_key" in text
    assert "bad_unique.bad_index" in text
    assert "good.good_id_tenant" in text
    assert "bad_fk.crosses" in text
    assert "registry.points_in: a reference or local table refers to distributed good" in text
    assert not any(p.startswith("good.") and "good_pkey" in p for p in problems)
    assert len(problems) == 7, text
