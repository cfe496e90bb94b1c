"""Database round trips, counted exactly where asyncpg talks to the server, per call.

asyncpg sends every request through its connection's protocol object: a simple query, a
statement's preparation (a statement cache miss, or every statement through PgBouncer, where the
cache is off), a bind-and-execute, a cursor's fetch, a COPY, a statement's close. Each of those
waits for the server's answer: one round trip. `CountingProtocol` stands in front of the protocol
and counts each; `pool.py` installs it on every pooled connection.

A call (`counting`) opens a tally in a context variable; tasks started from the call copy the
context, so the after-reply end of a read (tenancy.transaction) adds to the same tally. The tally
is reported once, when the call and everything that held it (`hold`) are done.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

# Every method of asyncpg's protocol that sends a request and waits for its answer.
ROUND_TRIP_METHODS = frozenset(
    {"query", "prepare", "bind_execute", "bind_execute_many", "bind", "execute", "close_statement"}
    | {"copy_in", "copy_out"}
)


class Tally:
    """The round trips of one call; `report(n)` runs once, when the last holder lets go."""

    __slots__ = ("_holders", "_report", "count")

    def __init__(self, report: Callable[[int], None]) -> None:
        self.count = 0
        self._holders = 1
        self._report = report

    def hold(self) -> Tally:
        self._holders += 1
        return self

    def release(self) -> None:
        self._holders -= 1
        if self._holders == 0:
            self._report(self.count)


_TALLY: ContextVar[Tally | None] = ContextVar("mindscape_round_trips", default=None)


@contextmanager
def counting(report: Callable[[int], None]) -> Generator[Tally]:
    """Count the round trips of what runs inside (and of tasks it starts that `hold` the tally)."""
    tally = Tally(report)
    token = _TALLY.set(tally)
    try:
        yield tally
    finally:
        _TALLY.reset(token)
        tally.release()


def hold() -> Tally | None:
    """Keep the current call's tally open for work that ends after the call (None outside a call)."""
    tally = _TALLY.get()
    return tally.hold() if tally is not None else None


class CountingProtocol:
    """asyncpg's protocol, with each request counted: per connection (`trips`) and per call."""

    __slots__ = ("_inner", "trips")

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.trips = 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name in ROUND_TRIP_METHODS:
            return self._counted(attribute)
        return attribute

    def _counted(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.trips += 1
            tally = _TALLY.get()
            if tally is not None:
                tally.count += 1
            return method(*args, **kwargs)

        return call
