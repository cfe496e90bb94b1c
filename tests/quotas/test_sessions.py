"""max_sessions bookkeeping: sessions per tenant, admitted under the limit and freed by any close."""

from __future__ import annotations

import uuid

from mindscape.quotas.sessions import OpenSessions, over_limit


def test_a_tenant_at_its_limit_is_refused_while_another_tenant_opens_sessions() -> None:
    sessions = OpenSessions()
    a, b = uuid.uuid4(), uuid.uuid4()
    assert sessions.open(a, "a1", 2)
    assert sessions.open(a, "a2", 2)
    assert not sessions.open(a, "a3", 2)
    assert sessions.count(a) == 2
    assert sessions.open(b, "b1", 2)
    sessions.close("a1")
    sessions.close("a1")  # closing twice (DELETE, then the session task ending) frees one slot
    sessions.close("unknown")
    assert sessions.open(a, "a3", 2)
    assert not sessions.open(a, "a4", 2)
    assert len(sessions) == 3


def test_zero_means_unlimited_and_closed_tenants_hold_no_state() -> None:
    sessions = OpenSessions()
    tenant = uuid.uuid4()
    for n in range(100):
        assert sessions.open(tenant, n, 0)
    for n in range(100):
        sessions.close(n)
    assert sessions.count(tenant) == 0
    assert len(sessions) == 0
    assert sessions._by_tenant == {}  # pyright: ignore[reportPrivateUsage]


def test_the_refusal_names_the_limit_and_what_to_do() -> None:
    refused = over_limit("acme", 3)
    assert refused.limit == "max_sessions"
    assert refused.value == 3
    assert refused.retry_after == 60
    message = str(refused)
    assert "tenant acme already has 3 open sessions, its limit max_sessions=3" in message
    assert "reuse an open session" in message
    assert "close unused ones" in message
    assert "mindscape tenant quota" in message
