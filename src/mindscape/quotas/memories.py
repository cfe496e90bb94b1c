"""max_memories and max_content_bytes, enforced inside the writing tenant transaction.

With a memory limit set, a writer first takes a transaction-level advisory lock keyed by the
tenant, then inserts, then counts: two concurrent writers cannot both see room for one more.
What matters is that the count's statement starts once the lock is held (its snapshot then holds
every earlier holder's committed rows): `remember` takes the lock in its insert statement
(queries/memories.py INSERT_LOCKED; in one statement, the REMEMBER script counts in a statement
of the script after it), an import in a statement of its own (lock_for_insert).
Counting after the insert lets a duplicate (which inserts nothing) through even at the limit.
Without a limit (0) neither the lock nor the count is paid.
"""

from __future__ import annotations

from mindscape.errors import QuotaExceeded
from mindscape.queries import quotas
from mindscape.quotas.limits import Limit
from mindscape.tenancy.transaction import TenantTx

RAISE_HINT = "forget some or ask an operator to raise max_memories (`mindscape tenant quota`)"


def check_content_size(size: int, limit: Limit) -> None:
    if size > limit.value:
        raise QuotaExceeded(
            f"content is {size} bytes, over the {limit.value}-byte limit (the tenant's max_content_bytes); "
            "store a shorter text",
            limit=limit.name,
            value=limit.value,
        )


async def lock_for_insert(tx: TenantTx, limit: Limit) -> None:
    if not limit.unlimited:
        await quotas.lock_memory_writes(tx.conn, tenant_id=tx.tenant_id)


async def live_count_if_over(tx: TenantTx, limit: Limit, *, adding: int = 0) -> int | None:
    """None when the tenant's memories (plus `adding`) fit the limit, else how many live ones it holds.

    Cheap first: the bounded count of every row. Only when that is over the limit are the live
    (unexpired) memories counted, since expired ones do not count.
    """
    counted = await quotas.count_memories_up_to(tx.conn, tenant_id=tx.tenant_id, at_most=limit.value + 1)
    if counted + adding <= limit.value:
        return None
    live = await quotas.count_live_memories(tx.conn, tenant_id=tx.tenant_id)
    return None if live + adding <= limit.value else live


async def check_count(tx: TenantTx, tenant_slug: str, limit: Limit, *, added: int) -> None:
    """After inserting `added` memories (under lock_for_insert): refuse if the tenant is now over its limit."""
    if limit.unlimited or added == 0:
        return
    live = await live_count_if_over(tx, limit)
    if live is not None:
        raise refused(tenant_slug, limit, held=live - added, adding=added)


async def check_room(tx: TenantTx, tenant_slug: str, limit: Limit, *, adding: int) -> None:
    """Before an import does any work: refuse early if `adding` more memories cannot fit (rechecked when writing)."""
    if limit.unlimited or adding == 0:
        return
    live = await live_count_if_over(tx, limit, adding=adding)
    if live is not None:
        raise refused(tenant_slug, limit, held=live, adding=adding)


def refused(tenant_slug: str, limit: Limit, *, held: int, adding: int) -> QuotaExceeded:
    return QuotaExceeded(
        f"tenant {tenant_slug} holds {held} memories, limit {limit.value}"
        + (f" (this import adds {adding})" if adding > 1 else "")
        + f"; {RAISE_HINT}",
        limit=limit.name,
        value=limit.value,
    )
