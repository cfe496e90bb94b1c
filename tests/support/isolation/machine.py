"""The isolation state machine: random sequences of every operation, by callers of several tenants.

Each Hypothesis example makes fresh tenants (sessions.seed_tenants), opens a session per caller
(in memory or over HTTP, see sessions.py) and seeds each tenant with something to probe. Each
rule then plans one step, or one step per tenant sent concurrently (`burst`), and checks:

- leak: no answer carries another tenant's marker, ids, slug or principal (scan.leaks);
- twin: a probe with another tenant's identifier reads exactly like one with an unknown value;
- answer: every answer is what the model predicts (ops_*.py), which also updates the model;
- untouched: the rows of every tenant whose step should not change anything are unchanged
  (digests of all its tables), so no call of one tenant changes another's rows, and refused
  calls leave nothing behind;
- rows: every tenant's rows, read by the owner, are what the model says it wrote.
"""

from __future__ import annotations

import getpass
import time
from collections import Counter, defaultdict
from collections.abc import Generator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import anyio
import asyncpg
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test
from mcp import Client

from mindscape.database.pool import connect
from mindscape.database.targets import Targets
from tests.support.external import inspect_url
from tests.support.isolation import rows
from tests.support.isolation.model import TenantState, World
from tests.support.isolation.ops import OPS, driven, ops_of, seed_phases
from tests.support.isolation.scan import Answer, Kind, leaks, masked, send
from tests.support.isolation.sessions import Connector, Sessions, seed_tenants
from tests.support.isolation.steps import Picker, Step, Violation

CHECKS = ("leak", "twin", "answer", "untouched", "rows")
OPERATOR = f"cli:{getpass.getuser()}"  # the principal of the operator's persona import


@dataclass
class Stats:
    examples: int = 0
    steps: int = 0
    bursts: int = 0
    calls: Counter[str] = field(default_factory=Counter[str])  # by kind: tool, resource, prompt
    ops: Counter[str] = field(default_factory=Counter[str])  # by operation
    targets: Counter[tuple[bool, str]] = field(default_factory=Counter[tuple[bool, str]])  # (probe, target)
    checks: Counter[str] = field(default_factory=Counter[str])
    violations: Counter[str] = field(default_factory=Counter[str])
    first_violation: str | None = None  # at which step, and what
    seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))  # setup, calls, rows
    started: float = field(default_factory=time.monotonic)

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    def summary(self) -> str:
        calls = ", ".join(f"{k} {v}" for k, v in sorted(self.calls.items()))
        return (
            f"{self.steps} steps ({self.bursts} concurrent bursts) in {self.examples} examples, "
            f"{self.total_calls} calls ({calls}), {self.checks['twin']} probes, "
            f"{sum(self.violations.values())} violations, {time.monotonic() - self.started:.0f} s"
        )


@dataclass
class Harness:
    """What the machine needs from its surroundings; one harness serves a whole run of examples."""

    portal: BlockingPortal
    targets: Targets
    connector: Connector
    owner: asyncpg.Connection[asyncpg.Record]
    tenants: int = 3
    stats: Stats = field(default_factory=Stats)
    surface: dict[Kind, set[str]] | None = None  # what the server lists, read in the first example


@contextmanager
def harness(targets: Targets, connector: Connector, *, tenants: int = 3) -> Generator[Harness]:
    with start_blocking_portal() as portal:
        owner = portal.call(connect, inspect_url(targets))
        try:
            yield Harness(portal, targets, connector, owner, tenants)
        finally:
            portal.call(owner.close)


async def listed(client: Client) -> dict[Kind, set[str]]:
    tools = {t.name for t in (await client.list_tools()).tools}
    templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
    fixed = {str(r.uri) for r in (await client.list_resources()).resources}
    prompts = {p.name for p in (await client.list_prompts()).prompts}
    return {"tool": tools, "resource": templates | fixed, "prompt": prompts}


def undriven(surface: dict[Kind, set[str]]) -> list[str]:
    """What the server lists that the machine never calls with its own ids, or never probes."""
    found: list[str] = []
    for probe, noun in ((False, "driven"), (True, "probed")):
        covered = driven(probe)
        for kind, names in surface.items():
            found += [f"{kind} {name} is never {noun}" for name in sorted(names - covered[kind])]
            found += [f"{kind} {name} is {noun} but not listed" for name in sorted(covered[kind] - names)]
    return found


class IsolationMachine(RuleBasedStateMachine):
    harness: ClassVar[Harness]

    def __init__(self) -> None:
        super().__init__()
        h = self.harness
        h.stats.examples += 1
        self.turns = 0  # steps planned so far: shifts every op choice (Picker.turn)
        started = time.monotonic()
        tenants = h.portal.call(seed_tenants, h.targets, h.tenants)
        self._open = h.portal.wrap_async_context_manager(h.connector.open(tenants))
        self.world: World
        self.sessions: Sessions
        self.world, self.sessions = self._open.__enter__()
        h.stats.seconds["setup"] += time.monotonic() - started
        try:
            self._start(tenants)
        except BaseException:
            self.teardown()  # Hypothesis tears down only machines that started
            raise

    def _start(self, tenants: list[TenantState]) -> None:
        h = self.harness
        self.ids = [t.tenant_id for t in tenants]
        if h.surface is None:
            h.surface = h.portal.call(listed, next(iter(self.sessions.values())))
            missing = undriven(h.surface)
            if missing:
                raise Violation("surface", "; ".join(missing))
        self.digests = h.portal.call(rows.digests, h.owner, self.ids)
        firsts = {a.tenant: a for a in reversed(self.world.actors)}
        phases = [seed_phases(self.world, firsts[t.index]) for t in tenants]
        for phase in zip(*phases, strict=True):  # one step at a time: the model numbers rows in creation order
            for step in [step for plan in phase for step in plan()]:
                self.execute([step])

    def teardown(self) -> None:
        self._open.__exit__(None, None, None)

    # --- rules: each family's own operations, its probes, and bursts of concurrent steps --------------

    def _one(self, family: str, probe: bool, data: st.DataObject) -> None:
        pick = Picker(data)
        self.turns += 1
        op = pick.turn(ops_of(family, probe), self.turns)
        self.harness.stats.steps += 1
        self.execute([op.plan(self.world, pick.choice(self.world.actors), pick)])

    @rule(data=st.data())
    def personas(self, data: st.DataObject) -> None:
        self._one("personas", False, data)

    @rule(data=st.data())
    def memory(self, data: st.DataObject) -> None:
        self._one("memory", False, data)

    @rule(data=st.data())
    def campaigns(self, data: st.DataObject) -> None:
        self._one("campaigns", False, data)

    @rule(data=st.data())
    def tasks(self, data: st.DataObject) -> None:
        self._one("tasks", False, data)

    @rule(data=st.data())
    def probe_personas(self, data: st.DataObject) -> None:
        self._one("personas", True, data)

    @rule(data=st.data())
    def probe_memory(self, data: st.DataObject) -> None:
        self._one("memory", True, data)

    @rule(data=st.data())
    def probe_campaigns(self, data: st.DataObject) -> None:
        self._one("campaigns", True, data)

    @rule(data=st.data())
    def probe_tasks(self, data: st.DataObject) -> None:
        self._one("tasks", True, data)

    @rule(data=st.data())
    def burst(self, data: st.DataObject) -> None:
        """One step per tenant (2 or more tenants), sent at once: they compete for connections and rows."""
        pick = Picker(data)
        chosen = [t for t in self.world.tenants if pick.chance(80)]
        steps: list[Step] = []
        for tenant in chosen if len(chosen) > 1 else self.world.tenants:
            self.turns += 1
            op = pick.turn(OPS, self.turns)
            actor = pick.choice([a for a in self.world.actors if a.tenant == tenant.index])
            steps.append(op.plan(self.world, actor, pick))
        self.harness.stats.steps += 1
        self.harness.stats.bursts += 1
        self.execute(steps)

    # --- sending and checking ------------------------------------------------------------------------

    def execute(self, steps: list[Step]) -> None:
        h = self.harness

        async def one(step: Step) -> tuple[Answer, Answer | None]:
            client = self.sessions[step.actor]
            answer = await send(client, step.request)
            return answer, (await send(client, step.twin) if step.twin else None)

        async def all_at_once() -> list[tuple[Answer, Answer | None]]:
            results: list[Any] = [None] * len(steps)

            async def run(i: int) -> None:
                results[i] = await one(steps[i])

            async with anyio.create_task_group() as group:
                for i in range(len(steps)):
                    group.start_soon(run, i)
            return results

        started = time.monotonic()
        answers = [h.portal.call(one, steps[0])] if len(steps) == 1 else h.portal.call(all_at_once)
        h.stats.seconds["calls"] += time.monotonic() - started
        changed: set[int] = set()
        for step, (answer, twin) in zip(steps, answers, strict=True):
            self._count(step, twin is not None)
            if twin is not None and step.twin is not None:
                self._check_twin(step, answer, twin)
            if self._check("answer", step.expect, answer):
                changed.add(step.actor.tenant)
            me = self.world.tenant_of(step.actor)
            for request, got in ((step.request, answer), (step.twin, twin)):
                if request is not None and got is not None:
                    found = leaks(self.world, me, request, got)
                    h.stats.checks["leak"] += 1
                    if found:
                        self._fail("leak", f"{step.op} by {step.actor.label} {request.args}: {found}; {got.text[:400]}")
        self._check_rows(changed, steps)

    def _count(self, step: Step, probed: bool) -> None:
        stats = self.harness.stats
        stats.ops[step.op] += 1
        stats.calls[step.request.kind] += 2 if probed else 1
        stats.targets[(probed, step.request.name)] += 1

    def _check(self, category: str, check: Any, *args: Any) -> Any:
        self.harness.stats.checks[category] += 1
        try:
            return check(*args)
        except Violation as exc:
            self._record(exc)
            raise

    def _fail(self, category: str, message: str) -> None:
        violation = Violation(category, message)
        self._record(violation)
        raise violation

    def _record(self, violation: Violation) -> None:
        stats = self.harness.stats
        stats.violations[violation.category] += 1
        if stats.first_violation is None:
            stats.first_violation = f"step {stats.steps} (example {stats.examples}): {str(violation)[:300]}"

    def _check_twin(self, step: Step, answer: Answer, twin: Answer) -> None:
        self.harness.stats.checks["twin"] += 1
        mine = (answer.error, masked(answer.text, list(step.foreign)))
        nowhere = (twin.error, masked(twin.text, list(step.unknown)))
        if mine != nowhere:
            self._fail("twin", f"{step.op} by {step.actor.label}: another tenant's value {mine} != unknown {nowhere}")

    def _check_rows(self, changed: set[int], steps: list[Step]) -> None:
        h = self.harness
        started = time.monotonic()
        now = h.portal.call(rows.digests, h.owner, self.ids)
        calling = {s.actor.tenant for s in steps}
        for tenant in self.world.tenants:
            h.stats.checks["untouched"] += 1
            before, after = self.digests[tenant.tenant_id], now[tenant.tenant_id]
            # A caller's own refused or read-only call may leave an audit event (the audit trail's
            # business, not isolation's); another tenant's call may leave nothing at all.
            ignored = {"audit_events"} if tenant.index in calling else set[str]()
            tables = sorted(
                k for k in before.keys() | after.keys() if before.get(k) != after.get(k) and k not in ignored
            )
            if tenant.index not in changed and tables:
                by = [f"{s.op} by {s.actor.label}" for s in steps]
                self._fail("untouched", f"tenant {tenant.index}'s {tables} changed by {by}")
        self.digests = now
        # The others' rows are as they were (same digests) and so is their model: no need to read them again.
        acted = [t for t in self.world.tenants if t.index in changed]
        stored = h.portal.call(rows.read_rows, h.owner, [t.tenant_id for t in acted]) if acted else {}
        for tenant in acted:
            h.stats.checks["rows"] += 1
            found = rows.differences(tenant, stored[tenant.tenant_id], {OPERATOR})
            if found:
                self._fail("rows", f"tenant {tenant.index} after {[s.op for s in steps]}: {found[:5]}")
        h.stats.seconds["rows"] += time.monotonic() - started


def run(h: Harness, *, examples: int, steps: int, shrink: bool = True, derandomize: bool = True) -> None:
    """Run the machine: `examples` runs of `steps` steps, each on fresh tenants.

    `derandomize` replays the same sequence of steps on every run (CI); without it every run explores
    new ones (the soak). A violation raises, after Hypothesis shrank it to a short sequence if `shrink`.
    """
    machine = type("IsolationRun", (IsolationMachine,), {"harness": h})
    phases = [Phase.explicit, Phase.generate, *([Phase.shrink] if shrink else [])]
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            derandomize=derandomize,
            database=None,
            phases=phases,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
        ),
    )
