"""Prometheus text exposition for `/metrics`: per-tool calls, errors, latency and database round
trips, plus pool usage.

Written by hand (a few lines) rather than with prometheus_client, to add no dependency. Every
tool call is counted in one place, MindscapeServer.call_tool, so no tool can be left out. All
updates happen on the server's one event loop, so plain dicts need no lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mindscape.database.pool import Pool
from mindscape.tenancy.credential_cache import CredentialCache

# Seconds. Fixed buckets keep the output small and let Prometheus aggregate across processes.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Database round trips per call (database.trips): whole numbers, so a bucket per small count.
TRIP_BUCKETS = (0, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 50)
UNKNOWN_TOOL = "(unknown)"  # one label for every unregistered name: a client cannot grow the output


@dataclass
class _Series:
    calls: int = 0
    errors: int = 0
    seconds: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    counted: int = 0  # calls whose round trips are all in (a read's end comes after its reply)
    trips: int = 0
    trip_buckets: list[int] = field(default_factory=lambda: [0] * len(TRIP_BUCKETS))


class ToolMetrics:
    """Counters per tool name; `observe` once per call, `render` on each scrape."""

    def __init__(self) -> None:
        self._series: dict[str, _Series] = {}

    def observe(self, tool: str, seconds: float, *, error: bool) -> None:
        series = self._series.setdefault(tool, _Series())
        series.calls += 1
        series.errors += int(error)
        series.seconds += seconds
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                series.buckets[i] += 1

    def observe_trips(self, tool: str, trips: int) -> None:
        series = self._series.setdefault(tool, _Series())
        series.counted += 1
        series.trips += trips
        for i, bound in enumerate(TRIP_BUCKETS):
            if trips <= bound:
                series.trip_buckets[i] += 1

    def render(self, pool: Pool | None = None, credentials: CredentialCache | None = None) -> str:
        lines = [
            "# HELP mindscape_tool_calls_total Tool calls, by tool.",
            "# TYPE mindscape_tool_calls_total counter",
            *(f'mindscape_tool_calls_total{{tool="{t}"}} {s.calls}' for t, s in self._sorted()),
            "# HELP mindscape_tool_errors_total Tool calls that ended in an error result, by tool.",
            "# TYPE mindscape_tool_errors_total counter",
            *(f'mindscape_tool_errors_total{{tool="{t}"}} {s.errors}' for t, s in self._sorted()),
            "# HELP mindscape_tool_duration_seconds Tool call latency, by tool.",
            "# TYPE mindscape_tool_duration_seconds histogram",
        ]
        for tool, s in self._sorted():
            lines += _histogram(
                "mindscape_tool_duration_seconds", tool, BUCKETS, s.buckets, f"{s.seconds:.6f}", s.calls
            )
        lines += [
            "# HELP mindscape_tool_db_round_trips Database round trips per tool call, by tool "
            "(after-reply ones included).",
            "# TYPE mindscape_tool_db_round_trips histogram",
        ]
        for tool, s in self._sorted():
            lines += _histogram(
                "mindscape_tool_db_round_trips", tool, TRIP_BUCKETS, s.trip_buckets, str(s.trips), s.counted
            )
        if pool is not None:
            size, idle = pool.get_size(), pool.get_idle_size()
            lines += [
                "# HELP mindscape_pool_connections Database connections of this process, by state.",
                "# TYPE mindscape_pool_connections gauge",
                f'mindscape_pool_connections{{state="in_use"}} {size - idle}',
                f'mindscape_pool_connections{{state="idle"}} {idle}',
                "# HELP mindscape_pool_max_connections The pool's configured maximum (pool_max_size).",
                "# TYPE mindscape_pool_max_connections gauge",
                f"mindscape_pool_max_connections {pool.get_max_size()}",
            ]
        if credentials is not None:
            lines += _credential_lines(credentials)
        return "\n".join(lines) + "\n"

    def _sorted(self) -> list[tuple[str, _Series]]:
        # Tool names are registered identifiers ([a-z_]), so they need no label escaping.
        return sorted(self._series.items())


def _histogram(name: str, tool: str, bounds: tuple[float, ...], counts: list[int], total: str, count: int) -> list[str]:
    """One tool's series of a Prometheus histogram: cumulative buckets, +Inf, sum and count."""
    lines = [f'{name}_bucket{{tool="{tool}",le="{bound:g}"}} {n}' for bound, n in zip(bounds, counts, strict=True)]
    return [
        *lines,
        f'{name}_bucket{{tool="{tool}",le="+Inf"}} {count}',
        f'{name}_sum{{tool="{tool}"}} {total}',
        f'{name}_count{{tool="{tool}"}} {count}',
    ]


def _credential_lines(cache: CredentialCache) -> list[str]:
    """The credential cache of this process (tenancy/credential_cache.py): absent when it is off."""
    stats = cache.stats
    return [
        "# HELP mindscape_credential_cache_hits_total Credentials (API keys, JWT tenants) served from memory.",
        "# TYPE mindscape_credential_cache_hits_total counter",
        f"mindscape_credential_cache_hits_total {stats.hits}",
        "# HELP mindscape_credential_cache_misses_total Credentials checked in the database instead.",
        "# TYPE mindscape_credential_cache_misses_total counter",
        f"mindscape_credential_cache_misses_total {stats.misses}",
        "# HELP mindscape_credential_cache_drops_total Whole-cache drops: its listener lost or regained its link.",
        "# TYPE mindscape_credential_cache_drops_total counter",
        f"mindscape_credential_cache_drops_total {stats.drops}",
        "# HELP mindscape_credential_cache_evictions_total Entries evicted by a change notification.",
        "# TYPE mindscape_credential_cache_evictions_total counter",
        f"mindscape_credential_cache_evictions_total {stats.evictions}",
        "# HELP mindscape_credential_cache_entries Credentials cached now.",
        "# TYPE mindscape_credential_cache_entries gauge",
        f"mindscape_credential_cache_entries {len(cache)}",
        "# HELP mindscape_credential_cache_serving 1 while the cache listens for changes and serves, else 0.",
        "# TYPE mindscape_credential_cache_serving gauge",
        f"mindscape_credential_cache_serving {int(cache.serving)}",
    ]
