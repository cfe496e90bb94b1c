"""Property-based isolation: tenants driven through random sequences of every tool, resource and prompt.

The machine (tests/support/isolation/machine.py) checks after every step that no answer carries
another tenant's identifiers or content, that another tenant's identifiers read exactly like
unknown ones, and that every tenant's rows are exactly what it wrote. Runs are derandomized: CI
replays the same sequence of steps every time. benchmarks/isolation_soak.py runs it longer.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mindscape.database.targets import Targets
from tests.support.isolation.machine import Harness, Stats, harness, run, undriven
from tests.support.isolation.model import Actor, TaskState, TenantState, World
from tests.support.isolation.ops import driven
from tests.support.isolation.scan import Answer, Kind, Request, leaks
from tests.support.isolation.sessions import InMemory, OverHttp
from tests.support.serving import running_server

# Examples per run and steps per example: about 2,000 steps in all, a few minutes on 2 busy cores.
STEPS = 100
IN_MEMORY_EXAMPLES = 14
OVER_HTTP_EXAMPLES = 6
SERVER_ENV = {"MINDSCAPE_QUOTA_CALLS_PER_MINUTE": "0", "MINDSCAPE_POOL_MAX_SIZE": "2"}


def report(h: Harness, capsys: pytest.CaptureFixture[str], what: str) -> None:
    with capsys.disabled():
        print(f"\n{what}: {h.stats.summary()}")


def assert_everything_driven(h: Harness) -> None:
    """Every tool, template and prompt the server lists got calls with own ids and with foreign ones."""
    assert h.surface is not None
    for probe in (False, True):
        for kind, names in h.surface.items():
            for name in names:
                assert h.stats.targets[(probe, name)] > 0, f"{kind} {name}: no {'probe' if probe else 'call'} ran"


def test_isolation_in_memory(targets: Targets, capsys: pytest.CaptureFixture[str]) -> None:
    with harness(targets, InMemory(targets)) as h:
        try:
            run(h, examples=IN_MEMORY_EXAMPLES, steps=STEPS)
        finally:
            report(h, capsys, "in memory, one client per tenant")
    assert not h.stats.violations
    assert_everything_driven(h)


@pytest.fixture(scope="module")
def shared_server(targets: Targets, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One HTTP server, one pool of 2 connections, for every tenant's keys."""
    log = tmp_path_factory.mktemp("propiso") / "server.log"
    with running_server(targets, "http", log, extra_env=SERVER_ENV) as url:
        yield url


def test_isolation_over_http_on_one_shared_pool(
    targets: Targets, shared_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with harness(targets, OverHttp(targets, shared_server, principals=2)) as h:
        try:
            run(h, examples=OVER_HTTP_EXAMPLES, steps=STEPS)
        finally:
            report(h, capsys, "over HTTP, one server and pool, 2 keys per tenant")
    assert not h.stats.violations
    assert h.stats.bursts > 0
    assert_everything_driven(h)


def test_a_tool_the_machine_does_not_drive_fails_the_run() -> None:
    surface: dict[Kind, set[str]] = {kind: set(names) for kind, names in driven(False).items()}
    assert undriven(surface) == []
    surface["tool"].add("export_everything")
    surface["resource"].add("audit://{id}")
    assert undriven(surface) == [
        "tool export_everything is never driven",
        "resource audit://{id} is never driven",
        "tool export_everything is never probed",
        "resource audit://{id} is never probed",
    ]


def test_the_scanner_finds_another_tenants_marker_and_ids() -> None:
    import uuid

    a = TenantState(0, uuid.uuid4(), "iso0-tm0000000000", "tm0000000000", ["key:aaaa"], {})
    b = TenantState(1, uuid.uuid4(), "iso1-tm1111111111", "tm1111111111", ["key:bbbb"], {})
    world = World([a, b], [Actor(0, "key:aaaa"), Actor(1, "key:bbbb")])
    b_task = uuid.uuid4()
    b.tasks[b_task] = TaskState(b_task, "b's task", "pending", 2, None, None, None, None, seq=1)
    asked = Request("tool", "get_task", {"id": str(b_task)})
    assert leaks(world, a, asked, Answer(True, f"no task with id {b_task} in this workspace")) == []
    assert leaks(world, a, Request("tool", "list_tasks", {}), Answer(False, f'"{b_task}"')) == [
        f"id {b_task} of tenant 1"
    ]
    assert leaks(world, a, asked, Answer(False, "note tm1111111111 and tm0000000000")) == [
        "marker tm1111111111 of tenant 1"
    ]
    assert leaks(world, a, asked, Answer(False, "claimed_by key:bbbb")) == ["principal key:bbbb of tenant 1"]
    assert Stats().summary().startswith("0 steps")
