"""The database-time budget's arithmetic (quotas.db_time), on a clock the test moves.

What it does to real calls over HTTP is tests/transports/http/test_db_time_http.py.
"""

from __future__ import annotations

import uuid

import pytest

from mindscape.errors import QuotaExceeded
from mindscape.quotas.db_time import ACTIVE_S, DbTimeBudget, adopt_reserved, call_kind, reserved_runs

RATE = 100  # ms of database time per second


@pytest.fixture
def now() -> list[float]:
    return [1000.0]


@pytest.fixture
def budget(now: list[float]) -> DbTimeBudget:
    return DbTimeBudget(burst_ms=500, clock=lambda: now[0])


def spend(budget: DbTimeBudget, tenant: uuid.UUID, ms: float) -> None:
    run = budget.admit(tenant, "t", RATE)
    budget.charge(run, ms, RATE)
    run.end()


def test_a_tenant_over_its_share_is_refused_while_another_is_active_and_never_the_other(
    budget: DbTimeBudget, now: list[float]
) -> None:
    noisy, quiet = uuid.uuid4(), uuid.uuid4()
    spend(budget, quiet, 10)
    spend(budget, noisy, 800)  # 300 ms over the burst of 500
    with pytest.raises(QuotaExceeded) as refused:
        budget.admit(noisy, "noisy", RATE)
    assert refused.value.limit == "db_ms_per_second"
    assert refused.value.value == RATE
    assert refused.value.retry_after == 3  # 300 ms over, drained at 100 ms a second
    assert "tenant noisy is over its share of database time, its limit db_ms_per_second=100" in str(refused.value)
    assert "retry in 3 s" in str(refused.value)
    for _ in range(5):
        spend(budget, quiet, 10)  # the quiet tenant is never held back by the noisy one
    now[0] += 3.0  # drained back to the burst
    budget.admit(noisy, "noisy", RATE).end()


def test_of_two_tenants_over_their_share_only_the_heavier_is_refused(budget: DbTimeBudget) -> None:
    """On a busy machine every call takes longer, the victim's too: it must not pay for that."""
    heavy, light = uuid.uuid4(), uuid.uuid4()
    spend(budget, heavy, 3000)
    spend(budget, light, 900)  # over the burst of 500 too
    for _ in range(3):
        spend(budget, light, 100)
    with pytest.raises(QuotaExceeded):
        budget.admit(heavy, "heavy", RATE)


def test_a_tenant_alone_is_never_refused(budget: DbTimeBudget, now: list[float]) -> None:
    alone, other = uuid.uuid4(), uuid.uuid4()
    spend(budget, other, 1)
    spend(budget, alone, 5000)
    with pytest.raises(QuotaExceeded):
        budget.admit(alone, "alone", RATE)  # the other tenant called less than ACTIVE_S ago
    now[0] += ACTIVE_S + 0.1  # the other has gone quiet; the bucket is still far above the burst
    budget.admit(alone, "alone", RATE).end()


def test_running_calls_count_at_the_tenants_average_cost(budget: DbTimeBudget, now: list[float]) -> None:
    """The adaptive part: a tenant whose calls cost 200 ms runs two at a time, a cheap one runs many."""
    costly, cheap = uuid.uuid4(), uuid.uuid4()
    spend(budget, costly, 200)
    now[0] += 10.0  # drained: the bucket is empty, the average stays
    spend(budget, cheap, 5)  # another tenant is active
    first = budget.admit(costly, "costly", RATE)
    second = budget.admit(costly, "costly", RATE)  # 200 running + 200 expected <= 500
    with pytest.raises(QuotaExceeded):
        budget.admit(costly, "costly", RATE)  # 400 running + 200 expected
    budget.charge(first, 200, RATE)
    first.end()
    second.end()
    runs = [budget.admit(cheap, "cheap", RATE) for _ in range(50)]  # 250 ms expected in all
    for run in runs:
        run.end()


def test_a_call_costlier_than_the_burst_runs_one_at_a_time(budget: DbTimeBudget, now: list[float]) -> None:
    costly, other = uuid.uuid4(), uuid.uuid4()
    spend(budget, costly, 900)
    now[0] += 9.0  # drained; the average stays 900, above the burst of 500
    spend(budget, other, 1)
    first = budget.admit(costly, "costly", RATE)  # nothing running, the bucket empty: admitted
    with pytest.raises(QuotaExceeded):
        budget.admit(costly, "costly", RATE)
    first.end()


def test_a_tenant_whose_cost_is_unknown_starts_two_calls_at_once_while_it_shares(
    budget: DbTimeBudget, now: list[float]
) -> None:
    new, other = uuid.uuid4(), uuid.uuid4()
    spend(budget, other, 1)
    runs = [budget.admit(new, "new", RATE) for _ in range(2)]  # each counts half the burst until one ends
    with pytest.raises(QuotaExceeded):
        budget.admit(new, "new", RATE)
    for run in runs:
        budget.charge(run, 600, RATE)
        run.end()
    now[0] += 30.0  # drained; the average says 600 ms, over the burst of 500 with one running
    spend(budget, other, 1)
    first = budget.admit(new, "new", RATE)
    with pytest.raises(QuotaExceeded):
        budget.admit(new, "new", RATE)
    first.end()


def test_a_tenants_cheap_calls_do_not_lower_what_its_costly_ones_are_expected_to_cost(
    budget: DbTimeBudget, now: list[float]
) -> None:
    tenant, other = uuid.uuid4(), uuid.uuid4()
    recall, persona = call_kind("tools/call", "recall"), call_kind("tools/call", "get_persona")
    for kind, cost in [(recall, 300)] + [(persona, 2)] * 10:
        run = budget.admit(tenant, "t", RATE, kind)
        budget.charge(run, cost, RATE)
        run.end()
    now[0] += 30.0  # drained
    spend(budget, other, 1)
    first = budget.admit(tenant, "t", RATE, recall)
    with pytest.raises(QuotaExceeded):  # 300 running + 300 expected: over the burst of 500
        budget.admit(tenant, "t", RATE, recall)
    budget.admit(tenant, "t", RATE, persona).end()  # a cheap call still runs beside it
    first.end()


def test_a_running_call_counts_at_least_as_long_as_it_has_run(budget: DbTimeBudget, now: list[float]) -> None:
    slow, other = uuid.uuid4(), uuid.uuid4()
    spend(budget, slow, 100)
    now[0] += 2.0  # drained; its calls cost 100 ms on average
    spend(budget, other, 1)
    run = budget.admit(slow, "slow", RATE)
    now[0] += 0.6  # it has run 600 ms, far more than its average
    spend(budget, other, 1)
    with pytest.raises(QuotaExceeded):
        budget.admit(slow, "slow", RATE)
    run.end()  # ended without a transaction (refused later, or failed before the database)
    budget.admit(slow, "slow", RATE).end()


def test_zero_is_unlimited(budget: DbTimeBudget) -> None:
    noisy, other = uuid.uuid4(), uuid.uuid4()
    spend(budget, other, 1)
    spend(budget, noisy, 100_000)
    budget.admit(noisy, "noisy", 0).end()


def test_a_call_adopts_only_a_reserved_run_of_its_own_kind(budget: DbTimeBudget) -> None:
    tenant = uuid.uuid4()
    recall, persona = call_kind("tools/call", "recall"), call_kind("tools/call", "get_persona")
    runs = [budget.admit(tenant, "t", RATE, persona), budget.admit(tenant, "t", RATE, recall)]
    token = reserved_runs.set(runs)
    try:
        assert adopt_reserved(tenant, recall) is runs[1]
        assert adopt_reserved(tenant, recall) is None  # taken; the persona lookup's is not a recall's
        assert adopt_reserved(tenant, persona) is runs[0]
    finally:
        reserved_runs.reset(token)
    for run in runs:
        run.end()
