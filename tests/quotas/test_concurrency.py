"""max_concurrent_calls bookkeeping: slots per tenant, taken and given back once, adopted by the call."""

from __future__ import annotations

import uuid

import pytest

from mindscape.errors import QuotaExceeded
from mindscape.quotas.concurrency import ConcurrentCalls, adopt_reserved, reserved_slots


def test_a_tenant_at_its_limit_is_refused_while_another_tenant_is_not() -> None:
    running = ConcurrentCalls()
    a, b = uuid.uuid4(), uuid.uuid4()
    held = [running.take(a, "acme", 2), running.take(a, "acme", 2)]
    with pytest.raises(QuotaExceeded) as refused:
        running.take(a, "acme", 2)
    assert refused.value.limit == "max_concurrent_calls"
    assert refused.value.value == 2
    assert refused.value.retry_after == 1
    assert "tenant acme already has 2 calls running, its limit max_concurrent_calls=2" in str(refused.value)
    assert running.try_take(b, 2) is not None  # another tenant's calls pass
    held[0].release()
    held[0].release()  # giving a slot back twice frees it once
    assert running.running(a) == 1
    assert running.try_take(a, 2) is not None
    assert running.try_take(a, 2) is None


def test_zero_means_unlimited_and_idle_tenants_hold_no_state() -> None:
    running = ConcurrentCalls()
    tenant = uuid.uuid4()
    slots = [running.take(tenant, "acme", 0) for _ in range(50)]
    assert running.running(tenant) == 50
    for slot in slots:
        slot.release()
    assert running.running(tenant) == 0
    assert running._running == {}  # pyright: ignore[reportPrivateUsage]


def test_a_reserved_slot_is_adopted_once_and_not_after_it_was_given_back() -> None:
    running = ConcurrentCalls()
    tenant, other = uuid.uuid4(), uuid.uuid4()
    first, second = running.take(tenant, "acme", 5), running.take(tenant, "acme", 5)
    token = reserved_slots.set([first, second])
    try:
        assert adopt_reserved(other) is None  # only the tenant's own slots
        assert adopt_reserved(tenant) is first
        assert adopt_reserved(tenant) is second
        assert adopt_reserved(tenant) is None  # each slot serves one call
    finally:
        reserved_slots.reset(token)
    assert adopt_reserved(tenant) is None  # outside the request: nothing reserved
    late = running.take(tenant, "acme", 5)
    late.release()  # the middleware gave it back before the call came
    assert not late.adopt()
    assert running.running(tenant) == 2
