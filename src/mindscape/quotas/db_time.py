"""Database time per tenant: a leaky bucket of transaction seconds, enforced while other tenants are active.

Calls per minute and concurrent calls bound how many calls a tenant makes, not what they cost: one
keyword recall over 10,000 memories keeps a PostgreSQL backend busy for about a second, so a tenant
within both limits can take every core (benchmarks/README.md: Noisy neighbour). This budget counts
what calls cost instead: the wall time of each call's tenant transactions (app.calls.tenant_call),
in milliseconds, poured into one bucket per tenant that drains at `db_ms_per_second`.

Before a call runs, the tenant's level is its bucket plus what its running calls are expected to
cost (each the tenant's recent average for that kind of call, EWMA by tool, or what it has run so
far if more), plus, when one of its calls is already running, this call's expected cost (half the
burst while that kind's cost is still unknown). The call is refused, with the seconds until the bucket is low
enough (429 + Retry-After over HTTP, an isError result naming the limit otherwise), when that
level is above `burst_ms` and another tenant that has made a call in the last ACTIVE_S seconds
stands lower. So:

- a tenant alone is never refused: the budget shares the database, it does not ration an idle one;
- the tenant that has used the least lately is never refused, over its own rate or not: when the
  machine is busy every call takes longer, the victim's too, and it must not pay for that;
- counting running calls at their expected cost makes the budget adaptive: a tenant whose calls
  cost about the burst runs one at a time, one whose calls cost milliseconds is held only by
  max_concurrent_calls. Costs are learned per kind of call (call_kind: the tool), since cheap
  calls say nothing of costly ones: a tenant mixing persona lookups into a flood of heavy recalls
  ran five recalls at once on their lower average. A kind whose cost is not known yet counts half
  the burst, so two such calls start at once while the tenant shares, and a third waits until
  one has shown what they cost (five unknown recalls admitted at once were what broke the
  neighbour's p99); a running call counts at least the time it has run;
- a tenant with nothing running and its bucket within the burst is always admitted, so a call
  costing more than the burst still runs, one at a time.

Per process, like max_concurrent_calls: behind N processes a tenant may use up to N times its rate
(docs/operations.md: Quotas). Nothing is written to the database.

Over HTTP the middleware checks and reserves a running call before the MCP handler (so that the
refusal can be a 429); the call adopts it (`adopt_reserved`) and ends it when its work is done.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from uuid import UUID

from mindscape.errors import QuotaExceeded

LIMIT = "db_ms_per_second"
ACTIVE_S = 5.0  # a tenant with a call this recent is "active": the budget applies while one other is
# A call of a tenant with no finished call yet counts half the burst: two may start at once while
# the tenant shares the process, a third waits until one has shown what they cost.
UNKNOWN_SHARE_OF_BURST = 0.5
EWMA_WEIGHT = 0.2  # of the latest call in a tenant's average cost of a kind of call
KINDS_PER_TENANT = 64  # kinds of call whose cost is learned per tenant; a kind past these counts as unknown
PRUNE_AT = 10_000  # tenants tracked before idle ones (an empty bucket) are dropped


@dataclass
class Run:
    """One admitted call of a tenant, until it ends; `end` is idempotent."""

    tenant_id: UUID
    started: float
    _owner: DbTimeBudget = field(repr=False)
    kind: str = ""  # call_kind(): what the call is, for its expected cost
    adopted: bool = False
    charged_ms: float = 0.0
    ended: bool = False

    def adopt(self) -> bool:
        """Take over a run the middleware reserved; False if it was already ended or adopted."""
        if self.ended or self.adopted:
            return False
        self.adopted = True
        return True

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self._owner.finished(self)


@dataclass
class _Tenant:
    level_ms: float = 0.0  # the bucket, as of `as_of`
    as_of: float = 0.0
    # EWMA of a finished call's database time, by call_kind(): a tenant's cheap calls (a persona
    # lookup) say nothing of what its costly ones (a recall over 10,000 memories) will cost.
    averages: dict[str, float] = field(default_factory=dict[str, float])
    seen: float = -math.inf  # the last admission
    per_second: int = 0  # its rate, as of its last call (each tenant may have its own)
    running: list[Run] = field(default_factory=list[Run])


class DbTimeBudget:
    def __init__(self, *, burst_ms: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._burst_ms = burst_ms
        self._unknown_ms = burst_ms * UNKNOWN_SHARE_OF_BURST
        self._clock = clock
        self._tenants: dict[UUID, _Tenant] = {}

    def level_ms(self, tenant_id: UUID, per_second: int) -> float:
        """The tenant's bucket now, plus its running calls at their expected cost (see _level)."""
        known = self._tenants.get(tenant_id)
        return 0.0 if known is None else self._level(known, per_second, self._clock())

    def lighter_tenant_active(self, tenant_id: UUID, level_ms: float) -> bool:
        """Whether another tenant made a call in the last ACTIVE_S seconds and stands below `level_ms`."""
        now = self._clock()
        return any(
            other != tenant_id and known.seen >= now - ACTIVE_S and self._level(known, known.per_second, now) < level_ms
            for other, known in self._tenants.items()
        )

    def admit(self, tenant_id: UUID, tenant_slug: str, per_second: int, kind: str = "") -> Run:
        """A running call of the tenant, of `kind` (call_kind()), or QuotaExceeded when it is over its
        share (0: unlimited)."""
        if per_second:
            level = self.level_ms(tenant_id, per_second)
            known = self._tenants.get(tenant_id)
            if known is not None and any(run.charged_ms == 0 for run in known.running):
                # Another call of the tenant is running: this one must fit in the burst as well, at
                # its expected cost.
                level += self._expected(known, kind)
            over = level - self._burst_ms
            if over > 0 and self.lighter_tenant_active(tenant_id, self.level_ms(tenant_id, per_second)):
                raise over_limit(tenant_slug, per_second, max(1, math.ceil(over / per_second)))
        now = self._clock()
        if len(self._tenants) >= PRUNE_AT:
            self._prune(now)
        state = self._tenants.setdefault(tenant_id, _Tenant(as_of=now))
        state.seen = now
        state.per_second = per_second
        run = Run(tenant_id, now, self, kind=kind)
        state.running.append(run)
        return run

    def charge(self, run: Run, spent_ms: float, per_second: int) -> None:
        """Pour a finished transaction's time into the tenant's bucket."""
        state = self._tenants.get(run.tenant_id)
        if state is None or not per_second:  # unlimited: its bucket stays empty (it always counts as lighter)
            return
        now = self._clock()
        state.level_ms = max(0.0, state.level_ms - per_second * (now - state.as_of)) + spent_ms
        state.as_of = now
        run.charged_ms += spent_ms

    def finished(self, run: Run) -> None:
        state = self._tenants.get(run.tenant_id)
        if state is None:
            return
        state.running = [r for r in state.running if r is not run]
        if run.charged_ms:
            average = state.averages.get(run.kind)
            if average is not None:
                state.averages[run.kind] = (1 - EWMA_WEIGHT) * average + EWMA_WEIGHT * run.charged_ms
            elif len(state.averages) < KINDS_PER_TENANT:
                state.averages[run.kind] = run.charged_ms

    def _level(self, known: _Tenant, per_second: int, now: float) -> float:
        """The bucket now, plus each running call at its expected cost or what it has run so far, if more."""
        drained = max(0.0, known.level_ms - per_second * (now - known.as_of))
        pending = sum(
            max(self._expected(known, run.kind), (now - run.started) * 1000)
            for run in known.running
            if run.charged_ms == 0
        )
        return drained + pending

    def _expected(self, known: _Tenant, kind: str) -> float:
        """A call's expected cost: the tenant's average for its kind, else half the burst."""
        return known.averages.get(kind) or self._unknown_ms

    def _prune(self, now: float) -> None:
        """Drop tenants that hold nothing: no running call, no recent call, an empty bucket."""
        self._tenants = {
            t: known
            for t, known in self._tenants.items()
            if known.running or known.seen >= now - ACTIVE_S or self._level(known, known.per_second, now) > 0
        }


def call_kind(method: str, name: str = "") -> str:
    """What a call is, for its expected cost: the method, and the tool's or prompt's name."""
    return f"{method} {name[:100]}" if name else method


# The runs the HTTP middleware reserved for the request being handled (see quotas.concurrency).
reserved_runs: ContextVar[list[Run] | None] = ContextVar("mindscape_reserved_db_runs", default=None)
# The run of the call in progress: its tenant transactions are charged to it (app.calls.tenant_call).
current_run: ContextVar[Run | None] = ContextVar("mindscape_db_run", default=None)


def adopt_reserved(tenant_id: UUID, kind: str = "") -> Run | None:
    """The run the middleware reserved for this call, of the same kind (a batch may hold several),
    so that the call's cost is learned as what it is."""
    for run in reserved_runs.get() or ():
        if run.tenant_id == tenant_id and run.kind == kind and run.adopt():
            return run
    return None


def over_limit(tenant_slug: str, per_second: int, retry_after: int) -> QuotaExceeded:
    return QuotaExceeded(
        f"tenant {tenant_slug} is over its share of database time, its limit {LIMIT}={per_second} "
        f"while other tenants are busy; retry in {retry_after} s, and prefer cheaper calls (a smaller k, "
        "fewer query words) or fewer at once (an operator can raise the limit with `mindscape tenant quota`)",
        limit=LIMIT,
        value=per_second,
        retry_after=retry_after,
    )
