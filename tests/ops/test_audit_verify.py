"""`mindscape audit verify`: the tenant's hash chain recomputed, the first broken link reported.

Tampering is done the only way it can be: as the database superuser, with the append-only
trigger switched off (`session_replication_role = replica`), as an intruder with those rights
or a careless operator would.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
import asyncpg
import pytest

from mindscape.config.settings import Settings
from mindscape.database.pool import Pool, connect
from mindscape.database.targets import Targets
from mindscape.ops.audit import verify_chain
from mindscape.tenancy.caller import Caller
from mindscape.tenancy.transaction import tenant_transaction
from tests.support.cli import mindscape
from tests.support.tenants import TenantFactory, persona

pytestmark = pytest.mark.anyio
EVENTS = 5  # one persona imported, then four tasks created


async def office_with_events(tenant_factory: TenantFactory, pool: Pool) -> Caller:
    office = await tenant_factory([persona("ada", "Ada")], "verify")
    for i in range(EVENTS - 1):
        async with tenant_transaction(pool, office, read_only=False, statement_timeout_ms=5000) as tx:
            await tx.conn.execute(
                "INSERT INTO mindscape.tasks (tenant_id, title) VALUES ($1, $2)", tx.tenant_id, f"t{i}"
            )
    return office


async def as_superuser(targets: Targets, statement: str, *args: Any) -> None:
    conn = await connect(targets.owner)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")  # ordinary triggers off
            await conn.execute(statement, *args)
    finally:
        await conn.close()


async def event_id(targets: Targets, office: Caller, seq: int) -> str:
    conn = await connect(targets.owner)
    try:
        found = await conn.fetchval(
            "SELECT id FROM mindscape.audit_events WHERE tenant_id = $1 AND seq = $2", office.tenant_id, seq
        )
    finally:
        await conn.close()
    return str(found)


async def verify_cli(targets: Targets, office: Caller) -> tuple[int, str]:
    # In a worker thread: the command runs its own event loop.
    result = await anyio.to_thread.run_sync(mindscape, targets, "audit", "verify", "--tenant", office.tenant_slug)
    return result.exit_code, result.stdout


async def test_an_intact_chain_verifies(targets: Targets, pool: Pool, tenant_factory: TenantFactory) -> None:
    office = await office_with_events(tenant_factory, pool)
    report = await verify_chain(Settings(database_url=None), targets, tenant_slug=office.tenant_slug)
    assert (report.broken, report.events) == (None, EVENTS)
    assert len(report.head) == 64
    code, out = await verify_cli(targets, office)
    assert code == 0
    assert out.strip() == f"ok, {EVENTS} events (head {report.head})"


async def test_a_tenant_without_events_verifies(targets: Targets, tenant_factory: TenantFactory) -> None:
    office = await tenant_factory([], "verify")
    code, out = await verify_cli(targets, office)
    assert (code, out.strip()) == (0, "ok, 0 events")


SET_DETAIL = """
UPDATE mindscape.audit_events SET detail = '{"forged": true}' WHERE tenant_id = $1 AND seq = 3
"""
# A careful forger recomputes the altered event's own hash: then the next link breaks, or the head.
REHASHED = """
UPDATE mindscape.audit_events e
SET detail = '{"forged": true}',
    hash = mindscape.audit_hash(p.hash, e.tenant_id, e.seq, e.id, e.principal, e.tool, e.target_ids, e.outcome,
                                '{"forged": true}', e.created_at)
FROM mindscape.audit_events p
WHERE e.tenant_id = $1 AND e.seq = $2 AND p.tenant_id = e.tenant_id AND p.seq = $2 - 1
"""
MISMATCH = "its hash does not match its content"
# name: (statement, its arguments after the tenant, seq of the event reported, what the report says)
TAMPERING: dict[str, tuple[str, tuple[Any, ...], int, str]] = {
    "altered": (SET_DETAIL, (), 3, MISMATCH),
    "altered-and-rehashed": (REHASHED, (3,), 4, MISMATCH),
    "principal-changed": (
        "UPDATE mindscape.audit_events SET principal = 'someone-else' WHERE tenant_id = $1 AND seq = 1",
        (),
        1,
        MISMATCH,
    ),
    "deleted": ("DELETE FROM mindscape.audit_events WHERE tenant_id = $1 AND seq = 2", (), 3, "event 2 before it"),
    "newest-deleted": (
        "DELETE FROM mindscape.audit_events WHERE tenant_id = $1 AND seq = $2",
        (EVENTS,),
        EVENTS - 1,
        f"the head records {EVENTS} events but the chain ends at {EVENTS - 1}",
    ),
    "newest-altered-and-rehashed": (REHASHED, (EVENTS,), EVENTS, "differs from the head's"),
}


@pytest.mark.parametrize("case", list(TAMPERING))
async def test_tampering_is_reported_at_the_first_broken_link(
    targets: Targets, pool: Pool, tenant_factory: TenantFactory, case: str
) -> None:
    office = await office_with_events(tenant_factory, pool)
    statement, args, seq, says = TAMPERING[case]
    reported = await event_id(targets, office, seq)
    await as_superuser(targets, statement, office.tenant_id, *args)

    report = await verify_chain(Settings(database_url=None), targets, tenant_slug=office.tenant_slug)
    code, out = await verify_cli(targets, office)

    assert report.broken is not None
    assert (str(report.broken.id), report.broken.seq) == (reported, seq)
    assert says in report.broken.reason
    assert code == 1
    assert out.startswith(f"broken at event {reported} (seq {seq}, ")
    assert says in out


async def test_a_removed_head_is_reported(targets: Targets, pool: Pool, tenant_factory: TenantFactory) -> None:
    office = await office_with_events(tenant_factory, pool)
    await as_superuser(targets, "DELETE FROM mindscape.audit_heads WHERE tenant_id = $1", office.tenant_id)
    report = await verify_chain(Settings(database_url=None), targets, tenant_slug=office.tenant_slug)
    assert report.broken is not None
    assert "no head" in report.broken.reason


async def test_the_append_only_trigger_stops_tampering_without_superuser_rights(
    targets: Targets, pool: Pool, tenant_factory: TenantFactory
) -> None:
    office = await office_with_events(tenant_factory, pool)
    conn = await connect(targets.owner)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute(SET_DETAIL, office.tenant_id)
    finally:
        await conn.close()
    assert (await verify_chain(Settings(database_url=None), targets, tenant_slug=office.tenant_slug)).broken is None
